/*
 * queue_impl - what the files of the queue module share: the queue,
 * job, put and lease structs, limits, and the functions one file of the
 * module calls in another. Only queue/queue*.c include it; other modules
 * use queue.h (and queue/ modules queue_private.h).
 */
#ifndef OD_QUEUE_IMPL_H
#define OD_QUEUE_IMPL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <lmdb.h>

#include "queue.h"
#include "queue_private.h"

#include <event2/util.h>

struct event;
struct event_base;
struct domhash;

#define QUEUE_MAX_INFLIGHT	4	/* chunks queued per put before backpressure */
#define QUEUE_RESUME_AT		2	/* resume the reader at this many */
#define QUEUE_SCAN_BATCH	256	/* records per short read transaction */
#define QUEUE_DUE_MAX		1024	/* due ids per queue_foreach_due call */
#define QUEUE_DOMAIN_MAX	255
#define QUEUE_DEFAULT_MAP_SIZE	(4ULL * 1024 * 1024 * 1024)
#define BODY_KEY_LEN		(QUEUE_ID_LEN + 4)
#define SCHED_KEY_LEN		(8 + QUEUE_ID_LEN)

enum job_type {
	JOB_CHUNK,	/* one full body chunk of a put */
	JOB_COMMIT,	/* last chunk + envelope + indexes of a put */
	JOB_ABORT,	/* remove a put's chunks */
	JOB_UPDATE,
	JOB_DELETE,
	JOB_RELEASE,	/* out of quarantine */
	JOB_LEASE,
	JOB_UNLEASE,
	JOB_BARRIER,	/* writes nothing: completes after every earlier job */
	JOB_COMPACT,	/* compacting copy; the loop then swaps the files */
	JOB_EXT		/* a write of another queue/ module (queue_ext_submit) */
};

struct quota {
	char *domain;
	uint64_t max;
};

struct job {
	enum job_type type;
	struct job *next;
	struct queue_put *put;		/* CHUNK, COMMIT, ABORT */
	char id[QUEUE_ID_LEN + 1];
	uint32_t chunkno;
	unsigned char *data;		/* chunk bytes (owned) */
	size_t len;
	struct queue_envelope *env;	/* COMMIT: copy */
	struct quota *quotas;		/* COMMIT: quotas of env's domains */
	size_t nquotas;
	struct queue_rcpt_update *updates;	/* UPDATE: copy */
	size_t nupdates;
	struct queue_envelope *bounce;	/* UPDATE: copy, id assigned */
	char *owner;			/* LEASE */
	uint64_t *before_r, *after_r;	/* COMPACT */
	queue_ext_apply_fn *ext_apply;	/* EXT */
	void (*ext_free)(void *);
	void *ext_arg;
	queue_done_fn *done;
	void *arg;
	int result;
};

/* A notice waiting for the hook (queue_note). */
#define QUEUE_NOTES_MAX	32
struct queue_note_rec {
	enum queue_notice_level level;
	char text[240];
};

struct lease {
	char id[QUEUE_ID_LEN + 1];
	char *owner;
};

struct queue {
	MDB_env *env;
	MDB_dbi db_meta, db_msg, db_body, db_dom, db_sched, db_count, db_lease,
	    db_incomplete;
	/* "oldest": domain -> id and arrival of its oldest queued message
	 * (queue_oldest_adjust); absent in a read-only queue from before */
	MDB_dbi db_oldest;
	int have_oldest, oldest_new;
	int rdonly;
	int lock_fd;			/* flock: one writable opener at a time */
	struct event_base *base;
	struct event *done_ev;

	pthread_t writer;
	int writer_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *pending, *pending_tail;	/* loop -> writer */
	struct job *finished, *finished_tail;	/* writer -> loop */
	int stopping;
	int test_hold;		/* queue_test_hold_writer */
	int swap_wait;		/* writer waits for the loop to swap files */
	char *dir;
	uint64_t map_size;
	uint64_t min_free;	/* queue_min_free: file system reserve */
	int space_low;		/* the reserve could not be kept */
	struct strlist ext_dbs;	/* other modules' databases, in open order */
	int nosync_mode;		/* writer-thread only: current env flag */

	struct quota *quotas;
	size_t nquotas;
	struct domhash *quota_index;	/* domain -> index into quotas */
	struct lease *leases;		/* sorted by id */
	size_t nleases;

	uint32_t id_sec, id_ctr;

	queue_arrival_fn *arrival;	/* queue_set_arrival_hook */
	void *arrival_arg;

	struct queue_warm *warm;	/* read-ahead thread (queue_warm.c), lazily */
	int warm_failed;		/* it could not be started: scans read freely */

	/* Reporting (queue_notice.c): what the open found, counters, and
	 * notices waiting for the hook (under note_mu). */
	struct queue_open_info open_info;
	uint64_t n_corrupt, n_unreadable, n_write_failed;	/* atomic */
	pthread_mutex_t note_mu;
	queue_notice_fn *note_fn;
	void *note_arg;
	struct queue_note_rec notes[QUEUE_NOTES_MAX];
	size_t nnotes;
	uint64_t notes_dropped;
	int notes_waiting;		/* atomic: nnotes > 0 */
};

