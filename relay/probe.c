/*
 * probe - asking a primary about recipients (see probe.h).
 *
 * One "destination" per probed primary (a route, or a domain's MX set)
 * holds a FIFO of questions and at most one connection. The connection is
 * an smtpc session in probe mode: each transaction carries up to
 * PROBE_BATCH waiting questions (MAIL FROM:<>, one RCPT each, RSET); when
 * none wait the session idles for PROBE_IDLE_SECS and is then closed with
 * QUIT. Every question has its own timer (verify_timeout): an answer that
 * is late is "unknown", and a primary that is that slow or unreachable is
 * left alone for PROBE_DOWN_SECS, during which questions are answered
 * "unknown" at once (a backup MX must not make every RCPT wait while the
 * primary is down).
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <strings.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "dns.h"
#include "log.h"
#include "mxwalk.h"
#include "probe.h"
#include "tlsfind.h"
#include "tlspolicy.h"
#include "smtpc.h"
#include "util.h"
#include "xmalloc.h"

#define PROBE_MAX_CONNS		16	/* probe connections in all */
#define PROBE_BATCH		20	/* questions per transaction */
#define PROBE_IDLE_SECS		30	/* an idle connection is kept this long */
#define PROBE_DOWN_SECS		30	/* after a failure: "unknown" at once */
#define PROBE_ADDR_MAX		320
#define PROBE_TEXT_MAX		256

struct probe_dest;

struct probe_q {
	struct probe *owner;
	struct probe_dest *d;		/* NULL: in owner->instant */
	TAILQ_ENTRY(probe_q) link;	/* d->wait or owner->instant; in a batch: none */
	char addr[PROBE_ADDR_MAX];
	probe_done_fn *fn;
	void *arg;
	struct event *timer;
	int inflight;
	int result;
	char text[PROBE_TEXT_MAX];
};

enum probe_dest_state { D_NONE, D_DNS, D_CONNECTING, D_SESSION };

struct probe_dest {
	struct probe *p;
	LIST_ENTRY(probe_dest) link;	/* p->dests */
	char key[600];
	char domain[256];
	char host[256];		/* route host, or "" for the MX set */
	int port;
	long timeout;		/* seconds, verify_timeout of the last ask */
	enum probe_dest_state st;
	TAILQ_HEAD(, probe_q) wait;
	struct probe_q *batch[PROBE_BATCH];
	struct smtpc_rcpt rcpts[PROBE_BATCH];
	size_t nbatch;
	struct dns_req *dns;
	struct dns_result *res;
	struct mxwalk walk;	/* position in res, DANE/MTA-STS policies */
	struct bufferevent *bev;	/* while connecting */
	struct smtpc *sc;
	char peer[300];
	struct event *idle;
	int closing;		/* idle too long: next() says QUIT */
	unsigned answered;	/* questions answered on this connection */
	time_t down_until;
};

struct probe {
	struct event_base *base;
	struct dns *dns;
	struct config *cfg;
	LIST_HEAD(, probe_dest) dests;
	TAILQ_HEAD(, probe_q) instant;	/* answered "unknown" on the next pass */
	unsigned nconns;
};

struct probe *probe_new(struct event_base *base, struct dns *dns)
{
	struct probe *p = xcalloc(1, sizeof(*p));

	p->base = base;
	p->dns = dns;
	TAILQ_INIT(&p->instant);
	return p;
}

static void probe_q_free(struct probe_q *q)
{
	if (q->timer != NULL)
		event_free(q->timer);
	free(q);
}

static void probe_unwait(struct probe_dest *d, struct probe_q *q)
{
	TAILQ_REMOVE(&d->wait, q, link);
}

/* Answer q (already out of every list) and free it. */
static void probe_answer(struct probe_q *q, int result, const char *text)
{
	probe_done_fn *fn = q->fn;
	void *arg = q->arg;
	char buf[PROBE_TEXT_MAX];

	util_strlcpy(buf, text != NULL ? text : "", sizeof(buf));
	probe_q_free(q);
	fn(arg, result, buf);
}

