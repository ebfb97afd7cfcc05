/*
 * xwait - who is waiting for mail (the ODMR XWAIT extension).
 *
 * A registry of waiting sessions indexed by domain: the queue's arrival
 * hook calls xwait_arrived(domain) and every session waiting for that
 * domain is woken once (its entry is removed before its callback runs).
 * Costs no polling: a waiter is a small record until mail comes.
 *
 * All calls on the loop thread.
 */
#ifndef OD_XWAIT_H
#define OD_XWAIT_H

#include <stddef.h>

struct xwait;
struct xwait_entry;

typedef void xwait_wake_fn(void *arg);

struct xwait *xwait_new(void);
/* Every entry must have been cancelled or woken before. */
void xwait_free(struct xwait **w);
/* Wait for any of domains (lower case). fn(arg) runs at most once. */
struct xwait_entry *xwait_add(struct xwait *w, const char *const *domains,
    size_t ndomains, xwait_wake_fn *fn, void *arg);
/* Stop waiting (no callback); *e is NULL afterwards. NULL is fine. */
void xwait_cancel(struct xwait_entry **e);
/* Mail committed for domain: wake its waiters. Returns how many. */
size_t xwait_arrived(struct xwait *w, const char *domain);
/* Waiting sessions in all, and those waiting for domain. */
size_t xwait_count(const struct xwait *w);
size_t xwait_domain_count(const struct xwait *w, const char *domain);
/* Calls fn for each domain with at least one waiter. */
void xwait_foreach_domain(const struct xwait *w,
    void (*fn)(void *arg, const char *domain, size_t waiting), void *arg);

#endif
