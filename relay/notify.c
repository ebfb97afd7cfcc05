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
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "queue.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"

#define NOTIFY_TIMEOUT		10	/* seconds for a whole request */
#define NOTIFY_MAX_HEADERS	16384	/* response header bytes read */
#define NOTIFY_MAX_BODY		65536	/* response body bytes read */
#define NOTIFY_RETRY_MIN	1	/* first retry after a failure */
#define NOTIFY_RETRY_MAX	600	/* retries at most this far apart */
#define NOTIFY_MAX_DOMAINS	4096	/* records kept (bounded memory) */

struct notify_ctx {		/* one TLS context per CA file */
	char *ca_file;		/* NULL: the system store */
	SSL_CTX *ctx;
	struct notify_ctx *next;
};

struct notify_dom {
	struct notify *n;
	char *name;
	time_t last_sent;	/* 0: never */
	struct event *timer;
	struct evhttp_connection *conn;	/* in flight, or NULL */
	struct evhttp_connection *spent;	/* done, freed by reap */
	struct event *reap;
	int dirty;		/* mail arrived since the last POST started */
	unsigned failures;	/* in a row */
	struct notify_dom *next;
};

struct notify {
	struct event_base *base;
	struct config *cfg;
	struct queue *q;
	struct evdns_base *dns;	/* created for the first host name */
	struct notify_ctx *ctxs;
	struct notify_dom *doms;
	size_t ndoms;
};

static void notify_send(struct notify_dom *d);

