/*
 * dnsbl - DNS blocklist checks of SMTP clients.
 *
 * A check holds one dns request per distinct list; each answer's A
 * records are compared with every spec naming that list. A timer bounds
 * the whole check (dnsbl_timeout): what has not answered by then is
 * cancelled and treated as not listed. Completion is reported from a zero
 * timer so that the caller never sees its callback run inside its own
 * call.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <ares.h>
#include <event2/event.h>

#include "config.h"
#include "dns.h"
#include "dnsbl.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "xmalloc.h"

#define DNSBL_LISTS_MAX	32	/* distinct lists per check */
#define DNSBL_ADDRS_MAX	64	/* return codes read from a long answer */

struct dnsbl {
	struct event_base *base;
	struct dns *dns;
};

struct dnsbl_check;

struct dnsbl_q {
	struct dnsbl_check *c;
	struct dns_req *req;		/* NULL once answered */
	struct dns_raw *raw;		/* the same, read whole (see below) */
	char list[DNSBL_NAME_MAX + 1];
	int listed;
};

struct dnsbl_check {
	struct dnsbl *bl;
	char ip[INET6_ADDRSTRLEN];
	struct dnsbl_spec *specs;
	size_t nspecs;
	struct dnsbl_q q[DNSBL_LISTS_MAX];
	size_t nq, pending;
	struct event *timer;		/* dnsbl_timeout, then zero: done */
	int finished;
	void (*done)(void *arg);
	void *arg;
	const char *listed;		/* points into q[].list */
};

/* ---- checks ---- */

struct dnsbl *dnsbl_new(struct event_base *base, struct dns *dns)
{
	struct dnsbl *bl = xcalloc(1, sizeof(*bl));

	bl->base = base;
	bl->dns = dns;
	return bl;
}

void dnsbl_free(struct dnsbl **blp)
{
	free(*blp);
	*blp = NULL;
}

static void dnsbl_finish(struct dnsbl_check *c)
{
	struct timeval zero = { 0, 0 };
	size_t i;

	c->finished = 1;
	for (i = 0; i < c->nq && c->listed == NULL; i++)
		if (c->q[i].listed)
			c->listed = c->q[i].list;
	/* from the loop, never from inside dnsbl_check_start */
	evtimer_add(c->timer, &zero);
}

static void dnsbl_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dnsbl_check *c = arg;
	size_t i;

	(void)fd;
	(void)what;
	if (!c->finished) {
		/* dnsbl_timeout: what is still out counts as not listed */
		for (i = 0; i < c->nq; i++) {
			if (c->q[i].req == NULL && c->q[i].raw == NULL)
				continue;
			dns_req_cancel(&c->q[i].req);
			dns_raw_cancel(&c->q[i].raw);
			log_warn("dnsbl: %s lookup for [%s] timed out, "
			    "not listed", c->q[i].list, c->ip);
			metrics_inc(METRIC_DNSBL_ERRORS, "timeout");
		}
		c->pending = 0;
		dnsbl_finish(c);
		return;
	}
	if (c->done != NULL)
		c->done(c->arg);
}

static void dnsbl_q_done(struct dnsbl_q *q)
{
	struct dnsbl_check *c = q->c;

	if (q->listed) {
		log_info("dnsbl: client [%s] listed by %s", c->ip, q->list);
		metrics_inc(METRIC_DNSBL_HITS, q->list);
	}
	if (--c->pending == 0) {
		evtimer_del(c->timer);
		dnsbl_finish(c);
	}
}

static void dnsbl_code(struct dnsbl_q *q, const uint8_t a[4])
{
	struct dnsbl_check *c = q->c;

	for (size_t j = 0; j < c->nspecs; j++)
		if (strcmp(c->specs[j].list, q->list) == 0 &&
		    dnsbl_spec_match(&c->specs[j], a))
			q->listed = 1;
}

/* The whole answer, when the resolver's result may have been cut. */
static void dnsbl_raw_answer(void *arg, int ok, const unsigned char *msg,
    size_t len)
{
	struct dnsbl_q *q = arg;
	struct ares_addrttl addrs[DNSBL_ADDRS_MAX];
	int n = DNSBL_ADDRS_MAX;

	q->raw = NULL;
	if (ok && len <= INT_MAX &&
	    ares_parse_a_reply(msg, (int)len, NULL, addrs, &n) == ARES_SUCCESS)
		for (int i = 0; i < n && i < DNSBL_ADDRS_MAX && !q->listed; i++) {
			uint8_t a[4];

			memcpy(a, &addrs[i].ipaddr, 4);
			dnsbl_code(q, a);
		}
	dnsbl_q_done(q);
}