struct queue_put {
	struct queue *q;
	char id[QUEUE_ID_LEN + 1];
	unsigned char *buf;
	size_t fill;
	uint64_t size;
	uint32_t nchunks;
	unsigned inflight;		/* chunk jobs not yet completed */
	unsigned refs;			/* jobs not yet completed */
	int err;
	int committed, abandoned, paused;
	int wr_failed;			/* writer thread only */
	void (*resume)(void *arg);
	void *resume_arg;
};

struct queue_body {
	struct queue *q;
	char id[QUEUE_ID_LEN + 1];
	uint32_t next, nchunks;
	unsigned char *buf;
	size_t len;
};

/*
 * New mail may fill the map only up to QUEUE_MAP_RESERVE_PCT: the rest is
 * kept for recording deliveries and deletions, so a full queue can always
 * drain (a delivery whose result could not be written would be sent
 * again). Pages in use are counted per database; free pages do not count.
 */
#define QUEUE_MAP_RESERVE_PCT	90

/* A growing list of queue ids. */
struct idlist {
	char (*v)[QUEUE_ID_LEN + 1];
	size_t n, cap;
};

/* One more of a trouble counter of struct queue (any thread). */
#define QUEUE_COUNT(c)	__atomic_add_fetch(&(c), 1, __ATOMIC_RELAXED)

#define TOTALS_N	4	/* messages, bytes, queued rcpts, on the retry index */

/* Shared between the queue files (internal, not an interface). */
int queue_code(int rc);
void queue_new_id(struct queue *q, char *id);
size_t queue_domain_key(const char *domain, char *buf);
char *queue_xstrdup_null(const char *s);
struct queue_envelope *queue_envelope_copy(const struct queue_envelope *src);
int queue_rcpt_first_in_domain(const struct queue_envelope *env, size_t i);
int queue_totals_adjust(struct queue *q, MDB_txn *txn, const int64_t *delta);
int queue_oldest_rebuild(struct queue *q, MDB_txn *txn);
void queue_totals_of(const struct queue_envelope *env, int sign, int64_t *delta);
void queue_body_key(const char *id, uint32_t chunk, unsigned char *key);
int queue_body_delete(struct queue *q, MDB_txn *txn, const char *id);
int queue_marker_set(struct queue *q, MDB_txn *txn, const char *id, int on);
int queue_msg_load(struct queue *q, MDB_txn *txn, const char *id,
    struct queue_envelope **env_r, uint32_t *nchunks_r);
/* A record of db_msg: 1 decoded (id set from the key), 0 the key is no
 * message id (id untouched), -1 corrupt (id set). */
int queue_msg_decode(const MDB_val *k, const MDB_val *d, char *id,
    struct queue_envelope **env_r);
int queue_totals_count(struct queue *q, MDB_txn *txn, int64_t *sum,
    uint64_t *nmsgs_r);
uint64_t queue_map_used_bytes(struct queue *q, MDB_txn *txn);
int queue_map_has_room(struct queue *q, MDB_txn *txn, uint64_t need);
void queue_prealloc(struct queue *q);
uint64_t queue_fs_avail(const struct queue *q);
int queue_fs_has_room(struct queue *q, MDB_txn *txn, uint64_t need);
void *queue_writer_main(void *arg);
void queue_drain_finished(struct queue *q);
void queue_done_cb(evutil_socket_t fd, short what, void *arg);
void queue_submit(struct queue *q, struct job *j);
void queue_complete(struct queue *q, struct job *j);
struct job *queue_job_new(enum job_type type, const char *id);
void queue_quotas_free(struct quota *v, size_t n);
void queue_idlist_add(struct idlist *l, const void *id);
int queue_writer_compact(struct queue *q, struct job *j);
int queue_swap(struct queue *q);
int queue_cursor_seek(MDB_cursor *c, MDB_val *k, MDB_val *d,
    const void *key, size_t klen, int past);

/* queue_warm.c: records read ahead of queue_scan_ahead's scans. */
#define QWARM_READY	0	/* scan up to *limit_r ("" = no limit) */
#define QWARM_PENDING	1	/* nothing read ahead yet: call again soon */
#define QWARM_DONE	2	/* nothing between the cursor and endkey */
/* Loop thread: where the scan whose cursor buffer is `cursor` may read
 * to, its end being endkey; starts the thread at its first use. */
int queue_warm_window(struct queue *q, const char *cursor, const char *endkey,
    char *limit_r);
/* Loop thread: the scan took n more records. */
void queue_warm_taken(struct queue *q, const char *cursor, size_t n);
/* Loop thread: hold (1) or release (0) the environment against the
 * thread's transactions (the compaction's swap). */
void queue_warm_lock_env(struct queue *q, int lock);
void queue_warm_free(struct queue_warm **w);
/* A notice for the caller's hook (any thread). */
void queue_note(struct queue *q, enum queue_notice_level level,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
