/*
 * rcache - what the relay knows about recipient addresses (valid or
 * invalid, learned from deliveries or from probing a primary), kept in two
 * named databases of the queue's LMDB environment so it survives restarts.
 *
 * Bounded: at most max_entries addresses; storing one more evicts the
 * least recently stored. Writes go through the queue's writer thread
 * (asynchronous, completion on the loop thread); reads are short read
 * transactions on the caller's thread. Expired entries are still returned
 * by lookups (with their expiry): the caller decides what an old answer is
 * worth. No MDB_* type leaves this module.
 */
#ifndef OD_RCACHE_H
#define OD_RCACHE_H

#include <stddef.h>
#include <time.h>

#include "queue.h"

#define RCACHE_DOMAIN_MAX	255
#define RCACHE_ADDR_MAX		254	/* longer addresses are never stored */
#define RCACHE_TEXT_MAX		200	/* remote reply kept with an entry */

enum rcache_state {
	RCACHE_VALID = 1,
	RCACHE_INVALID = 2
};

enum rcache_source {
	RCACHE_SRC_PROBE = 1,
	RCACHE_SRC_LEARNED = 2,
	RCACHE_SRC_LIST = 3
};

struct rcache_entry {
	char domain[RCACHE_DOMAIN_MAX + 1];	/* configured domain, lower case */
	char addr[RCACHE_ADDR_MAX + 1];		/* lower case */
	enum rcache_state state;
	enum rcache_source source;
	time_t expires;
	time_t updated;
	char text[RCACHE_TEXT_MAX + 1];	/* e.g. the primary's 550 text, or "" */
};

struct rcache;

/*
 * Open the cache inside q's environment (creating its databases when q is
 * writable). A read-only q (odrelayctl) with no cache yet gives an empty
 * cache. NULL and err on failure.
 */
struct rcache *rcache_open(struct queue *q, unsigned long max_entries,
    char *err, size_t errlen);
void rcache_set_max(struct rcache *rc, unsigned long max_entries);
/* Pending writes belong to the queue: close the queue after this. */
void rcache_close(struct rcache **rc);

/*
 * 1 found (*e filled, possibly expired), 0 unknown (or too long to
 * store), or a QUEUE_E* code.
 */
int rcache_lookup(struct rcache *rc, const char *domain, const char *addr,
    struct rcache_entry *e);

/*
 * Record (or renew) what is known of addr. text may be NULL. done may be
 * NULL. Addresses or domains too long to store are ignored (done gets
 * QUEUE_OK).
 */
void rcache_store(struct rcache *rc, const char *domain, const char *addr,
    enum rcache_state state, enum rcache_source source, time_t expires,
    const char *text, queue_done_fn *done, void *arg);

/* Forget addr in domain, or every address of domain when addr is NULL. */
void rcache_forget(struct rcache *rc, const char *domain, const char *addr,
    queue_done_fn *done, void *arg);

/* Every entry of domain (NULL: all), in address order; cb returns 0 to go on. */
int rcache_foreach(struct rcache *rc, const char *domain,
    int (*cb)(void *arg, const struct rcache_entry *e), void *arg);

/* Number of stored addresses. */
unsigned long rcache_count(struct rcache *rc);

const char *rcache_state_name(enum rcache_state s);
const char *rcache_source_name(enum rcache_source s);

#endif
