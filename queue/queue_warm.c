/*
 * queue_warm - reads the message records a time scan (queue_scan_ahead)
 * is about to read, on a thread of its own, so that the event loop finds
 * their pages in memory: with a cold page cache each page of the map is a
 * disk read of several milliseconds, which the loop must not wait for
 * (issue 16). The loop scans only up to the last record the thread has
 * read; the thread keeps QWARM_AHEAD records ahead of each scan.
 *
 * One window per scan (the scan's cursor buffer identifies it). The
 * thread uses its own short read transactions (the environment has
 * MDB_NOTLS) and only the message database's handle, opened at start;
 * txmu is held while a transaction is open, and the compaction's swap of
 * the environment takes it (queue_warm_lock_env).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <lmdb.h>

#include "config.h"
#include "util.h"
#include "xmalloc.h"
#include "queue.h"
#include "queue_private.h"
#include "queue_impl.h"

#define QWARM_SLOTS	8	/* scans with a window; further ones are not helped */
#define QWARM_AHEAD	4096	/* records read ahead of a scan */
#define QWARM_CHUNK	64	/* records per read transaction */

struct qwarm_slot {
	const void *owner;		/* the scan's cursor buffer; NULL = free */
	char warm[QUEUE_ID_LEN + 1];	/* read up to this id ("" = none) */
	char base[QUEUE_ID_LEN + 1];	/* where the window began */
	char endkey[QUEUE_ID_LEN + 1];	/* the scan ends before this id */
	size_t read, taken;		/* records read by the thread, by the scan */
	unsigned gen;			/* changed when the window starts over */
	unsigned long used;		/* for the choice of a slot to reuse */
	int done;			/* read up to endkey or the end */
	int nolimit;			/* cannot help: the scan reads freely */
};

struct queue_warm {
	struct queue *q;
	pthread_t th;
	pthread_mutex_t mu, txmu;
	pthread_cond_t cv;
	int stop;
	unsigned long clock;
	struct qwarm_slot slots[QWARM_SLOTS];
};

/* A slot with work: not done, and not yet far enough ahead. */
static struct qwarm_slot *qwarm_pick(struct queue_warm *w)
{
	for (size_t i = 0; i < QWARM_SLOTS; i++) {
		struct qwarm_slot *sl = &w->slots[i];

		if (sl->owner != NULL && !sl->done && !sl->nolimit &&
		    sl->read < sl->taken + QWARM_AHEAD)
			return sl;
	}
	return NULL;
}

static void *qwarm_main(void *arg)
{
	struct queue_warm *w = arg;
	volatile unsigned char sink = 0;

	/* Bulk reading for a background scan: the event loop should win the
	 * CPU whenever it wants one. SCHED_IDLE makes every other thread
	 * preempt this one on wake-up (a nice value only lowers its share).
	 * On a saturated machine the scans then wait (they read only what
	 * this thread has read: sched_expiry.c), the loop does not. Nice 10
	 * where that policy is refused. */
	{
		struct sched_param sp = { .sched_priority = 0 };

		if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
			(void)setpriority(PRIO_PROCESS,
			    (id_t)syscall(SYS_gettid), 10);
	}
	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct qwarm_slot *sl = qwarm_pick(w);
		char from[QUEUE_ID_LEN + 1], endkey[QUEUE_ID_LEN + 1];
		char last[QUEUE_ID_LEN + 1] = "";
		unsigned gen;
		size_t n = 0;
		int rc = EINVAL, odd = 0;
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, d;

		if (sl == NULL) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		memcpy(from, sl->warm, sizeof(from));
		memcpy(endkey, sl->endkey, sizeof(endkey));
		gen = sl->gen;
		pthread_mutex_unlock(&w->mu);

		pthread_mutex_lock(&w->txmu);
		if (w->q->env != NULL &&
		    mdb_txn_begin(w->q->env, NULL, MDB_RDONLY, &txn) == 0) {
			if (mdb_cursor_open(txn, w->q->db_msg, &c) == 0) {
				for (rc = queue_cursor_seek(c, &k, &d, from,
				    strlen(from), 1);
				    rc == 0 && n < QWARM_CHUNK;
				    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
					const unsigned char *p = d.mv_data;

					if (k.mv_size != QUEUE_ID_LEN) {
						odd = 1;
						break;
					}
					if (memcmp(k.mv_data, endkey, QUEUE_ID_LEN) >= 0) {
						rc = MDB_NOTFOUND;
						break;
					}
					/* The cursor has read the leaf page; a big
					 * record's overflow pages are read here. */
					for (size_t off = 0; off < d.mv_size; off += 4096)
						sink += p[off];
					memcpy(last, k.mv_data, QUEUE_ID_LEN);
					last[QUEUE_ID_LEN] = '\0';
					n++;
				}
				mdb_cursor_close(c);
			}
			mdb_txn_abort(txn);
		}
		pthread_mutex_unlock(&w->txmu);

		pthread_mutex_lock(&w->mu);
		if (sl->owner == NULL || sl->gen != gen)
			continue;	/* started over meanwhile */
		if (n > 0) {
			memcpy(sl->warm, last, sizeof(sl->warm));
			sl->read += n;
		}
		if (odd || (rc != 0 && rc != MDB_NOTFOUND))
			sl->nolimit = 1;
		else if (rc == MDB_NOTFOUND)
			sl->done = 1;
	}
	pthread_mutex_unlock(&w->mu);
	(void)sink;
	return NULL;
}

