/*
 * dns - c-ares driven from the daemon's libevent loop.
 *
 * c-ares tells us which sockets it wants watched (sock state callback); each
 * gets a persistent libevent event calling ares_process_fd, and one timer
 * armed from ares_timeout() drives retries and timeouts. Nothing blocks.
 *
 * A request (struct dns_req) fans out into c-ares queries (struct dns_q):
 * MX first, then A and AAAA for every selected host in parallel. It counts
 * the queries in flight (pending) and moves on when the count is zero.
 * Results are always delivered from a zero timer, never from inside
 * dns_resolve_*, so a cache hit looks like any other answer.
 *
 * Cancel only detaches: c-ares may still call back for queries already
 * sent, so a cancelled request lives on, silent, until pending is zero.
 *
 * Answers (MX sets, A/AAAA addresses) are cached per (type, name) up to
 * their TTL (capped), NXDOMAIN/NODATA briefly, temporary failures never.
 * This module does not log: callers decide what a failure means.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ares.h>
#include <event2/event.h>

#include "dns.h"
#include "mx.h"
#include "util.h"
#include "xmalloc.h"

#define DNS_CACHE_MAX	1024	/* entries */
#define DNS_TTL_MAX	3600	/* seconds, cap for positive answers */
#define DNS_TTL_NEG	60	/* seconds, NXDOMAIN / NODATA */
#define DNS_MX_MAX	64	/* MX records read from one answer */
#define DNS_TRIES	2	/* c-ares tries per server */
#define DNS_NAME_MAX	253

enum dns_qtype {
	DNS_QT_MX,
	DNS_QT_A,
	DNS_QT_AAAA
};

/* Outcome of one query. */
enum dns_qstat {
	DNS_QS_OK,
	DNS_QS_NODATA,		/* name exists, no record of the type */
	DNS_QS_NX,		/* NXDOMAIN or an unusable name: permanent */
	DNS_QS_TEMP
};

enum dns_kind {
	DNS_KIND_MX,
	DNS_KIND_HOST
};

enum dns_phase {
	DNS_PHASE_MX,		/* waiting for the MX answer */
	DNS_PHASE_ADDR,		/* waiting for A/AAAA of the targets */
	DNS_PHASE_DONE
};

/* One answer: what the cache stores and what a query hands on. */
struct dns_answer {
	enum dns_qstat st;
	unsigned ttl;
	size_t nmx;
	struct mx_entry *mx;			/* DNS_QT_MX, nmx entries */
	size_t naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];	/* port 0 */
};

struct dns_cache {
	struct dns_cache *next;
	enum dns_qtype type;
	char name[DNS_NAME_MAX + 1];
	double expires;
	struct dns_answer ans;
};

struct dns_sock {
	struct dns_sock *next;
	struct dns *d;
	ares_socket_t fd;
	struct event *ev;
};

struct dns {
	struct event_base *base;
	ares_channel chan;
	int chan_ok;
	struct event *timer;
	struct dns_sock *socks;
	struct dns_cache *cache;	/* newest first */
	size_t ncache;
	struct dns_req *reqs;		/* live requests, for dns_free */
	int destroying;
};

/* Addresses of one target, per family, merged at the end. */
struct dns_taddrs {
	size_t n4, n6;
	struct sockaddr_storage a4[DNS_MAX_ADDRS];
	struct sockaddr_storage a6[DNS_MAX_ADDRS];
};

struct dns_req {
	struct dns *d;
	struct dns_req *prev, *next;
	enum dns_kind kind;
	enum dns_phase phase;
	char name[DNS_NAME_MAX + 1];
	int port;
	dns_done_fn *done;
	void *arg;
	int cancelled;
	int pending;			/* queries in flight (+ guards) */
	int temp;			/* an address lookup tempfailed */
	int a_only;			/* dns_resolve_a: no AAAA */
	struct dns_answer mxans;	/* MX phase outcome */
	struct dns_taddrs *taddrs;	/* res->ntargets of them */
	struct dns_result *res;
	struct event *ev;		/* zero timer delivering res */
};

