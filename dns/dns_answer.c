/*
 * dns_answer - what a c-ares query answered, as the resolver keeps it:
 * MX sets and A/AAAA addresses parsed from the wire (untrusted: MX hosts
 * are checked like any name), and cached per (type, name) up to their TTL
 * (capped), NXDOMAIN/NODATA briefly, temporary failures never.
 */
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "dns_msg.h"
#include "dns_private.h"
#include "mx.h"
#include "util.h"
#include "xmalloc.h"

#define DNS_CACHE_MAX	1024	/* entries */
#define DNS_TTL_MAX	3600	/* seconds, cap for positive answers */
#define DNS_TTL_NEG	60	/* seconds, NXDOMAIN / NODATA */
#define DNS_MX_MAX	64	/* MX records read from one answer */

struct dns_cache {
	struct dns_cache *next;
	enum dns_qtype type;
	char name[DNS_NAME_MAX + 1];
	double expires;
	struct dns_answer ans;
};

/* ---- cache ---- */

void dns_answer_clear(struct dns_answer *a)
{
	free(a->mx);
	a->mx = NULL;
	a->nmx = 0;
}

void dns_answer_copy(struct dns_answer *dst,
    const struct dns_answer *src)
{
	*dst = *src;
	if (src->nmx > 0) {
		dst->mx = xcalloc(src->nmx, sizeof(*dst->mx));
		memcpy(dst->mx, src->mx, src->nmx * sizeof(*dst->mx));
	} else
		dst->mx = NULL;
}

static void dns_cache_free_entry(struct dns_cache *c)
{
	dns_answer_clear(&c->ans);
	free(c);
}

const struct dns_answer *dns_cache_get(struct dns *d,
    enum dns_qtype type, const char *name)
{
	struct dns_cache *c, **cp;
	double now = util_now();

	for (cp = &d->cache; (c = *cp) != NULL; ) {
		if (c->expires <= now) {
			*cp = c->next;
			dns_cache_free_entry(c);
			d->ncache--;
			continue;
		}
		if (c->type == type && strcmp(c->name, name) == 0)
			return &c->ans;
		cp = &c->next;
	}
	return NULL;
}

void dns_cache_put(struct dns *d, enum dns_qtype type,
    const char *name, const struct dns_answer *ans)
{
	struct dns_cache *c, **cp;
	double now = util_now();
	unsigned ttl;

	if (ans->st == DNS_QS_TEMP)
		return;
	ttl = ans->st == DNS_QS_OK ? ans->ttl : DNS_TTL_NEG;
	if (ttl > DNS_TTL_MAX)
		ttl = DNS_TTL_MAX;
	if (ttl == 0)
		return;
	/* Drop the same key and anything expired; find the oldest. */
	for (cp = &d->cache; (c = *cp) != NULL; ) {
		if (c->expires <= now ||
		    (c->type == type && strcmp(c->name, name) == 0)) {
			*cp = c->next;
			dns_cache_free_entry(c);
			d->ncache--;
			continue;
		}
		cp = &c->next;
	}
	if (d->ncache >= DNS_CACHE_MAX) {
		/* Full of live entries: drop the oldest (the tail). */
		for (cp = &d->cache; (*cp)->next != NULL; cp = &(*cp)->next)
			;
		dns_cache_free_entry(*cp);
		*cp = NULL;
		d->ncache--;
	}
	c = xcalloc(1, sizeof(*c));
	c->type = type;
	util_strlcpy(c->name, name, sizeof(c->name));
	c->expires = now + ttl;
	dns_answer_copy(&c->ans, ans);
	c->next = d->cache;
	d->cache = c;
	d->ncache++;
}


void dns_cache_clear(struct dns *d)
{
	struct dns_cache *c;

	while ((c = d->cache) != NULL) {
		d->cache = c->next;
		dns_cache_free_entry(c);
	}
	d->ncache = 0;
}

/* ---- answer parsing ---- */

/* Smallest TTL of the answer records of rrtype; DNS_TTL_MAX if none, 0
 * when the message is malformed. */