/* The connection (or its attempt) is over: release its slot. */
static void probe_conn_gone(struct probe_dest *d)
{
	if (d->st != D_NONE && d->p->nconns > 0)
		d->p->nconns--;
	d->st = D_NONE;
	d->closing = 0;
	d->answered = 0;
	if (d->idle != NULL)
		evtimer_del(d->idle);
}

static void probe_kick(struct probe_dest *d);

/* Let destinations that waited for a connection slot go on. */
static void probe_kick_others(struct probe *p)
{
	struct probe_dest *d;

	for (d = LIST_FIRST(&p->dests); d != NULL && p->nconns < PROBE_MAX_CONNS;
	    d = LIST_NEXT(d, link))
		if (d->st == D_NONE && !TAILQ_EMPTY(&d->wait))
			probe_kick(d);
}

/*
 * The primary could not be asked: every question in flight and waiting
 * gets "unknown", and new ones do for PROBE_DOWN_SECS.
 */
static void probe_dest_down(struct probe_dest *d, const char *why)
{
	struct probe_q *q;
	size_t i, n = d->nbatch;

	log_info("probe: %s: %s; recipients there are unknown for %ds",
	    d->key, why, PROBE_DOWN_SECS);
	d->down_until = time(NULL) + PROBE_DOWN_SECS;
	d->nbatch = 0;
	for (i = 0; i < n; i++)
		probe_answer(d->batch[i], PROBE_UNKNOWN, why);
	while ((q = TAILQ_FIRST(&d->wait)) != NULL) {
		probe_unwait(d, q);
		probe_answer(q, PROBE_UNKNOWN, why);
	}
}

/* ---- the smtpc source ---- */

static int probe_src_next(void *arg, struct smtpc_msg *m)
{
	struct probe_dest *d = arg;
	struct probe_q *q;
	struct timeval tv = { PROBE_IDLE_SECS, 0 };

	if (TAILQ_EMPTY(&d->wait) || d->closing) {
		if (d->closing)
			return 0;
		evtimer_add(d->idle, &tv);
		return 2;
	}
	evtimer_del(d->idle);
	d->nbatch = 0;
	while ((q = TAILQ_FIRST(&d->wait)) != NULL && d->nbatch < PROBE_BATCH) {
		probe_unwait(d, q);
		q->inflight = 1;
		q->result = PROBE_UNKNOWN;
		q->text[0] = '\0';
		d->rcpts[d->nbatch].addr = q->addr;
		d->rcpts[d->nbatch].orcpt = NULL;
		d->rcpts[d->nbatch].notify = 0;
		d->batch[d->nbatch++] = q;
	}
	memset(m, 0, sizeof(*m));
	m->sender = "";
	m->rcpts = d->rcpts;
	m->nrcpts = d->nbatch;
	return 1;
}

/* The primary's own RCPT reply: the only thing that makes an answer. */
static void probe_src_rcpt_reply(void *arg, size_t i, int code,
    const char *text)
{
	struct probe_dest *d = arg;
	struct probe_q *q;

	if (i >= d->nbatch)
		return;
	q = d->batch[i];
	if (code >= 200 && code <= 299)
		q->result = PROBE_VALID;
	else if (code >= 500 && code <= 599)
		q->result = PROBE_INVALID;
	else
		q->result = PROBE_UNKNOWN;
	util_strlcpy(q->text, text != NULL ? text : "", sizeof(q->text));
}

static void probe_src_rcpt_result(void *arg, size_t i, int code,
    const char *text)
{
	(void)arg;
	(void)i;
	(void)code;
	(void)text;
}

/* The transaction is over: answer its questions. */
static void probe_src_msg_done(void *arg)
{
	struct probe_dest *d = arg;
	size_t i, n = d->nbatch;
	struct probe_q *batch[PROBE_BATCH];

	memcpy(batch, d->batch, n * sizeof(*batch));
	d->nbatch = 0;
	d->answered += (unsigned)n;
	for (i = 0; i < n; i++)
		probe_answer(batch[i], batch[i]->result, batch[i]->text);
}