/* One c-ares query; freed in its callback. */
struct dns_q {
	struct dns_req *req;
	enum dns_qtype type;
	size_t idx;			/* target index for A/AAAA */
	char name[DNS_NAME_MAX + 1];
};

static void dns_req_run(struct dns_req *req);
static void dns_query(struct dns_req *req, enum dns_qtype type,
    const char *name, size_t idx);

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
static int dns_name_norm(const char *in, char *out, size_t outsize)
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

/* ---- libevent glue ---- */

static void dns_timer_update(struct dns *d)
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

/* ---- cache ---- */

static void dns_answer_clear(struct dns_answer *a)
{
	free(a->mx);
	a->mx = NULL;
	a->nmx = 0;
}

static void dns_answer_copy(struct dns_answer *dst,
    const struct dns_answer *src)
{
	*dst = *src;
	if (src->nmx > 0) {
		dst->mx = xcalloc(src->nmx, sizeof(*dst->mx));
		memcpy(dst->mx, src->mx, src->nmx * sizeof(*dst->mx));
	} else
		dst->mx = NULL;
}

static void dns_cache_free_entry(struct dns_cache *c)
{
	dns_answer_clear(&c->ans);
	free(c);
}

static const struct dns_answer *dns_cache_get(struct dns *d,
    enum dns_qtype type, const char *name)
{
	struct dns_cache *c, **cp;
	double now = util_now();

	for (cp = &d->cache; (c = *cp) != NULL; ) {
		if (c->expires <= now) {
			*cp = c->next;
			dns_cache_free_entry(c);
			d->ncache--;
			continue;
		}
		if (c->type == type && strcmp(c->name, name) == 0)
			return &c->ans;
		cp = &c->next;
	}
	return NULL;
}

static void dns_cache_put(struct dns *d, enum dns_qtype type,
    const char *name, const struct dns_answer *ans)
{
	struct dns_cache *c, **cp;
	double now = util_now();
	unsigned ttl;

	if (ans->st == DNS_QS_TEMP)
		return;
	ttl = ans->st == DNS_QS_OK ? ans->ttl : DNS_TTL_NEG;
	if (ttl > DNS_TTL_MAX)
		ttl = DNS_TTL_MAX;
	if (ttl == 0)
		return;
	/* Drop the same key and anything expired; find the oldest. */
	for (cp = &d->cache; (c = *cp) != NULL; ) {
		if (c->expires <= now ||
		    (c->type == type && strcmp(c->name, name) == 0)) {
			*cp = c->next;
			dns_cache_free_entry(c);
			d->ncache--;
			continue;
		}
		cp = &c->next;
	}
	if (d->ncache >= DNS_CACHE_MAX) {
		/* Full of live entries: drop the oldest (the tail). */
		for (cp = &d->cache; (*cp)->next != NULL; cp = &(*cp)->next)
			;
		dns_cache_free_entry(*cp);
		*cp = NULL;
		d->ncache--;
	}
	c = xcalloc(1, sizeof(*c));
	c->type = type;
	util_strlcpy(c->name, name, sizeof(c->name));
	c->expires = now + ttl;
	dns_answer_copy(&c->ans, ans);
	c->next = d->cache;
	d->cache = c;
	d->ncache++;
}

/* ---- answer parsing ---- */

/* Skip a (possibly compressed) name at *off. 0 or -1. */
static int dns_skip_name(const unsigned char *p, int len, int *off)
{
	int o = *off, i;

	for (i = 0; i < 128; i++) {
		unsigned c;

		if (o >= len)
			return -1;
		c = p[o];
		if (c == 0) {
			*off = o + 1;
			return 0;
		}
		if ((c & 0xc0) == 0xc0) {
			if (o + 2 > len)
				return -1;
			*off = o + 2;
			return 0;
		}
		if ((c & 0xc0) != 0)
			return -1;
		o += 1 + (int)c;
	}
	return -1;
}

