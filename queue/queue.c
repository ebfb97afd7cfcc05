/*
 * queue - the durable mail queue in LMDB: opening (format check, upgrade,
 * recovery of unfinished puts, stale leases), closing, compaction, and the
 * writes other queue/ modules hand to the writer (queue_private.h).
 *
 * The module's files: queue_record.c (record format, byte helpers),
 * queue_writer.c (the writer thread: indexes, jobs applied in batches),
 * queue_jobs.c (the loop side of writes: puts, updates, deletes, leases),
 * queue_read.c (reads, the body reader, space and counters); queue_impl.h
 * holds what they share.
 *
 * Databases (all in one environment, MDB_NOTLS so read transactions are
 * not tied to threads):
 *   meta        "version" -> uint32 BE format version
 *               "totals" -> uint64 BE messages, bytes, queued recipients,
 *               messages with a retry time (format 2; what stats read)
 *   msg         id -> envelope + recipients (queue_record_encode)
 *   body        id + uint32 BE chunk no -> up to QUEUE_CHUNK_SIZE bytes
 *   dom         lowercase domain + '\0' + id -> "" (QUEUED rcpts there)
 *   sched       uint64 BE next_attempt + id -> "" (QUEUED, next_attempt > 0)
 *   count       lowercase domain -> uint64 BE messages, uint64 BE bytes
 *   lease       id -> owner (mirror of the in-memory leases, for tools)
 *   incomplete  id -> "" while a put has chunks but no msg record
 *
 * One writer thread runs every write transaction. It takes all pending
 * jobs at once and applies them in one transaction (group commit: one
 * fsync for the batch); if any job fails, the batch is aborted and the
 * jobs are replayed one per transaction so only the guilty one fails.
 * Completions travel back to the loop thread through an event made
 * active from the writer. Without a loop (tools, tests) jobs run inline.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <lmdb.h>

#include "config.h"
#include "domhash.h"
#include "util.h"
#include "xmalloc.h"
#include "queue.h"
#include "queue_private.h"
#include "domstate.h"
#include "queue_impl.h"

static int queue_open_dbs(struct queue *q, MDB_txn *txn, unsigned flags);

/* ---- compaction ---- */

/* Writer thread (or inline): the compacting copy into data.mdb.compact. */
int queue_writer_compact(struct queue *q, struct job *j)
{
	char *tmp = xasprintf("%s/data.mdb.compact", q->dir);
	struct stat sb;
	int fd, dfd, rc;

	if (mdb_env_get_fd(q->env, &dfd) == 0 && fstat(dfd, &sb) == 0 &&
	    j->before_r != NULL)
		*j->before_r = (uint64_t)sb.st_size;
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		queue_note(q, QUEUE_NOTICE_ERROR, "compact: %s: %s", tmp,
		    strerror(errno));
		free(tmp);
		return QUEUE_EIO;
	}
	rc = mdb_env_copyfd2(q->env, fd, MDB_CP_COMPACT);
	if (rc == 0 && fsync(fd) < 0)
		rc = errno;
	if (rc == 0 && fstat(fd, &sb) == 0 && j->after_r != NULL)
		*j->after_r = (uint64_t)sb.st_size;
	close(fd);
	if (rc != 0) {
		queue_note(q, QUEUE_NOTICE_ERROR, "compact: copy failed: %s",
		    mdb_strerror(rc));
		(void)unlink(tmp);
	}
	free(tmp);
	return rc == 0 ? QUEUE_OK : rc == ENOSPC ? QUEUE_EFULL : QUEUE_EIO;
}

/*
 * Loop thread, writer waiting: put the compacted copy in place and reopen.
 * No read transaction is open here (they all end inside the calls that
 * begin them). A failure to reopen leaves no usable queue: QUEUE_ELOST,
 * which the caller must treat as fatal.
 */
