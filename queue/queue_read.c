/*
 * queue_read - reading the queue: envelopes, per-domain and due indexes
 * walked in short read transactions (QUEUE_SCAN_BATCH records each), the
 * body reader, and the space and counter figures (stats, metrics). Reads
 * never block the writer: LMDB read transactions see a snapshot.
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

/* ---- reading ---- */

/* A short read transaction with a cursor on db: 0, or an LMDB code with
 * nothing left open. */
static int queue_read_begin(struct queue *q, MDB_dbi db, MDB_txn **txn_r,
    MDB_cursor **c_r)
{
	int rc;

	if ((rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, txn_r)) != 0)
		return rc;
	if ((rc = mdb_cursor_open(*txn_r, db, c_r)) != 0)
		mdb_txn_abort(*txn_r);
	return rc;
}

static void queue_read_end(MDB_txn *txn, MDB_cursor *c)
{
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
}

/*
 * Where a batched scan goes on: the first key at or after key (the first
 * of all when klen is 0), past key itself when `past` is set (key is the
 * last one the previous batch read). An LMDB code.
 */
int queue_cursor_seek(MDB_cursor *c, MDB_val *k, MDB_val *d,
    const void *key, size_t klen, int past)
{
	int rc;

	if (klen == 0)
		return mdb_cursor_get(c, k, d, MDB_FIRST);
	k->mv_data = (void *)key;
	k->mv_size = klen;
	rc = mdb_cursor_get(c, k, d, MDB_SET_RANGE);
	if (rc == 0 && past && k->mv_size == klen &&
	    memcmp(k->mv_data, key, klen) == 0)
		rc = mdb_cursor_get(c, k, d, MDB_NEXT);
	return rc;
}

/* Totals of every message in txn, counted record by record (a queue of
 * format 1 has none stored). An LMDB code: 0 when all were read. */
int queue_totals_count(struct queue *q, MDB_txn *txn, int64_t *sum,
    uint64_t *nmsgs_r)
{
	MDB_cursor *c;
	MDB_val k, d;
	int rc;

	memset(sum, 0, TOTALS_N * sizeof(*sum));
	*nmsgs_r = 0;
	if ((rc = mdb_cursor_open(txn, q->db_msg, &c)) != 0)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
		struct queue_envelope *env;
		char id[QUEUE_ID_LEN + 1];
		int64_t delta[TOTALS_N];

		if (queue_msg_decode(&k, &d, id, &env) <= 0)
			continue;
		queue_totals_of(env, 1, delta);
		for (int i = 0; i < TOTALS_N; i++)
			sum[i] += delta[i];
		queue_envelope_free(&env);
		(*nmsgs_r)++;
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int queue_get(struct queue *q, const char *id, struct queue_envelope **env_r)
{
	MDB_txn *txn;
	int rc;

	*env_r = NULL;
	if (!queue_id_valid(id))
		return 0;
	rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return QUEUE_EIO;
	rc = queue_msg_load(q, txn, id, env_r, NULL);
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return QUEUE_EIO;
	return 1;
}

/*
 * Scans read a batch of keys in a short read transaction and run the
 * callbacks outside it, so a callback may write, and no reader pins old
 * pages for long.
 */
int queue_foreach(struct queue *q,
    int (*cb)(void *arg, const struct queue_envelope *env), void *arg)
{
	struct queue_envelope *batch[QUEUE_SCAN_BATCH];
	char last[QUEUE_ID_LEN + 1] = "";
	int result = QUEUE_OK, stop = 0, end = 0;

	while (!stop && !end) {
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, d;
		size_t n = 0, i;
		int rc;

		if (queue_read_begin(q, q->db_msg, &txn, &c) != 0)
			return QUEUE_EIO;
		rc = queue_cursor_seek(c, &k, &d, last,
		    last[0] != '\0' ? QUEUE_ID_LEN : 0, 1);
		while (rc == 0 && n < QUEUE_SCAN_BATCH) {
			int got = queue_msg_decode(&k, &d, last, &batch[n]);

			if (got > 0)
				n++;
			else if (got < 0) {
				QUEUE_COUNT(q->n_corrupt);
				queue_note(q, QUEUE_NOTICE_ERROR,
				    "%s: corrupt queue record skipped", last);
				result = QUEUE_EIO;
			}
			rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
		}
		queue_read_end(txn, c);
		if (rc != 0 && rc != MDB_NOTFOUND)
			result = QUEUE_EIO;
		if (rc != 0)
			end = 1;
		for (i = 0; i < n; i++) {
			if (!stop && cb(arg, batch[i]) != 0)
				stop = 1;
			queue_envelope_free(&batch[i]);
		}
	}
	return result;
}

void queue_idlist_add(struct idlist *l, const void *id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xreallocarray(l->v, l->cap, sizeof(*l->v));
	}
	memcpy(l->v[l->n], id, QUEUE_ID_LEN);
	l->v[l->n][QUEUE_ID_LEN] = '\0';
	l->n++;
}

