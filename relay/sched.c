/*
 * sched - what to deliver, where and when.
 *
 * - Held domains (hold = yes) move only on ETRN, odrelayctl flush or ATRN
 *   (the ODMR listener uses deliver/ directly).
 * - Non-held recipients (backup-MX domains, bounces to senders' domains)
 *   carry a next_attempt time in the queue's retry index: delivered at
 *   once on arrival, then retried with exponential backoff between
 *   retry_min and retry_max (deliver.c sets the times).
 * - Expiry (queue_lifetime, returned with 5.4.7) and delay_warning
 *   notices: for each distinct age that matters (every lifetime, the
 *   warning delay) a cursor walks the queue in id order, and ids begin
 *   with the arrival second; so each message is read about once per age,
 *   when it reaches it, in slices of a few milliseconds. Nothing walks the
 *   whole queue on a timer. (sched_expiry.c)
 * - ETRN and flush answer from the per-domain counters and read the
 *   domain's ids piece by piece as connections take them.
 *
 * A subdomain a section takes in (ETRN sub.example.org, subdomains = yes)
 * has runs of its own, keyed by node and form, reading the section's
 * index; leases keep two runs from taking one message, and a flush takes
 * up what another delivery had leased once it is free (sched_run_retake).
 *
 * One run per domain at a time (a repeated ETRN starts nothing new); at
 * most max_deliveries_per_dest connections per run and max_deliveries in
 * total. Input: ETRN arguments come from the network, already
 * syntax-checked by smtpd; they are only compared with configured names.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "bounce.h"
#include "config.h"
#include "deliver.h"
#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "mxwalk.h"
#include "queue.h"
#include "sched.h"
#include "qmarks.h"
#include "domstate.h"
#include "selfaddr.h"
#include "tlsfind.h"
#include "tlspolicy.h"
#include "util.h"
#include "xmalloc.h"
#include "sched_private.h"
#include "turnwatch.h"

#define SCHED_TICK_SEC		1	/* retry index scan (reads only what is due) */
#define SCHED_MAX_BATCH		100	/* messages per connection before the next */
#define SCHED_LATER_MAX		600	/* s a flush waits for messages leased elsewhere */

struct sched_ids {
	char **v;
	size_t n, cap;
};

/* One domain's delivery run: DNS, then up to N connections. */
struct sched_run {
	struct sched *s;
	char *domain;		/* destination domain (config name or a sender's) */
	char **ids;		/* messages still to hand to a connection */
	size_t nids, next_id;
	int due_only;		/* retry run: only rcpts that are due */
	int stream;		/* ids read from the domain index as needed */
	int stream_end;		/* the index has no more after `cursor` */
	char cursor[QUEUE_ID_LEN + 1];	/* last id read from the index */
	/* Streamed runs: ids another delivery had leased when offered (a
	 * subdomain's flush beside the section's, an ATRN): offered again
	 * once free, so their other recipients are not left for the next
	 * ETRN; given up after SCHED_LATER_MAX. */
	struct sched_ids later;
	time_t later_since;
	struct dns_req *dns;
	struct dns_result *res;	/* addresses, once resolved */
	size_t conns;		/* connections running */
	int busy, again;	/* re-entry guard: deliver_fail calls back at once */
	int loops;		/* we are the best MX: nowhere to send it */
	int routed;		/* destination from the domain's route, not MX */
	int match;		/* DELIVER_MATCH_*: EXACT for ETRN without '@' */
	/* A node below a section (ETRN sub.example.org, subdomains = yes):
	 * the section whose index is read and whose route is used; domain is
	 * the node. NULL for every other run. */
	char *section;
	LIST_ENTRY(sched_run) link;	/* s->runs */
};

/* One outbound connection attempt walking the address list. */
struct sched_conn {
	struct sched_run *run;
	struct deliver *d;	/* before the connection is made */
	struct deliver *running;	/* after deliver_start, until done */
	struct bufferevent *bev;
	LIST_ENTRY(sched_conn) link;	/* s->conns */
	struct mxwalk walk;	/* position in run->res, TLS policies */
	char peer[300];
	char relay[300];	/* peer for the log: [ip]:port, host[ip]:port */
	char tls_err[300];	/* a host skipped for its TLS policy */
};


static void sched_run_continue(struct sched_run *run);
static void sched_run_maybe_free(struct sched_run *run);

/* A section's run (ETRN, flush) or a destination's retry run. */
static struct sched_run *sched_find_run(struct sched *s, const char *domain)
{
	struct sched_run *r;