int queue_swap(struct queue *q)
{
	char *tmp = xasprintf("%s/data.mdb.compact", q->dir);
	char *path = xasprintf("%s/data.mdb", q->dir);
	MDB_txn *txn;
	int rc, dfd;

	queue_warm_lock_env(q, 1);
	mdb_env_close(q->env);
	q->env = NULL;
	if (rename(tmp, path) < 0)
		queue_note(q, QUEUE_NOTICE_ERROR,
		    "compact: rename %s: %s (keeping the old file)", tmp,
		    strerror(errno));
	if ((dfd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	free(tmp);
	free(path);
	rc = mdb_env_create(&q->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(q->env, 16);
	if (rc == 0)
		rc = mdb_env_set_mapsize(q->env, (size_t)q->map_size);
	if (rc == 0)
		rc = mdb_env_open(q->env, q->dir, MDB_NOTLS, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc == 0) {
		rc = queue_open_dbs(q, txn, 0);
		/* Same order as before: the handles other modules hold stay. */
		for (size_t i = 0; rc == 0 && i < q->ext_dbs.n; i++) {
			MDB_dbi dbi;

			rc = mdb_dbi_open(txn, q->ext_dbs.v[i], 0, &dbi);
			if (rc == MDB_NOTFOUND)
				rc = 0;	/* its creation was rolled back */
		}
		rc = queue_txn_end(txn, rc);
	}
	queue_warm_lock_env(q, 0);
	if (rc != 0) {
		queue_note(q, QUEUE_NOTICE_ERROR,
		    "compact: cannot reopen the queue: %s", mdb_strerror(rc));
		return QUEUE_ELOST;
	}
	q->nosync_mode = 0;
	queue_prealloc(q);
	return QUEUE_OK;
}

void queue_compact(struct queue *q, uint64_t *before_r, uint64_t *after_r,
    queue_done_fn *done, void *arg)
{
	struct job *j = queue_job_new(JOB_COMPACT, NULL);

	j->before_r = before_r;
	j->after_r = after_r;
	j->done = done;
	j->arg = arg;
	if (q->writer_started || q->rdonly) {
		queue_submit(q, j);	/* read-only: fails it */
		return;
	}
	{
		/* No writer thread: compact and swap on this one. */
		j->result = queue_writer_compact(q, j);
		if (j->result == QUEUE_OK)
			j->result = queue_swap(q);
		queue_notices_flush(q);
		queue_complete(q, j);
	}
}

/* ---- open, recovery, close ---- */

static int queue_open_dbs(struct queue *q, MDB_txn *txn, unsigned flags)
{
	static const char *names[] = { "meta", "msg", "body", "dom", "sched",
	    "count", "lease", "incomplete" };
	MDB_dbi *dbis[] = { &q->db_meta, &q->db_msg, &q->db_body, &q->db_dom,
	    &q->db_sched, &q->db_count, &q->db_lease, &q->db_incomplete };
	size_t i;
	int rc;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		rc = mdb_dbi_open(txn, names[i], flags, dbis[i]);
		if (rc != 0)
			return rc;
	}
	/* Newer than the others: a queue from before opened read-only has
	 * none (its readers then look in the domain index). */
	rc = mdb_dbi_open(txn, "oldest", 0, &q->db_oldest);
	q->have_oldest = rc == 0;
	/* Writable: created (and filled) by queue_oldest_create. */
	q->oldest_new = rc == MDB_NOTFOUND && (flags & MDB_CREATE);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * Once, for a queue from before the "oldest" records: create them (one
 * seek per domain with mail), in a transaction of their own, so that a
 * queue too full for them still opens (then stats seeks in the index).
 */
static void queue_oldest_create(struct queue *q)
{
	MDB_txn *txn;
	int rc;

	rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc != 0)
		goto fail;
	rc = mdb_dbi_open(txn, "oldest", MDB_CREATE, &q->db_oldest);
	if (rc == 0)
		rc = queue_oldest_rebuild(q, txn);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc == 0) {
		q->have_oldest = 1;
		return;
	}
fail:
	q->open_info.oldest_missing = 1;
	snprintf(q->open_info.oldest_error, sizeof(q->open_info.oldest_error),
	    "%s", mdb_strerror(rc));
	queue_note(q, QUEUE_NOTICE_WARN, "queue: no oldest-message records "
	    "(%s): odrelayctl stats reads the domain index instead",
	    mdb_strerror(rc));
}

/* 0 ok (or no version yet when *have_r == 0), else fills err. */
static int queue_check_version(struct queue *q, char *err, size_t errlen, int *have_r)
{
	MDB_txn *txn;
	MDB_dbi meta;
	MDB_val k = { 7, "version" }, d;
	int rc;

	*have_r = 0;
	rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0) {
		snprintf(err, errlen, "read transaction: %s", mdb_strerror(rc));
		return QUEUE_EIO;
	}
	rc = mdb_dbi_open(txn, "meta", 0, &meta);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (rc == 0)
		rc = mdb_get(txn, meta, &k, &d);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		snprintf(err, errlen, "reading format version: %s", mdb_strerror(rc));
		return QUEUE_EIO;
	}
	*have_r = 1;
	if (d.mv_size == 4 && queue_be32_get(d.mv_data) == 1) {
		*have_r = 2;	/* format 1: upgraded when opened for writing */
	} else if (d.mv_size != 4 || queue_be32_get(d.mv_data) != QUEUE_FORMAT_VERSION) {
		snprintf(err, errlen, "queue format version %u not supported "
		    "(this program understands version %d); queue left unchanged",
		    d.mv_size == 4 ? (unsigned)queue_be32_get(d.mv_data) : 0u,
		    QUEUE_FORMAT_VERSION);
		mdb_txn_abort(txn);
		return QUEUE_EVERSION;
	}
	mdb_txn_abort(txn);
	return 0;
}