/*
 * Up to max ids of domain's index entries after the id `after` ("": from
 * the first), in one read transaction; *n_r of them. An LMDB code:
 * MDB_NOTFOUND when the domain's entries ended, 0 when more may follow.
 */
static int queue_domain_batch(struct queue *q, const char *domain,
    const char *after, char (*ids)[QUEUE_ID_LEN + 1], size_t max,
    size_t *n_r)
{
	char key[QUEUE_DOMAIN_MAX + 2 + QUEUE_ID_LEN];
	size_t plen = queue_domain_key(domain, key) + 1, klen = plen, n = 0;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, d;
	int rc;

	*n_r = 0;
	if (after[0] != '\0') {
		memcpy(key + plen, after, QUEUE_ID_LEN);
		klen = plen + QUEUE_ID_LEN;
	}
	if ((rc = queue_read_begin(q, q->db_dom, &txn, &c)) != 0)
		return rc;
	for (rc = queue_cursor_seek(c, &k, &d, key, klen, klen > plen);
	    rc == 0 && n < max; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
		if (k.mv_size != plen + QUEUE_ID_LEN ||
		    memcmp(k.mv_data, key, plen) != 0) {
			rc = MDB_NOTFOUND;
			break;
		}
		memcpy(ids[n], (const char *)k.mv_data + plen, QUEUE_ID_LEN);
		ids[n][QUEUE_ID_LEN] = '\0';
		n++;
	}
	queue_read_end(txn, c);
	*n_r = n;
	return rc;
}

int queue_foreach_domain(struct queue *q, const char *domain,
    int (*cb)(void *arg, const char *id), void *arg)
{
	char (*ids)[QUEUE_ID_LEN + 1] = xcalloc(QUEUE_SCAN_BATCH, sizeof(*ids));
	char last[QUEUE_ID_LEN + 1] = "";
	int stop = 0, result = QUEUE_OK;

	while (!stop) {
		size_t n, i;
		int rc = queue_domain_batch(q, domain, last, ids,
		    QUEUE_SCAN_BATCH, &n);

		if (rc != 0 && rc != MDB_NOTFOUND)
			result = QUEUE_EIO;
		if (rc != 0)
			stop = 1;
		if (n > 0)
			memcpy(last, ids[n - 1], sizeof(last));
		for (i = 0; i < n; i++)
			if (cb(arg, ids[i]) != 0) {
				stop = 1;
				break;
			}
	}
	free(ids);
	return result;
}

static int queue_due_cmp(const void *a, const void *b, void *arg)
{
	const char (*ids)[QUEUE_ID_LEN + 1] = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int c = strcmp(ids[x], ids[y]);

	if (c != 0)
		return c;
	return x < y ? -1 : x > y;
}