static void probe_src_done(void *arg, const struct smtpc_stats *st)
{
	struct probe_dest *d = arg;
	int failed = !st->ok;

	d->sc = NULL;		/* smtpc frees itself after this */
	log_debug("probe: %s: session ended (%s)", d->key, st->reason);
	/* A primary that dropped an idle connection is not down. */
	if (failed && (d->nbatch > 0 || d->answered == 0))
		probe_dest_down(d, st->reason);
	probe_conn_gone(d);
	if (!TAILQ_EMPTY(&d->wait))
		probe_kick(d);
	probe_kick_others(d->p);
}

/* ---- connecting ---- */

static void probe_connect_next(struct probe_dest *d);

/* The answer goes (the walk over it too). */
static void probe_res_free(struct probe_dest *d)
{
	dns_result_free(&d->res);
	d->walk.res = NULL;
}

static void probe_bev_event(struct bufferevent *bev, short what, void *arg)
{
	struct probe_dest *d = arg;
	struct smtpc_timeouts to;
	struct smtpc_params sp;
	struct smtpc_source src;
	struct tlspolicy *pol;
	char err[200];
	/* A second past verify_timeout: the question's own timer must fire
	 * first, so that a primary too slow to answer is marked down
	 * (probe_q_timer), not merely ended by smtpc's step timeout. */
	unsigned ms = (unsigned)(d->timeout > 0 ? d->timeout : 10) * 1000 + 1000;

	if (!(what & BEV_EVENT_CONNECTED)) {
		bufferevent_free(d->bev);
		d->bev = NULL;
		mxwalk_next_addr(&d->walk);
		probe_connect_next(d);
		return;
	}
	d->bev = NULL;
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	/* Every field set: session and min_rate were read uninitialised. */
	smtpc_timeouts_default(&to);
	to.greeting = to.ehlo = to.mail = to.rcpt = to.data = to.block =
	    to.dot = ms;
	memset(&sp, 0, sizeof(sp));
	sp.helo = d->p->cfg->hostname;
	util_strlcpy(d->peer, mxwalk_target(&d->walk)->host, sizeof(d->peer));
	sp.peer = d->peer;
	sp.flags = SMTPC_PROBE;
	sp.timeouts = &to;
	/* Recipient addresses deserve the same protection as mail. */
	pol = xmalloc(sizeof(*pol));
	if (mxwalk_policy(&d->walk) != NULL) {
		*pol = *mxwalk_policy(&d->walk);
		sp.policy = pol;
		sp.tls = tlspolicy_client_ctx();
	} else if (tlspolicy_for_domain(pol, d->p->cfg, d->domain, err,
	    sizeof(err)) == 0) {
		sp.policy = pol;
		sp.tls = tlspolicy_client_ctx();
	}
	memset(&src, 0, sizeof(src));
	src.next = probe_src_next;
	src.rcpt_result = probe_src_rcpt_result;
	src.rcpt_reply = probe_src_rcpt_reply;
	src.msg_done = probe_src_msg_done;
	src.done = probe_src_done;
	d->st = D_SESSION;
	probe_res_free(d);
	d->sc = smtpc_start(d->p->base, bev, &sp, &src, d);
	free(pol);
}

/* 1 if sa is one of our own SMTP listeners (a route back to us). */
static int probe_is_self(const struct config *cfg, const struct sockaddr *sa)
{
	char ip[64], me[300];
	int port = sa->sa_family == AF_INET6 ?
	    ntohs(((const struct sockaddr_in6 *)sa)->sin6_port) :
	    ntohs(((const struct sockaddr_in *)sa)->sin_port);

	util_sockaddr_ip(sa, ip, sizeof(ip));
	for (size_t i = 0; i < cfg->smtp_listen.n; i++) {
		snprintf(me, sizeof(me), sa->sa_family == AF_INET6 ?
		    "[%s]:%d" : "%s:%d", ip, port);
		if (strcasecmp(cfg->smtp_listen.v[i], me) == 0)
			return 1;
	}
	return 0;
}

