/*
 * recip - the RCPT verdict from lists, learning and probes (see recip.h).
 *
 * Concurrent RCPTs for one address share one probe: the first miss
 * creates a "pending" entry with a list of waiters; the probe's answer is
 * stored in the cache and given to every waiter still there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "rcache.h"
#include "recip.h"
#include "util.h"
#include "xmalloc.h"

#define RECIP_MAX_PENDING	1000	/* distinct addresses being probed */
#define RECIP_REFRESH_DIV	4	/* re-probe valid entries after ttl/4 */

struct recip_pending;

struct recip_wait {
	struct recip_pending *p;
	LIST_ENTRY(recip_wait) link;	/* p->waiters */
	recip_answer_fn *fn;
	void *arg;
};

struct recip_pending {
	struct recip *r;
	LIST_ENTRY(recip_pending) link;	/* r->pending */
	char domain[RCACHE_DOMAIN_MAX + 1];
	char addr[RCACHE_ADDR_MAX + 1];
	int verify_unknown;
	long pos_ttl, neg_ttl;
	LIST_HEAD(, recip_wait) waiters;
};

struct recip {
	struct event_base *base;
	struct config *cfg;
	struct rcache *cache;
	struct probe *probe;
	LIST_HEAD(, recip_pending) pending;
	size_t npending;
};

struct recip *recip_new(struct event_base *base, struct config *cfg,
    struct rcache *cache, struct dns *dns)
{
	struct recip *r = xcalloc(1, sizeof(*r));

	r->base = base;
	r->cfg = config_ref(cfg);
	r->cache = cache;
	r->probe = probe_new(base, dns);
	return r;
}

void recip_reload(struct recip *r, struct config *cfg)
{
	config_unref(&r->cfg);
	r->cfg = config_ref(cfg);
	if (r->cache != NULL)
		rcache_set_max(r->cache, cfg->verify_cache_size);
}

static void recip_pending_free(struct recip_pending *p)
{
	struct recip_wait *w;

	while ((w = LIST_FIRST(&p->waiters)) != NULL) {
		LIST_REMOVE(w, link);
		free(w);	/* recip_free only: their sessions are gone */
	}
	LIST_REMOVE(p, link);
	p->r->npending--;
	free(p);
}

void recip_free(struct recip **rp)
{
	struct recip *r = *rp;

	if (r == NULL)
		return;
	probe_free(&r->probe);		/* no more answers */
	while (!LIST_EMPTY(&r->pending))
		recip_pending_free(LIST_FIRST(&r->pending));
	config_unref(&r->cfg);
	free(r);
	*rp = NULL;
}

struct rcache *recip_cache(struct recip *r)
{
	return r != NULL ? r->cache : NULL;
}

void recip_cancel(struct recip_wait **wp)
{
	struct recip_wait *w = *wp;

	if (w == NULL)
		return;
	LIST_REMOVE(w, link);
	free(w);
	*wp = NULL;
}

/* Printable ASCII only, bounded: remote text goes into our replies. */
static void recip_clean(char *dst, size_t size, const char *src)
{
	size_t n = 0;

	for (; *src != '\0' && n + 1 < size; src++)
		dst[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
	dst[n] = '\0';
}

/* The text of a reply without its code and enhanced status code. */
static const char *recip_reply_text(const char *text)
{
	const char *p = text;

	if (strlen(p) >= 3 && p[0] >= '2' && p[0] <= '5' &&
	    p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
	    (p[3] == ' ' || p[3] == '-' || p[3] == '\0'))
		p += p[3] == '\0' ? 3 : 4;
	if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.') {
		const char *q = p + 2;

		while (*q >= '0' && *q <= '9')
			q++;
		if (*q == '.') {
			q++;
			while (*q >= '0' && *q <= '9')
				q++;
			if (*q == ' ' || *q == '\0')
				p = *q == ' ' ? q + 1 : q;
		}
	}
	return p;
}

/* The enhanced status code at the start of text (after "NNN "), or "". */
static void recip_status(const char *text, char *buf, size_t size)
{
	const char *p = text, *q;

	buf[0] = '\0';
	if (strlen(p) < 4 || p[3] != ' ')
		return;
	p += 4;
	if ((p[0] != '4' && p[0] != '5') || p[1] != '.')
		return;
	q = p + 2;
	while (*q >= '0' && *q <= '9')
		q++;
	if (*q != '.' || q == p + 2)
		return;
	q++;
	if (!(*q >= '0' && *q <= '9'))
		return;
	while (*q >= '0' && *q <= '9')
		q++;
	if (*q != ' ' && *q != '\0')
		return;
	if ((size_t)(q - p) < size) {
		memcpy(buf, p, (size_t)(q - p));
		buf[q - p] = '\0';
	}
}

int recip_no_such_user(int code, const char *text)
{
	char st[32];

	if (code < 500 || code > 599)
		return 0;
	recip_status(text != NULL ? text : "", st, sizeof(st));
	if (st[0] == '\0')
		return code == 550 || code == 551 || code == 553;
	return strcmp(st, "5.1.1") == 0 || strcmp(st, "5.1.0") == 0 ||
	    strcmp(st, "5.1.6") == 0;
}

