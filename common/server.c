/*
 * server - the session core shared by the SMTP and ODMR listeners (see
 * server.h): listeners, admission, the registry of connections, deadlines,
 * deferred free and the STARTTLS switch-over.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "fdbudget.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"
#include "turnwatch.h"

struct server_listener {
	struct evconnlistener *lev;
	int flags;
	struct server *srv;
	struct server_listener *next;
};

struct server_conn {
	struct server *srv;
	struct server_conn *prev, *next;
	void *owner;
	void (*timeout)(void *owner);
	struct event *deadline;
	time_t started;			/* monotonic seconds at accept */
	char ip[SERVER_IP_MAX];
	int exempt;
	int budget_held;
	/* after server_conn_free: freed from the loop */
	void (*free_fn)(void *ptr);
	void *free_ptr;
};

struct server {
	struct event_base *base;
	char name[16];
	server_start_fn *start;
	void *start_arg;
	struct fdbudget *budget;	/* borrowed */
	size_t max_total, max_per_ip;
	char *hostname;
	struct server_listener *listeners;
	struct event *accept_retry;	/* re-enable after EMFILE */
	struct server_conn *conns;
	size_t nconns, nexempt;
	struct server_conn *dead;	/* freed by the reaper */
	struct event *reaper;
	int shutting_down;
	void (*done)(void *arg);
	void *done_arg;
};

static time_t
server_now(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec;
}

/* ---- the reaper: deferred frees and the shutdown's end ---- */

static void
server_reap(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	struct server_conn *c;

	(void)fd;
	(void)what;
	while ((c = srv->dead) != NULL) {
		srv->dead = c->next;
		if (c->free_fn != NULL)
			c->free_fn(c->free_ptr);
		free(c);
	}
	if (srv->shutting_down && srv->nconns == 0 && srv->done != NULL) {
		void (*done)(void *) = srv->done;

		srv->done = NULL;
		done(srv->done_arg);
	}
}

static void
server_reap_soon(struct server *srv)
{
	event_active(srv->reaper, EV_TIMEOUT, 0);
}

/* ---- listeners and admission ---- */

static size_t
server_count_ip(const struct server *srv, const char *ip)
{
	const struct server_conn *c;
	size_t n = 0;

	for (c = srv->conns; c != NULL; c = c->next)
		if (!c->exempt && strcmp(c->ip, ip) == 0)
			n++;
	return n;
}

/* Refuse fd in plain text (even on a TLS port: a refusal, no session). */
static void
server_refuse(evutil_socket_t fd, const char *line)
{
	(void)!write(fd, line, strlen(line));
	evutil_closesocket(fd);
}

static void
server_admit(struct server *srv, evutil_socket_t fd,
    const struct sockaddr *sa, int flags)
{
	struct server_peer peer;
	char line[320];

	if (srv->shutting_down) {
		evutil_closesocket(fd);
		return;
	}
	memset(&peer, 0, sizeof(peer));
	util_sockaddr_ip(sa, peer.ip, sizeof(peer.ip));
	if (sa->sa_family == AF_INET6) {
		peer.v6 = 1;
		peer.port = ntohs(((const struct sockaddr_in6 *)
		    (const void *)sa)->sin6_port);
	} else if (sa->sa_family == AF_INET)
		peer.port = ntohs(((const struct sockaddr_in *)
		    (const void *)sa)->sin_port);
	if ((srv->max_total > 0 &&
	    srv->nconns - srv->nexempt >= srv->max_total) ||
	    (srv->max_per_ip > 0 &&
	    server_count_ip(srv, peer.ip) >= srv->max_per_ip)) {
		log_info("%s: client=[%s], too many connections", srv->name,
		    peer.ip);
		metrics_inc(METRIC_REJECTED, "connections");
		snprintf(line, sizeof(line), "421 4.7.0 %s Too many "
		    "connections, try later\r\n", srv->hostname);
		server_refuse(fd, line);
		return;
	}
	/* One budget for every listener (each session holds a descriptor). */
	if (!fdbudget_take(srv->budget)) {
		metrics_inc(METRIC_REJECTED, "connections");
		server_refuse(fd, "421 4.3.2 Too many connections, try later\r\n");
		fdbudget_refused(srv->budget, srv->name);
		return;
	}
	srv->start(srv->start_arg, fd, &peer, flags);
}

static void
server_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct server_listener *l = arg;

	(void)lev;
	(void)salen;
	turnwatch_begin("accept");
	server_admit(l->srv, fd, sa, l->flags);
	turnwatch_end();
}

