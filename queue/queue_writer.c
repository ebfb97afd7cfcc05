/*
 * queue_writer - the writer thread: every LMDB write transaction of the
 * queue. It takes all pending jobs at once and applies them in one
 * transaction (group commit: one fsync per batch); if a job fails, the
 * batch is aborted and replayed one job per transaction so only the
 * guilty one fails. Index maintenance (dom, sched, count, totals) happens
 * here, inside the job's transaction. Completions go back to the loop
 * thread (queue_complete).
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
#include "turnwatch.h"

/* ---- index maintenance (writer thread, inside a write txn) ---- */

static int queue_dom_key_make(const char *domain, const char *id, char *buf, MDB_val *k)
{
	size_t n = queue_domain_key(domain, buf);

	buf[n] = '\0';
	memcpy(buf + n + 1, id, QUEUE_ID_LEN);
	k->mv_data = buf;
	k->mv_size = n + 1 + QUEUE_ID_LEN;
	return 0;
}

/* Is recipient i the first QUEUED one of its domain (case-insensitive)? */
int queue_rcpt_first_in_domain(const struct queue_envelope *env, size_t i)
{
	size_t j;

	for (j = 0; j < i; j++)
		if (env->rcpts[j].state == QUEUE_RCPT_QUEUED &&
		    strcasecmp(env->rcpts[j].domain, env->rcpts[i].domain) == 0)
			return 0;
	return 1;
}

/*
 * The "oldest" record of a domain: the id and arrival of its oldest queued
 * message (the first of its index), so that stats reads one small record
 * per domain instead of seeking in the domain index (50,000 domains over
 * 2M messages: about 10,000 of its pages). Kept with the counters: set
 * when a domain gets its first message or an older one, moved to the next
 * message of the index when the oldest goes, removed with the last. A
 * domain that had mail before this record existed (an older queue) has
 * none until it is empty once: readers then seek in the index.
 */
#define OLDEST_LEN (QUEUE_ID_LEN + 8)

static int queue_oldest_put(struct queue *q, MDB_txn *txn, MDB_val *k,
    const char *id, time_t arrival)
{
	unsigned char v[OLDEST_LEN];
	MDB_val d = { sizeof(v), v };

	memcpy(v, id, QUEUE_ID_LEN);
	queue_be64_put(v + QUEUE_ID_LEN, (uint64_t)(int64_t)arrival);
	return mdb_put(txn, q->db_oldest, k, &d, 0);
}