/* Smallest TTL of the answer records of rrtype; DNS_TTL_MAX if none. */
static unsigned dns_answer_ttl(const unsigned char *p, int len, int rrtype)
{
	unsigned qd, an, i, ttl = DNS_TTL_MAX, t;
	int off = 12, type, rdlen;

	if (len < 12)
		return 0;
	qd = (unsigned)(p[4] << 8 | p[5]);
	an = (unsigned)(p[6] << 8 | p[7]);
	for (i = 0; i < qd; i++) {
		if (dns_skip_name(p, len, &off) < 0 || off + 4 > len)
			return 0;
		off += 4;
	}
	for (i = 0; i < an; i++) {
		if (dns_skip_name(p, len, &off) < 0 || off + 10 > len)
			return 0;
		type = p[off] << 8 | p[off + 1];
		t = (unsigned)p[off + 4] << 24 | (unsigned)p[off + 5] << 16 |
		    (unsigned)p[off + 6] << 8 | (unsigned)p[off + 7];
		rdlen = p[off + 8] << 8 | p[off + 9];
		off += 10 + rdlen;
		if (off > len)
			return 0;
		if (type == rrtype && t < ttl)
			ttl = t;
	}
	return ttl;
}

/* Query status (before parsing) to our outcome. */
static enum dns_qstat dns_map_status(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_QS_OK;
	case ARES_ENODATA:
		return DNS_QS_NODATA;
	case ARES_ENOTFOUND:
	case ARES_EBADNAME:
		return DNS_QS_NX;
	default:
		/* SERVFAIL, REFUSED, timeout, connection refused, ... */
		return DNS_QS_TEMP;
	}
}

static void dns_parse_mx(const unsigned char *abuf, int alen,
    struct dns_answer *ans)
{
	struct ares_mx_reply *mx = NULL, *m;
	size_t n = 0;
	int r;

	if ((r = ares_parse_mx_reply(abuf, alen, &mx)) != ARES_SUCCESS) {
		ans->st = r == ARES_ENODATA ? DNS_QS_NODATA : DNS_QS_TEMP;
		return;
	}
	for (m = mx; m != NULL; m = m->next)
		n++;
	if (n > DNS_MX_MAX)
		n = DNS_MX_MAX;
	ans->mx = xcalloc(n > 0 ? n : 1, sizeof(*ans->mx));
	for (m = mx; m != NULL && ans->nmx < n; m = m->next) {
		struct mx_entry *e = &ans->mx[ans->nmx];
		const char *h = m->host != NULL ? m->host : "";

		e->pref = m->priority;
		if (h[0] == '\0' || strcmp(h, ".") == 0)
			e->host[0] = '\0';	/* null MX candidate */
		else if (dns_name_norm(h, e->host, sizeof(e->host)) < 0)
			continue;		/* junk from the wire: skip */
		ans->nmx++;
	}
	ares_free_data(mx);
	/* MX records that are all junk stay OK with nmx == 0: "MX exists
	 * but none usable" is an error, never an implicit MX. */
	ans->ttl = dns_answer_ttl(abuf, alen, ns_t_mx);
}

static void dns_parse_addr(const unsigned char *abuf, int alen,
    enum dns_qtype type, struct dns_answer *ans)
{
	struct ares_addrttl a4[DNS_MAX_ADDRS];
	struct ares_addr6ttl a6[DNS_MAX_ADDRS];
	struct hostent *he = NULL;
	int n = DNS_MAX_ADDRS, r, i;
	unsigned ttl;

	if (type == DNS_QT_A)
		r = ares_parse_a_reply(abuf, alen, &he, a4, &n);
	else
		r = ares_parse_aaaa_reply(abuf, alen, &he, a6, &n);
	if (he != NULL)
		ares_free_hostent(he);
	if (r != ARES_SUCCESS) {
		ans->st = r == ARES_ENODATA ? DNS_QS_NODATA : DNS_QS_TEMP;
		return;
	}
	ans->ttl = DNS_TTL_MAX;
	for (i = 0; i < n && i < DNS_MAX_ADDRS; i++) {
		struct sockaddr_storage *ss = &ans->addrs[ans->naddrs++];

		memset(ss, 0, sizeof(*ss));
		if (type == DNS_QT_A) {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;

			sin->sin_family = AF_INET;
			sin->sin_addr = a4[i].ipaddr;
			ttl = a4[i].ttl < 0 ? 0 : (unsigned)a4[i].ttl;
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

			sin6->sin6_family = AF_INET6;
			memcpy(&sin6->sin6_addr, &a6[i].ip6addr,
			    sizeof(sin6->sin6_addr));
			ttl = a6[i].ttl < 0 ? 0 : (unsigned)a6[i].ttl;
		}
		if (ttl < ans->ttl)
			ans->ttl = ttl;
	}
	if (ans->naddrs == 0)
		ans->st = DNS_QS_NODATA;
}

