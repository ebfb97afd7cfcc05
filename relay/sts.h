/*
 * sts - a domain's MTA-STS policy (RFC 8461) when delivering to its MX
 * hosts: the _mta-sts TXT record through c-ares, the policy fetched over
 * HTTPS (httpsc) from mta-sts.DOMAIN, kept in the queue's LMDB
 * environment (stscache) for its max_age. A cached policy that has not
 * expired is used when the TXT record or the policy server is gone; the
 * TXT id says when to fetch a new one. Loop thread only.
 */
#ifndef OD_STS_H
#define OD_STS_H

struct event_base;
struct config;
struct dns;
struct stscache;
struct sts;
struct sts_req;
struct mtasts_policy;

struct sts *sts_new(struct event_base *base, struct dns *dns,
    struct stscache *cache);
void sts_free(struct sts **s);

/* p: the domain's policy (borrowed for the call), NULL when it has none
 * (or it cannot be had and none is cached). Never called from sts_get. */
typedef void sts_fn(void *arg, const struct mtasts_policy *p);
struct sts_req *sts_get(struct sts *s, const struct config *cfg,
    const char *domain, sts_fn *done, void *arg);
void sts_cancel(struct sts_req **r);

#endif
