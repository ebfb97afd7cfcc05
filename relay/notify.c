/*
 * notify - arrival webhooks; see notify.h.
 *
 * One record per domain that has had a notification: when the last POST
 * started, a timer for the next one (interval or retry), whether a request
 * is in flight and whether mail arrived since the last POST started.
 * Records are few (domains with a notify_url) and live until notify_free.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "httpsc.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "queue.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"

#define NOTIFY_TIMEOUT		10	/* seconds for a whole request */
/* POSTs in flight at once: each holds a descriptor out of the small
 * reserve fdbudget keeps beside the sessions. */
#define NOTIFY_INFLIGHT_MAX	16
#define NOTIFY_MAX_BODY		65536	/* response body bytes read */
#define NOTIFY_RETRY_MIN	1	/* first retry after a failure */
#define NOTIFY_RETRY_MAX	600	/* retries at most this far apart */
#define NOTIFY_MAX_DOMAINS	4096	/* records kept (bounded memory) */

struct notify_dom {
	struct notify *n;
	char *name;
	time_t last_sent;	/* 0: never */
	struct event *timer;
	struct httpsc_req *req;	/* in flight, or NULL */
	int dirty;		/* mail arrived since the last POST started */
	unsigned failures;	/* in a row */
	struct notify_dom *next;
};

struct notify {
	struct event_base *base;
	struct config *cfg;
	struct queue *q;
	struct httpsc *http;	/* TLS contexts and resolver (shared client) */
	struct notify_dom *doms;
	size_t ndoms;
	size_t inflight;	/* POSTs started and not answered */
};

static void notify_send(struct notify_dom *d);

/* The effective settings of a domain: its own, else the global ones. */
static const char *notify_url_of(const struct config *cfg,
    const struct config_domain *cd, const char **ca_r, long *interval_r)
{
	const char *url = cfg->notify_url;

	*ca_r = cfg->notify_ca_file;
	*interval_r = cfg->notify_interval;
	if (cd != NULL) {
		if (cd->notify_url != NULL)
			url = cd->notify_url;
		if (cd->notify_ca_file != NULL)
			*ca_r = cd->notify_ca_file;
		if (cd->notify_interval > 0)
			*interval_r = cd->notify_interval;
	}
	/* "" (notify_url = in a domain section): off for this domain. */
	return url != NULL && *url != '\0' ? url : NULL;
}

static const char *notify_url_for(const struct config *cfg, const char *dom,
    const char **ca_r, long *interval_r)
{
	return notify_url_of(cfg, config_domain_by_name(cfg, dom), ca_r,
	    interval_r);
}

static void notify_prepare(struct notify *n)
{
	const struct config *cfg = n->cfg;

	/* Contexts are built at start and reload (file reads stay off the
	 * request path); a missing one is built on first use. */
	httpsc_ctxs_clear(n->http);
	if (cfg->notify_url != NULL)
		(void)httpsc_ctx(n->http, cfg->notify_ca_file);
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const char *ca;
		long iv;

		if (notify_url_of(cfg, &cfg->domains[i], &ca, &iv) != NULL)
			(void)httpsc_ctx(n->http, ca);
	}
}

struct notify *notify_new(struct event_base *base, struct config *cfg,
    struct queue *q)
{
	struct notify *n = xcalloc(1, sizeof(*n));

	n->base = base;
	n->cfg = config_ref(cfg);
	n->q = q;
	n->http = httpsc_new(base, "notify");
	notify_prepare(n);
	return n;
}

void notify_reload(struct notify *n, struct config *cfg)
{
	config_unref(&n->cfg);
	n->cfg = config_ref(cfg);
	notify_prepare(n);
}

static struct notify_dom *notify_dom_get(struct notify *n, const char *name)
{
	struct notify_dom *d;

	for (d = n->doms; d != NULL; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	if (n->ndoms >= NOTIFY_MAX_DOMAINS)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->n = n;
	d->name = xstrdup(name);
	d->next = n->doms;
	n->doms = d;
	n->ndoms++;
	return d;
}

static void notify_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	notify_send(arg);
}

static void notify_schedule(struct notify_dom *d, long seconds)
{
	struct timeval tv = { seconds > 0 ? seconds : 0, 0 };

	if (d->timer == NULL)
		d->timer = evtimer_new(d->n->base, notify_timer_cb, d);
	if (!evtimer_pending(d->timer, NULL))
		evtimer_add(d->timer, &tv);
}

/* Oldest arrival among the domain's queued messages (ids are in time
 * order, so the first readable one). */
struct notify_oldest {
	struct queue *q;
	time_t t;
};

static int notify_oldest_cb(void *arg, const char *id)
{
	struct notify_oldest *o = arg;
	struct queue_envelope *env = NULL;

	if (queue_get(o->q, id, &env) != 1)
		return 0;
	o->t = env->arrival;
	queue_envelope_free(&env);
	return 1;
}

/* Count, log and plan a retry: 1 s, 2 s, 4 s ... up to 10 min, while
 * mail waits (notify_send drops it once the domain's mail is gone). */