/* ---- requests ---- */

static void dns_req_free(struct dns_req *req)
{
	struct dns *d = req->d;

	if (req->prev != NULL)
		req->prev->next = req->next;
	else
		d->reqs = req->next;
	if (req->next != NULL)
		req->next->prev = req->prev;
	if (req->ev != NULL)
		event_free(req->ev);
	dns_answer_clear(&req->mxans);
	free(req->taddrs);
	dns_result_free(&req->res);
	free(req);
}

static void dns_req_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_req *req = arg;
	struct dns_result *res = req->res;
	dns_done_fn *done = req->done;
	void *darg = req->arg;

	(void)fd;
	(void)what;
	/* Cancelled requests never get here (cancel removes the event), and
	 * pending is zero once the result is built. Free before calling
	 * back: the callback may free d. */
	req->res = NULL;
	dns_req_free(req);
	done(darg, res);
}

static struct dns_req *dns_req_new(struct dns *d, enum dns_kind kind,
    int port, dns_done_fn *done, void *arg)
{
	struct dns_req *req = xcalloc(1, sizeof(*req));

	req->d = d;
	req->kind = kind;
	req->port = port;
	req->done = done;
	req->arg = arg;
	req->res = xcalloc(1, sizeof(*req->res));
	req->ev = evtimer_new(d->base, dns_req_deliver_cb, req);
	if (req->ev == NULL) {
		free(req->res);
		free(req);
		return NULL;
	}
	req->next = d->reqs;
	if (d->reqs != NULL)
		d->reqs->prev = req;
	d->reqs = req;
	return req;
}

static void dns_req_finish(struct dns_req *req, enum dns_status st)
{
	struct timeval tv = { 0, 0 };

	req->phase = DNS_PHASE_DONE;
	req->res->status = st;
	if (st != DNS_OK)
		req->res->ntargets = 0;
	evtimer_add(req->ev, &tv);
}

static void dns_set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* Store an answer's addresses for target idx. */
static void dns_req_addrs(struct dns_req *req, enum dns_qtype type, size_t idx,
    const struct dns_answer *ans)
{
	struct dns_taddrs *t = &req->taddrs[idx];
	size_t i;

	if (ans->st == DNS_QS_TEMP)
		req->temp = 1;
	if (ans->st != DNS_QS_OK)
		return;
	for (i = 0; i < ans->naddrs && i < DNS_MAX_ADDRS; i++) {
		if (type == DNS_QT_A)
			t->a4[t->n4++] = ans->addrs[i];
		else
			t->a6[t->n6++] = ans->addrs[i];
	}
}

static void dns_req_apply(struct dns_req *req, enum dns_qtype type,
    size_t idx, const struct dns_answer *ans)
{
	if (type == DNS_QT_MX) {
		dns_answer_clear(&req->mxans);
		dns_answer_copy(&req->mxans, ans);
	} else
		dns_req_addrs(req, type, idx, ans);
}