static unsigned dns_answer_ttl(const unsigned char *p, int len, int rrtype)
{
	struct dns_msg w;
	struct dns_rr rr;
	unsigned ttl = DNS_TTL_MAX;
	int r;

	if (len < 0 || dns_msg_open(&w, p, (size_t)len) < 0)
		return 0;
	while ((r = dns_msg_next(&w, &rr)) > 0)
		if (rr.type == (unsigned)rrtype && rr.ttl < ttl)
			ttl = rr.ttl;
	return r < 0 ? 0 : ttl;
}

/* Query status (before parsing) to our outcome. */
enum dns_qstat dns_map_status(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_QS_OK;
	case ARES_ENODATA:
		return DNS_QS_NODATA;
	case ARES_ENOTFOUND:
	case ARES_EBADNAME:
		return DNS_QS_NX;
	default:
		/* SERVFAIL, REFUSED, timeout, connection refused, ... */
		return DNS_QS_TEMP;
	}
}

void dns_parse_mx(const unsigned char *abuf, int alen,
    struct dns_answer *ans)
{
	struct ares_mx_reply *mx = NULL, *m;
	size_t n = 0;
	int r;

	if ((r = ares_parse_mx_reply(abuf, alen, &mx)) != ARES_SUCCESS) {
		ans->st = r == ARES_ENODATA ? DNS_QS_NODATA : DNS_QS_TEMP;
		return;
	}
	for (m = mx; m != NULL; m = m->next)
		n++;
	if (n > DNS_MX_MAX)
		n = DNS_MX_MAX;
	ans->mx = xcalloc(n > 0 ? n : 1, sizeof(*ans->mx));
	for (m = mx; m != NULL && ans->nmx < n; m = m->next) {
		struct mx_entry *e = &ans->mx[ans->nmx];
		const char *h = m->host != NULL ? m->host : "";

		e->pref = m->priority;
		if (h[0] == '\0' || strcmp(h, ".") == 0)
			e->host[0] = '\0';	/* null MX candidate */
		else if (dns_name_norm(h, e->host, sizeof(e->host)) < 0)
			continue;		/* junk from the wire: skip */
		ans->nmx++;
	}
	ares_free_data(mx);
	/* MX records that are all junk stay OK with nmx == 0: "MX exists
	 * but none usable" is an error, never an implicit MX. */
	ans->ttl = dns_answer_ttl(abuf, alen, ns_t_mx);
}

void dns_parse_addr(const unsigned char *abuf, int alen,
    enum dns_qtype type, struct dns_answer *ans)
{
	struct ares_addrttl a4[DNS_MAX_ADDRS];
	struct ares_addr6ttl a6[DNS_MAX_ADDRS];
	struct hostent *he = NULL;
	int n = DNS_MAX_ADDRS, r, i;
	unsigned ttl;

	if (type == DNS_QT_A)
		r = ares_parse_a_reply(abuf, alen, &he, a4, &n);
	else
		r = ares_parse_aaaa_reply(abuf, alen, &he, a6, &n);
	if (he != NULL)
		ares_free_hostent(he);
	if (r != ARES_SUCCESS) {
		ans->st = r == ARES_ENODATA ? DNS_QS_NODATA : DNS_QS_TEMP;
		return;
	}
	ans->ttl = DNS_TTL_MAX;
	for (i = 0; i < n && i < DNS_MAX_ADDRS; i++) {
		struct sockaddr_storage *ss = &ans->addrs[ans->naddrs++];

		memset(ss, 0, sizeof(*ss));
		if (type == DNS_QT_A) {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;

			sin->sin_family = AF_INET;
			sin->sin_addr = a4[i].ipaddr;
			ttl = a4[i].ttl < 0 ? 0 : (unsigned)a4[i].ttl;
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

			sin6->sin6_family = AF_INET6;
			memcpy(&sin6->sin6_addr, &a6[i].ip6addr,
			    sizeof(sin6->sin6_addr));
			ttl = a6[i].ttl < 0 ? 0 : (unsigned)a6[i].ttl;
		}
		if (ttl < ans->ttl)
			ans->ttl = ttl;
	}
	if (ans->naddrs == 0)
		ans->st = DNS_QS_NODATA;
}

