/*
 * dns_req - MX, host and A requests (see dns.h).
 *
 * A request (struct dns_req) fans out into c-ares queries (struct dns_q):
 * MX first, then A and AAAA for every selected host in parallel. It counts
 * the queries in flight (pending) and moves on when the count is zero.
 * Results are always delivered from a zero timer, never from inside
 * dns_resolve_*, so a cache hit looks like any other answer.
 *
 * Cancel only detaches: c-ares may still call back for queries already
 * sent, so a cancelled request lives on, silent, until pending is zero.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "dns_private.h"
#include "mx.h"
#include "util.h"
#include "xmalloc.h"

enum dns_kind {
	DNS_KIND_MX,
	DNS_KIND_HOST
};

enum dns_phase {
	DNS_PHASE_MX,		/* waiting for the MX answer */
	DNS_PHASE_ADDR,		/* waiting for A/AAAA of the targets */
	DNS_PHASE_DONE
};

/* Addresses of one target, per family, merged at the end. */
struct dns_taddrs {
	size_t n4, n6;
	struct sockaddr_storage a4[DNS_MAX_ADDRS];
	struct sockaddr_storage a6[DNS_MAX_ADDRS];
};

struct dns_req {
	struct dns *d;
	LIST_ENTRY(dns_req) link;	/* d->reqs */
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

void dns_req_free(struct dns_req *req)
{
	LIST_REMOVE(req, link);
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
	LIST_INSERT_HEAD(&d->reqs, req, link);
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