static void dns_query_cb(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen)
{
	struct dns_q *q = arg;
	struct dns_req *req = q->req;
	struct dns *d = req->d;
	struct dns_answer ans;

	(void)timeouts;
	memset(&ans, 0, sizeof(ans));
	if (status != ARES_ECANCELLED && status != ARES_EDESTRUCTION) {
		ans.st = dns_map_status(status);
		if (ans.st == DNS_QS_OK && abuf != NULL) {
			if (q->type == DNS_QT_MX)
				dns_parse_mx(abuf, alen, &ans);
			else
				dns_parse_addr(abuf, alen, q->type, &ans);
		} else if (ans.st == DNS_QS_OK)
			ans.st = DNS_QS_TEMP;
		/* Worth caching even if the requester went away. */
		dns_cache_put(d, q->type, q->name, &ans);
	} else
		ans.st = DNS_QS_TEMP;
	if (!req->cancelled && !d->destroying)
		dns_req_apply(req, q->type, q->idx, &ans);
	dns_answer_clear(&ans);
	free(q);
	req->pending--;
	if (req->pending > 0)
		return;
	if (req->cancelled)
		dns_req_free(req);
	else if (!d->destroying)
		dns_req_run(req);
}

/* Answer from the cache, or send the query. */
static void dns_query(struct dns_req *req, enum dns_qtype type,
    const char *name, size_t idx)
{
	static const int rrtype[] = { ns_t_mx, ns_t_a, ns_t_aaaa };
	const struct dns_answer *ans;
	struct dns_q *q;

	if ((ans = dns_cache_get(req->d, type, name)) != NULL) {
		dns_req_apply(req, type, idx, ans);
		return;
	}
	q = xcalloc(1, sizeof(*q));
	q->req = req;
	q->type = type;
	q->idx = idx;
	util_strlcpy(q->name, name, sizeof(q->name));
	req->pending++;
	/* Exact name only: a relay must not complete partial names. */
	ares_query(req->d->chan, name, ns_c_in, rrtype[type], dns_query_cb, q);
}

/* Start A and AAAA for every target (res->targets already set). */
static void dns_req_start_addrs(struct dns_req *req)
{
	size_t i;

	req->phase = DNS_PHASE_ADDR;
	req->taddrs = xcalloc(req->res->ntargets, sizeof(*req->taddrs));
	/* Guard: answers given synchronously must not finish us yet. */
	req->pending++;
	for (i = 0; i < req->res->ntargets; i++) {
		if (!req->a_only)
			dns_query(req, DNS_QT_AAAA, req->res->targets[i].host,
			    i);
		dns_query(req, DNS_QT_A, req->res->targets[i].host, i);
	}
	req->pending--;
	dns_timer_update(req->d);
}

static void dns_req_mx_done(struct dns_req *req)
{
	struct dns_answer *a = &req->mxans;
	struct dns_result *res = req->res;
	int n;
	size_t i;

	switch (a->st) {
	case DNS_QS_NX:
		dns_req_finish(req, DNS_NXDOMAIN);
		return;
	case DNS_QS_TEMP:
		dns_req_finish(req, DNS_TEMPFAIL);
		return;
	case DNS_QS_NODATA:
		/* RFC 5321 5.1: no MX, the domain is its own (implicit) MX. */
		res->ntargets = 1;
		util_strlcpy(res->targets[0].host, req->name,
		    sizeof(res->targets[0].host));
		res->targets[0].pref = 0;
		dns_req_start_addrs(req);
		return;
	case DNS_QS_OK:
		break;
	}
	n = mx_select(a->mx, a->nmx, NULL, NULL);
	if (n < 0) {
		dns_req_finish(req, DNS_NULLMX);
		return;
	}
	if (n == 0) {
		/* MX records exist but none usable: never fall back to A. */
		dns_req_finish(req, DNS_NXDOMAIN);
		return;
	}
	for (i = 0; i < (size_t)n && i < DNS_MAX_TARGETS; i++) {
		util_strlcpy(res->targets[i].host, a->mx[i].host,
		    sizeof(res->targets[i].host));
		res->targets[i].pref = a->mx[i].pref;
	}
	res->ntargets = i;
	dns_req_start_addrs(req);
}

/*
 * Merge v6 then v4 per target; when both do not fit, keep room for the
 * other family so a host without working IPv6 is still reachable.
 */
