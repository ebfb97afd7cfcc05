/*
 * httpsc - HTTPS client requests (see httpsc.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <openssl/ssl.h>

#include "config.h"
#include "httpsc.h"
#include "log.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"

#define HTTPSC_MAX_HEADERS	16384	/* response header octets read */

struct httpsc_ctx {
	char *ca_file;		/* NULL: the system store */
	SSL_CTX *ctx;
	struct httpsc_ctx *next;
};

struct httpsc_req {
	struct httpsc *h;
	struct evhttp_connection *conn;
	struct event *reap;	/* frees conn after the answer */
	httpsc_fn *done;
	void *arg;
	int finished;		/* the answer came (reap pending) */
	int cancelled;
	LIST_ENTRY(httpsc_req) link;	/* h->reqs */
};

struct httpsc {
	struct event_base *base;
	char *what;
	struct evdns_base *dns;	/* created for the first host name */
	struct httpsc_ctx *ctxs;
	LIST_HEAD(, httpsc_req) reqs;
};

struct httpsc *httpsc_new(struct event_base *base, const char *what)
{
	struct httpsc *h = xcalloc(1, sizeof(*h));

	h->base = base;
	h->what = xstrdup(what);
	return h;
}

void httpsc_ctxs_clear(struct httpsc *h)
{
	while (h->ctxs != NULL) {
		struct httpsc_ctx *c = h->ctxs;

		h->ctxs = c->next;
		SSL_CTX_free(c->ctx);	/* requests in flight hold their own */
		free(c->ca_file);
		free(c);
	}
}

SSL_CTX *httpsc_ctx(struct httpsc *h, const char *ca_file)
{
	struct httpsc_ctx *c;
	char err[256];
	SSL_CTX *ctx;

	for (c = h->ctxs; c != NULL; c = c->next)
		if ((c->ca_file == NULL && ca_file == NULL) ||
		    (c->ca_file != NULL && ca_file != NULL &&
		    strcmp(c->ca_file, ca_file) == 0))
			return c->ctx;
	ctx = tls_client_ctx(ca_file, 1, err, sizeof(err));
	if (ctx == NULL) {
		log_error("%s: CA file %s: %s", h->what, ca_file ? ca_file :
		    "(system store)", err);
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	c->ca_file = ca_file ? xstrdup(ca_file) : NULL;
	c->ctx = ctx;
	c->next = h->ctxs;
	h->ctxs = c;
	return ctx;
}

static void httpsc_unlink(struct httpsc_req *r)
{
	LIST_REMOVE(r, link);
}

static void httpsc_req_free(struct httpsc_req *r)
{
	httpsc_unlink(r);
	if (r->conn != NULL)
		evhttp_connection_free(r->conn);	/* no callback */
	if (r->reap != NULL)
		event_free(r->reap);
	free(r);
}

/* A connection cannot be freed inside its own request callback, and
 * libevent 2.1's free-on-completion misses some failure paths: free it
 * from the loop right after. */
static void httpsc_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	httpsc_req_free(arg);
}

static void httpsc_done_cb(struct evhttp_request *req, void *arg)
{
	struct httpsc_req *r = arg;
	struct timeval now = { 0, 0 };
	int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
	const char *ctype = NULL;
	struct evbuffer *body = NULL;

	r->finished = 1;
	if (r->reap == NULL)
		r->reap = evtimer_new(r->h->base, httpsc_reap_cb, r);
	if (r->reap != NULL)
		evtimer_add(r->reap, &now);
	if (req != NULL) {
		ctype = evhttp_find_header(evhttp_request_get_input_headers(req),
		    "Content-Type");
		body = evhttp_request_get_input_buffer(req);
	}
	if (!r->cancelled)
		r->done(r->arg, code, ctype, body);
}

