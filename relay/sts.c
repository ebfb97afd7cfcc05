/*
 * sts - MTA-STS policy discovery, fetch and cache (see sts.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "config.h"
#include "dns.h"
#include "httpsc.h"
#include "log.h"
#include "mtasts.h"
#include "stscache.h"
#include "sts.h"
#include "xmalloc.h"

#define STS_TXT_RRTYPE	16
#define STS_FETCH_TIMEOUT	30	/* seconds for the whole fetch */

struct sts {
	struct event_base *base;
	struct dns *dns;
	struct stscache *cache;
	struct httpsc *http;
};

struct sts_req {
	struct sts *s;
	struct config *cfg;	/* referenced */
	char domain[256];
	char id[STSCACHE_ID_MAX + 1];
	struct dns_raw *q;
	struct httpsc_req *h;
	sts_fn *done;
	void *arg;
	struct mtasts_policy pol;
};

struct sts *sts_new(struct event_base *base, struct dns *dns,
    struct stscache *cache)
{
	struct sts *s = xcalloc(1, sizeof(*s));

	s->base = base;
	s->dns = dns;
	s->cache = cache;
	s->http = httpsc_new(base, "mta-sts");
	return s;
}

void sts_free(struct sts **sp)
{
	if (sp == NULL || *sp == NULL)
		return;
	httpsc_free(&(*sp)->http);
	free(*sp);
	*sp = NULL;
}

static void sts_req_free(struct sts_req *r)
{
	dns_raw_cancel(&r->q);
	httpsc_cancel(&r->h);
	config_unref(&r->cfg);
	free(r);
}

static void sts_finish(struct sts_req *r, const struct mtasts_policy *p)
{
	sts_fn *done = r->done;
	void *arg = r->arg;

	r->done = NULL;
	done(arg, p);
	sts_req_free(r);
}

/* A cached policy that has not expired, into r->pol; 1 if there is one.
 * id: the cached policy's id (may be NULL). */
static int sts_cached(struct sts_req *r, char *id, size_t idlen)
{
	struct stscache_entry e;
	char err[200];
	int ok = 0;

	if (r->s->cache == NULL || stscache_lookup(r->s->cache, r->domain,
	    &e) != 1)
		return 0;
	if (e.expires > time(NULL) && mtasts_parse_policy(e.text, e.len,
	    &r->pol, err, sizeof(err)) == 0) {
		ok = 1;
		if (id != NULL)
			snprintf(id, idlen, "%s", e.id);
	}
	free(e.text);
	return ok;
}

static void sts_use_cache(struct sts_req *r, const char *why)
{
	if (sts_cached(r, NULL, 0)) {
		log_info("mta-sts: %s: %s; using the cached policy", r->domain,
		    why);
		sts_finish(r, &r->pol);
		return;
	}
	/* A published policy that cannot be had is worth a line. */
	if (r->id[0] != '\0')
		log_info("mta-sts: %s: %s; no policy", r->domain, why);
	else
		log_debug("mta-sts: %s: %s; no policy", r->domain, why);
	sts_finish(r, NULL);
}

static void sts_http_cb(void *arg, int code, const char *ctype,
    struct evbuffer *body)
{
	struct sts_req *r = arg;
	char err[200], why[300];
	size_t len;
	char *text;

	r->h = NULL;
	if (code != 200 || body == NULL) {
		snprintf(why, sizeof(why), "policy fetch failed (%s)",
		    code == 0 ? "no answer: connection, TLS or timeout" :
		    "HTTP status not 200");
		sts_use_cache(r, why);
		return;
	}
	/* RFC 8461 3.3: text/plain only. */
	if (ctype == NULL || strncmp(ctype, "text/plain", 10) != 0) {
		sts_use_cache(r, "policy is not text/plain");
		return;
	}
	len = evbuffer_get_length(body);
	if (len > MTASTS_MAX_BODY) {
		sts_use_cache(r, "policy too large");
		return;
	}
	text = xmalloc(len + 1);
	evbuffer_copyout(body, text, len);
	text[len] = '\0';
	if (mtasts_parse_policy(text, len, &r->pol, err, sizeof(err)) < 0) {
		free(text);
		snprintf(why, sizeof(why), "bad policy: %s", err);
		sts_use_cache(r, why);
		return;
	}
	log_info("mta-sts: %s: fetched policy id=%s, mode=%s, max_age=%ld, "
	    "mx=%zu", r->domain, r->id, r->pol.mode == MTASTS_ENFORCE ?
	    "enforce" : r->pol.mode == MTASTS_TESTING ? "testing" : "none",
	    r->pol.max_age, r->pol.nmx);
	if (r->s->cache != NULL)
		stscache_store(r->s->cache, r->domain, r->id,
		    time(NULL) + r->pol.max_age, text, len);
	free(text);
	sts_finish(r, &r->pol);
}

static void sts_fetch(struct sts_req *r)
{
	const struct config_domain *cd = config_find_domain(r->cfg,
	    r->domain);
	struct httpsc_opts o;
	char url[400];

	memset(&o, 0, sizeof(o));
	o.default_port = r->cfg->mta_sts_port > 0 ? r->cfg->mta_sts_port : 443;
	o.ca_file = cd != NULL && cd->tls_ca_file != NULL ? cd->tls_ca_file :
	    r->cfg->tls_ca_file;
	o.max_body = MTASTS_MAX_BODY;
	o.timeout = STS_FETCH_TIMEOUT;
	snprintf(url, sizeof(url), "https://mta-sts.%s/.well-known/mta-sts.txt",
	    r->domain);
	r->h = httpsc_request(r->s->http, r->cfg, url, &o, sts_http_cb, r);
	if (r->h == NULL)
		sts_use_cache(r, "policy fetch not started");
}

static void sts_txt_cb(void *arg, int ok, const unsigned char *msg,
    size_t len)
{
	struct sts_req *r = arg;
	char cached_id[STSCACHE_ID_MAX + 1] = "";
	int t;

	r->q = NULL;
	t = ok ? mtasts_parse_txt(msg, len, r->id, sizeof(r->id)) : -1;
	if (t != 1) {
		/* No record (or no answer): a cached policy still holds. */
		sts_use_cache(r, t == 0 ? "no _mta-sts record" :
		    "_mta-sts lookup failed");
		return;
	}
	if (sts_cached(r, cached_id, sizeof(cached_id)) &&
	    strcmp(cached_id, r->id) == 0) {
		sts_finish(r, &r->pol);
		return;
	}
	sts_fetch(r);
}

struct sts_req *sts_get(struct sts *s, const struct config *cfg,
    const char *domain, sts_fn *done, void *arg)
{
	struct sts_req *r = xcalloc(1, sizeof(*r));
	char name[300];

	r->s = s;
	r->cfg = config_ref((struct config *)cfg);
	snprintf(r->domain, sizeof(r->domain), "%s", domain);
	r->done = done;
	r->arg = arg;
	snprintf(name, sizeof(name), "_mta-sts.%s", domain);
	r->q = dns_query_raw(s->dns, name, STS_TXT_RRTYPE, 0, sts_txt_cb, r);
	return r;
}

void sts_cancel(struct sts_req **rp)
{
	if (rp == NULL || *rp == NULL)
		return;
	sts_req_free(*rp);
	*rp = NULL;
}