static void dns_req_addr_done(struct dns_req *req)
{
	struct dns_result *res = req->res;
	size_t i, j, k6, k4, out = 0;

	for (i = 0; i < res->ntargets; i++) {
		struct dns_taddrs *t = &req->taddrs[i];
		struct dns_target tg = res->targets[i];

		k6 = t->n6;
		k4 = t->n4;
		if (k6 + k4 > DNS_MAX_ADDRS) {
			size_t half = DNS_MAX_ADDRS / 2;

			k6 = t->n6 < half ? t->n6 :
			    (DNS_MAX_ADDRS - t->n4 > half ?
			    DNS_MAX_ADDRS - t->n4 : half);
			if (k6 > t->n6)
				k6 = t->n6;
			k4 = DNS_MAX_ADDRS - k6;
			if (k4 > t->n4)
				k4 = t->n4;
		}
		if (k6 + k4 == 0)
			continue;	/* host without address: skip it */
		tg.naddrs = 0;
		for (j = 0; j < k6; j++)
			tg.addrs[tg.naddrs++] = t->a6[j];
		for (j = 0; j < k4; j++)
			tg.addrs[tg.naddrs++] = t->a4[j];
		for (j = 0; j < tg.naddrs; j++)
			dns_set_port(&tg.addrs[j], req->port);
		res->targets[out++] = tg;
	}
	res->ntargets = out;
	if (out > 0)
		dns_req_finish(req, DNS_OK);
	else
		dns_req_finish(req, req->temp ? DNS_TEMPFAIL : DNS_NXDOMAIN);
}

/* Called whenever pending drops to zero. */
static void dns_req_run(struct dns_req *req)
{
	if (req->pending != 0 || req->cancelled)
		return;
	switch (req->phase) {
	case DNS_PHASE_MX:
		dns_req_mx_done(req);
		break;
	case DNS_PHASE_ADDR:
		dns_req_addr_done(req);
		break;
	case DNS_PHASE_DONE:
		return;
	}
	/* A phase change answered wholly from the cache: go on. */
	if (req->pending == 0 && req->phase != DNS_PHASE_DONE)
		dns_req_run(req);
}

/*
 * IP literal: "1.2.3.4", "::1", "[1.2.3.4]", "[::1]", "[IPv6:::1]".
 * Returns 1 and fills ss (port set), 0 when s is not a literal.
 */
static int dns_literal(const char *s, int port, struct sockaddr_storage *ss)
{
	char buf[INET6_ADDRSTRLEN + 8];
	size_t len = strlen(s);
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	if (s[0] == '[') {
		if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof(buf))
			return 0;
		memcpy(buf, s + 1, len - 2);
		buf[len - 2] = '\0';
		if (strncasecmp(buf, "IPv6:", 5) == 0)
			memmove(buf, buf + 5, strlen(buf + 5) + 1);
	} else if (util_strlcpy(buf, s, sizeof(buf)) < 0)
		return 0;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	else
		return 0;
	dns_set_port(ss, port);
	return 1;
}

/* Resolve a literal or reject a bad name without asking DNS. 1 if done. */
static int dns_req_immediate(struct dns_req *req, const char *name)
{
	struct dns_target *t = &req->res->targets[0];

	if (dns_literal(name, req->port, &t->addrs[0])) {
		util_strlcpy(t->host, name, sizeof(t->host));
		t->naddrs = 1;
		req->res->ntargets = 1;
		dns_req_finish(req, DNS_OK);
		return 1;
	}
	if (dns_name_norm(name, req->name, sizeof(req->name)) < 0) {
		dns_req_finish(req, DNS_NXDOMAIN);
		return 1;
	}
	return 0;
}

struct dns_req *dns_resolve_mx(struct dns *d, const char *domain, int port,
    dns_done_fn *done, void *arg)
{
	struct dns_req *req;

	if ((req = dns_req_new(d, DNS_KIND_MX, port, done, arg)) == NULL)
		return NULL;
	/* A domain literal (user@[1.2.3.4]) has no MX. */
	if (dns_req_immediate(req, domain))
		return req;
	req->phase = DNS_PHASE_MX;
	req->pending++;	/* guard */
	dns_query(req, DNS_QT_MX, req->name, 0);
	req->pending--;
	dns_req_run(req);
	dns_timer_update(d);
	return req;
}