/*
 * Remove chunks of puts that never committed; clear leases. Only the
 * "incomplete" markers are read (a put marks its first chunk in the same
 * transaction), so start-up does not depend on how much mail is held.
 */
static int queue_recover(struct queue *q, MDB_txn *txn, unsigned *orphans_r)
{
	MDB_cursor *c;
	MDB_val k, d;
	struct idlist l = { NULL, 0, 0 };
	size_t i;
	int rc;

	*orphans_r = 0;
	rc = mdb_cursor_open(txn, q->db_incomplete, &c);
	if (rc != 0)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT))
		if (k.mv_size == QUEUE_ID_LEN)
			queue_idlist_add(&l, k.mv_data);
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		goto out;
	rc = 0;
	for (i = 0; rc == 0 && i < l.n; i++) {
		MDB_val mk = { QUEUE_ID_LEN, l.v[i] }, md;

		if (mdb_get(txn, q->db_msg, &mk, &md) == MDB_NOTFOUND) {
			rc = queue_body_delete(q, txn, l.v[i]);
			(*orphans_r)++;
		}
		if (rc == 0)
			rc = queue_marker_set(q, txn, l.v[i], 0);
	}
	if (rc == 0)
		rc = mdb_drop(txn, q->db_lease, 0);
out:
	free(l.v);
	return rc;
}

/*
 * Format 1 had no totals: count them once (the only whole-queue read at
 * start, done when upgrading), then mark the queue as format 2.
 */