void recip_learn(struct recip *r, const char *domain, const char *addr,
    int code, const char *text)
{
	const struct config_domain *dom;
	time_t now = time(NULL);

	if (r == NULL || r->cache == NULL ||
	    (dom = config_domain_by_name(r->cfg, domain)) == NULL ||
	    !dom->recipients_learn)
		return;
	/* A listed address is judged by the list alone. */
	if (dom->has_recipient_list && config_recipient_allowed(dom, addr))
		return;
	if (code >= 200 && code <= 299) {
		rcache_store(r->cache, dom->name, addr, RCACHE_VALID,
		    RCACHE_SRC_LEARNED, now + dom->learn_ttl, NULL, NULL, NULL);
		metrics_inc(METRIC_RCPT_LEARNED_VALID, dom->name);
	} else if (recip_no_such_user(code, text)) {
		char clean[RCACHE_TEXT_MAX + 1];

		recip_clean(clean, sizeof(clean), recip_reply_text(text));
		rcache_store(r->cache, dom->name, addr, RCACHE_INVALID,
		    RCACHE_SRC_LEARNED, now + dom->learn_negative_ttl, clean,
		    NULL, NULL);
		metrics_inc(METRIC_RCPT_LEARNED_INVALID, dom->name);
		log_info("recip: %s learned invalid (%d)", dom->name, code);
	}
}

static void recip_refusal(char *reply, size_t replylen, const char *addr,
    const char *text, const char *why)
{
	char a[300], t[RCACHE_TEXT_MAX + 1];

	recip_clean(a, sizeof(a), addr);
	recip_clean(t, sizeof(t), text != NULL ? text : "");
	if (t[0] != '\0')
		snprintf(reply, replylen, "550 5.1.1 <%s>: %s", a, t);
	else
		snprintf(reply, replylen, "550 5.1.1 <%s>: Recipient address "
		    "rejected: User unknown%s", a, why);
}

void recip_format_refusal(const char *addr, const char *primary_reply,
    char *reply, size_t replylen)
{
	char clean[RCACHE_TEXT_MAX + 1];

	recip_clean(clean, sizeof(clean),
	    recip_reply_text(primary_reply != NULL ? primary_reply : ""));
	recip_refusal(reply, replylen, addr, clean, "");
}

static void recip_unknown_reply(char *reply, size_t replylen, const char *addr)
{
	char a[300];

	recip_clean(a, sizeof(a), addr);
	snprintf(reply, replylen, "450 4.1.1 <%s>: Recipient address "
	    "verification failed: the primary server did not answer, try "
	    "again later", a);
}

/* The probe answered (or could not): remember, then answer the waiters. */
static void recip_probe_done(void *arg, int result, const char *text)
{
	struct recip_pending *p = arg;
	struct recip *r = p->r;
	struct rcache_entry e;
	char reply[RECIP_REPLY_MAX], clean[RCACHE_TEXT_MAX + 1];
	time_t now = time(NULL);
	int verdict = RECIP_ACCEPT;

	reply[0] = '\0';
	switch (result) {
	case PROBE_VALID:
		metrics_inc(METRIC_RCPT_PROBE, "valid");
		rcache_store(r->cache, p->domain, p->addr, RCACHE_VALID,
		    RCACHE_SRC_PROBE, now + p->pos_ttl, NULL, NULL, NULL);
		break;
	case PROBE_INVALID:
		metrics_inc(METRIC_RCPT_PROBE, "invalid");
		recip_clean(clean, sizeof(clean), recip_reply_text(text ? text : ""));
		rcache_store(r->cache, p->domain, p->addr, RCACHE_INVALID,
		    RCACHE_SRC_PROBE, now + p->neg_ttl, clean, NULL, NULL);
		verdict = RECIP_REFUSE;
		recip_format_refusal(p->addr, text, reply, sizeof(reply));
		break;
	default:
		metrics_inc(METRIC_RCPT_PROBE, "unknown");
		/* Ever seen valid and not expired: a backup MX must take it. */
		if (rcache_lookup(r->cache, p->domain, p->addr, &e) == 1 &&
		    e.state == RCACHE_VALID && e.expires > now)
			break;
		if (p->verify_unknown) {
			verdict = RECIP_REFUSE;
			recip_unknown_reply(reply, sizeof(reply), p->addr);
		}
		break;
	}
	log_info("recip: probe %s: %s", p->domain, result == PROBE_VALID ?
	    "valid" : result == PROBE_INVALID ? "invalid" : "unknown");
	while (!LIST_EMPTY(&p->waiters)) {
		struct recip_wait *w = LIST_FIRST(&p->waiters);

		/* Unlinked first: fn may cancel or add other waiters. */
		LIST_REMOVE(w, link);
		if (verdict == RECIP_REFUSE)
			metrics_inc(METRIC_RCPT_REFUSED,
			    result == PROBE_INVALID ? "probe" : "tempfail");
		w->fn(w->arg, verdict, reply);
		free(w);
	}
	recip_pending_free(p);
}