/* The target's TLS policy is known: connect, or skip the host. */
static void probe_tls_found(void *arg, const struct tlspolicy *pol,
    const char *why)
{
	struct probe_dest *d = arg;

	if (pol == NULL)
		log_info("probe: %s: not using %s: %s", d->key,
		    mxwalk_target(&d->walk)->host, why);
	mxwalk_found(&d->walk, pol);
	probe_connect_next(d);
}

static void probe_connect_next(struct probe_dest *d)
{
	const struct sockaddr *sa;

	while ((sa = mxwalk_addr(&d->walk)) != NULL) {
		if (probe_is_self(d->p->cfg, sa)) {
			mxwalk_next_addr(&d->walk);
			continue;
		}
		if (mxwalk_need_policy(&d->walk, d->p->dns, d->p->cfg,
		    d->domain, d->host[0] != '\0', probe_tls_found, d)) {
			d->st = D_CONNECTING;
			return;
		}
		d->bev = mxwalk_connect(&d->walk, d->p->base,
		    d->timeout > 0 ? (int)d->timeout : 10, probe_bev_event, d);
		if (d->bev != NULL) {
			d->st = D_CONNECTING;
			return;
		}
		mxwalk_next_addr(&d->walk);
	}
	probe_res_free(d);
	probe_dest_down(d, "no primary could be reached");
	probe_conn_gone(d);
	probe_kick_others(d->p);
}

/*
 * RFC 5321 5.1: when this relay is one of the MX hosts, only hosts more
 * preferred than itself are the primary; never ask ourselves.
 */
static void probe_drop_self(const struct config *cfg, struct dns_result *res)
{
	for (size_t i = 0; i < res->ntargets; i++) {
		unsigned pref;
		size_t keep = 0;

		if (strcasecmp(res->targets[i].host, cfg->hostname) != 0)
			continue;
		pref = res->targets[i].pref;
		for (size_t j = 0; j < res->ntargets; j++)
			if (res->targets[j].pref < pref)
				res->targets[keep++] = res->targets[j];
		res->ntargets = keep;
		return;
	}
}

static void probe_dns_done(void *arg, struct dns_result *res)
{
	struct probe_dest *d = arg;

	d->dns = NULL;
	d->res = res;
	if (res->status != DNS_OK) {
		probe_res_free(d);
		probe_dest_down(d, "lookup of the primary failed");
		probe_conn_gone(d);
		probe_kick_others(d->p);
		return;
	}
	if (d->host[0] == '\0')
		probe_drop_self(d->p->cfg, res);
	/* policies found for the previous answer's hosts go */
	mxwalk_start(&d->walk, res);
	probe_connect_next(d);
}

/* Start a connection if questions wait and none runs. */
static void probe_kick(struct probe_dest *d)
{
	struct probe *p = d->p;

	if (TAILQ_EMPTY(&d->wait))
		return;
	if (d->st == D_SESSION) {
		smtpc_wake(d->sc);
		return;
	}
	if (d->st != D_NONE || p->nconns >= PROBE_MAX_CONNS)
		return;		/* connecting, or a slot frees later */
	if (p->dns == NULL) {
		probe_dest_down(d, "no resolver");
		return;
	}
	p->nconns++;
	d->st = D_DNS;
	if (d->host[0] != '\0')
		d->dns = dns_resolve_host(p->dns, d->host, d->port,
		    probe_dns_done, d);
	else
		d->dns = dns_resolve_mx(p->dns, d->domain,
		    p->cfg->delivery_port, probe_dns_done, d);
}

/* ---- questions ---- */

static void probe_q_timer(evutil_socket_t fd, short what, void *arg)
{
	struct probe_q *q = arg;
	struct probe_dest *d = q->d;

	(void)fd;
	(void)what;
	if (d == NULL) {
		/* answered at once (the primary is known to be down) */
		struct probe *p = q->owner;

		TAILQ_REMOVE(&p->instant, q, link);
		probe_answer(q, PROBE_UNKNOWN, "the primary is not answering");
		return;
	}
	if (!q->inflight) {
		probe_unwait(d, q);
		probe_answer(q, PROBE_UNKNOWN, "no answer from the primary in time");
		return;
	}
	/* The primary is too slow: drop the connection and what waits. */
	smtpc_free(&d->sc);
	probe_dest_down(d, "no answer from the primary in time");
	probe_conn_gone(d);
	probe_kick_others(d->p);
}