/* /etc/hosts: v6 then v4 addresses of name into t. Returns the count. */
static size_t dns_hosts_file(struct dns *d, const char *name, int port,
    struct dns_target *t)
{
	static const int fam[] = { AF_INET6, AF_INET };
	struct hostent *he;
	size_t f, i;

	t->naddrs = 0;
	for (f = 0; f < 2; f++) {
		he = NULL;
		if (ares_gethostbyname_file(d->chan, name, fam[f], &he) !=
		    ARES_SUCCESS || he == NULL) {
			if (he != NULL)
				ares_free_hostent(he);
			continue;
		}
		for (i = 0; he->h_addr_list[i] != NULL &&
		    t->naddrs < DNS_MAX_ADDRS; i++) {
			struct sockaddr_storage *ss = &t->addrs[t->naddrs];

			memset(ss, 0, sizeof(*ss));
			if (he->h_addrtype == AF_INET && he->h_length == 4) {
				ss->ss_family = AF_INET;
				memcpy(&((struct sockaddr_in *)ss)->sin_addr,
				    he->h_addr_list[i], 4);
			} else if (he->h_addrtype == AF_INET6 &&
			    he->h_length == 16) {
				ss->ss_family = AF_INET6;
				memcpy(&((struct sockaddr_in6 *)ss)->sin6_addr,
				    he->h_addr_list[i], 16);
			} else
				continue;
			dns_set_port(ss, port);
			t->naddrs++;
		}
		ares_free_hostent(he);
	}
	return t->naddrs;
}

struct dns_req *dns_resolve_host(struct dns *d, const char *host, int port,
    dns_done_fn *done, void *arg)
{
	struct dns_req *req;
	struct dns_result *res;

	if ((req = dns_req_new(d, DNS_KIND_HOST, port, done, arg)) == NULL)
		return NULL;
	if (dns_req_immediate(req, host))
		return req;
	res = req->res;
	res->ntargets = 1;
	util_strlcpy(res->targets[0].host, req->name,
	    sizeof(res->targets[0].host));
	/* A local file read, not network I/O: routes like localhost:2525. */
	if (dns_hosts_file(d, req->name, req->port, &res->targets[0]) > 0) {
		dns_req_finish(req, DNS_OK);
		return req;
	}
	dns_req_start_addrs(req);
	dns_req_run(req);
	return req;
}

struct dns_req *dns_resolve_a(struct dns *d, const char *name,
    dns_done_fn *done, void *arg)
{
	struct dns_req *req;
	struct dns_result *res;

	if ((req = dns_req_new(d, DNS_KIND_HOST, 0, done, arg)) == NULL)
		return NULL;
	req->a_only = 1;
	/* Not a literal and not /etc/hosts: only what DNS says. */
	if (dns_name_norm(name, req->name, sizeof(req->name)) < 0) {
		dns_req_finish(req, DNS_NXDOMAIN);
		return req;
	}
	res = req->res;
	res->ntargets = 1;
	util_strlcpy(res->targets[0].host, req->name,
	    sizeof(res->targets[0].host));
	dns_req_start_addrs(req);
	dns_req_run(req);
	return req;
}

void dns_req_cancel(struct dns_req **reqp)
{
	struct dns_req *req;

	if (reqp == NULL || (req = *reqp) == NULL)
		return;
	*reqp = NULL;
	evtimer_del(req->ev);
	req->cancelled = 1;
	if (req->pending == 0)
		dns_req_free(req);
	/* else: freed by the last c-ares callback, silently. */
}

/* ---- raw queries ---- */

struct dns_raw {
	struct dns *d;
	dns_raw_fn *done;
	void *arg;
	int pending;		/* c-ares query in flight */
	int cancelled;
	int ok;
	unsigned char *msg;
	size_t len;
	struct event *ev;	/* zero timer delivering the answer */
};

static void dns_raw_free(struct dns_raw *r)
{
	if (r->ev != NULL)
		event_free(r->ev);
	free(r->msg);
	free(r);
}