	LIST_FOREACH(r, &s->runs, link)
		if (r->section == NULL && strcmp(r->domain, domain) == 0)
			return r;
	return NULL;
}

/*
 * A run that already delivers what ETRN node (match EXACT) or ETRN @node
 * (TREE) in section would: one for the same node that takes at least as
 * much, or a flush of the whole section (not one of its exact domain).
 */
static int sched_node_covered(struct sched *s, const char *section,
    const char *node, int match)
{
	struct sched_run *r;

	LIST_FOREACH(r, &s->runs, link) {
		if (r->section != NULL) {
			if (strcmp(r->section, section) == 0 &&
			    strcmp(r->domain, node) == 0 &&
			    (r->match == match || r->match == DELIVER_MATCH_TREE))
				return 1;
		} else if (!r->due_only && r->match == DELIVER_MATCH_SECTION &&
		    strcmp(r->domain, section) == 0)
			return 1;
	}
	return 0;
}

static int sched_collect_id(void *arg, const char *id)
{
	struct sched_ids *ids = arg;

	if (ids->n == ids->cap) {
		ids->cap = ids->cap ? ids->cap * 2 : 64;
		ids->v = xreallocarray(ids->v, ids->cap, sizeof(*ids->v));
	}
	ids->v[ids->n++] = xstrdup(id);
	return 0;
}

static void sched_ids_free(struct sched_ids *ids)
{
	size_t i;

	for (i = 0; i < ids->n; i++)
		free(ids->v[i]);
	free(ids->v);
	memset(ids, 0, sizeof(*ids));
}

/* ---- connections ---- */

static void sched_conn_unlink(struct sched_conn *c)
{
	LIST_REMOVE(c, link);
}

/* Shutdown: abort a connection; unconfirmed recipients stay queued. */
static void sched_conn_abort(struct sched_conn *c)
{
	sched_conn_unlink(c);
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->d != NULL)
		deliver_free(&c->d);
	if (c->running != NULL)
		deliver_free(&c->running);
	mxwalk_clear(&c->walk);
	c->run->conns--;
	c->run->s->active_conns--;
	free(c);
}

static void sched_conn_done(void *arg, const struct deliver_summary *sum)
{
	struct sched_conn *c = arg;
	struct sched_run *run = c->run;

	log_info("%s: delivery run ended, relay=%s, sent=%u, deferred=%u, bounced=%u, tls=%s, verified=%s, reason=%s",
	    run->domain, c->peer[0] != '\0' ? c->peer : "none",
	    sum->rcpts_sent, sum->rcpts_deferred,
	    sum->rcpts_bounced, sum->tls[0] ? sum->tls : "none",
	    sum->verified[0] ? sum->verified : "no", sum->reason);
	if (sum->tls_result != NULL)
		metrics_inc(METRIC_DELIVERY_TLS, sum->tls_result);
	c->d = NULL;		/* deliver freed itself */
	c->running = NULL;
	sched_conn_unlink(c);
	mxwalk_clear(&c->walk);
	free(c);
	run->s->active_conns--;
	run->conns--;
	sched_run_continue(run);
}

static void sched_conn_try(struct sched_conn *c);

/* The destination's TLS policy (tlspolicy.h) for this session. */
static void sched_conn_tls(struct sched_conn *c, struct deliver *d)
{
	struct tlspolicy *pol;
	char err[200];

	if (mxwalk_policy(&c->walk) != NULL) {
		deliver_set_tls_policy(d, mxwalk_policy(&c->walk));
		return;
	}
	pol = xmalloc(sizeof(*pol));
	/* The configuration was checked when loaded: this cannot fail. */
	if (tlspolicy_for_domain(pol, c->run->s->cfg, c->run->domain, err,
	    sizeof(err)) < 0)
		log_warn("%s: tls policy: %s", c->run->domain, err);
	deliver_set_tls_policy(d, pol);
	free(pol);
}