static int queue_oldest_adjust(struct queue *q, MDB_txn *txn, MDB_val *k,
    const struct queue_envelope *env, int sign, uint64_t before,
    uint64_t after)
{
	char kbuf[QUEUE_DOMAIN_MAX + 2];
	MDB_val d, ik, mk, md;
	MDB_cursor *c;
	time_t arrival = 0;
	int rc, have;

	if (!q->have_oldest)
		return 0;
	if (after == 0) {
		rc = mdb_del(txn, q->db_oldest, k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	rc = mdb_get(txn, q->db_oldest, k, &d);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	have = rc == 0 && d.mv_size == OLDEST_LEN;
	if (sign > 0) {
		if (before == 0 || (have && memcmp(env->id, d.mv_data,
		    QUEUE_ID_LEN) < 0))
			return queue_oldest_put(q, txn, k, env->id, env->arrival);
		return 0;
	}
	if (!have || memcmp(env->id, d.mv_data, QUEUE_ID_LEN) != 0)
		return 0;
	/* The oldest went (its index key is already deleted): the next. */
	memcpy(kbuf, k->mv_data, k->mv_size);
	kbuf[k->mv_size] = '\0';
	ik.mv_data = kbuf;
	ik.mv_size = k->mv_size + 1;
	if ((rc = mdb_cursor_open(txn, q->db_dom, &c)) != 0)
		return rc;
	rc = mdb_cursor_get(c, &ik, &d, MDB_SET_RANGE);
	if (rc == 0 && (ik.mv_size != k->mv_size + 1 + QUEUE_ID_LEN ||
	    memcmp(ik.mv_data, kbuf, k->mv_size + 1) != 0))
		rc = MDB_NOTFOUND;
	if (rc == 0) {
		mk.mv_data = (char *)ik.mv_data + k->mv_size + 1;
		mk.mv_size = QUEUE_ID_LEN;
		if ((rc = mdb_get(txn, q->db_msg, &mk, &md)) == 0)
			(void)queue_record_arrival(md.mv_data, md.mv_size,
			    &arrival);
	}
	mdb_cursor_close(c);
	if (rc == 0)
		return queue_oldest_put(q, txn, k, mk.mv_data, arrival);
	if (rc != MDB_NOTFOUND)
		return rc;
	/* Counted but not in the index: unknown (readers seek). */
	rc = mdb_del(txn, q->db_oldest, k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Every domain with mail gets its record (a queue from before them). */
int queue_oldest_rebuild(struct queue *q, MDB_txn *txn)
{
	char kbuf[QUEUE_DOMAIN_MAX + 2];
	MDB_cursor *cc, *dc;
	MDB_val k, d, ik, mk, md;
	int rc;

	if ((rc = mdb_cursor_open(txn, q->db_count, &cc)) != 0)
		return rc;
	if ((rc = mdb_cursor_open(txn, q->db_dom, &dc)) != 0) {
		mdb_cursor_close(cc);
		return rc;
	}
	for (rc = mdb_cursor_get(cc, &k, &d, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cc, &k, &d, MDB_NEXT)) {
		time_t arrival = 0;

		if (k.mv_size == 0 || k.mv_size > QUEUE_DOMAIN_MAX)
			continue;
		memcpy(kbuf, k.mv_data, k.mv_size);
		kbuf[k.mv_size] = '\0';
		ik.mv_data = kbuf;
		ik.mv_size = k.mv_size + 1;
		rc = mdb_cursor_get(dc, &ik, &md, MDB_SET_RANGE);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc != 0)
			break;
		if (ik.mv_size != k.mv_size + 1 + QUEUE_ID_LEN ||
		    memcmp(ik.mv_data, kbuf, k.mv_size + 1) != 0)
			continue;
		mk.mv_data = (char *)ik.mv_data + k.mv_size + 1;
		mk.mv_size = QUEUE_ID_LEN;
		if ((rc = mdb_get(txn, q->db_msg, &mk, &md)) == MDB_NOTFOUND)
			continue;
		if (rc != 0)
			break;
		(void)queue_record_arrival(md.mv_data, md.mv_size, &arrival);
		{
			char id[QUEUE_ID_LEN];
			MDB_val kk = { k.mv_size, kbuf };

			memcpy(id, mk.mv_data, QUEUE_ID_LEN);
			if ((rc = queue_oldest_put(q, txn, &kk, id, arrival)) != 0)
				break;
		}
	}
	mdb_cursor_close(dc);
	mdb_cursor_close(cc);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int queue_count_adjust(struct queue *q, MDB_txn *txn,
    const struct queue_envelope *env, const char *domain, int sign)
{
	int64_t dmsgs = sign, dbytes = sign * (int64_t)env->size;
	uint64_t before;
	char kbuf[QUEUE_DOMAIN_MAX + 1];
	unsigned char v[16];
	MDB_val k, d;
	uint64_t msgs = 0, bytes = 0;
	int rc;

	k.mv_data = kbuf;
	k.mv_size = queue_domain_key(domain, kbuf);
	rc = mdb_get(txn, q->db_count, &k, &d);
	if (rc == 0 && d.mv_size == 16) {
		msgs = queue_be64_get(d.mv_data);
		bytes = queue_be64_get((const unsigned char *)d.mv_data + 8);
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		return rc;
	}
	/* Counters never go below zero, whatever happened before. */
	before = msgs;
	msgs = (dmsgs < 0 && (uint64_t)-dmsgs > msgs) ? 0 : msgs + dmsgs;
	bytes = (dbytes < 0 && (uint64_t)-dbytes > bytes) ? 0 : bytes + dbytes;
	if ((rc = queue_oldest_adjust(q, txn, &k, env, sign, before, msgs)) != 0)
		return rc;
	if (msgs == 0) {
		rc = mdb_del(txn, q->db_count, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	queue_be64_put(v, msgs);
	queue_be64_put(v + 8, bytes);
	d.mv_data = v;
	d.mv_size = sizeof(v);
	return mdb_put(txn, q->db_count, &k, &d, 0);
}

/* Whole-queue counters in meta "totals", so stats never scan. */
int queue_totals_adjust(struct queue *q, MDB_txn *txn, const int64_t *delta)
{
	MDB_val k = { 6, "totals" }, d;
	unsigned char v[8 * TOTALS_N];
	uint64_t cur[TOTALS_N] = { 0, 0, 0, 0 };
	int rc, i;

	rc = mdb_get(txn, q->db_meta, &k, &d);
	if (rc == 0 && d.mv_size == sizeof(v)) {
		for (i = 0; i < TOTALS_N; i++)
			cur[i] = queue_be64_get((const unsigned char *)d.mv_data + 8 * i);
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		return rc;
	}
	for (i = 0; i < TOTALS_N; i++) {
		cur[i] = (delta[i] < 0 && (uint64_t)-delta[i] > cur[i]) ? 0 :
		    cur[i] + delta[i];
		queue_be64_put(v + 8 * i, cur[i]);
	}
	d.mv_data = v;
	d.mv_size = sizeof(v);
	return mdb_put(txn, q->db_meta, &k, &d, 0);
}

/* env's share of the totals (times sign). */
void queue_totals_of(const struct queue_envelope *env, int sign, int64_t *delta)
{
	int64_t rcpts = 0, retry = 0;

	for (size_t i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED) {
			rcpts++;
			if (env->rcpts[i].next_attempt > 0)
				retry = 1;
		}
	delta[0] = rcpts > 0 ? sign : 0;
	delta[1] = rcpts > 0 ? sign * (int64_t)env->size : 0;
	delta[2] = sign * rcpts;
	delta[3] = sign * retry;
}

/* Put (sign 1) or delete (sign -1) one index key; one already gone is
 * no error. An LMDB code. */
static int queue_index_key(MDB_txn *txn, MDB_dbi db, MDB_val *k, MDB_val *d,
    int sign)
{
	int rc = sign > 0 ? mdb_put(txn, db, k, d, 0) : mdb_del(txn, db, k, NULL);

	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Add (sign 1) or remove (sign -1) every index entry and counter of env. */
static int queue_index_env(struct queue *q, MDB_txn *txn,
    const struct queue_envelope *env, int sign)
{
	char kbuf[QUEUE_DOMAIN_MAX + 2 + QUEUE_ID_LEN];
	unsigned char skey[SCHED_KEY_LEN];
	MDB_val k, d = { 0, NULL };
	size_t i;
	int rc;

	/* quarantined: kept, but found only by id (list, release, delete) */
	if (env->flags & QUEUE_F_QUARANTINE)
		return 0;
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		if (r->state != QUEUE_RCPT_QUEUED)
			continue;
		if (queue_rcpt_first_in_domain(env, i)) {
			queue_dom_key_make(r->domain, env->id, kbuf, &k);
			if ((rc = queue_index_key(txn, q->db_dom, &k, &d,
			    sign)) != 0)
				return rc;
			rc = queue_count_adjust(q, txn, env, r->domain, sign);
			if (rc != 0)
				return rc;
		}
		if (r->next_attempt > 0) {
			queue_be64_put(skey, (uint64_t)(int64_t)r->next_attempt);
			memcpy(skey + 8, env->id, QUEUE_ID_LEN);
			k.mv_data = skey;
			k.mv_size = sizeof(skey);
			if ((rc = queue_index_key(txn, q->db_sched, &k, &d,
			    sign)) != 0)
				return rc;
		}
	}
	{
		int64_t delta[TOTALS_N];

		queue_totals_of(env, sign, delta);
		if (delta[0] != 0 || delta[2] != 0)
			return queue_totals_adjust(q, txn, delta);
	}
	return 0;
}

void queue_body_key(const char *id, uint32_t chunk, unsigned char *key)
{
	memcpy(key, id, QUEUE_ID_LEN);
	queue_be32_put(key + QUEUE_ID_LEN, chunk);
}

static int queue_body_put(struct queue *q, MDB_txn *txn, const char *id,
    uint32_t chunk, const void *data, size_t len)
{
	unsigned char key[BODY_KEY_LEN];
	MDB_val k = { sizeof(key), key }, d = { len, (void *)data };

	queue_body_key(id, chunk, key);
	return mdb_put(txn, q->db_body, &k, &d, MDB_NOOVERWRITE);
}

int queue_body_delete(struct queue *q, MDB_txn *txn, const char *id)
{
	unsigned char key[BODY_KEY_LEN];
	MDB_cursor *c;
	MDB_val k, d;
	int rc;

	rc = mdb_cursor_open(txn, q->db_body, &c);
	if (rc != 0)
		return rc;
	queue_body_key(id, 0, key);
	k.mv_data = key;
	k.mv_size = sizeof(key);
	rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size == BODY_KEY_LEN &&
	    memcmp(k.mv_data, id, QUEUE_ID_LEN) == 0) {
		rc = mdb_cursor_del(c, 0);
		if (rc != 0)
			break;
		rc = mdb_cursor_get(c, &k, &d, MDB_GET_CURRENT);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND || rc == EINVAL ? 0 : rc;
}

int queue_marker_set(struct queue *q, MDB_txn *txn, const char *id, int on)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)id }, d = { 0, NULL };
	int rc;

	if (on)
		return mdb_put(txn, q->db_incomplete, &k, &d, 0);
	rc = mdb_del(txn, q->db_incomplete, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Store a whole new message: record, indexes, counters. */
static int queue_msg_store(struct queue *q, MDB_txn *txn,
    const struct queue_envelope *env, int overwrite)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)env->id }, d;
	uint32_t nchunks = (uint32_t)((env->size + QUEUE_CHUNK_SIZE - 1) / QUEUE_CHUNK_SIZE);
	int rc;

	d.mv_data = queue_record_encode(env, nchunks, &d.mv_size);
	rc = mdb_put(txn, q->db_msg, &k, &d, overwrite ? 0 : MDB_NOOVERWRITE);
	free(d.mv_data);
	if (rc != 0)
		return rc;
	return queue_index_env(q, txn, env, 1);
}

/* Load and decode a message inside txn: 0, an LMDB code, or QUEUE_EIO. */
int queue_msg_load(struct queue *q, MDB_txn *txn, const char *id,
    struct queue_envelope **env_r, uint32_t *nchunks_r)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)id }, d;
	int rc;

	*env_r = NULL;
	rc = mdb_get(txn, q->db_msg, &k, &d);
	if (rc != 0)
		return rc;
	if (queue_record_decode(id, d.mv_data, d.mv_size, env_r, nchunks_r) != QUEUE_OK) {
		QUEUE_COUNT(q->n_corrupt);
		queue_note(q, QUEUE_NOTICE_ERROR, "%.16s: corrupt queue record", id);
		return QUEUE_EIO;
	}
	return 0;
}