struct httpsc_req *httpsc_request(struct httpsc *h, const struct config *cfg,
    const char *url, const struct httpsc_opts *o, httpsc_fn *done, void *arg)
{
	struct evhttp_uri *uri = NULL;
	struct evhttp_request *req;
	struct evkeyvalq *hdrs;
	struct bufferevent *bev;
	struct httpsc_req *r;
	const char *uhost, *path, *query;
	char host[256], hosthdr[300], target[2048];
	SSL_CTX *ctx;
	SSL *ssl;
	int port;

	if ((uri = evhttp_uri_parse(url)) == NULL ||
	    (uhost = evhttp_uri_get_host(uri)) == NULL || *uhost == '\0') {
		log_error("%s: bad URL %.200s", h->what, url);
		goto fail;
	}
	/* [v6] literals: brackets off for the connection and the name check. */
	if (uhost[0] == '[' && strlen(uhost) < sizeof(host) + 1) {
		util_strlcpy(host, uhost + 1, sizeof(host));
		host[strcspn(host, "]")] = '\0';
	} else if (util_strlcpy(host, uhost, sizeof(host)) < 0)
		goto fail;
	port = evhttp_uri_get_port(uri);
	if (port <= 0)
		port = o->default_port > 0 ? o->default_port : 443;
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	snprintf(target, sizeof(target), "%s%s%s", path && *path ? path : "/",
	    query ? "?" : "", query ? query : "");
	if (port == 443)
		snprintf(hosthdr, sizeof(hosthdr), "%s", uhost);
	else
		snprintf(hosthdr, sizeof(hosthdr), "%s:%d", uhost, port);

	if ((ctx = httpsc_ctx(h, o->ca_file)) == NULL ||
	    (ssl = SSL_new(ctx)) == NULL)
		goto fail;
	if (tls_client_set_host(ssl, host, 1) < 0) {
		SSL_free(ssl);
		goto fail;
	}
	bev = bufferevent_openssl_socket_new(h->base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		goto fail;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	{
		struct in6_addr a6;
		struct in_addr a4;

		/* A host name needs the resolver (never a blocking lookup). */
		if (inet_pton(AF_INET, host, &a4) != 1 &&
		    inet_pton(AF_INET6, host, &a6) != 1 && h->dns == NULL) {
			h->dns = evdns_base_new(h->base,
			    cfg->dns_servers.n ? 0 :
			    EVDNS_BASE_INITIALIZE_NAMESERVERS);
			for (size_t i = 0; h->dns && i < cfg->dns_servers.n; i++)
				evdns_base_nameserver_ip_add(h->dns,
				    cfg->dns_servers.v[i]);
		}
	}
	r = xcalloc(1, sizeof(*r));
	r->h = h;
	r->done = done;
	r->arg = arg;
	r->conn = evhttp_connection_base_bufferevent_new(h->base, h->dns, bev,
	    host, (unsigned short)port);
	if (r->conn == NULL) {
		bufferevent_free(bev);
		free(r);
		goto fail;
	}
	LIST_INSERT_HEAD(&h->reqs, r, link);
	evhttp_connection_set_timeout(r->conn, o->timeout > 0 ? o->timeout : 10);
	evhttp_connection_set_retries(r->conn, 0);
	/* Bounded answers: a peer must not fill our memory. */
	evhttp_connection_set_max_headers_size(r->conn, HTTPSC_MAX_HEADERS);
	if (o->max_body > 0)
		evhttp_connection_set_max_body_size(r->conn, (ev_ssize_t)o->max_body);
	req = evhttp_request_new(httpsc_done_cb, r);
	hdrs = evhttp_request_get_output_headers(req);
	evhttp_add_header(hdrs, "Host", hosthdr);
	if (o->post && o->content_type != NULL)
		evhttp_add_header(hdrs, "Content-Type", o->content_type);
	evhttp_add_header(hdrs, "User-Agent", "odrelay/" OD_VERSION);
	evhttp_add_header(hdrs, "Connection", "close");
	if (o->post && o->body != NULL)
		evbuffer_add(evhttp_request_get_output_buffer(req), o->body,
		    strlen(o->body));
	evhttp_uri_free(uri);
	if (evhttp_make_request(r->conn, req, o->post ? EVHTTP_REQ_POST :
	    EVHTTP_REQ_GET, target) < 0) {
		/* The request is freed by evhttp; the connection is ours. */
		httpsc_req_free(r);
		log_warn("%s: request to %.200s not started", h->what, url);
		return NULL;
	}
	return r;
fail:
	if (uri != NULL)
		evhttp_uri_free(uri);
	return NULL;
}

void httpsc_cancel(struct httpsc_req **rp)
{
	struct httpsc_req *r;

	if (rp == NULL || (r = *rp) == NULL)
		return;
	*rp = NULL;
	if (r->finished) {
		r->cancelled = 1;	/* the reap timer frees it */
		return;
	}
	httpsc_req_free(r);
}

void httpsc_free(struct httpsc **hp)
{
	struct httpsc *h = *hp;

	if (h == NULL)
		return;
	*hp = NULL;
	while (!LIST_EMPTY(&h->reqs))
		httpsc_req_free(LIST_FIRST(&h->reqs));
	if (h->dns != NULL)
		evdns_base_free(h->dns, 0);
	httpsc_ctxs_clear(h);
	free(h->what);
	free(h);
}
