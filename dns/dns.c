/*
 * dns - c-ares driven from the daemon's libevent loop: the channel, its
 * servers, and the glue.
 *
 * c-ares tells us which sockets it wants watched (sock state callback); each
 * gets a persistent libevent event calling ares_process_fd, and one timer
 * armed from ares_timeout() drives retries and timeouts. Nothing blocks.
 *
 * The rest of the module: dns_req.c (MX, host and A requests), dns_answer.c
 * (parsing answers, the cache), dns_raw.c (raw queries), dns_msg.c (the
 * wire-format reader). This module does not log: callers decide what a
 * failure means.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "dns_private.h"
#include "util.h"
#include "xmalloc.h"

#define DNS_TRIES	2	/* c-ares tries per server */

struct dns_sock {
	struct dns_sock *next;
	struct dns *d;
	ares_socket_t fd;
	struct event *ev;
};

const char *dns_status_str(enum dns_status st)
{
	switch (st) {
	case DNS_OK:
		return "ok";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NULLMX:
		return "nullmx";
	}
	return "unknown";
}

void dns_result_free(struct dns_result **res)
{
	if (res == NULL || *res == NULL)
		return;
	free(*res);
	*res = NULL;
}

/*
 * Names: letters, digits, '-', '_' and dots, no empty label, at most 253
 * characters. Normalised to lower case without a trailing dot into out.
 * DNS answers are untrusted, so MX hosts pass through here too.
 */
int dns_name_norm(const char *in, char *out, size_t outsize)
{
	size_t len, i, label = 0;

	len = strlen(in);
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX || len >= outsize)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
		} else if (isalnum(c) || c == '-' || c == '_') {
			if (++label > 63)
				return -1;
		} else
			return -1;
		out[i] = (char)tolower(c);
	}
	out[len] = '\0';
	return 0;
}

void dns_set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* ---- libevent glue ---- */

void dns_timer_update(struct dns *d)
{
	struct timeval tv, *tvp;

	if (d->destroying || !d->chan_ok)
		return;
	tvp = ares_timeout(d->chan, NULL, &tv);
	if (tvp == NULL)
		evtimer_del(d->timer);
	else
		evtimer_add(d->timer, tvp);
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *d = arg;

	(void)fd;
	(void)what;
	ares_process_fd(d->chan, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_timer_update(d);
}

static void dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	/* s may be freed by ares_process_fd (socket closed): keep d only. */
	struct dns *d = ((struct dns_sock *)arg)->d;

	ares_process_fd(d->chan,
	    (what & EV_READ) ? (ares_socket_t)fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? (ares_socket_t)fd : ARES_SOCKET_BAD);
	dns_timer_update(d);
}

static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable,
    int writable)
{
	struct dns *d = data;
	struct dns_sock *s, **sp;
	short flags;

	for (sp = &d->socks; (s = *sp) != NULL; sp = &s->next)
		if (s->fd == fd)
			break;
	if (!readable && !writable) {
		if (s != NULL) {
			*sp = s->next;
			if (s->ev != NULL)
				event_free(s->ev);
			free(s);
		}
		return;
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->d = d;
		s->fd = fd;
		s->next = d->socks;
		d->socks = s;
	} else if (s->ev != NULL) {
		event_free(s->ev);
		s->ev = NULL;
	}
	flags = EV_PERSIST | (readable ? EV_READ : 0) |
	    (writable ? EV_WRITE : 0);
	/* Without a watcher the query merely times out via the timer. */
	s->ev = event_new(d->base, (evutil_socket_t)fd, flags, dns_sock_cb, s);
	if (s->ev != NULL)
		event_add(s->ev, NULL);
}

/* ---- setup ---- */

static int dns_set_servers(struct dns *d, const char *const *servers,
    size_t n, char *err, size_t errlen)
{
	struct ares_addr_port_node *nodes;
	char host[INET6_ADDRSTRLEN + 1];
	size_t i;
	int port, r;

	nodes = xcalloc(n, sizeof(*nodes));
	for (i = 0; i < n; i++) {
		struct ares_addr_port_node *a = &nodes[i];

		if (util_split_hostport(servers[i], host, sizeof(host), &port,
		    53) < 0)
			goto bad;
		if (inet_pton(AF_INET, host, &a->addr.addr4) == 1)
			a->family = AF_INET;
		else if (inet_pton(AF_INET6, host, &a->addr.addr6) == 1)
			a->family = AF_INET6;
		else
			goto bad;
		a->udp_port = a->tcp_port = port;
		a->next = i + 1 < n ? &nodes[i + 1] : NULL;
	}
	r = ares_set_servers_ports(d->chan, nodes);
	free(nodes);
	if (r != ARES_SUCCESS) {
		snprintf(err, errlen, "dns servers: %s", ares_strerror(r));
		return -1;
	}
	return 0;
bad:
	snprintf(err, errlen, "dns server \"%.100s\": not ip[:port]",
	    servers[i]);
	free(nodes);
	return -1;
}

struct dns *dns_new(struct event_base *base, const char *const *servers,
    size_t nservers, int timeout_ms, char *err, size_t errlen)
{
	struct ares_options opts;
	struct dns *d;
	int r, mask;

	if ((r = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares init: %s", ares_strerror(r));
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->base = base;
	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = dns_sock_state_cb;
	opts.sock_state_cb_data = d;
	opts.timeout = timeout_ms > 0 ? timeout_ms : 5000;
	opts.tries = DNS_TRIES;
	mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	if ((r = ares_init_options(&d->chan, &opts, mask)) != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares channel: %s", ares_strerror(r));
		free(d);
		ares_library_cleanup();
		return NULL;
	}
	d->chan_ok = 1;
	if ((d->timer = evtimer_new(base, dns_timer_cb, d)) == NULL) {
		snprintf(err, errlen, "dns: cannot create timer");
		dns_free(&d);
		return NULL;
	}
	if (nservers > 0 && dns_set_servers(d, servers, nservers, err,
	    errlen) < 0) {
		dns_free(&d);
		return NULL;
	}
	return d;
}

/*
 * Requests still outstanding are dropped without their callbacks: the
 * caller must not use their handles afterwards.
 */
void dns_free(struct dns **dp)
{
	struct dns *d;
	struct dns_sock *s;

	if (dp == NULL || (d = *dp) == NULL)
		return;
	*dp = NULL;
	d->destroying = 1;
	if (d->chan_ok)
		ares_destroy(d->chan);	/* runs callbacks: EDESTRUCTION */
	while (!LIST_EMPTY(&d->reqs))
		dns_req_free(LIST_FIRST(&d->reqs));
	while ((s = d->socks) != NULL) {
		d->socks = s->next;
		if (s->ev != NULL)
			event_free(s->ev);
		free(s);
	}
	dns_cache_clear(d);
	if (d->timer != NULL)
		event_free(d->timer);
	free(d);
	ares_library_cleanup();
}
