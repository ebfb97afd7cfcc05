/*
 * httpsc - HTTPS requests with libevent's HTTP client over OpenSSL, shared
 * by the arrival webhooks (notify) and the MTA-STS policy fetch (sts).
 *
 * The server's certificate is verified against a CA file or the system
 * store and its name checked. Host names are resolved through evdns with
 * dns_servers (never a blocking lookup). One struct httpsc per user keeps
 * its TLS contexts (one per CA file) and its resolver. Loop thread only.
 */
#ifndef OD_HTTPSC_H
#define OD_HTTPSC_H

#include <stddef.h>
#include <openssl/ssl.h>

struct event_base;
struct evbuffer;
struct config;
struct httpsc;
struct httpsc_req;

/* code: the HTTP status, 0 when there was no answer (connection, TLS,
 * timeout, body too large); ctype the Content-Type or NULL; body may be
 * NULL. Runs once, never from inside httpsc_request. */
typedef void httpsc_fn(void *arg, int code, const char *ctype,
    struct evbuffer *body);

/* what: the user's name for log lines ("notify", "mta-sts"). */
struct httpsc *httpsc_new(struct event_base *base, const char *what);
void httpsc_free(struct httpsc **h);

/* The verifying context for ca_file (NULL: system store), built once;
 * NULL (logged) when the file cannot be loaded. */
SSL_CTX *httpsc_ctx(struct httpsc *h, const char *ca_file);
/* Forget the contexts (reload: CA files may have changed). */
void httpsc_ctxs_clear(struct httpsc *h);

struct httpsc_opts {
	int post;		/* 1 POST, 0 GET */
	int default_port;	/* when the URL has none [443] */
	const char *ca_file;	/* NULL: the system store */
	const char *content_type;	/* POST body's type */
	const char *body;	/* POST body, or NULL */
	size_t max_body;	/* answer bodies above this fail (0: no limit) */
	int timeout;		/* seconds for the whole request */
};

/* Start a request; NULL when it could not even start (bad URL, TLS set-up:
 * logged), done is then never called. */
struct httpsc_req *httpsc_request(struct httpsc *h, const struct config *cfg,
    const char *url, const struct httpsc_opts *o, httpsc_fn *done, void *arg);
/* done will not run; *r = NULL. */
void httpsc_cancel(struct httpsc_req **r);

#endif