static void
server_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	struct server_listener *l;

	(void)fd;
	(void)what;
	if (srv->shutting_down)
		return;
	for (l = srv->listeners; l != NULL; l = l->next)
		evconnlistener_enable(l->lev);
}

/*
 * accept() failed. Without this callback libevent logs and retries at
 * once, and a full descriptor table made that a busy loop (issue 17):
 * out of descriptors or memory, pause every listener for a second.
 */
static void
server_accept_error(struct evconnlistener *lev, void *arg)
{
	struct server *srv = ((struct server_listener *)arg)->srv;
	struct server_listener *l;
	struct timeval tv = { 1, 0 };
	int e = EVUTIL_SOCKET_ERROR();

	(void)lev;
	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
		log_warn("%s: accept: %s", srv->name,
		    evutil_socket_error_to_string(e));
		return;
	}
	if (!evtimer_pending(srv->accept_retry, NULL))
		log_warn("%s: accept: %s: not accepting for 1 s", srv->name,
		    evutil_socket_error_to_string(e));
	for (l = srv->listeners; l != NULL; l = l->next)
		evconnlistener_disable(l->lev);
	evtimer_add(srv->accept_retry, &tv);
}

struct server *
server_new(struct event_base *base, const char *name, server_start_fn *start,
    void *arg)
{
	struct server *srv = xcalloc(1, sizeof(*srv));

	srv->base = base;
	util_strlcpy(srv->name, name, sizeof(srv->name));
	srv->start = start;
	srv->start_arg = arg;
	srv->hostname = xstrdup("");
	srv->accept_retry = evtimer_new(base, server_accept_retry, srv);
	srv->reaper = event_new(base, -1, 0, server_reap, srv);
	return srv;
}

void
server_set_budget(struct server *srv, struct fdbudget *b)
{
	srv->budget = b;
}

struct fdbudget *
server_budget(const struct server *srv)
{
	return srv->budget;
}

void
server_set_limits(struct server *srv, size_t max_total, size_t max_per_ip,
    const char *hostname)
{
	srv->max_total = max_total;
	srv->max_per_ip = max_per_ip;
	free(srv->hostname);
	srv->hostname = xstrdup(hostname);
}

int
server_listen(struct server *srv, const char *addr, int default_port,
    int flags, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	struct server_listener *l;

	memset(&ss, 0, sizeof(ss));
	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss,
	    &sslen) != 0 || (ss.ss_family != AF_INET &&
	    ss.ss_family != AF_INET6)) {
		snprintf(err, errlen, "bad listen address");
		return -1;
	}
	/* the port sits at the same offset in both families */
	if (((struct sockaddr_in *)&ss)->sin_port == 0)
		((struct sockaddr_in *)&ss)->sin_port =
		    htons((uint16_t)default_port);
	l = xcalloc(1, sizeof(*l));
	l->srv = srv;
	l->flags = flags;
	/* one listener per family: [::] must not also take IPv4 */
	l->lev = evconnlistener_new_bind(srv->base, server_accept_cb, l,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC |
	    (ss.ss_family == AF_INET6 ? LEV_OPT_BIND_IPV6ONLY : 0), 128,
	    (struct sockaddr *)&ss, sslen);
	if (l->lev == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		free(l);
		return -1;
	}
	evconnlistener_set_error_cb(l->lev, server_accept_error);
	l->next = srv->listeners;
	srv->listeners = l;
	return 0;
}

void
server_adopt(struct server *srv, evutil_socket_t fd, const struct sockaddr *sa,
    int flags)
{
	/* A listener makes accepted sockets non-blocking; an inherited or
	 * test socket may not be. */
	if (evutil_make_socket_nonblocking(fd) < 0)
		log_warn("%s: cannot make socket %d non-blocking", srv->name,
		    (int)fd);
	server_admit(srv, fd, sa, flags);
}

void
server_release_slot(struct server *srv)
{
	fdbudget_put(srv->budget);
}

static void
server_close_listeners(struct server *srv)
{
	struct server_listener *l;

	while ((l = srv->listeners) != NULL) {
		srv->listeners = l->next;
		evconnlistener_free(l->lev);
		free(l);
	}
}

void
server_shutdown(struct server *srv, void (*done)(void *arg), void *arg)
{
	srv->shutting_down = 1;
	srv->done = done;
	srv->done_arg = arg;
	server_close_listeners(srv);
	evtimer_del(srv->accept_retry);
	if (srv->nconns == 0)
		server_reap_soon(srv);
}