static void dnsbl_answer(void *arg, struct dns_result *res)
{
	struct dnsbl_q *q = arg;
	struct dnsbl_check *c = q->c;
	size_t i;

	q->req = NULL;
	if (res->status == DNS_OK) {
		const struct dns_target *t = &res->targets[0];

		for (i = 0; i < t->naddrs && !q->listed; i++) {
			const struct sockaddr_in *sin =
			    (const struct sockaddr_in *)&t->addrs[i];
			uint8_t a[4];

			if (sin->sin_family != AF_INET)
				continue;
			memcpy(a, &sin->sin_addr, 4);
			dnsbl_code(q, a);
		}
		/*
		 * The resolver keeps DNS_MAX_ADDRS addresses of an answer: a
		 * list that returns more codes may have its listing code cut
		 * off. Ask again and read the whole answer (c-ares follows
		 * CNAMEs and keeps only records of the name asked).
		 */
		if (!q->listed && t->naddrs >= DNS_MAX_ADDRS) {
			char name[DNSBL_NAME_MAX + 80];

			dns_result_free(&res);
			if (dnsbl_query_name(c->ip, q->list, name,
			    sizeof(name)) == 0 &&
			    (q->raw = dns_query_raw(c->bl->dns, name, 1 /* A */,
			    0, dnsbl_raw_answer, q)) != NULL)
				return;
			dnsbl_q_done(q);
			return;
		}
	} else if (res->status == DNS_TEMPFAIL) {
		log_warn("dnsbl: %s lookup for [%s] failed (%s), not listed",
		    q->list, c->ip, dns_status_str(res->status));
		metrics_inc(METRIC_DNSBL_ERRORS, "tempfail");
	}
	dns_result_free(&res);
	dnsbl_q_done(q);
}

struct dnsbl_check *dnsbl_check_start(struct dnsbl *bl,
    const struct config *cfg, const char *ip, void (*done)(void *arg),
    void *arg)
{
	struct dnsbl_check *c;
	struct dnsbl_cidr *nets;
	char name[DNSBL_NAME_MAX + 80], err[200];
	struct timeval tv;
	size_t i, j;
	int allowed;

	if (bl == NULL || cfg->dnsbl.n == 0)
		return NULL;
	nets = xcalloc(cfg->dnsbl_allow.n + 1, sizeof(*nets));
	for (i = j = 0; i < cfg->dnsbl_allow.n; i++)
		if (dnsbl_cidr_parse(cfg->dnsbl_allow.v[i], &nets[j]) == 0)
			j++;
	allowed = dnsbl_cidr_match(nets, j, ip);
	free(nets);
	if (allowed)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->bl = bl;
	util_strlcpy(c->ip, ip, sizeof(c->ip));
	c->done = done;
	c->arg = arg;
	c->specs = xcalloc(cfg->dnsbl.n, sizeof(*c->specs));
	for (i = 0; i < cfg->dnsbl.n; i++) {
		if (dnsbl_spec_parse(cfg->dnsbl.v[i], &c->specs[c->nspecs],
		    err, sizeof(err)) < 0)
			continue;	/* config_load already refused it */
		c->nspecs++;
	}
	c->timer = evtimer_new(bl->base, dnsbl_timer_cb, c);
	/* one query per distinct list, in configuration order */
	for (i = 0; i < c->nspecs && c->nq < DNSBL_LISTS_MAX; i++) {
		for (j = 0; j < c->nq; j++)
			if (strcmp(c->q[j].list, c->specs[i].list) == 0)
				break;
		if (j < c->nq)
			continue;
		if (dnsbl_query_name(ip, c->specs[i].list, name,
		    sizeof(name)) < 0)
			continue;
		util_strlcpy(c->q[c->nq].list, c->specs[i].list,
		    sizeof(c->q[c->nq].list));
		c->q[c->nq].c = c;
		c->nq++;
	}
	/* count first: no answer comes back from inside dns_resolve_a */
	for (i = 0; i < c->nq; i++) {
		dnsbl_query_name(ip, c->q[i].list, name, sizeof(name));
		c->q[i].req = dns_resolve_a(bl->dns, name, dnsbl_answer,
		    &c->q[i]);
		if (c->q[i].req != NULL)
			c->pending++;
	}
	if (c->pending == 0) {
		dnsbl_finish(c);
		return c;
	}
	tv.tv_sec = cfg->dnsbl_timeout > 0 ? cfg->dnsbl_timeout : 5;
	tv.tv_usec = 0;
	evtimer_add(c->timer, &tv);
	return c;
}

int dnsbl_check_pending(const struct dnsbl_check *c)
{
	return c != NULL && !c->finished;
}

const char *dnsbl_check_listed(const struct dnsbl_check *c)
{
	return c != NULL && c->finished ? c->listed : NULL;
}

void dnsbl_check_free(struct dnsbl_check **cp)
{
	struct dnsbl_check *c = *cp;
	size_t i;

	if (c == NULL)
		return;
	*cp = NULL;
	for (i = 0; i < c->nq; i++) {
		dns_req_cancel(&c->q[i].req);
		dns_raw_cancel(&c->q[i].raw);
	}
	if (c->timer != NULL)
		event_free(c->timer);
	free(c->specs);
	free(c);
}