static struct queue_warm *qwarm_start(struct queue *q)
{
	struct queue_warm *w = xcalloc(1, sizeof(*w));

	w->q = q;
	pthread_mutex_init(&w->mu, NULL);
	pthread_mutex_init(&w->txmu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (pthread_create(&w->th, NULL, qwarm_main, w) != 0) {
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->txmu);
		pthread_mutex_destroy(&w->mu);
		free(w);
		return NULL;
	}
	return w;
}

void queue_warm_free(struct queue_warm **wp)
{
	struct queue_warm *w = *wp;

	if (w == NULL)
		return;
	*wp = NULL;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->th, NULL);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->txmu);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

void queue_warm_lock_env(struct queue *q, int lock)
{
	if (q->warm == NULL)
		return;
	if (lock)
		pthread_mutex_lock(&q->warm->txmu);
	else
		pthread_mutex_unlock(&q->warm->txmu);
}

int queue_warm_window(struct queue *q, const char *cursor, const char *endkey,
    char *limit_r)
{
	struct queue_warm *w;
	struct qwarm_slot *sl = NULL;
	int r;

	limit_r[0] = '\0';
	if (q->warm == NULL && q->warm_failed)
		return QWARM_READY;
	if (q->warm == NULL && (q->warm = qwarm_start(q)) == NULL) {
		q->warm_failed = 1;
		return QWARM_READY;
	}
	w = q->warm;
	pthread_mutex_lock(&w->mu);
	w->clock++;
	for (size_t i = 0; i < QWARM_SLOTS && sl == NULL; i++)
		if (w->slots[i].owner == cursor)
			sl = &w->slots[i];
	/* Still inside its window: from where it began to what was read. */
	if (sl == NULL || strcmp(cursor, sl->base) < 0 ||
	    strcmp(cursor, sl->warm) > 0) {
		if (sl == NULL) {
			sl = &w->slots[0];
			for (size_t i = 1; i < QWARM_SLOTS; i++)
				if (w->slots[i].used < sl->used)
					sl = &w->slots[i];
		}
		sl->owner = cursor;
		memcpy(sl->base, cursor, sizeof(sl->base));
		memcpy(sl->warm, cursor, sizeof(sl->warm));
		sl->read = sl->taken = 0;
		sl->done = sl->nolimit = 0;
		sl->gen++;
	}
	sl->used = w->clock;
	if (strcmp(endkey, sl->endkey) != 0) {
		/* The scan's end moves with the clock: read on. */
		memcpy(sl->endkey, endkey, sizeof(sl->endkey));
		sl->done = 0;
	}
	if (sl->nolimit)
		r = QWARM_READY;
	else if (strcmp(cursor, sl->warm) < 0) {
		memcpy(limit_r, sl->warm, QUEUE_ID_LEN + 1);
		r = QWARM_READY;
	} else
		r = sl->done ? QWARM_DONE : QWARM_PENDING;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return r;
}

void queue_warm_taken(struct queue *q, const char *cursor, size_t n)
{
	struct queue_warm *w = q->warm;

	if (w == NULL || n == 0)
		return;
	pthread_mutex_lock(&w->mu);
	for (size_t i = 0; i < QWARM_SLOTS; i++)
		if (w->slots[i].owner == cursor) {
			w->slots[i].taken += n;
			pthread_cond_signal(&w->cv);
			break;
		}
	pthread_mutex_unlock(&w->mu);
}