static void sched_conn_event(struct bufferevent *bev, short what, void *arg)
{
	struct sched_conn *c = arg;

	if (what & BEV_EVENT_CONNECTED) {
		struct deliver *d = c->d;
		const struct dns_target *t = mxwalk_target(&c->walk);

		c->bev = NULL;
		c->d = NULL;
		bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
		/* c stays alive as the done-callback argument. */
		c->running = d;
		deliver_set_relay(d, c->relay, t->host);
		sched_conn_tls(c, d);
		deliver_start(d, bev, 0, c->run->s->client_tls, t->host,
		    sched_conn_done, c);
		return;
	}
	log_info("%s: connect to %s failed: %s", c->run->domain, c->peer,
	    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	bufferevent_free(c->bev);
	c->bev = NULL;
	mxwalk_next_addr(&c->walk);
	sched_conn_try(c);
}

/* The target's TLS policy is known: connect, or skip the host. */
static void sched_conn_tls_found(void *arg, const struct tlspolicy *pol,
    const char *why)
{
	struct sched_conn *c = arg;

	if (pol == NULL) {
		const char *host = mxwalk_target(&c->walk)->host;

		log_info("%s: not using %s: %s", c->run->domain, host, why);
		/* The log line at the end names the host refused last. */
		snprintf(c->peer, sizeof(c->peer), "%s", host);
		snprintf(c->tls_err, sizeof(c->tls_err), "%s", why);
		metrics_inc(METRIC_DELIVERY_TLS, "failed");
	}
	mxwalk_found(&c->walk, pol);
	sched_conn_try(c);
}

/* Try the next address: RFC 5321 5.1, every address of every MX in order. */
static void sched_conn_try(struct sched_conn *c)
{
	struct sched_run *run = c->run;
	const struct sockaddr *sa;

	while ((sa = mxwalk_addr(&c->walk)) != NULL) {
		const struct dns_target *t = mxwalk_target(&c->walk);
		char ip[64];

		if (mxwalk_need_policy(&c->walk, run->s->dns, run->s->cfg,
		    run->domain, run->routed, sched_conn_tls_found, c))
			return;
		util_sockaddr_ip(sa, ip, sizeof(ip));
		/* A 253-octet name with an IPv6 address could be cut: the
		 * log line would show less, nothing else uses it. */
		if (snprintf(c->peer, sizeof(c->peer), "%s[%s]:%d", t->host, ip,
		    mxwalk_port(sa)) < 0)
			c->peer[0] = '\0';
		/* A route given as an address is named by it alone. */
		snprintf(c->relay, sizeof(c->relay), "%s",
		    strcmp(t->host, ip) == 0 ? strchr(c->peer, '[') : c->peer);
		c->bev = mxwalk_connect(&c->walk, run->s->base, 30,
		    sched_conn_event, c);
		if (c->bev != NULL)
			return;
		mxwalk_next_addr(&c->walk);
	}
	/* Every address failed: temporary (RFC 5321 4.5.4.1: retry later). */
	{
		struct deliver *d = c->d;

		c->d = NULL;
		if (c->tls_err[0] != '\0')
			deliver_fail(d, 451, "4.7.5", c->tls_err, sched_conn_done, c);
		else
			deliver_fail(d, 451, "4.4.1", "connection refused or timed out by every MX",
			    sched_conn_done, c);
	}
}

static int sched_run_has_more(const struct sched_run *run)
{
	return run->next_id < run->nids || (run->stream && (!run->stream_end ||
	    run->later.n > 0));
}

/* The index is read: offer again the ids whose lease has ended. */
static void sched_run_retake(struct sched_run *run)
{
	size_t keep = 0;

	if (run->later.n == 0)
		return;
	if (time(NULL) - run->later_since > SCHED_LATER_MAX) {
		log_info("%s: %zu messages still being delivered elsewhere: "
		    "left for the next request", run->domain, run->later.n);
		sched_ids_free(&run->later);
		return;
	}
	if (run->ids == NULL)
		run->ids = xcalloc(SCHED_MAX_BATCH, sizeof(*run->ids));
	for (size_t i = 0; i < run->later.n; i++) {
		if (run->nids < SCHED_MAX_BATCH &&
		    !queue_is_leased(run->s->q, run->later.v[i]))
			run->ids[run->nids++] = run->later.v[i];
		else
			run->later.v[keep++] = run->later.v[i];
	}
	run->later.n = keep;
}

/* A streamed run: the next piece of ids from the domain index, then
 * those that were leased elsewhere. */
static void sched_run_refill(struct sched_run *run)
{
	char ids[SCHED_MAX_BATCH][QUEUE_ID_LEN + 1];
	int n = 0;

	if (!run->stream || run->next_id < run->nids ||
	    (run->stream_end && run->later.n == 0))
		return;
	for (size_t i = 0; i < run->nids; i++)
		free(run->ids[i]);
	run->nids = run->next_id = 0;
	if (!run->stream_end)
		n = queue_domain_ids(run->s->q, run->section != NULL ?
		    run->section : run->domain, run->cursor, ids,
		    SCHED_MAX_BATCH);
	if (n <= 0) {
		run->stream_end = 1;
		sched_run_retake(run);
		return;
	}
	if (run->ids == NULL)
		run->ids = xcalloc(SCHED_MAX_BATCH, sizeof(*run->ids));
	for (int i = 0; i < n; i++)
		run->ids[i] = xstrdup(ids[i]);
	run->nids = (size_t)n;
	memcpy(run->cursor, ids[n - 1], sizeof(run->cursor));
}

/* Hand the next batch of ids to a new connection. Returns 1 if started. */
static int sched_run_start_conn(struct sched_run *run)
{
	struct sched *s = run->s;
	struct sched_conn *c;
	struct deliver *d;
	const char *domains[1] = { run->domain };
	size_t added = 0, looked = 0;

	sched_run_refill(run);
	if (run->next_id >= run->nids || s->shutting_down)
		return 0;
	d = deliver_new(s->base, s->cfg, s->q, "sched", run->domain);
	deliver_set_match(d, run->match, run->section);
	/* Bounded: ids being delivered elsewhere are skipped, a few at most
	 * per turn; the tick comes back for the rest. */
	while (added < SCHED_MAX_BATCH && looked < 4 * SCHED_MAX_BATCH) {
		int rc;

		if (run->next_id >= run->nids) {
			sched_run_refill(run);
			if (run->next_id >= run->nids)
				break;
		}
		rc = deliver_add(d, run->ids[run->next_id], domains, 1);
		if (rc == QUEUE_EBUSY && run->stream) {
			if (run->later.n == 0)
				run->later_since = time(NULL);
			sched_collect_id(&run->later, run->ids[run->next_id]);
		}
		run->next_id++;
		looked++;
		if (rc == 1)
			added++;
	}
	if (added == 0) {
		deliver_free(&d);
		return 0;
	}
	c = xcalloc(1, sizeof(*c));
	c->run = run;
	c->d = d;
	mxwalk_start(&c->walk, run->res);
	LIST_INSERT_HEAD(&s->conns, c, link);
	run->conns++;
	s->active_conns++;
	if (run->loops) {
		c->d = NULL;
		deliver_fail(d, 451, "4.4.6", "MX or route points back to this "
		    "relay (configuration error); mail kept", sched_conn_done, c);
		return 1;
	}
	if (run->res->status != DNS_OK) {
		int perm = run->res->status != DNS_TEMPFAIL;

		c->d = NULL;
		deliver_fail(d, perm ? 550 : 451,
		    run->res->status == DNS_NULLMX ? "5.1.10" : perm ? "5.1.2" : "4.4.3",
		    run->res->status == DNS_NULLMX ? "recipient domain has a null MX" :
		    perm ? "recipient domain not found" : "temporary DNS failure",
		    sched_conn_done, c);
		return 1;
	}
	sched_conn_try(c);
	return 1;
}

static void sched_run_continue(struct sched_run *run)
{
	struct sched *s = run->s;

	if (run->res == NULL)
		return;
	if (run->busy) {
		run->again = 1;
		return;
	}
	run->busy = 1;
	do {
		run->again = 0;
		while (run->conns < s->cfg->max_deliveries_per_dest &&
		    s->active_conns < s->cfg->max_deliveries &&
		    sched_run_has_more(run)) {
			if (!sched_run_start_conn(run))
				break;
		}
	} while (run->again);
	run->busy = 0;
	sched_run_maybe_free(run);
}

static void sched_run_free(struct sched_run *run)
{
	size_t i;

	LIST_REMOVE(run, link);
	if (run->dns != NULL)
		dns_req_cancel(&run->dns);
	if (run->res != NULL)
		dns_result_free(&run->res);
	for (i = 0; i < run->nids; i++)
		free(run->ids[i]);
	free(run->ids);
	sched_ids_free(&run->later);
	free(run->domain);
	free(run->section);
	free(run);
}

static void sched_run_maybe_free(struct sched_run *run)
{
	/* Keep it while connections run, DNS is pending, or ids wait for a
	 * free connection slot (the tick continues it). A repeated ETRN during
	 * the run started nothing new (RFC 1985 via spec.md), so there is no
	 * re-run: deferred mail waits for the next request. */
	if (run->conns > 0 || run->res == NULL)
		return;
	if (sched_run_has_more(run) && !run->s->shutting_down)
		return;
	sched_run_free(run);
}

/*
 * RFC 5321 5.1: when this relay is one of the MX hosts (a backup MX), only
 * hosts more preferred than itself may be tried; if none is, the mail
 * would loop back here.
 */
static void sched_drop_self(struct sched_run *run, struct dns_result *res)
{
	const char *self = run->s->cfg->hostname;
	struct selfaddr *own = selfaddr_new(run->s->cfg);
	char ip[INET6_ADDRSTRLEN] = "", host[256] = "";
	unsigned pref = 0;
	int found = 0;
	size_t keep = 0;

	/* By name (hostname) or by address: an MX name that differs from
	 * hostname may still resolve to our listener (issue 17). */
	for (size_t i = 0; i < res->ntargets; i++) {
		const struct dns_target *t = &res->targets[i];
		int is = strcasecmp(t->host, self) == 0;
		char tip[INET6_ADDRSTRLEN] = "";

		for (size_t k = 0; k < t->naddrs; k++) {
			const struct sockaddr *sa = (const struct sockaddr *)&t->addrs[k];

			if (selfaddr_is_self(own, sa)) {
				util_sockaddr_ip(sa, tip, sizeof(tip));
				is = 1;
				break;
			}
		}
		if (is && (!found || t->pref < pref)) {
			found = 1;
			pref = t->pref;
			util_strlcpy(host, t->host, sizeof(host));
			util_strlcpy(ip, tip, sizeof(ip));
		}
	}
	selfaddr_free(&own);
	if (!found)
		return;
	for (size_t j = 0; j < res->ntargets; j++)
		if (!run->routed && res->targets[j].pref < pref)
			res->targets[keep++] = res->targets[j];
	res->ntargets = keep;
	if (res->ntargets > 0) {
		log_info("%s: MX %s is this relay: only more preferred hosts "
		    "are tried", run->domain, host);
		return;
	}
	run->loops = 1;
	log_warn("%s: configuration error: %s %s%s%s%s points back to this "
	    "relay; mail deferred, not delivered (check the domain's MX or "
	    "route, hostname and proxy_interfaces)", run->domain,
	    run->routed ? "route" : "MX", host, ip[0] ? " [" : "", ip,
	    ip[0] ? "]" : "");
}

static void sched_dns_done(void *arg, struct dns_result *res)
{
	struct sched_run *run = arg;

	run->dns = NULL;
	run->res = res;
	if (res->status == DNS_OK)
		sched_drop_self(run, res);
	if (res->status != DNS_OK)
		log_info("%s: lookup failed: %s", run->domain, dns_status_str(res->status));
	sched_run_continue(run);
}

/*
 * Start a run for domain over ids (taken). section: NULL, or the section
 * that takes in domain, a node below it (sched_run.section). The
 * destination is the configured route (the section's for a node), else
 * the domain's MX (the node's, as ETRN example.org uses example.org's).
 */
static struct sched_run *sched_start_run(struct sched *s, const char *domain,
    const struct config_domain *section, struct sched_ids *ids, int due_only,
    int match)
{
	const struct config_domain *cd = section != NULL ? section :
	    config_domain_by_name(s->cfg, domain);
	struct sched_run *run;

	run = xcalloc(1, sizeof(*run));
	run->s = s;
	run->domain = xstrdup(domain);
	run->section = section != NULL ? xstrdup(section->name) : NULL;
	run->ids = ids->v;
	run->nids = ids->n;
	run->due_only = due_only;
	run->match = match;	/* before DNS: its answer may come at once */
	memset(ids, 0, sizeof(*ids));
	LIST_INSERT_HEAD(&s->runs, run, link);
	run->routed = cd != NULL && cd->route_host != NULL;
	if (run->routed)
		run->dns = dns_resolve_host(s->dns, cd->route_host, cd->route_port,
		    sched_dns_done, run);
	else
		run->dns = dns_resolve_mx(s->dns, domain, s->cfg->delivery_port,
		    sched_dns_done, run);
	return run;
}

/* ---- ETRN / flush ---- */

static int sched_etrn_rate_ok(struct sched *s, const char *ip)
{
	return util_rate_take(s->etrn, SCHED_ETRN_SLOTS, ip, s->cfg->etrn_rate);
}

/*
 * Messages in section's index with a queued recipient that node matches
 * (deliver_set_match): a read of the section's index, not of the queue.
 */
static long sched_count_match(struct sched *s, const char *section,
    const char *node, int match)
{
	char ids[SCHED_MAX_BATCH][QUEUE_ID_LEN + 1], after[QUEUE_ID_LEN + 1] = "";
	long count = 0;
	int n;

	while ((n = queue_domain_ids(s->q, section, after, ids,
	    SCHED_MAX_BATCH)) > 0) {
		for (int i = 0; i < n; i++) {
			struct queue_envelope *env = NULL;

			if (queue_get(s->q, ids[i], &env) == 1 &&
			    deliver_env_has(env, node, match, section))
				count++;
			queue_envelope_free(&env);
		}
		memcpy(after, ids[n - 1], sizeof(after));
		if (n < SCHED_MAX_BATCH)
			break;
	}
	return count;
}

/*
 * Flush one configured domain; exact (ETRN without '@', RFC 1985): the
 * domain itself, not the subdomains its section takes in. Returns the
 * number of messages started, 0 for none waiting, -1 when a run is
 * already going (nothing new started).
 */
static long sched_flush_one(struct sched *s, const struct config_domain *cd,
    int exact)
{
	struct sched_ids ids = { 0 };
	struct queue_domain_stats st;
	struct sched_run *run;

	if ((run = sched_find_run(s, cd->name)) != NULL) {
		return -1;
	}
	exact = exact && cd->subdomains;
	if (exact) {
		/* The domain's counter includes its subdomains: count the
		 * messages for the domain itself (a read of its index). */
		long n = sched_count_match(s, cd->name, cd->name,
		    DELIVER_MATCH_EXACT);

		if (n > 0)
			sched_start_run(s, cd->name, NULL, &ids, 0,
			    DELIVER_MATCH_EXACT)->stream = 1;
		return n;
	}
	/* O(1): the count from the domain's counter; the ids are read as
	 * connections take them (sched_run_refill). */
	if (queue_domain_stats(s->q, cd->name, &st) != QUEUE_OK ||
	    st.messages == 0)
		return 0;
	run = sched_start_run(s, cd->name, NULL, &ids, 0, DELIVER_MATCH_SECTION);
	run->stream = 1;
	return st.messages > LONG_MAX ? LONG_MAX : (long)st.messages;
}

/*
 * The section that takes in node's mail when node is below it: the
 * nearest parent section with subdomains = yes (config_find_domain's
 * rule, without node's own section). Hash lookups label by label.
 */
static const struct config_domain *sched_node_section(const struct config *cfg,
    const char *node)
{
	const struct config_domain *cd;
	const char *p;

	for (p = strchr(node, '.'); p != NULL && p[1] != '\0';
	    p = strchr(p + 1, '.'))
		if ((cd = config_domain_by_name(cfg, p + 1)) != NULL &&
		    cd->subdomains)
			return cd;
	return NULL;
}

/*
 * Flush the mail for node held under section cd: EXACT, node itself;
 * TREE, node and below. Only those recipients go, to the section's route
 * or node's MX. Returns as sched_flush_one.
 */
static long sched_flush_node(struct sched *s, const struct config_domain *cd,
    const char *node, int match)
{
	struct sched_ids ids = { 0 };
	long n;

	if (sched_node_covered(s, cd->name, node, match))
		return -1;
	/* The section's counter includes its other domains: count in its
	 * index, as for ETRN example.org (sched_flush_one). */
	n = sched_count_match(s, cd->name, node, match);
	if (n > 0)
		sched_start_run(s, node, cd, &ids, 0, match)->stream = 1;
	return n;
}

/*
 * The flush of one ETRN node (RFC 1985 forms: "domain", "@domain",
 * "#queue"), shared by ETRN and odrelayctl flush; etrn_only: sections
 * with etrn = no are not matched (the operator's flush ignores it).
 * Adds the messages started to *total; *running when a run already
 * covers part of it; returns whether any section matched.
 */
static int sched_node_flush(struct sched *s, const char *node, int etrn_only,
    long *total, int *running)
{
	char name[256];
	long n;
	int matched = 0;
	size_t i;

	if (node[0] == '@' || node[0] == '#')
		util_strlcpy(name, node + 1, sizeof(name));
	else
		util_strlcpy(name, node, sizeof(name));
	util_lowercase(name);
	if (name[0] != '\0' && name[strlen(name) - 1] == '.')
		name[strlen(name) - 1] = '\0';

	if (node[0] != '@') {
		/* The exact forms: one lookup, not a walk of every section. */
		const struct config_domain *cd = config_domain_by_name(s->cfg, name);

		if (cd != NULL && strcmp(cd->name, name) == 0) {
			if ((cd->etrn || !etrn_only)) {
				matched = 1;
				domstate_note_now(cd->name, DOMSTATE_ETRN);
				/* ETRN domain: the domain itself (RFC 1985);
				 * #queue: the whole section */
				n = sched_flush_one(s, cd, node[0] != '#');
				if (n < 0)
					*running = 1;
				else
					*total += n;
			}
		} else if (node[0] != '#' &&
		    (cd = sched_node_section(s->cfg, name)) != NULL && (cd->etrn || !etrn_only)) {
			/* A node its parent's section takes in: its own mail
			 * (the lookups go up label by label) */
			matched = 1;
			domstate_note_now(cd->name, DOMSTATE_ETRN);
			n = sched_flush_node(s, cd, name, DELIVER_MATCH_EXACT);
			if (n < 0)
				*running = 1;
			else
				*total += n;
		}
	}
	if (node[0] == '@') {
		/* Mail for node and below that a parent's section took in
		 * (sections at or below node are flushed whole below). */
		const struct config_domain *cd = sched_node_section(s->cfg, name);

		if (cd != NULL && (cd->etrn || !etrn_only)) {
			matched = 1;
			domstate_note_now(cd->name, DOMSTATE_ETRN);
			n = sched_flush_node(s, cd, name, DELIVER_MATCH_TREE);
			if (n < 0)
				*running = 1;
			else
				*total += n;
		}
	}
	if (node[0] == '@') {
		/* The sections at or below node, whole labels: from the
		 * configuration's label index, not a walk of every section. */
		size_t *idx, k = config_domains_under(s->cfg, name, &idx);

		for (i = 0; i < k; i++) {
			const struct config_domain *cd = &s->cfg->domains[idx[i]];

			if (!(cd->etrn || !etrn_only))
				continue;
			matched = 1;
			domstate_note_now(cd->name, DOMSTATE_ETRN);
			n = sched_flush_one(s, cd, 0);
			if (n < 0)
				*running = 1;
			else
				*total += n;
		}
		free(idx);
	}
	return matched;
}

void sched_etrn(void *arg, const char *client_ip, const char *node,
    char *reply, size_t replylen)
{
	struct sched *s = arg;
	long total = 0;
	int running = 0, matched;

	if (s->shutting_down) {
		snprintf(reply, replylen, "458 4.3.2 Unable to queue messages for node %.255s", node);
		return;
	}
	if (!sched_etrn_rate_ok(s, client_ip)) {
		metrics_inc(METRIC_ETRN, "rate-limited");
		log_info("etrn: client=[%s], node=%.100s, result=rate-limited", client_ip, node);
		snprintf(reply, replylen, "458 4.7.0 Unable to queue messages for node %.255s: too many requests",
		    node);
		return;
	}
	matched = sched_node_flush(s, node, 1, &total, &running);
	if (!matched) {
		metrics_inc(METRIC_ETRN, "refused");
		log_info("etrn: client=[%s], node=%.100s, result=refused", client_ip, node);
		snprintf(reply, replylen, "459 4.7.1 Node %.255s not allowed: not held here", node);
	} else if (total > 0) {
		metrics_inc(METRIC_ETRN, "started");
		log_info("etrn: client=[%s], node=%.100s, result=started, messages=%ld",
		    client_ip, node, total);
		snprintf(reply, replylen, "253 2.0.0 OK, %ld pending messages for node %.255s started",
		    total, node);
	} else if (running) {
		metrics_inc(METRIC_ETRN, "already-running");
		log_info("etrn: client=[%s], node=%.100s, result=already-running", client_ip, node);
		snprintf(reply, replylen, "250 2.0.0 OK, queuing for node %.255s started", node);
	} else {
		metrics_inc(METRIC_ETRN, "empty");
		log_info("etrn: client=[%s], node=%.100s, result=empty", client_ip, node);
		snprintf(reply, replylen, "251 2.0.0 OK, no messages waiting for node %.255s", node);
	}
}

void sched_flush(struct sched *s, const char *node, char *reply, size_t replylen)
{
	long total = 0;
	int running = 0;

	/* The same node forms and the same effect as ETRN (spec: "flush
	 * DOMAIN: same effect as ETRN DOMAIN"), without ETRN's rate limit
	 * and whatever the section's etrn setting says. */
	if (!sched_node_flush(s, node, 0, &total, &running))
		snprintf(reply, replylen, "550 %.255s: not a configured domain", node);
	else if (total > 0)
		snprintf(reply, replylen, "253 %ld messages for %.255s started", total, node);
	else if (running)
		snprintf(reply, replylen, "250 flush of %.255s already running", node);
	else
		snprintf(reply, replylen, "251 no messages waiting for %.255s", node);
	log_info("flush: node=%.100s, source=control, messages=%ld", node, total);
}

/* ---- retries of non-held mail ---- */

struct sched_due {
	struct sched *s;
	time_t now;
	/* destination domain -> ids, small linear map */
	char **domains;
	struct sched_ids *ids;
	size_t n;
};

static int sched_due_cb(void *arg, const char *id)
{
	struct sched_due *due = arg;
	struct queue_envelope *env = NULL;
	size_t i, j;

	if (queue_is_leased(due->s->q, id) || queue_get(due->s->q, id, &env) != 1)
		return 0;
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		if (r->state != QUEUE_RCPT_QUEUED || r->next_attempt == 0 ||
		    r->next_attempt > due->now)
			continue;
		for (j = 0; j < due->n; j++)
			if (strcmp(due->domains[j], r->domain) == 0)
				break;
		if (j == due->n) {
			due->domains = xreallocarray(due->domains, due->n + 1, sizeof(char *));
			due->ids = xreallocarray(due->ids, due->n + 1, sizeof(*due->ids));
			due->domains[j] = xstrdup(r->domain);
			memset(&due->ids[j], 0, sizeof(due->ids[j]));
			due->n++;
		}
		if (due->ids[j].n == 0 || strcmp(due->ids[j].v[due->ids[j].n - 1], id) != 0)
			sched_collect_id(&due->ids[j], id);
	}
	queue_envelope_free(&env);
	return 0;
}