size_t
server_count(const struct server *srv)
{
	return srv->nconns;
}

struct server_conn *
server_first(const struct server *srv)
{
	return srv->conns;
}

void
server_free(struct server **srvp)
{
	struct server *srv = *srvp;

	if (srv == NULL)
		return;
	/* the owners are gone (their protocol freed them first) */
	srv->done = NULL;
	server_reap(-1, 0, srv);
	server_close_listeners(srv);
	event_free(srv->accept_retry);
	event_free(srv->reaper);
	free(srv->hostname);
	free(srv);
	*srvp = NULL;
}

/* ---- connections ---- */

static void
server_conn_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct server_conn *c = arg;

	(void)fd;
	(void)what;
	c->timeout(c->owner);
}

struct server_conn *
server_conn_new(struct server *srv, const struct server_peer *peer,
    void *owner, void (*timeout)(void *owner))
{
	struct server_conn *c = xcalloc(1, sizeof(*c));

	c->srv = srv;
	c->owner = owner;
	c->timeout = timeout;
	c->budget_held = 1;
	c->started = server_now();
	util_strlcpy(c->ip, peer->ip, sizeof(c->ip));
	c->deadline = evtimer_new(srv->base, server_conn_deadline, c);
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	return c;
}

struct server_conn *
server_conn_next(const struct server_conn *c)
{
	return c->next;
}

void *
server_conn_owner(const struct server_conn *c)
{
	return c->owner;
}

void
server_conn_set_exempt(struct server_conn *c, int exempt)
{
	exempt = exempt != 0;
	if (c->exempt == exempt)
		return;
	c->exempt = exempt;
	if (exempt)
		c->srv->nexempt++;
	else
		c->srv->nexempt--;
}

int
server_conn_give_slot(struct server_conn *c)
{
	int held = c->budget_held;

	c->budget_held = 0;
	return held;
}

void
server_conn_arm(struct server_conn *c, long secs)
{
	struct timeval tv = { secs, 0 };

	if (secs <= 0)
		evtimer_del(c->deadline);
	else
		evtimer_add(c->deadline, &tv);
}

long
server_conn_age(const struct server_conn *c)
{
	return (long)(server_now() - c->started);
}

void
server_conn_free(struct server_conn **cp, struct bufferevent **bevp,
    void (*free_fn)(void *ptr), void *ptr)
{
	struct server_conn *c = *cp;
	struct server *srv;

	if (c == NULL)
		return;
	*cp = NULL;
	if (*bevp != NULL)
		tls_bev_close_flushed(*bevp);
	*bevp = NULL;
	srv = c->srv;
	server_conn_set_exempt(c, 0);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	srv->nconns--;
	if (c->budget_held)
		fdbudget_put(srv->budget);
	event_free(c->deadline);
	c->free_fn = free_fn;
	c->free_ptr = ptr;
	c->prev = NULL;
	c->next = srv->dead;
	srv->dead = c;
	server_reap_soon(srv);
}

/* ---- I/O helpers ---- */

int
server_out_full(struct bufferevent *bev, size_t max)
{
	return evbuffer_get_length(bufferevent_get_output(bev)) > max;
}

enum server_tls
server_starttls(struct server_conn *c, struct bufferevent **bevp,
    SSL_CTX *ctx, int opts)
{
	struct bufferevent *bev = *bevp, *nbev;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t n = evbuffer_get_length(in);
	SSL *ssl;

	if (n > 0) {
		log_info("%s: client=[%s], discarded %zu octets pipelined "
		    "after STARTTLS", c->srv->name, c->ip, n);
		evbuffer_drain(in, n);
	}
	ssl = SSL_new(ctx);
	if (ssl == NULL) {
		evbuffer_add_printf(out, "454 4.7.0 TLS not available due to "
		    "temporary reason\r\n");
		return SERVER_TLS_UNAVAILABLE;
	}
	evbuffer_add_printf(out, "220 2.0.0 Ready to start TLS\r\n");
	nbev = bufferevent_openssl_filter_new(bufferevent_get_base(bev), bev,
	    ssl, BUFFEREVENT_SSL_ACCEPTING, opts);
	if (nbev == NULL) {
		SSL_free(ssl);
		return SERVER_TLS_FAILED;
	}
	*bevp = nbev;
	return SERVER_TLS_OK;
}