static void notify_failed(struct notify_dom *d, int code, const char *why)
{
	long delay = NOTIFY_RETRY_MIN;

	d->failures++;
	for (unsigned i = 1; i < d->failures && delay < NOTIFY_RETRY_MAX; i++)
		delay *= 2;
	if (delay > NOTIFY_RETRY_MAX)
		delay = NOTIFY_RETRY_MAX;
	metrics_inc(METRIC_NOTIFY, code == 0 ? "failed" : "http-error");
	if (code != 0)
		log_warn("notify: domain=%s, result=http-error (%d), retry in %lds",
		    d->name, code, delay);
	else
		log_warn("notify: domain=%s, result=failed (%s), retry in %lds",
		    d->name, why ? why : "no HTTP answer: connection, TLS or "
		    "timeout", delay);
	d->dirty = 1;
	notify_schedule(d, delay);
}

static void notify_done(void *arg, int code, const char *ctype,
    struct evbuffer *body)
{
	struct notify_dom *d = arg;
	long iv;
	const char *ca;

	(void)ctype;
	(void)body;
	d->req = NULL;
	if (d->n->inflight > 0)
		d->n->inflight--;
	(void)notify_url_for(d->n->cfg, d->name, &ca, &iv);
	if (code >= 200 && code < 300) {
		d->failures = 0;
		metrics_inc(METRIC_NOTIFY, "ok");
		log_info("notify: domain=%s, result=ok (%d)", d->name, code);
		/* Mail that came meanwhile: one more POST, an interval on. */
		if (d->dirty) {
			long wait = d->last_sent + iv - time(NULL);

			notify_schedule(d, wait);
		}
		return;
	}
	notify_failed(d, code, NULL);
}

/* Start a POST now with the domain's current counts (nothing when its
 * mail has been taken meanwhile). */
static void notify_send(struct notify_dom *d)
{
	struct notify *n = d->n;
	struct queue_domain_stats st;
	struct notify_oldest old = { n->q, 0 };
	struct httpsc_opts o;
	const char *url, *ca;
	char body[600];
	long iv;

	url = notify_url_for(n->cfg, d->name, &ca, &iv);
	if (url == NULL || d->req != NULL)
		return;
	if (n->inflight >= NOTIFY_INFLIGHT_MAX) {
		/* Many domains at once, or endpoints that hang: later. */
		d->dirty = 1;
		notify_schedule(d, 1);
		return;
	}
	if (queue_domain_stats(n->q, d->name, &st) != QUEUE_OK ||
	    st.messages == 0) {
		d->dirty = 0;
		d->failures = 0;
		return;
	}
	(void)queue_foreach_domain(n->q, d->name, notify_oldest_cb, &old);
	snprintf(body, sizeof(body),
	    "{\"event\":\"arrival\",\"domain\":\"%s\",\"messages\":%" PRIu64
	    ",\"bytes\":%" PRIu64 ",\"oldest\":%lld}", d->name, st.messages,
	    st.bytes, (long long)old.t);
	memset(&o, 0, sizeof(o));
	o.post = 1;
	o.default_port = 443;
	o.ca_file = ca;
	o.content_type = "application/json";
	o.body = body;
	/* The answer is only a status: a peer must not fill our memory. */
	o.max_body = NOTIFY_MAX_BODY;
	o.timeout = NOTIFY_TIMEOUT;
	d->last_sent = time(NULL);
	d->dirty = 0;
	d->req = httpsc_request(n->http, n->cfg, url, &o, notify_done, d);
	if (d->req == NULL)
		notify_failed(d, 0, "bad notify_url or TLS setup");
	else
		n->inflight++;
}

void notify_arrived(struct notify *n, const char *domain)
{
	struct notify_dom *d;
	struct queue_domain_stats st;
	const char *ca;
	long iv, since;

	if (notify_url_for(n->cfg, domain, &ca, &iv) == NULL)
		return;
	if ((d = notify_dom_get(n, domain)) == NULL)
		return;
	d->dirty = 1;
	/* A POST in flight or one already planned will carry this mail. */
	if (d->req != NULL || (d->timer != NULL &&
	    evtimer_pending(d->timer, NULL)))
		return;
	since = (long)(time(NULL) - d->last_sent);
	/* None was waiting before this message: tell at once. */
	if (d->last_sent == 0 || since >= iv ||
	    (queue_domain_stats(n->q, domain, &st) == QUEUE_OK &&
	    st.messages <= 1)) {
		notify_send(d);
		return;
	}
	notify_schedule(d, iv - since);
}

void notify_free(struct notify **np)
{
	struct notify *n = *np;

	if (n == NULL)
		return;
	while (n->doms != NULL) {
		struct notify_dom *d = n->doms;

		n->doms = d->next;
		httpsc_cancel(&d->req);
		if (d->timer != NULL)
			event_free(d->timer);
		free(d->name);
		free(d);
	}
	httpsc_free(&n->http);
	config_unref(&n->cfg);
	free(n);
	*np = NULL;
}