static int queue_migrate_v1(struct queue *q, MDB_txn *txn, uint64_t *nmsgs_r)
{
	int64_t sum[TOTALS_N];
	unsigned char vbuf[4];
	int rc;

	if ((rc = queue_totals_count(q, txn, sum, nmsgs_r)) != 0)
		return rc;
	{
		MDB_val tk = { 6, "totals" };

		rc = mdb_del(txn, q->db_meta, &tk, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
	}
	rc = queue_totals_adjust(q, txn, sum);
	if (rc == 0) {
		MDB_val vk = { 7, "version" }, vd = { 4, vbuf };

		queue_be32_put(vbuf, QUEUE_FORMAT_VERSION);
		rc = mdb_put(txn, q->db_meta, &vk, &vd, 0);
	}
	return rc;
}

static struct queue *queue_open_env(const char *dir, struct event_base *base,
    uint64_t map_size, int rdonly, char *err, size_t errlen)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	MDB_txn *txn = NULL;
	unsigned char vbuf[4];
	MDB_val k = { 7, "version" }, d = { 4, vbuf };
	unsigned orphans = 0;
	int rc, have_version, vr;

	q->rdonly = rdonly;
	q->base = rdonly ? NULL : base;
	q->dir = xstrdup(dir);
	pthread_mutex_init(&q->mu, NULL);
	pthread_mutex_init(&q->note_mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	q->lock_fd = -1;
	if (!rdonly && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
		goto fail;
	}
	if (!rdonly) {
		/*
		 * Recovery deletes chunks of unfinished puts: it must never
		 * run while another process (a daemon, a tool) is writing.
		 */
		char *path = xasprintf("%s/odrelay.lock", dir);

		q->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		free(path);
		if (q->lock_fd < 0) {
			snprintf(err, errlen, "%s/odrelay.lock: %s", dir, strerror(errno));
			goto fail;
		}
		if (flock(q->lock_fd, LOCK_EX | LOCK_NB) < 0) {
			snprintf(err, errlen, "queue %s is in use by another process%s",
			    dir, errno == EWOULDBLOCK ? "" : " (lock failed)");
			goto fail;
		}
	}
	rc = mdb_env_create(&q->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(q->env, 16);
	/* 0: the configuration's default, not LMDB's tiny 1 MB. */
	if (!rdonly && map_size == 0)
		map_size = QUEUE_DEFAULT_MAP_SIZE;
	if (rc == 0 && !rdonly)
		rc = mdb_env_set_mapsize(q->env, (size_t)map_size);
	q->map_size = map_size;
	if (rc == 0)
		rc = mdb_env_open(q->env, dir, MDB_NOTLS | (rdonly ? MDB_RDONLY : 0), 0600);
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	if (!rdonly) {
		int dead = 0;

		mdb_reader_check(q->env, &dead);
	}
	vr = queue_check_version(q, err, errlen, &have_version);
	if (vr != 0)
		goto fail;
	if (rdonly) {
		if (!have_version) {
			snprintf(err, errlen, "%s: not an odrelay queue (no version)", dir);
			goto fail;
		}
		rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn);
		if (rc == 0)
			rc = queue_open_dbs(q, txn, 0);
		rc = queue_txn_end(txn, rc);
		if (rc != 0) {
			snprintf(err, errlen, "%s: %s", dir, mdb_strerror(rc));
			goto fail;
		}
		return q;
	}
	rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc == 0)
		rc = queue_open_dbs(q, txn, MDB_CREATE);
	if (rc == 0 && !have_version) {
		queue_be32_put(vbuf, QUEUE_FORMAT_VERSION);
		rc = mdb_put(txn, q->db_meta, &k, &d, 0);
	}
	if (rc == 0)
		rc = queue_recover(q, txn, &orphans);
	if (rc == 0 && have_version == 2) {
		uint64_t nmsgs = 0;

		rc = queue_migrate_v1(q, txn, &nmsgs);
		if (rc == 0) {
			q->open_info.upgraded_from = 1;
			q->open_info.upgraded_to = QUEUE_FORMAT_VERSION;
			q->open_info.upgraded_messages = nmsgs;
		}
	}
	rc = queue_txn_end(txn, rc);
	if (rc != 0) {
		snprintf(err, errlen, "%s: opening queue: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	q->open_info.orphans_removed = orphans;
	if (q->open_info.upgraded_from != 0)
		queue_note(q, QUEUE_NOTICE_INFO,
		    "queue: upgraded from format %d to %d (%llu messages)",
		    q->open_info.upgraded_from, q->open_info.upgraded_to,
		    (unsigned long long)q->open_info.upgraded_messages);
	if (orphans > 0)
		queue_note(q, QUEUE_NOTICE_INFO,
		    "queue: removed %u unfinished message bodies", orphans);
	if (q->oldest_new)
		queue_oldest_create(q);
	queue_prealloc(q);
	if (base != NULL) {
		q->done_ev = event_new(base, -1, 0, queue_done_cb, q);
		if (q->done_ev == NULL) {
			snprintf(err, errlen, "event_new failed");
			goto fail;
		}
		rc = pthread_create(&q->writer, NULL, queue_writer_main, q);
		if (rc != 0) {
			snprintf(err, errlen, "writer thread: %s", strerror(rc));
			goto fail;
		}
		q->writer_started = 1;
	}
	return q;
fail:
	queue_close(&q);	/* no writer thread yet */
	return NULL;
}

struct queue *queue_open(const char *dir, struct event_base *base,
    uint64_t map_size, char *err, size_t errlen)
{
	return queue_open_env(dir, base, map_size, 0, err, errlen);
}

struct queue *queue_open_readonly(const char *dir, char *err, size_t errlen)
{
	return queue_open_env(dir, NULL, 0, 1, err, errlen);
}

void queue_close(struct queue **qp)
{
	struct queue *q = *qp;
	size_t i;

	if (q == NULL)
		return;
	*qp = NULL;
	if (q->writer_started) {
		pthread_mutex_lock(&q->mu);
		q->stopping = 1;
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->writer, NULL);
		/* Completions not yet delivered by the loop run now; a job
		 * they submit (an unlease) is written inline, not lost. */
		q->writer_started = 0;
		queue_drain_finished(q);
	}
	queue_warm_free(&q->warm);
	queue_notices_flush(q);
	if (q->done_ev != NULL)
		event_free(q->done_ev);
	queue_quotas_free(q->quotas, q->nquotas);
	domhash_free(&q->quota_index);
	strlist_free(&q->ext_dbs);
	for (i = 0; i < q->nleases; i++)
		free(q->leases[i].owner);
	free(q->leases);
	if (q->env != NULL)
		mdb_env_close(q->env);
	if (q->lock_fd >= 0)
		close(q->lock_fd);
	pthread_mutex_destroy(&q->mu);
	pthread_mutex_destroy(&q->note_mu);
	pthread_cond_destroy(&q->cv);
	free(q->dir);
	free(q);
}

int queue_delete_domain_step(struct queue *q, const char *domain,
    char *cursor, size_t max, unsigned long *deleted_r,
    unsigned long *partial_r, unsigned long *busy_r)
{
	char ids[256][QUEUE_ID_LEN + 1];
	char lower[QUEUE_DOMAIN_MAX + 1];
	int n, k;

	queue_domain_key(domain, lower);	/* the domain index is in lower case */
	if (max > 256)
		max = 256;
	n = queue_domain_ids(q, lower, cursor, ids, max);
	if (n < 0)
		return n;
	for (k = 0; k < n; k++) {
		struct queue_envelope *env = NULL;
		struct queue_rcpt_update *up;
		size_t nup = 0;
		int others = 0;

		if (queue_is_leased(q, ids[k])) {
			(*busy_r)++;
			continue;
		}
		if (queue_get(q, ids[k], &env) != 1)
			continue;
		up = xcalloc(env->nrcpts, sizeof(*up));
		for (size_t i = 0; i < env->nrcpts; i++) {
			const struct queue_rcpt *r = &env->rcpts[i];

			if (r->state != QUEUE_RCPT_QUEUED)
				continue;
			if (r->domain == NULL || strcasecmp(r->domain, lower) != 0) {
				others = 1;
				continue;
			}
			up[nup].index = i;
			up[nup].state = QUEUE_RCPT_BOUNCED;
			up[nup].reply = "deleted by the administrator";
			nup++;
		}
		if (others) {
			queue_update(q, env->id, up, nup, NULL, NULL, 0, NULL, NULL);
			(*partial_r)++;
		} else {
			queue_delete(q, env->id, NULL, NULL);
			(*deleted_r)++;
		}
		free(up);
		queue_envelope_free(&env);
	}
	if (n > 0)
		memcpy(cursor, ids[n - 1], QUEUE_ID_LEN + 1);
	return (size_t)n == max ? 1 : 0;
}

int queue_delete_domain(struct queue *q, const char *domain,
    unsigned long *deleted_r, unsigned long *partial_r, unsigned long *busy_r)
{
	char cursor[QUEUE_ID_LEN + 1] = "";
	int rc;

	*deleted_r = *partial_r = *busy_r = 0;
	while ((rc = queue_delete_domain_step(q, domain, cursor, 256, deleted_r,
	    partial_r, busy_r)) == 1)
		;
	return rc < 0 ? rc : QUEUE_OK;
}

void queue_test_hold_writer(struct queue *q, int hold)
{
	pthread_mutex_lock(&q->mu);
	q->test_hold = hold;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

/* ---- writes of other queue/ modules (queue_private.h) ---- */

MDB_env *queue_ext_env(struct queue *q)
{
	return q->env;
}

int queue_ext_dbi_open(struct queue *q, MDB_txn *txn, const char *name,
    unsigned flags, MDB_dbi *dbi_r)
{
	int rc = mdb_dbi_open(txn, name, flags, dbi_r);
	size_t i;

	if (rc != 0)
		return rc;
	for (i = 0; i < q->ext_dbs.n; i++)
		if (strcmp(q->ext_dbs.v[i], name) == 0)
			return 0;
	strlist_add(&q->ext_dbs, name);
	return 0;
}

int queue_ext_rdonly(const struct queue *q)
{
	return q->rdonly;
}

int queue_ext_setup(struct queue *q, queue_ext_setup_fn *fn, void *arg,
    const char *what, char *err, size_t errlen)
{
	MDB_txn *txn;
	int r;

	/* At start-up only: the writer thread is idle, a short wait at most. */
	r = mdb_txn_begin(q->env, NULL, q->rdonly ? MDB_RDONLY : 0, &txn);
	if (r == 0) {
		r = fn(txn, q->rdonly ? 0 : MDB_CREATE, arg);
		if (r == MDB_NOTFOUND && q->rdonly) {
			mdb_txn_abort(txn);
			return 1;
		}
		r = queue_txn_end(txn, r);
	}
	if (r == 0)
		return 0;
	snprintf(err, errlen, "%s: %s", what, mdb_strerror(r));
	return -1;
}

void queue_ext_submit(struct queue *q, queue_ext_apply_fn *apply,
    void (*release)(void *), void *arg, queue_done_fn *done, void *darg)
{
	struct job *j = queue_job_new(JOB_EXT, NULL);

	j->ext_apply = apply;
	j->ext_free = release;
	j->ext_arg = arg;
	j->done = done;
	j->arg = darg;
	queue_submit(q, j);
}