/* Join (or start) the probe for addr; NULL when too many are running. */
static struct recip_pending *recip_probe(struct recip *r,
    const struct config_domain *dom, const char *addr)
{
	struct recip_pending *p;

	LIST_FOREACH(p, &r->pending, link)
		if (strcmp(p->domain, dom->name) == 0 &&
		    strcasecmp(p->addr, addr) == 0)
			return p;
	if (r->npending >= RECIP_MAX_PENDING || strlen(addr) > RCACHE_ADDR_MAX ||
	    strlen(dom->name) > RCACHE_DOMAIN_MAX)
		return NULL;
	p = xcalloc(1, sizeof(*p));
	p->r = r;
	util_strlcpy(p->domain, dom->name, sizeof(p->domain));
	util_strlcpy(p->addr, addr, sizeof(p->addr));
	p->verify_unknown = dom->verify_unknown;
	p->pos_ttl = dom->verify_positive_ttl;
	p->neg_ttl = dom->verify_negative_ttl;
	LIST_INSERT_HEAD(&r->pending, p, link);
	r->npending++;
	probe_ask(r->probe, r->cfg, dom, addr, recip_probe_done, p);
	return p;
}

static int recip_check_probe(struct recip *r, const struct config_domain *dom,
    const char *addr, char *reply, size_t replylen, recip_answer_fn *fn,
    void *arg, struct recip_wait **wp)
{
	struct rcache_entry e;
	struct recip_pending *p;
	struct recip_wait *w;
	time_t now = time(NULL);
	int found;

	found = rcache_lookup(r->cache, dom->name, addr, &e);
	if (found == 1 && e.expires > now) {
		metrics_inc(METRIC_RCPT_CACHE, "hit");
		if (e.state == RCACHE_INVALID) {
			metrics_inc(METRIC_RCPT_REFUSED, "probe");
			recip_refusal(reply, replylen, addr, e.text, "");
			return RECIP_REFUSE;
		}
		/* Known valid: answer now; refresh in the background when
		 * old, so the entry does not lapse while the primary is up. */
		if (e.source == RCACHE_SRC_PROBE && now - e.updated >
		    dom->verify_positive_ttl / RECIP_REFRESH_DIV)
			(void)recip_probe(r, dom, addr);
		return RECIP_ACCEPT;
	}
	metrics_inc(METRIC_RCPT_CACHE, "miss");
	if (fn == NULL || wp == NULL || (p = recip_probe(r, dom, addr)) == NULL) {
		/* Cannot wait (or too many probes): as if no answer came. */
		if (dom->verify_unknown) {
			metrics_inc(METRIC_RCPT_REFUSED, "tempfail");
			recip_unknown_reply(reply, replylen, addr);
			return RECIP_REFUSE;
		}
		return RECIP_ACCEPT;
	}
	w = xcalloc(1, sizeof(*w));
	w->p = p;
	w->fn = fn;
	w->arg = arg;
	LIST_INSERT_HEAD(&p->waiters, w, link);
	*wp = w;
	return RECIP_PENDING;
}

int recip_check(struct recip *r, const struct config_domain *dom,
    const char *addr, char *reply, size_t replylen, recip_answer_fn *fn,
    void *arg, struct recip_wait **wp)
{
	struct rcache_entry e;
	int found;

	if (wp != NULL)
		*wp = NULL;
	reply[0] = '\0';
	/* RFC 5321 4.5.1: postmaster at every domain served is accepted,
	 * whatever a list says or a delivery taught. */
	if (strncasecmp(addr, "postmaster@", 11) == 0)
		return RECIP_ACCEPT;
	if (dom->has_recipient_list) {
		/* The list always wins. */
		if (config_recipient_allowed(dom, addr))
			return RECIP_ACCEPT;
		if (!dom->recipients_learn) {
			metrics_inc(METRIC_RCPT_REFUSED, "list");
			snprintf(reply, replylen, "550 5.1.1 Recipient address "
			    "rejected: User unknown");
			return RECIP_REFUSE;
		}
	}
	if (r == NULL || r->cache == NULL)
		return RECIP_ACCEPT;
	if (dom->recipients_learn) {
		found = rcache_lookup(r->cache, dom->name, addr, &e);
		metrics_inc(METRIC_RCPT_CACHE, found == 1 ? "hit" : "miss");
		/* Unknown or expired: accepted (a new employee's first
		 * message must not be lost). */
		if (found == 1 && e.state == RCACHE_INVALID &&
		    e.expires > time(NULL)) {
			metrics_inc(METRIC_RCPT_REFUSED, "learned");
			recip_refusal(reply, replylen, addr, NULL,
			    " (learned from delivery)");
			return RECIP_REFUSE;
		}
		return RECIP_ACCEPT;
	}
	if (dom->verify_probe)
		return recip_check_probe(r, dom, addr, reply, replylen, fn, arg,
		    wp);
	return RECIP_ACCEPT;
}