int queue_foreach_due(struct queue *q, time_t now,
    int (*cb)(void *arg, const char *id), void *arg)
{
	struct idlist l = { NULL, 0, 0 };
	unsigned char *dup;
	size_t *ord, i;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, d;
	int rc, result = QUEUE_OK;

	if (queue_read_begin(q, q->db_sched, &txn, &c) != 0)
		return QUEUE_EIO;
	/* Keys only (16+8 bytes each), the earliest QUEUE_DUE_MAX: a long
	 * backlog is taken over several calls, never in one loop turn. */
	rc = mdb_cursor_get(c, &k, &d, MDB_FIRST);
	while (rc == 0 && l.n < QUEUE_DUE_MAX) {
		if (k.mv_size == SCHED_KEY_LEN) {
			if ((int64_t)queue_be64_get(k.mv_data) > (int64_t)now)
				break;
			queue_idlist_add(&l, (const unsigned char *)k.mv_data + 8);
		}
		rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
	}
	queue_read_end(txn, c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		result = QUEUE_EIO;
	if (l.n == 0) {
		free(l.v);
		return result;
	}
	/* One call per id, in due order: mark the later duplicates. */
	ord = xcalloc(l.n, sizeof(*ord));
	dup = xcalloc(l.n, 1);
	for (i = 0; i < l.n; i++)
		ord[i] = i;
	qsort_r(ord, l.n, sizeof(*ord), queue_due_cmp, l.v);
	for (i = 1; i < l.n; i++)
		if (strcmp(l.v[ord[i]], l.v[ord[i - 1]]) == 0)
			dup[ord[i]] = 1;
	for (i = 0; i < l.n; i++)
		if (!dup[i] && cb(arg, l.v[i]) != 0)
			break;
	free(ord);
	free(dup);
	free(l.v);
	return result;
}

int queue_domain_stats(struct queue *q, const char *domain,
    struct queue_domain_stats *st_r)
{
	char kbuf[QUEUE_DOMAIN_MAX + 1];
	MDB_txn *txn;
	MDB_val k, d;
	int rc;

	memset(st_r, 0, sizeof(*st_r));
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	k.mv_data = kbuf;
	k.mv_size = queue_domain_key(domain, kbuf);
	rc = mdb_get(txn, q->db_count, &k, &d);
	if (rc == 0 && d.mv_size == 16) {
		st_r->messages = queue_be64_get(d.mv_data);
		st_r->bytes = queue_be64_get((const unsigned char *)d.mv_data + 8);
	}
	mdb_txn_abort(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return QUEUE_EIO;
	return QUEUE_OK;
}

/* Ids are time-ordered, so the first "domain\0ID" key is the oldest
 * message (to the second; a clock stepped back may misorder a few). */
int queue_domain_oldest(struct queue *q, const char *domain, time_t *arrival_r)
{
	char kbuf[QUEUE_DOMAIN_MAX + 2];
	struct queue_envelope *env = NULL;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, d;
	size_t plen;
	int rc;

	*arrival_r = 0;
	plen = queue_domain_key(domain, kbuf);
	kbuf[plen++] = '\0';
	if (queue_read_begin(q, q->db_dom, &txn, &c) != 0)
		return QUEUE_EIO;
	/* The record kept with the counters, when there is one. */
	k.mv_data = kbuf;
	k.mv_size = plen - 1;
	if (q->have_oldest && mdb_get(txn, q->db_oldest, &k, &d) == 0 &&
	    d.mv_size == QUEUE_ID_LEN + 8) {
		*arrival_r = (time_t)(int64_t)queue_be64_get(
		    (const unsigned char *)d.mv_data + QUEUE_ID_LEN);
		queue_read_end(txn, c);
		return QUEUE_OK;
	}
	rc = queue_cursor_seek(c, &k, &d, kbuf, plen, 0);
	if (rc == 0 && k.mv_size == plen + QUEUE_ID_LEN &&
	    memcmp(k.mv_data, kbuf, plen) == 0) {
		char id[QUEUE_ID_LEN + 1];

		memcpy(id, (const char *)k.mv_data + plen, QUEUE_ID_LEN);
		id[QUEUE_ID_LEN] = '\0';
		rc = queue_msg_load(q, txn, id, &env, NULL);
		if (rc == 0) {
			*arrival_r = env->arrival;
			queue_envelope_free(&env);
		}
	} else if (rc == 0)
		rc = MDB_NOTFOUND;
	queue_read_end(txn, c);
	return rc == 0 || rc == MDB_NOTFOUND ? QUEUE_OK : QUEUE_EIO;
}

int queue_domains_oldest(struct queue *q, const char *const *names, size_t n,
    time_t *arrival_r)
{
	size_t i = 0;

	while (i < n) {
		size_t end = i + QUEUE_SCAN_BATCH < n ? i + QUEUE_SCAN_BATCH : n;
		MDB_txn *txn;
		MDB_cursor *c;
		int rc = 0;

		if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
			return QUEUE_EIO;
		if (mdb_cursor_open(txn, q->db_dom, &c) != 0) {
			mdb_txn_abort(txn);
			return QUEUE_EIO;
		}
		for (; i < end; i++) {
			char kbuf[QUEUE_DOMAIN_MAX + 2];
			size_t plen = queue_domain_key(names[i], kbuf);
			MDB_val k, d, mk, md;

			arrival_r[i] = 0;
			kbuf[plen++] = '\0';
			k.mv_data = kbuf;
			k.mv_size = plen;
			rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
			if (rc == MDB_NOTFOUND) {
				rc = 0;
				continue;
			}
			if (rc != 0)
				break;
			if (k.mv_size != plen + QUEUE_ID_LEN ||
			    memcmp(k.mv_data, kbuf, plen) != 0)
				continue;
			mk.mv_data = (char *)k.mv_data + plen;
			mk.mv_size = QUEUE_ID_LEN;
			rc = mdb_get(txn, q->db_msg, &mk, &md);
			if (rc == MDB_NOTFOUND) {
				rc = 0;
				continue;
			}
			if (rc != 0)
				break;
			(void)queue_record_arrival(md.mv_data, md.mv_size,
			    &arrival_r[i]);
		}
		mdb_cursor_close(c);
		mdb_txn_abort(txn);
		if (rc != 0)
			return QUEUE_EIO;
	}
	return QUEUE_OK;
}

/* ---- body reader ---- */

int queue_body_open(struct queue *q, const char *id, struct queue_body **b_r)
{
	struct queue_envelope *env;
	struct queue_body *b;
	uint32_t nchunks;
	MDB_txn *txn;
	int rc;

	*b_r = NULL;
	if (!queue_id_valid(id))
		return QUEUE_ENOTFOUND;
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	rc = queue_msg_load(q, txn, id, &env, &nchunks);
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return QUEUE_ENOTFOUND;
	if (rc != 0)
		return QUEUE_EIO;
	queue_envelope_free(&env);
	b = xcalloc(1, sizeof(*b));
	b->q = q;
	memcpy(b->id, id, QUEUE_ID_LEN);
	b->nchunks = nchunks;
	*b_r = b;
	return QUEUE_OK;
}

/*
 * Each chunk is copied out of its own short read transaction: a body is
 * read at network speed, and a long reader would pin pages.
 */
int queue_body_read(struct queue_body *b, const unsigned char **data_r,
    size_t *len_r)
{
	unsigned char key[BODY_KEY_LEN];
	MDB_val k = { sizeof(key), key }, d;
	MDB_txn *txn;
	int rc;

	*data_r = NULL;
	*len_r = 0;
	if (b->next >= b->nchunks)
		return 0;
	queue_body_key(b->id, b->next, key);
	if (mdb_txn_begin(b->q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	rc = mdb_get(txn, b->q->db_body, &k, &d);
	if (rc == 0 && (d.mv_size > QUEUE_CHUNK_SIZE || d.mv_size == 0))
		rc = -1;
	if (rc == 0) {
		if (b->buf == NULL)
			b->buf = xmalloc(QUEUE_CHUNK_SIZE);
		memcpy(b->buf, d.mv_data, d.mv_size);
		b->len = d.mv_size;
	}
	mdb_txn_abort(txn);
	if (rc != 0) {
		/* Deleted while read, or damaged: never a silent truncation. */
		QUEUE_COUNT(b->q->n_unreadable);
		queue_note(b->q, QUEUE_NOTICE_ERROR,
		    "%s: body chunk %u unreadable", b->id, b->next);
		return QUEUE_EIO;
	}
	b->next++;
	*data_r = b->buf;
	*len_r = b->len;
	return 1;
}

void queue_body_free(struct queue_body **bp)
{
	if (*bp == NULL)
		return;
	free((*bp)->buf);
	free(*bp);
	*bp = NULL;
}

/* ---- space, counters ---- */

void queue_set_min_free(struct queue *q, uint64_t bytes)
{
	q->min_free = bytes;
}

int queue_check_room(struct queue *q, const char *domain, uint64_t size)
{
	MDB_txn *txn;
	int rc = QUEUE_OK;
	size_t k;

	if (q->rdonly)
		return QUEUE_EIO;
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	if (!queue_map_has_room(q, txn, size) || !queue_fs_has_room(q, txn, size))
		rc = QUEUE_EFULL;
	if (rc == QUEUE_OK && domain != NULL &&
	    domhash_get(q->quota_index, domain, &k) && q->quotas[k].max > 0) {
		char kbuf[QUEUE_DOMAIN_MAX + 1];
		MDB_val key, d;
		uint64_t bytes = 0;

		key.mv_data = kbuf;
		key.mv_size = queue_domain_key(domain, kbuf);
		if (mdb_get(txn, q->db_count, &key, &d) == 0 && d.mv_size == 16)
			bytes = queue_be64_get((const unsigned char *)d.mv_data + 8);
		/* Full already, or this message (when announced) would not fit. */
		if (bytes >= q->quotas[k].max || bytes + size > q->quotas[k].max)
			rc = QUEUE_EQUOTA;
	}
	mdb_txn_abort(txn);
	return rc;
}

void queue_space_recheck(struct queue *q)
{
	/* The writer tops the reserve up after every batch: an empty one. */
	if (!q->rdonly && __atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
		queue_barrier(q, NULL, NULL);
	/* Notices of reads (corrupt records in scans) reach the hook here. */
	queue_notices_flush(q);
}

int queue_totals(struct queue *q, struct queue_totals *t)
{
	MDB_txn *txn;
	MDB_val k = { 6, "totals" }, d;
	MDB_stat st;
	int rc;

	memset(t, 0, sizeof(*t));
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	rc = mdb_get(txn, q->db_meta, &k, &d);
	if (rc == 0 && d.mv_size == 8 * TOTALS_N) {
		const unsigned char *p = d.mv_data;

		t->messages = queue_be64_get(p);
		t->bytes = queue_be64_get(p + 8);
		t->recipients = queue_be64_get(p + 16);
		t->retrying = queue_be64_get(p + 24);
	} else if (rc == MDB_NOTFOUND) {
		/* Empty, or format 1 not upgraded yet (read-only): count
		 * what can be read, as far as it can. */
		int64_t sum[TOTALS_N];
		uint64_t nmsgs;

		rc = 0;
		(void)queue_totals_count(q, txn, sum, &nmsgs);
		t->messages = (uint64_t)sum[0];
		t->bytes = (uint64_t)sum[1];
		t->recipients = (uint64_t)sum[2];
		t->retrying = (uint64_t)sum[3];
	}
	if (mdb_stat(txn, q->db_lease, &st) == 0)
		t->leased = st.ms_entries;
	mdb_txn_abort(txn);
	return rc == 0 ? QUEUE_OK : QUEUE_EIO;
}

int queue_space(struct queue *q, struct queue_space *sp)
{
	MDB_envinfo info;
	MDB_stat st;
	MDB_txn *txn;
	struct stat sb;
	int fd;

	memset(sp, 0, sizeof(*sp));
	if (mdb_env_info(q->env, &info) != 0 || mdb_env_stat(q->env, &st) != 0)
		return QUEUE_EIO;
	sp->map_size = info.me_mapsize;
	if (mdb_env_get_fd(q->env, &fd) == 0 && fstat(fd, &sb) == 0)
		sp->file_size = (uint64_t)sb.st_size;
	sp->fs_avail = queue_fs_avail(q);
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	sp->map_used = queue_map_used_bytes(q, txn);
	/* Free inside the file: pages deliveries left, and the tail. */
	sp->reserve = sp->file_size > sp->map_used ? sp->file_size - sp->map_used : 0;
	sp->low = !queue_fs_has_room(q, txn, 0) ||
	    sp->map_used > sp->map_size / 100 * QUEUE_MAP_RESERVE_PCT;
	mdb_txn_abort(txn);
	return QUEUE_OK;
}

/*
 * The oldest record of key k, read by a cursor on the "oldest" database
 * that moves forward with the walk of the counters (both in key order):
 * one step per domain instead of a descent of the tree for each (50,000
 * descents were most of odrelayctl stats). *orc: the cursor's state,
 * -1 before its first positioning. 1 with *oldest_r set, else 0.
 */
static int queue_oldest_step(MDB_txn *txn, MDB_dbi dbi, MDB_cursor *oc,
    int *orc, MDB_val *ok, MDB_val *od, const MDB_val *k, time_t *oldest_r)
{
	if (*orc == -1) {
		*ok = *k;
		*orc = mdb_cursor_get(oc, ok, od, MDB_SET_RANGE);
	}
	/* A few records without a counter, if any: stepped over. */
	while (*orc == 0 && mdb_cmp(txn, dbi, ok, k) < 0)
		*orc = mdb_cursor_get(oc, ok, od, MDB_NEXT);
	if (*orc != 0 || mdb_cmp(txn, dbi, ok, k) != 0 ||
	    od->mv_size != QUEUE_ID_LEN + 8)
		return 0;
	*oldest_r = (time_t)(int64_t)queue_be64_get(
	    (const unsigned char *)od->mv_data + QUEUE_ID_LEN);
	return 1;
}

int queue_foreach_count(struct queue *q,
    int (*cb)(void *arg, const char *domain,
    const struct queue_domain_stats *st), void *arg)
{
	char last[QUEUE_DOMAIN_MAX + 1] = "";
	int end = 0, stop = 0, result = QUEUE_OK;
	/* One buffer for every batch (filled before it is read). */
	struct {
		char name[QUEUE_DOMAIN_MAX + 1];
		struct queue_domain_stats st;
	} *batch = xreallocarray(NULL, QUEUE_SCAN_BATCH, sizeof(*batch));

	/* Batches in short read transactions; callbacks outside them. */
	while (!end && !stop) {
		MDB_txn *txn;
		MDB_cursor *c, *oc = NULL;
		MDB_val k, d, ok, od;
		size_t n = 0;
		int rc, orc = -1;

		if (queue_read_begin(q, q->db_count, &txn, &c) != 0) {
			result = QUEUE_EIO;
			break;
		}
		if (q->have_oldest && mdb_cursor_open(txn, q->db_oldest, &oc) != 0)
			oc = NULL;
		for (rc = queue_cursor_seek(c, &k, &d, last, strlen(last), 1);
		    rc == 0 && n < QUEUE_SCAN_BATCH;
		    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
			if (k.mv_size == 0 || k.mv_size > QUEUE_DOMAIN_MAX ||
			    d.mv_size != 16)
				continue;
			memcpy(batch[n].name, k.mv_data, k.mv_size);
			batch[n].name[k.mv_size] = '\0';
			memset(&batch[n].st, 0, sizeof(batch[n].st));
			batch[n].st.messages = queue_be64_get(d.mv_data);
			batch[n].st.bytes = queue_be64_get((const unsigned char *)d.mv_data + 8);
			if (oc != NULL && queue_oldest_step(txn, q->db_oldest, oc,
			    &orc, &ok, &od, &k, &batch[n].st.oldest))
				batch[n].st.oldest_known = 1;
			n++;
		}
		if (oc != NULL)
			mdb_cursor_close(oc);
		queue_read_end(txn, c);
		if (rc != 0)
			end = 1;
		for (size_t i = 0; i < n && !stop; i++)
			stop = cb(arg, batch[i].name, &batch[i].st) != 0;
		if (n > 0)
			memcpy(last, batch[n - 1].name, sizeof(last));
		if (rc != 0 && rc != MDB_NOTFOUND) {
			result = QUEUE_EIO;
			break;
		}
	}
	free(batch);
	return result;
}

int queue_domain_ids(struct queue *q, const char *domain, const char *after,
    char (*ids)[QUEUE_ID_LEN + 1], size_t max)
{
	size_t n;
	int rc = queue_domain_batch(q, domain, after != NULL ? after : "", ids,
	    max, &n);

	if (rc != 0 && rc != MDB_NOTFOUND)
		return QUEUE_EIO;
	return (int)n;
}

/* more_r: NULL, or read only what the read-ahead thread has read and
 * set *more_r when stopping short of the end for that. */
static int queue_scan_do(struct queue *q, char *cursor, time_t until,
    size_t max, int *more_r,
    int (*cb)(void *arg, const struct queue_envelope *env), void *arg)
{
	char endkey[QUEUE_ID_LEN + 1], limit[QUEUE_ID_LEN + 1] = "";
	size_t taken = 0;
	int result = 0;

	if (more_r != NULL)
		*more_r = 0;
	if (until < 0)
		return 0;
	/* Ids start with 8 hex digits of their second: the first id after
	 * `until` is the second after it with a zero counter. */
	snprintf(endkey, sizeof(endkey), "%08X%08X",
	    (uint32_t)((uint64_t)until + 1 > 0xffffffffu ? 0xffffffffu : until + 1), 0u);
	if (more_r != NULL) {
		int w = queue_warm_window(q, cursor, endkey, limit);

		if (w != QWARM_READY) {
			*more_r = w == QWARM_PENDING;
			return 0;
		}
	}
	while (taken < max) {
		struct queue_envelope *batch[32];
		size_t n = 0, i;
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, d;
		int rc, stop = 0;

		if (queue_read_begin(q, q->db_msg, &txn, &c) != 0)
			return QUEUE_EIO;
		for (rc = queue_cursor_seek(c, &k, &d, cursor,
		    cursor[0] != '\0' ? QUEUE_ID_LEN : 0, 1);
		    rc == 0 && n < 32 && taken + n < max;
		    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
			char id[QUEUE_ID_LEN + 1];
			int got;

			if (k.mv_size == QUEUE_ID_LEN &&
			    memcmp(k.mv_data, endkey, QUEUE_ID_LEN) >= 0) {
				rc = MDB_NOTFOUND;
				break;
			}
			/* Past what was read ahead: its pages may be on disk. */
			if (limit[0] != '\0' && k.mv_size == QUEUE_ID_LEN &&
			    memcmp(k.mv_data, limit, QUEUE_ID_LEN) > 0) {
				*more_r = 1;
				rc = MDB_NOTFOUND;
				break;
			}
			if ((got = queue_msg_decode(&k, &d, id, &batch[n])) > 0)
				n++;
			else if (got < 0) {
				/* Skipped for good: the cursor moves past it. */
				QUEUE_COUNT(q->n_corrupt);
				queue_note(q, QUEUE_NOTICE_ERROR,
				    "%s: corrupt queue record skipped", id);
				memcpy(cursor, id, QUEUE_ID_LEN + 1);
			}
		}
		queue_read_end(txn, c);
		if (rc != 0 && rc != MDB_NOTFOUND)
			result = QUEUE_EIO;
		for (i = 0; i < n; i++) {
			if (!stop && cb(arg, batch[i]) != 0)
				stop = 1;
			if (!stop) {
				memcpy(cursor, batch[i]->id, QUEUE_ID_LEN + 1);
				taken++;
			}
			queue_envelope_free(&batch[i]);
		}
		if (stop || rc != 0 || n == 0)
			break;
	}
	if (more_r != NULL)
		queue_warm_taken(q, cursor, taken);
	return result < 0 ? result : (int)taken;
}

int queue_scan(struct queue *q, char *cursor, time_t until, size_t max,
    int (*cb)(void *arg, const struct queue_envelope *env), void *arg)
{
	return queue_scan_do(q, cursor, until, max, NULL, cb, arg);
}

int queue_scan_ahead(struct queue *q, char *cursor, time_t until, size_t max,
    int *more_r, int (*cb)(void *arg, const struct queue_envelope *env),
    void *arg)
{
	return queue_scan_do(q, cursor, until, max, more_r, cb, arg);
}
