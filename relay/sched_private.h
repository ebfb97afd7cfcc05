/*
 * sched_private.h - what the scheduler's files share: struct sched and its
 * limits. Only relay/sched*.c include it; everyone else uses sched.h.
 */
#ifndef OD_SCHED_PRIVATE_H
#define OD_SCHED_PRIVATE_H

#include <sys/queue.h>
#include <time.h>

#include <openssl/ssl.h>

#include "queue.h"
#include "util.h"

#define SCHED_ETRN_SLOTS	64	/* client IPs tracked for the rate limit */

struct sched_run;
struct sched_conn;

/* The sections whose own queue_lifetime is an age (indexes in cfg->domains). */
struct sched_age_doms {
	size_t n;
	size_t *idx;
	char (*after)[QUEUE_ID_LEN + 1];	/* per section: read up to here */
};

/* Updates of the expiry walk not yet committed; shared with their
 * completions, which may run after the scheduler is gone. */
struct sched_pend {
	unsigned refs;
	unsigned n;
};

struct sched {
	struct event_base *base;
	struct config *cfg;
	struct queue *q;
	struct dns *dns;
	SSL_CTX *client_tls;
	struct event *tick;
	struct event *expiry_ev;	/* the next expiry slice, next turn */
	long *ages;		/* distinct ages that need a look, ascending */
	char (*marks)[QUEUE_ID_LEN + 1];	/* per age: messages read so far */
	/* per age: the few sections with it as their own lifetime, whose
	 * indexes are read instead of the queue (NULL: read the queue) */
	struct sched_age_doms *agedoms;
	int agedoms_wait;	/* new ones: wait until no return is pending */
	size_t nages;
	struct timespec slice_start;
	int slice_over;
	struct sched_pend *pend;
	const char *walk_label;	/* the metric's label for what is read */
	struct qmarks *qmarks;	/* where they are kept; NULL: not kept */
	time_t marks_saved;	/* when the marks were last written */
	int marks_dirty;	/* moved since */
	LIST_HEAD(, sched_run) runs;
	LIST_HEAD(, sched_conn) conns;
	size_t active_conns;
	int shutting_down;
	struct util_rate_slot etrn[SCHED_ETRN_SLOTS];
};

/* sched_expiry.c: lifetimes, delay warnings, returned mail */
void sched_marks_save(struct sched *s, time_t now);
void sched_marks_load(struct sched *s);
void sched_expiry_slice(struct sched *s);
void sched_expiry_next(evutil_socket_t fd, short what, void *arg);
void sched_set_ages(struct sched *s, const struct config *old);
void sched_agedoms_free(struct sched *s, size_t n);
void sched_pend_drop(struct sched *s);

#endif