static void probe_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe_dest *d = arg;

	(void)fd;
	(void)what;
	if (d->st != D_SESSION)
		return;
	d->closing = 1;
	smtpc_wake(d->sc);	/* next() says 0: QUIT */
}

static struct probe_dest *probe_dest_get(struct probe *p,
    const struct config_domain *dom)
{
	struct probe_dest *d;
	char key[600];

	/* Per domain even when domains share a primary: each domain's TLS
	 * policy protects its own recipient addresses (the connection is
	 * set up with the policy of the domain that made it). */
	if (dom->route_host != NULL)
		snprintf(key, sizeof(key), "%s:%d for %s", dom->route_host,
		    dom->route_port, dom->name);
	else
		snprintf(key, sizeof(key), "MX of %s", dom->name);
	LIST_FOREACH(d, &p->dests, link)
		if (strcmp(d->key, key) == 0)
			return d;
	d = xcalloc(1, sizeof(*d));
	d->p = p;
	util_strlcpy(d->key, key, sizeof(d->key));
	util_strlcpy(d->domain, dom->name, sizeof(d->domain));
	if (dom->route_host != NULL) {
		util_strlcpy(d->host, dom->route_host, sizeof(d->host));
		d->port = dom->route_port;
	}
	d->idle = evtimer_new(p->base, probe_idle_cb, d);
	TAILQ_INIT(&d->wait);
	LIST_INSERT_HEAD(&p->dests, d, link);
	return d;
}

void probe_ask(struct probe *p, struct config *cfg,
    const struct config_domain *dom, const char *addr, probe_done_fn *fn,
    void *arg)
{
	struct probe_q *q = xcalloc(1, sizeof(*q));
	struct probe_dest *d;
	struct timeval tv = { dom->verify_timeout > 0 ? dom->verify_timeout : 10, 0 };

	if (p->cfg != cfg) {
		config_unref(&p->cfg);
		p->cfg = config_ref(cfg);
	}
	q->owner = p;
	q->fn = fn;
	q->arg = arg;
	util_strlcpy(q->addr, addr, sizeof(q->addr));
	q->timer = evtimer_new(p->base, probe_q_timer, q);
	d = probe_dest_get(p, dom);
	d->timeout = tv.tv_sec;
	if (time(NULL) < d->down_until || strlen(addr) >= sizeof(q->addr)) {
		/* Answered from the loop, never from inside this call. */
		TAILQ_INSERT_HEAD(&p->instant, q, link);
		tv.tv_sec = 0;
		evtimer_add(q->timer, &tv);
		return;
	}
	q->d = d;
	TAILQ_INSERT_TAIL(&d->wait, q, link);
	evtimer_add(q->timer, &tv);
	probe_kick(d);
}

void probe_free(struct probe **pp)
{
	struct probe *p = *pp;
	struct probe_dest *d;
	struct probe_q *q;

	if (p == NULL)
		return;
	while ((d = LIST_FIRST(&p->dests)) != NULL) {
		LIST_REMOVE(d, link);
		dns_req_cancel(&d->dns);
		mxwalk_clear(&d->walk);
		probe_res_free(d);
		if (d->bev != NULL)
			bufferevent_free(d->bev);
		smtpc_free(&d->sc);
		for (size_t i = 0; i < d->nbatch; i++)
			probe_q_free(d->batch[i]);
		while ((q = TAILQ_FIRST(&d->wait)) != NULL) {
			probe_unwait(d, q);
			probe_q_free(q);
		}
		event_free(d->idle);
		free(d);
	}
	while ((q = TAILQ_FIRST(&p->instant)) != NULL) {
		TAILQ_REMOVE(&p->instant, q, link);
		probe_q_free(q);
	}
	config_unref(&p->cfg);
	free(p);
	*pp = NULL;
}
