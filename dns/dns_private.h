/*
 * dns_private.h - what the files of the dns module share (dns.c resolver
 * and libevent glue, dns_answer.c parsing and cache, dns_req.c MX and
 * address requests, dns_raw.c raw queries). Only dns/dns*.c include it.
 */
#ifndef OD_DNS_PRIVATE_H
#define OD_DNS_PRIVATE_H

#include <sys/queue.h>

#include <ares.h>

#include "dns.h"

#define DNS_NAME_MAX	253

enum dns_qtype {
	DNS_QT_MX,
	DNS_QT_A,
	DNS_QT_AAAA
};

/* Outcome of one query. */
enum dns_qstat {
	DNS_QS_OK,
	DNS_QS_NODATA,		/* name exists, no record of the type */
	DNS_QS_NX,		/* NXDOMAIN or an unusable name: permanent */
	DNS_QS_TEMP
};

/* One answer: what the cache stores and what a query hands on. */
struct dns_answer {
	enum dns_qstat st;
	unsigned ttl;
	size_t nmx;
	struct mx_entry *mx;			/* DNS_QT_MX, nmx entries */
	size_t naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];	/* port 0 */
};

struct dns_cache;
struct dns_sock;

struct dns {
	struct event_base *base;
	ares_channel chan;
	int chan_ok;
	struct event *timer;
	struct dns_sock *socks;
	struct dns_cache *cache;	/* newest first */
	size_t ncache;
	LIST_HEAD(, dns_req) reqs;		/* live requests, for dns_free */
	int destroying;
};

/* dns.c */
int dns_name_norm(const char *in, char *out, size_t outsize);
/* Re-arm the timer from c-ares' next timeout, after any query is sent. */
void dns_timer_update(struct dns *d);
void dns_set_port(struct sockaddr_storage *ss, int port);

/* dns_answer.c: parsing answers and the per-(type, name) cache */
enum dns_qstat dns_map_status(int status);
void dns_parse_mx(const unsigned char *abuf, int alen,
    struct dns_answer *ans);
void dns_parse_addr(const unsigned char *abuf, int alen,
    enum dns_qtype type, struct dns_answer *ans);
void dns_answer_clear(struct dns_answer *a);
void dns_answer_copy(struct dns_answer *dst, const struct dns_answer *src);
const struct dns_answer *dns_cache_get(struct dns *d, enum dns_qtype type,
    const char *name);
void dns_cache_put(struct dns *d, enum dns_qtype type, const char *name,
    const struct dns_answer *ans);
void dns_cache_clear(struct dns *d);

/* dns_req.c */
void dns_req_free(struct dns_req *req);

#endif
