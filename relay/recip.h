/*
 * recip - knowing the recipients: the RCPT verdict for a domain (its
 * recipient list, what deliveries taught, what the primary said to a
 * probe) and learning from delivery outcomes. The knowledge lives in the
 * recipient cache (queue/rcache.h); probes are in relay/probe.h.
 *
 * All calls on the loop thread.
 */
#ifndef OD_RECIP_H
#define OD_RECIP_H

#include <stddef.h>

struct event_base;
struct config;
struct config_domain;
struct queue;
struct rcache;
struct dns;
struct recip;
struct recip_wait;

#define RECIP_ACCEPT	0
#define RECIP_REFUSE	1	/* reply holds the refusal */
#define RECIP_PENDING	2	/* the answer comes through the callback */
#define RECIP_REPLY_MAX	512

/* A deferred verdict: verdict RECIP_ACCEPT or RECIP_REFUSE with reply. */
typedef void recip_answer_fn(void *arg, int verdict, const char *reply);

/*
 * cache: the open recipient cache (borrowed; may be NULL: lists only).
 * dns: for the MX lookups of probes (may be NULL: probes go to `route`
 * only).
 */
struct recip *recip_new(struct event_base *base, struct config *cfg,
    struct rcache *cache, struct dns *dns);
void recip_reload(struct recip *r, struct config *cfg);
void recip_free(struct recip **r);

/*
 * The verdict for RCPT TO:<addr> (domain part lower case) in dom. r may be
 * NULL (only the recipient list counts). RECIP_PENDING: fn(arg, ...) is
 * called exactly once later, unless recip_cancel(*w) is called first.
 */
int recip_check(struct recip *r, const struct config_domain *dom,
    const char *addr, char *reply, size_t replylen, recip_answer_fn *fn,
    void *arg, struct recip_wait **w);
void recip_cancel(struct recip_wait **w);

/*
 * What the customer's server answered to RCPT for addr (accepted for
 * configured domain `domain`): learned when that domain has
 * `recipients = learn`. r may be NULL.
 */
void recip_learn(struct recip *r, const char *domain, const char *addr,
    int code, const char *text);

/* 1 if a reply ("550 5.1.1 ...", "553 ...") means "no such user". */
int recip_no_such_user(int code, const char *text);

/*
 * The RCPT refusal for addr after the primary refused it with
 * primary_reply (its code and enhanced code are replaced by 550 5.1.1;
 * the rest kept, cut and made printable ASCII). Exposed for the fuzzer.
 */
void recip_format_refusal(const char *addr, const char *primary_reply,
    char *reply, size_t replylen);

/* The recipient cache, for odrelayctl's commands through the daemon. */
struct rcache *recip_cache(struct recip *r);

#endif