static void sched_retry_due(struct sched *s)
{
	struct sched_due due = { s, time(NULL), NULL, NULL, 0 };
	size_t i;

	queue_foreach_due(s->q, due.now, sched_due_cb, &due);
	for (i = 0; i < due.n; i++) {
		struct sched_run *run = sched_find_run(s, due.domains[i]);

		if (run == NULL && !s->shutting_down)
			sched_start_run(s, due.domains[i], NULL, &due.ids[i], 1,
			    DELIVER_MATCH_SECTION);
		sched_ids_free(&due.ids[i]);
		free(due.domains[i]);
	}
	free(due.domains);
	free(due.ids);
}

static void sched_tick(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	struct sched_run *run, *next;

	(void)fd;
	(void)what;
	if (s->shutting_down)
		return;
	/* Runs waiting for a connection slot. */
	turnwatch_begin("tick-runs");
	for (run = LIST_FIRST(&s->runs); run != NULL; run = next) {
		next = LIST_NEXT(run, link);
		sched_run_continue(run);
	}
	turnwatch_end();
	turnwatch_begin("tick-due");
	sched_retry_due(s);
	turnwatch_end();
	turnwatch_begin("expiry");
	sched_expiry_slice(s);
	turnwatch_end();
	turnwatch_begin("tick-space");
	queue_space_recheck(s->q);
	turnwatch_end();
}

