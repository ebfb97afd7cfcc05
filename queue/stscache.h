/*
 * stscache - MTA-STS policies (RFC 8461) kept for their max_age in a named
 * database of the queue's LMDB environment, so a policy survives restarts
 * (an attacker who blocks the policy server or removes the TXT record
 * cannot downgrade a domain whose policy is cached).
 *
 * Writes go through the queue's writer thread (asynchronous); reads are
 * short read transactions on the loop thread. No MDB_* type leaves here.
 */
#ifndef OD_STSCACHE_H
#define OD_STSCACHE_H

#include <stddef.h>
#include <time.h>

#include "queue.h"

#define STSCACHE_ID_MAX		32
#define STSCACHE_TEXT_MAX	65536

struct stscache;

struct stscache_entry {
	char id[STSCACHE_ID_MAX + 1];	/* the TXT record's id */
	time_t expires;			/* fetched + max_age */
	char *text;			/* the policy file (malloc'ed, NUL-ended) */
	size_t len;
};

/* Open (creating the database when q is writable). NULL and err. */
struct stscache *stscache_open(struct queue *q, char *err, size_t errlen);
void stscache_close(struct stscache **c);
/* 1 found (e->text to free), 0 none, -1 error. Expired entries too. */
int stscache_lookup(struct stscache *c, const char *domain,
    struct stscache_entry *e);
/* Store (replace) domain's policy; fire and forget. */
void stscache_store(struct stscache *c, const char *domain, const char *id,
    time_t expires, const char *text, size_t len);

#endif