/* The effective settings of a domain: its own, else the global ones. */
static const char *notify_url_for(const struct config *cfg, const char *dom,
    const char **ca_r, long *interval_r)
{
	const struct config_domain *cd = config_domain_by_name(cfg, dom);
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

static void notify_ctxs_free(struct notify *n)
{
	while (n->ctxs != NULL) {
		struct notify_ctx *c = n->ctxs;

		n->ctxs = c->next;
		SSL_CTX_free(c->ctx);	/* requests in flight hold their own */
		free(c->ca_file);
		free(c);
	}
}

/* Contexts are built at start and reload (file reads stay off the
 * request path); a missing one is built on first use. */
static SSL_CTX *notify_ctx_get(struct notify *n, const char *ca_file)
{
	struct notify_ctx *c;
	char err[256];
	SSL_CTX *ctx;

	for (c = n->ctxs; c != NULL; c = c->next)
		if ((c->ca_file == NULL && ca_file == NULL) ||
		    (c->ca_file != NULL && ca_file != NULL &&
		    strcmp(c->ca_file, ca_file) == 0))
			return c->ctx;
	ctx = tls_client_ctx(ca_file, 1, err, sizeof(err));
	if (ctx == NULL) {
		log_error("notify: notify_ca_file %s: %s", ca_file ? ca_file :
		    "(system store)", err);
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	c->ca_file = ca_file ? xstrdup(ca_file) : NULL;
	c->ctx = ctx;
	c->next = n->ctxs;
	n->ctxs = c;
	return ctx;
}

static void notify_prepare(struct notify *n)
{
	const struct config *cfg = n->cfg;

	notify_ctxs_free(n);
	if (cfg->notify_url != NULL)
		(void)notify_ctx_get(n, cfg->notify_ca_file);
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const char *ca;
		long iv;

		if (notify_url_for(cfg, cfg->domains[i].name, &ca, &iv) != NULL)
			(void)notify_ctx_get(n, ca);
	}
}

struct notify *notify_new(struct event_base *base, struct config *cfg,
    struct queue *q)
{
	struct notify *n = xcalloc(1, sizeof(*n));

	n->base = base;
	n->cfg = config_ref(cfg);
	n->q = q;
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

/* A connection cannot be freed inside its own request callback; and
 * libevent 2.1's free-on-completion misses some failure paths (seen as
 * leaks): free it from the loop right after. */
static void notify_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct notify_dom *d = arg;

	(void)fd;
	(void)what;
	if (d->spent != NULL)
		evhttp_connection_free(d->spent);
	d->spent = NULL;
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

static void notify_done(struct evhttp_request *req, void *arg)
{
	struct notify_dom *d = arg;
	int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
	long iv;
	const char *ca;

	if (d->spent != NULL)
		evhttp_connection_free(d->spent);
	d->spent = d->conn;
	d->conn = NULL;
	if (d->reap == NULL)
		d->reap = evtimer_new(d->n->base, notify_reap_cb, d);
	{
		struct timeval now = { 0, 0 };

		evtimer_add(d->reap, &now);
	}
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
	struct evhttp_uri *uri = NULL;
	struct evhttp_request *req;
	struct bufferevent *bev;
	const char *url, *ca, *uhost, *path, *query;
	char host[256], hosthdr[300], target[2048];
	SSL_CTX *ctx;
	SSL *ssl;
	long iv;
	int port;

	url = notify_url_for(n->cfg, d->name, &ca, &iv);
	if (url == NULL || d->conn != NULL)
		return;
	if (queue_domain_stats(n->q, d->name, &st) != QUEUE_OK ||
	    st.messages == 0) {
		d->dirty = 0;
		d->failures = 0;
		return;
	}
	(void)queue_foreach_domain(n->q, d->name, notify_oldest_cb, &old);
	if ((uri = evhttp_uri_parse(url)) == NULL ||
	    (uhost = evhttp_uri_get_host(uri)) == NULL || *uhost == '\0') {
		log_error("notify: domain=%s, bad notify_url", d->name);
		goto fail_uri;
	}
	/* [v6] literals: brackets off for the connection and the name check. */
	if (uhost[0] == '[' && strlen(uhost) < sizeof(host) + 1) {
		util_strlcpy(host, uhost + 1, sizeof(host));
		host[strcspn(host, "]")] = '\0';
	} else if (util_strlcpy(host, uhost, sizeof(host)) < 0) {
		goto fail_uri;
	}
	port = evhttp_uri_get_port(uri);
	if (port <= 0)
		port = 443;
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	snprintf(target, sizeof(target), "%s%s%s", path && *path ? path : "/",
	    query ? "?" : "", query ? query : "");
	if (port == 443)
		snprintf(hosthdr, sizeof(hosthdr), "%s", uhost);
	else
		snprintf(hosthdr, sizeof(hosthdr), "%s:%d", uhost, port);

	if ((ctx = notify_ctx_get(n, ca)) == NULL || (ssl = SSL_new(ctx)) == NULL)
		goto fail_uri;
	if (tls_client_set_host(ssl, host, 1) < 0) {
		SSL_free(ssl);
		goto fail_uri;
	}
	bev = bufferevent_openssl_socket_new(n->base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		goto fail_uri;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	{
		struct in6_addr a6;
		struct in_addr a4;

		/* A host name needs the resolver (never a blocking lookup). */
		if (inet_pton(AF_INET, host, &a4) != 1 &&
		    inet_pton(AF_INET6, host, &a6) != 1 && n->dns == NULL) {
			n->dns = evdns_base_new(n->base,
			    n->cfg->dns_servers.n ? 0 :
			    EVDNS_BASE_INITIALIZE_NAMESERVERS);
			for (size_t i = 0; n->dns && i < n->cfg->dns_servers.n; i++)
				evdns_base_nameserver_ip_add(n->dns,
				    n->cfg->dns_servers.v[i]);
		}
	}
	d->conn = evhttp_connection_base_bufferevent_new(n->base, n->dns, bev,
	    host, (unsigned short)port);
	if (d->conn == NULL) {
		bufferevent_free(bev);
		goto fail_uri;
	}
	evhttp_connection_set_timeout(d->conn, NOTIFY_TIMEOUT);
	/* The answer is only a status: a peer must not fill our memory. */
	evhttp_connection_set_max_headers_size(d->conn, NOTIFY_MAX_HEADERS);
	evhttp_connection_set_max_body_size(d->conn, NOTIFY_MAX_BODY);
	evhttp_connection_set_retries(d->conn, 0);
	req = evhttp_request_new(notify_done, d);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host", hosthdr);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/json");
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "User-Agent", "odrelay/" OD_VERSION);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Connection", "close");
	evbuffer_add_printf(evhttp_request_get_output_buffer(req),
	    "{\"event\":\"arrival\",\"domain\":\"%s\",\"messages\":%" PRIu64
	    ",\"bytes\":%" PRIu64 ",\"oldest\":%lld}", d->name, st.messages,
	    st.bytes, (long long)old.t);
	d->last_sent = time(NULL);
	d->dirty = 0;
	evhttp_uri_free(uri);
	if (evhttp_make_request(d->conn, req, EVHTTP_REQ_POST, target) < 0) {
		/* The request is freed by evhttp; the connection is ours. */
		evhttp_connection_free(d->conn);
		d->conn = NULL;
		notify_failed(d, 0, "request not started");
	}
	return;
fail_uri:
	if (uri != NULL)
		evhttp_uri_free(uri);
	notify_failed(d, 0, "bad notify_url or TLS setup");
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
	if (d->conn != NULL || (d->timer != NULL &&
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
		if (d->conn != NULL)
			evhttp_connection_free(d->conn);	/* no callback */
		if (d->spent != NULL)
			evhttp_connection_free(d->spent);
		if (d->timer != NULL)
			event_free(d->timer);
		if (d->reap != NULL)
			event_free(d->reap);
		free(d->name);
		free(d);
	}
	if (n->dns != NULL)
		evdns_base_free(n->dns, 0);
	notify_ctxs_free(n);
	config_unref(&n->cfg);
	free(n);
	*np = NULL;
}