void sched_message_added(void *arg, const char *id)
{
	struct sched *s = arg;

	(void)id;
	/* New non-held mail is due now (next_attempt = arrival): one scan of the
	 * retry index picks it up, grouped per destination. */
	if (!s->shutting_down)
		sched_retry_due(s);
}

/* ---- lifecycle ---- */

struct sched *sched_new(struct event_base *base, struct config *cfg,
    struct queue *q, struct dns *dns, SSL_CTX *client_tls)
{
	struct sched *s = xcalloc(1, sizeof(*s));
	struct timeval tv = { SCHED_TICK_SEC, 0 };

	s->base = base;
	s->cfg = config_ref(cfg);
	s->q = q;
	s->dns = dns;
	s->client_tls = client_tls;
	s->tick = event_new(base, -1, EV_PERSIST, sched_tick, s);
	event_add(s->tick, &tv);
	s->expiry_ev = evtimer_new(base, sched_expiry_next, s);
	sched_set_ages(s, NULL);
	sched_marks_load(s);
	return s;
}

void sched_reload(struct sched *s, struct config *cfg)
{
	struct config *old = s->cfg;

	s->cfg = config_ref(cfg);
	/* Lifetimes may have changed: a new age's cursor starts over, and
	 * so does one that a lowered lifetime now applies to. */
	sched_set_ages(s, old);
	config_unref(&old);
}

size_t sched_active(const struct sched *s)
{
	return s->active_conns;
}

void sched_shutdown(struct sched *s)
{
	s->shutting_down = 1;
	if (s->marks_dirty)
		sched_marks_save(s, time(NULL));
	event_del(s->tick);
	event_del(s->expiry_ev);
	while (!LIST_EMPTY(&s->conns))
		sched_conn_abort(LIST_FIRST(&s->conns));
	while (!LIST_EMPTY(&s->runs))
		sched_run_free(LIST_FIRST(&s->runs));
}

void sched_free(struct sched **sp)
{
	struct sched *s = *sp;

	if (s == NULL)
		return;
	if (!s->shutting_down)
		sched_shutdown(s);
	event_free(s->tick);
	event_free(s->expiry_ev);
	sched_agedoms_free(s, s->nages);
	sched_pend_drop(s);
	free(s->ages);
	free(s->marks);
	qmarks_close(&s->qmarks);
	config_unref(&s->cfg);
	free(s);
	*sp = NULL;
}