static void dns_raw_deliver(evutil_socket_t fd, short what, void *arg)
{
	struct dns_raw *r = arg;
	dns_raw_fn *done = r->done;
	void *darg = r->arg;
	unsigned char *msg = r->msg;
	size_t len = r->len;
	int ok = r->ok;

	(void)fd;
	(void)what;
	/* The handle dies before the call: the callee may not cancel it. */
	r->msg = NULL;
	dns_raw_free(r);
	done(darg, ok, msg, len);
	free(msg);
}

static void dns_raw_cb(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen)
{
	struct dns_raw *r = arg;

	(void)timeouts;
	r->pending = 0;
	if (r->cancelled) {
		dns_raw_free(r);
		return;
	}
	if (status == ARES_EDESTRUCTION)
		return;		/* shutting down: the owner cancels */
	if (status == ARES_SUCCESS && abuf != NULL && alen >= 12) {
		r->msg = xmalloc((size_t)alen);
		memcpy(r->msg, abuf, (size_t)alen);
		r->len = (size_t)alen;
		r->ok = 1;
	}
	if (r->ev == NULL) {
		r->ev = evtimer_new(r->d->base, dns_raw_deliver, r);
		if (r->ev == NULL)
			return;		/* out of memory: never answered */
	}
	{
		struct timeval tv = { 0, 0 };

		evtimer_add(r->ev, &tv);
	}
}

struct dns_raw *dns_query_raw(struct dns *d, const char *name, int qtype,
    int want_ad, dns_raw_fn *done, void *arg)
{
	unsigned char q[DNS_NAME_MAX + 32];
	struct dns_raw *r = xcalloc(1, sizeof(*r));
	size_t n = 12, len;
	const char *p = name;

	r->d = d;
	r->done = done;
	r->arg = arg;
	memset(q, 0, 12);
	q[2] = 0x01;			/* RD */
	q[3] = want_ad ? 0x20 : 0;	/* AD: tell us what was validated */
	q[5] = 1;			/* one question */
	/* Exact name, labels of 1..63 octets, 255 in all. */
	len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	while (len > 0 && p < name + len) {
		const char *dot = memchr(p, '.', (size_t)(name + len - p));
		size_t l = dot != NULL ? (size_t)(dot - p) : (size_t)(name + len - p);

		if (l == 0 || l > 63 || n + l + 1 + 5 > sizeof(q) ||
		    n + l + 1 - 12 > 254)
			goto bad;
		q[n++] = (unsigned char)l;
		memcpy(q + n, p, l);
		n += l;
		p += l + (dot != NULL ? 1 : 0);
	}
	if (len == 0)
		goto bad;
	q[n++] = 0;
	q[n++] = (unsigned char)(qtype >> 8);
	q[n++] = (unsigned char)qtype;
	q[n++] = 0;
	q[n++] = 1;			/* IN */
	if (!d->chan_ok)
		goto bad;
	r->pending = 1;
	ares_send(d->chan, q, (int)n, dns_raw_cb, r);
	dns_timer_update(d);
	return r;
bad:
	r->pending = 0;
	dns_raw_cb(r, ARES_EBADNAME, 0, NULL, 0);
	return r;
}

void dns_raw_cancel(struct dns_raw **rp)
{
	struct dns_raw *r;

	if (rp == NULL || (r = *rp) == NULL)
		return;
	*rp = NULL;
	if (r->pending) {
		r->cancelled = 1;	/* freed by the c-ares callback */
		if (r->ev != NULL) {
			event_free(r->ev);
			r->ev = NULL;
		}
		return;
	}
	dns_raw_free(r);
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
	struct dns_cache *c;

	if (dp == NULL || (d = *dp) == NULL)
		return;
	*dp = NULL;
	d->destroying = 1;
	if (d->chan_ok)
		ares_destroy(d->chan);	/* runs callbacks: EDESTRUCTION */
	while (d->reqs != NULL)
		dns_req_free(d->reqs);
	while ((s = d->socks) != NULL) {
		d->socks = s->next;
		if (s->ev != NULL)
			event_free(s->ev);
		free(s);
	}
	while ((c = d->cache) != NULL) {
		d->cache = c->next;
		dns_cache_free_entry(c);
	}
	if (d->timer != NULL)
		event_free(d->timer);
	free(d);
	ares_library_cleanup();
}
