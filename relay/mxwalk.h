/*
 * mxwalk - trying a destination's hosts: every address of every target of
 * a DNS result in order (RFC 5321 5.1), each target's TLS policy found
 * first when the domain's mode needs DNS (tlsfind), a connect per
 * address. Shared by the scheduler's deliveries and the recipient probe.
 *
 * The walker is a plain struct its owner embeds; loop thread only.
 */
#ifndef OD_MXWALK_H
#define OD_MXWALK_H

#include <stddef.h>

#include "tlsfind.h"

struct bufferevent;
struct config;
struct dns;
struct dns_result;
struct dns_target;
struct event_base;
struct sockaddr;
struct tlspolicy;

struct mxwalk {
	const struct dns_result *res;	/* borrowed; NULL: nothing to try */
	size_t target, addr;		/* the address to try next */
	struct tlsfind *tf;		/* policy look-up in flight */
	struct tlspolicy *pol;		/* policy of target pol_target */
	size_t pol_target;
};

/* From the first address of res (a policy of other hosts is dropped). */
void mxwalk_start(struct mxwalk *w, const struct dns_result *res);
/* Cancel the look-up, free the policy. */
void mxwalk_clear(struct mxwalk *w);

/* The address to try, or NULL when every one was tried. */
const struct sockaddr *mxwalk_addr(struct mxwalk *w);
/* Its target (after mxwalk_addr returned an address). */
const struct dns_target *mxwalk_target(const struct mxwalk *w);
/* Its port, host order. */
int mxwalk_port(const struct sockaddr *sa);
void mxwalk_next_addr(struct mxwalk *w);

/*
 * Before connecting to the current address: when the domain's policy needs
 * DNS and the current target's is not known yet, start its look-up and
 * return 1: found runs later and passes the answer to mxwalk_found. Else 0.
 */
int mxwalk_need_policy(struct mxwalk *w, struct dns *dns,
    const struct config *cfg, const char *domain, int routed,
    tlsfind_fn *found, void *arg);
/* A look-up's answer: the current target's policy, or (pol NULL) skip
 * the target. */
void mxwalk_found(struct mxwalk *w, const struct tlspolicy *pol);
/* The policy found for the current target, or NULL. */
const struct tlspolicy *mxwalk_policy(const struct mxwalk *w);

/*
 * A new bufferevent connecting to the current address (timeouts both
 * ways, eventcb for the outcome); NULL when the connect failed at once
 * (go on with mxwalk_next_addr).
 */
struct bufferevent *mxwalk_connect(struct mxwalk *w, struct event_base *base,
    int timeout_sec, void (*eventcb)(struct bufferevent *, short, void *),
    void *arg);

#endif