/* The record, body and lease of a message (not its indexes). */
static int queue_msg_drop(struct queue *q, MDB_txn *txn, const char *id)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)id };
	int rc;

	rc = mdb_del(txn, q->db_msg, &k, NULL);
	if (rc == 0)
		rc = queue_body_delete(q, txn, id);
	if (rc == 0) {
		rc = mdb_del(txn, q->db_lease, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	return rc;
}

static int queue_msg_remove(struct queue *q, MDB_txn *txn, const struct queue_envelope *env)
{
	int rc;

	rc = queue_index_env(q, txn, env, -1);
	if (rc == 0)
		rc = queue_msg_drop(q, txn, env->id);
	return rc;
}

/* ---- job application (writer thread) ---- */

/* Returns an LMDB code, or one of the negative QUEUE_E* codes as such. */
/* Bytes in pages in use, every database counted; free pages not. */
uint64_t queue_map_used_bytes(struct queue *q, MDB_txn *txn)
{
	MDB_dbi dbis[] = { 0, 1, q->db_meta, q->db_msg, q->db_body, q->db_dom,
	    q->db_sched, q->db_count, q->db_lease, q->db_incomplete,
	    q->db_oldest };
	MDB_stat st;
	uint64_t pages = 0, psize = 4096;
	size_t n = sizeof(dbis) / sizeof(dbis[0]) - !q->have_oldest;

	for (size_t i = 0; i < n; i++) {
		if (mdb_stat(txn, dbis[i], &st) != 0)
			continue;
		psize = st.ms_psize;
		pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
	}
	return pages * psize;
}

int queue_map_has_room(struct queue *q, MDB_txn *txn, uint64_t need)
{
	MDB_envinfo info;

	if (mdb_env_info(q->env, &info) != 0)
		return 1;
	return queue_map_used_bytes(q, txn) + need <=
	    (uint64_t)info.me_mapsize / 100 * QUEUE_MAP_RESERVE_PCT;
}

/*
 * The file system: LMDB needs new pages even to delete, so the data file
 * is kept allocated QUEUE_PREALLOC beyond its last used page (fallocate).
 * Recording a delivery writes into that space and never needs the file
 * system; new mail is refused while the file system has less than
 * min_free left after it, or while the preallocation could not be kept.
 */
static uint64_t queue_prealloc_bytes(const struct queue *q)
{
	uint64_t b = q->map_size / 64;

	if (b < 1024 * 1024)
		b = 1024 * 1024;
	return b > 16 * 1024 * 1024 ? 16 * 1024 * 1024 : b;
}

/*
 * Writer thread (or the opener): keep at least the reserve free inside
 * the data file. Free pages left by deliveries count (LMDB reuses them
 * for the pages a delete needs); what is missing is allocated at the end.
 */
void queue_prealloc(struct queue *q)
{
	MDB_envinfo info;
	MDB_txn *txn;
	struct stat sb;
	uint64_t want, used;
	int fd, rc;

	if (q->rdonly || mdb_env_info(q->env, &info) != 0 ||
	    mdb_env_get_fd(q->env, &fd) != 0 || fstat(fd, &sb) < 0 ||
	    mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return;
	used = queue_map_used_bytes(q, txn);
	mdb_txn_abort(txn);
	want = used + queue_prealloc_bytes(q);
	if (want > (uint64_t)info.me_mapsize)
		want = (uint64_t)info.me_mapsize;
	if ((uint64_t)sb.st_size >= want) {
		if (__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
			queue_note(q, QUEUE_NOTICE_INFO,
			    "queue: reserve restored, accepting mail again");
		__atomic_store_n(&q->space_low, 0, __ATOMIC_RELAXED);
		return;
	}
	rc = posix_fallocate(fd, sb.st_size, (off_t)(want - (uint64_t)sb.st_size));
	if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
		if (!__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
			queue_note(q, QUEUE_NOTICE_WARN,
			    "queue: cannot keep %llu bytes in reserve (%s): "
			    "refusing new mail", (unsigned long long)
			    queue_prealloc_bytes(q), strerror(rc));
		__atomic_store_n(&q->space_low, 1, __ATOMIC_RELAXED);
		return;
	}
	if (__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
		queue_note(q, QUEUE_NOTICE_INFO,
		    "queue: reserve restored, accepting mail again");
	__atomic_store_n(&q->space_low, 0, __ATOMIC_RELAXED);
}

/* Free bytes on the queue's file system for unprivileged use. */
uint64_t queue_fs_avail(const struct queue *q)
{
	struct statvfs vfs;

	if (q->dir == NULL || statvfs(q->dir, &vfs) < 0)
		return UINT64_MAX;
	return (uint64_t)vfs.f_bavail * vfs.f_frsize;
}

/*
 * Room for `need` octets of new mail: free pages inside the data file
 * (what a drain left) count as well as the file system's free space; the
 * reserve and queue_min_free must remain after it.
 */
int queue_fs_has_room(struct queue *q, MDB_txn *txn, uint64_t need)
{
	uint64_t avail = queue_fs_avail(q), used = queue_map_used_bytes(q, txn);
	struct stat sb;
	int fd;

	if (__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
		return 0;
	if (avail == UINT64_MAX)
		return 1;
	if (mdb_env_get_fd(q->env, &fd) == 0 && fstat(fd, &sb) == 0 &&
	    (uint64_t)sb.st_size > used)
		avail += (uint64_t)sb.st_size - used;
	/* LMDB stores a body in whole pages plus its indexes: some slack. */
	need += need / 8 + 16384 + queue_prealloc_bytes(q);
	return avail >= need + q->min_free;
}

static int queue_job_commit(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env = j->env;
	size_t i, k;
	int rc;

	if (j->put->wr_failed)
		return j->put->wr_failed;
	if (!queue_map_has_room(q, txn, env->size) || !queue_fs_has_room(q, txn, env->size))
		return QUEUE_EFULL;
	if (j->len > 0) {
		rc = queue_body_put(q, txn, env->id, j->chunkno, j->data, j->len);
		if (rc != 0)
			return rc;
	}
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		struct queue_domain_stats st = { 0, 0, 0, 0 };
		char kbuf[QUEUE_DOMAIN_MAX + 1];
		MDB_val key, d;

		if (r->state != QUEUE_RCPT_QUEUED || !queue_rcpt_first_in_domain(env, i))
			continue;
		for (k = 0; k < j->nquotas; k++)
			if (strcasecmp(j->quotas[k].domain, r->domain) == 0)
				break;
		if (k == j->nquotas || j->quotas[k].max == 0)
			continue;
		key.mv_data = kbuf;
		key.mv_size = queue_domain_key(r->domain, kbuf);
		rc = mdb_get(txn, q->db_count, &key, &d);
		if (rc == 0 && d.mv_size == 16)
			st.bytes = queue_be64_get((const unsigned char *)d.mv_data + 8);
		else if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
		if (st.bytes + env->size > j->quotas[k].max)
			return QUEUE_EQUOTA;
	}
	rc = queue_msg_store(q, txn, env, 0);
	if (rc == 0)
		rc = queue_marker_set(q, txn, env->id, 0);
	return rc;
}

static int queue_job_update(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env, *bounce = j->bounce;
	uint32_t nchunks;
	size_t i, queued = 0, applied = 0;
	int rc;

	rc = queue_msg_load(q, txn, j->id, &env, &nchunks);
	if (rc != 0)
		return rc;
	rc = queue_index_env(q, txn, env, -1);
	for (i = 0; rc == 0 && i < j->nupdates; i++) {
		const struct queue_rcpt_update *u = &j->updates[i];
		struct queue_rcpt *r;
		int attempt;

		if (u->index >= env->nrcpts) {
			queue_note(q, QUEUE_NOTICE_ERROR,
			    "%s: update of recipient %zu of %zu ignored",
			    env->id, u->index, env->nrcpts);
			continue;
		}
		r = &env->rcpts[u->index];
		/* Settled meanwhile (an expiry, an administrator): an update
		 * made from an older snapshot must not revive it. */
		if (r->state != QUEUE_RCPT_QUEUED) {
			queue_note(q, QUEUE_NOTICE_DEBUG,
			    "%s: recipient %zu already settled, update ignored",
			    env->id, u->index);
			continue;
		}
		/* Warned meanwhile: a second notice from an older snapshot. */
		if (u->state == QUEUE_RCPT_QUEUED && u->delay_warned &&
		    r->delay_warned)
			continue;
		applied++;
		/* Newly setting the delay flag is bookkeeping, not an attempt. */
		attempt = !(u->state == QUEUE_RCPT_QUEUED && u->delay_warned &&
		    !r->delay_warned);
		r->state = u->state;
		if (u->reply != NULL) {
			free(r->last_reply);
			r->last_reply = xstrdup(u->reply);
		}
		r->next_attempt = u->state == QUEUE_RCPT_QUEUED ? u->next_attempt : 0;
		if (u->delay_warned)
			r->delay_warned = 1;
		if (attempt) {
			r->attempts++;
			r->last_attempt = time(NULL);
		}
	}
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED)
			queued++;
	if (rc == 0) {
		if (queued == 0) {
			rc = queue_msg_drop(q, txn, env->id);
		} else {
			rc = queue_msg_store(q, txn, env, 1);
		}
	}
	/* No notice about recipients that were settled already. */
	if (rc == 0 && bounce != NULL && (applied > 0 || j->nupdates == 0)) {
		for (i = 0; rc == 0 && (uint64_t)i * QUEUE_CHUNK_SIZE < bounce->size; i++) {
			size_t off = i * (size_t)QUEUE_CHUNK_SIZE;
			size_t n = bounce->size - off;

			if (n > QUEUE_CHUNK_SIZE)
				n = QUEUE_CHUNK_SIZE;
			rc = queue_body_put(q, txn, bounce->id, (uint32_t)i, j->data + off, n);
		}
		if (rc == 0)
			rc = queue_msg_store(q, txn, bounce, 0);
	}
	queue_envelope_free(&env);
	return rc;
}

static int queue_job_delete(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env;
	int rc;

	rc = queue_msg_load(q, txn, j->id, &env, NULL);
	if (rc == QUEUE_EIO) {
		/* Corrupt: remove what we can without its indexes. */
		MDB_val k = { QUEUE_ID_LEN, j->id };

		rc = mdb_del(txn, q->db_msg, &k, NULL);
		if (rc == 0)
			rc = queue_body_delete(q, txn, j->id);
		return rc;
	}
	if (rc != 0)
		return rc;
	rc = queue_msg_remove(q, txn, env);
	queue_envelope_free(&env);
	return rc;
}

static int queue_job_release(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env;
	time_t now = time(NULL);
	size_t i;
	int rc;

	rc = queue_msg_load(q, txn, j->id, &env, NULL);
	if (rc == MDB_NOTFOUND)
		return QUEUE_ENOTFOUND;
	if (rc != 0)
		return rc;
	if (!(env->flags & QUEUE_F_QUARANTINE)) {
		queue_envelope_free(&env);
		return QUEUE_ENOTFOUND;
	}
	env->flags &= ~(unsigned)QUEUE_F_QUARANTINE;
	/* non-held recipients are due now; held ones wait for their turn */
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].next_attempt > 0)
			env->rcpts[i].next_attempt = now;
	rc = queue_msg_store(q, txn, env, 1);
	queue_envelope_free(&env);
	return rc;
}

static int queue_job_apply(struct queue *q, MDB_txn *txn, struct job *j)
{
	MDB_val k = { QUEUE_ID_LEN, j->id }, d;
	int rc;

	switch (j->type) {
	case JOB_CHUNK:
		if (j->put->wr_failed)
			return j->put->wr_failed;
		rc = queue_body_put(q, txn, j->id, j->chunkno, j->data, j->len);
		if (rc == 0 && j->chunkno == 0)
			rc = queue_marker_set(q, txn, j->id, 1);
		return rc;
	case JOB_COMMIT:
		return queue_job_commit(q, txn, j);
	case JOB_ABORT:
		rc = queue_body_delete(q, txn, j->id);
		if (rc == 0)
			rc = queue_marker_set(q, txn, j->id, 0);
		return rc;
	case JOB_UPDATE:
		return queue_job_update(q, txn, j);
	case JOB_DELETE:
		return queue_job_delete(q, txn, j);
	case JOB_RELEASE:
		return queue_job_release(q, txn, j);
	case JOB_LEASE:
		d.mv_data = j->owner;
		d.mv_size = strlen(j->owner);
		return mdb_put(txn, q->db_lease, &k, &d, 0);
	case JOB_UNLEASE:
		rc = mdb_del(txn, q->db_lease, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	case JOB_BARRIER:
	case JOB_COMPACT:	/* never in a batch: see queue_writer_main */
		return 0;
	case JOB_EXT:
		return j->ext_apply(txn, j->ext_arg);
	}
	return EINVAL;
}

/* Map a job's raw return (LMDB code or QUEUE_E*) to a QUEUE_* result. */
static int queue_job_result(int rc)
{
	if (rc == QUEUE_EQUOTA || rc == QUEUE_EIO || rc == QUEUE_EFULL ||
	    rc == QUEUE_ENOTFOUND || rc == QUEUE_EBUSY)
		return rc;
	return queue_code(rc);
}

/*
 * Chunk and lease writes need no durability of their own: the commit that
 * makes a message visible syncs everything. MDB_NOMETASYNC (not NOSYNC)
 * keeps the database intact across a power failure.
 */
static void queue_writer_set_sync(struct queue *q, struct job *list)
{
	struct job *j;
	int light = 1;

	for (j = list; j != NULL; j = j->next)
		if (j->type != JOB_CHUNK && j->type != JOB_LEASE &&
		    j->type != JOB_UNLEASE && j->type != JOB_EXT)
			light = 0;
	if (light != q->nosync_mode) {
		mdb_env_set_flags(q->env, MDB_NOMETASYNC, light);
		q->nosync_mode = light;
	}
}

static int queue_txn_run(struct queue *q, struct job *list, int single, struct job **failed_r)
{
	MDB_txn *txn;
	struct job *j;
	int rc;

	*failed_r = NULL;
	rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc != 0)
		return rc;
	for (j = list; j != NULL; j = j->next) {
		rc = queue_job_apply(q, txn, j);
		if (rc != 0) {
			*failed_r = j;
			mdb_txn_abort(txn);
			return rc;
		}
		if (single)
			break;
	}
	return mdb_txn_commit(txn);
}

/* A put whose commit failed: its chunks must not stay behind. */
static void queue_writer_cleanup_put(struct queue *q, const char *id)
{
	MDB_txn *txn;
	int rc;

	if (mdb_txn_begin(q->env, NULL, 0, &txn) != 0)
		return;
	{
		/* An id that collided with a queued message (a clock stepped
		 * back across a restart) must not take that message's body. */
		MDB_val k = { QUEUE_ID_LEN, (void *)id }, d;

		rc = mdb_get(txn, q->db_msg, &k, &d) == 0 ? 0 :
		    queue_body_delete(q, txn, id);
	}
	if (rc == 0)
		rc = queue_marker_set(q, txn, id, 0);
	rc = queue_txn_end(txn, rc);
	if (rc != 0)
		queue_note(q, QUEUE_NOTICE_WARN,
		    "%s: chunks left for recovery at next start: %s", id,
		    mdb_strerror(rc));
}

/* Run a batch: one transaction, or one per job after a failure. */
static void queue_writer_run_batch(struct queue *q, struct job *list)
{
	struct job *j, *failed;
	int rc, single;

	queue_writer_set_sync(q, list);
	rc = queue_txn_run(q, list, 0, &failed);
	if (rc == 0) {
		for (j = list; j != NULL; j = j->next)
			j->result = QUEUE_OK;
		return;
	}
	single = list->next == NULL;
	if (!single)
		queue_note(q, QUEUE_NOTICE_DEBUG,
		    "queue: batch failed (%s), retrying one by one",
		    rc < 0 && rc > -10 ? queue_strerror(rc) : mdb_strerror(rc));
	for (j = list; j != NULL; j = j->next) {
		struct job *save = j->next;

		j->next = NULL;
		if ((j->type == JOB_CHUNK || j->type == JOB_COMMIT) &&
		    j->put->wr_failed) {
			/* An earlier chunk already failed and was logged. */
			rc = j->put->wr_failed;
		} else {
			if (!single) {
				queue_writer_set_sync(q, j);
				rc = queue_txn_run(q, j, 1, &failed);
			}
			if (rc != 0 && rc != QUEUE_EQUOTA && rc != MDB_NOTFOUND) {
				QUEUE_COUNT(q->n_write_failed);
				queue_note(q, QUEUE_NOTICE_ERROR,
				    "queue: %s write failed: %s", j->id,
				    rc < 0 && rc > -10 ? queue_strerror(rc) : mdb_strerror(rc));
			}
		}
		j->next = save;
		j->result = queue_job_result(rc);
		if (rc == 0)
			continue;
		if (j->type == JOB_CHUNK || j->type == JOB_COMMIT) {
			if (!j->put->wr_failed)
				j->put->wr_failed = j->result;
			if (j->type == JOB_COMMIT)
				queue_writer_cleanup_put(q, j->id);
		}
	}
}

void *queue_writer_main(void *arg)
{
	struct queue *q = arg;
	struct job *list, *tail, *compact, *j, *prev;

	for (;;) {
		pthread_mutex_lock(&q->mu);
		while ((q->pending == NULL || q->test_hold) && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		/* Take the jobs up to a compaction: the ones after it must
		 * be written into the compacted file. */
		list = q->pending;
		compact = NULL;
		for (prev = NULL, j = list; j != NULL && j->type != JOB_COMPACT;
		    prev = j, j = j->next)
			;
		if (j != NULL) {
			compact = j;
			q->pending = j->next;
			if (q->pending == NULL)
				q->pending_tail = NULL;
			j->next = NULL;
			if (prev != NULL)
				prev->next = NULL;
			else
				list = NULL;
		} else {
			q->pending = q->pending_tail = NULL;
		}
		pthread_mutex_unlock(&q->mu);
		if (list == NULL && compact == NULL)
			break;		/* stopping and drained */
		if (list != NULL) {
			queue_writer_run_batch(q, list);
			queue_prealloc(q);
		}
		if (compact != NULL)
			compact->result = queue_writer_compact(q, compact);
		if (list != NULL) {
			for (tail = list; tail->next != NULL; tail = tail->next)
				;
			tail->next = compact;
		} else {
			list = compact;
		}
		for (tail = list; tail->next != NULL; tail = tail->next)
			;
		pthread_mutex_lock(&q->mu);
		if (compact != NULL && compact->result == QUEUE_OK)
			q->swap_wait = 1;
		if (q->finished_tail != NULL)
			q->finished_tail->next = list;
		else
			q->finished = list;
		q->finished_tail = tail;
		event_active(q->done_ev, EV_READ, 0);
		/* The loop swaps the files; nothing is written meanwhile. */
		while (q->swap_wait && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->swap_wait) {
			/* Closing before the swap: keep the old file. */
			q->swap_wait = 0;
			compact->result = QUEUE_EIO;
		}
		pthread_mutex_unlock(&q->mu);
	}
	return NULL;
}

/* Loop thread: run the completions the writer handed back. */
void queue_drain_finished(struct queue *q)
{
	struct job *list, *j;

	pthread_mutex_lock(&q->mu);
	list = q->finished;
	q->finished = q->finished_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while ((j = list) != NULL) {
		list = j->next;
		j->next = NULL;
		queue_complete(q, j);
	}
	queue_notices_flush(q);
}

void queue_done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	turnwatch_begin("queue-done");
	queue_drain_finished(arg);
	turnwatch_end();
}

void queue_submit(struct queue *q, struct job *j)
{
	j->next = NULL;
	if (q->rdonly) {
		j->result = QUEUE_EIO;
		queue_complete(q, j);
		return;
	}
	if (!q->writer_started) {
		/* No loop: the caller's thread is the writer. */
		queue_writer_run_batch(q, j);
		queue_prealloc(q);
		queue_notices_flush(q);
		queue_complete(q, j);
		return;
	}
	pthread_mutex_lock(&q->mu);
	if (q->pending_tail != NULL)
		q->pending_tail->next = j;
	else
		q->pending = j;
	q->pending_tail = j;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}
