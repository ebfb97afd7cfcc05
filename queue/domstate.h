/*
 * domstate - per-domain facts an operator watches that are not in the
 * queue itself: when a customer last pulled its mail with ATRN
 * successfully and when it last asked with ETRN. Kept in a named database
 * of the queue's LMDB environment so that they survive restarts and
 * odrelayctl can read them without the daemon. Writes go through the
 * queue's writer thread (asynchronous); reads are short read transactions.
 */
#ifndef OD_DOMSTATE_H
#define OD_DOMSTATE_H

#include <time.h>

#include "queue.h"

enum domstate_event {
	DOMSTATE_ATRN = 0,	/* an ATRN session delivered all it took */
	DOMSTATE_ETRN = 1,	/* an ETRN for the domain was accepted */
	DOMSTATE_NEVENTS
};

struct domstate_rec {
	time_t last[DOMSTATE_NEVENTS];	/* 0 = never */
};

struct domstate;

/* Open in q's environment (created when q is writable; a read-only q
 * without the database yet reads as "never"). NULL and err on failure. */
struct domstate *domstate_open(struct queue *q, char *err, size_t errlen);
/* Pending writes belong to the queue: close the queue after this. */
void domstate_close(struct domstate **ds);

/* Record that ev happened for domain at when (a later time wins). */
void domstate_note(struct domstate *ds, const char *domain,
    enum domstate_event ev, time_t when);
/*
 * The daemon's instance, so that the modules that see the events (ODMR,
 * the scheduler) need no plumbing: notes go nowhere until it is set.
 */
void domstate_set_default(struct domstate *ds);
void domstate_note_now(const char *domain, enum domstate_event ev);

/* 0 filled (zeros when unknown), or a QUEUE_E* code. */
int domstate_get(struct domstate *ds, const char *domain,
    struct domstate_rec *r);

/* Every record, in one read transaction (cb returns 0 to go on; keep
 * it short). 0 or a QUEUE_E* code. */
int domstate_foreach(struct domstate *ds, int (*cb)(void *arg,
    const char *domain, const struct domstate_rec *r), void *arg);

/* Oldest message with recipients still queued for domain: its arrival
 * time, or 0 when none. 0 or a QUEUE_E* code. (In queue.c.) */
int queue_domain_oldest(struct queue *q, const char *domain, time_t *arrival_r);
/*
 * The same for many domains at once (odrelayctl stats with 50,000 of
 * them): names[0..n) in lower case, sorted (strcmp), arrival_r[i] for
 * names[i]. One cursor walks the index forwards in read transactions of
 * QUEUE_SCAN_BATCH domains each, and only the arrival time of each
 * oldest envelope is read. 0 or a QUEUE_E* code.
 */
int queue_domains_oldest(struct queue *q, const char *const *names, size_t n,
    time_t *arrival_r);

#endif
