/*
 * rcache - the recipient cache in the queue's LMDB environment.
 *
 * Databases:
 *   rcpt     lowercase domain + '\0' + lowercase address -> record
 *   rcptage  uint64 BE stamp -> the rcpt key (one per rcpt entry; the
 *            smallest stamp is the least recently stored: evicted first)
 *
 * Record: u8 version, u8 state, u8 source, u64 BE expires, u64 BE updated,
 * u64 BE stamp, u16 BE text length, text. All integers big-endian.
 *
 * Stamps are made on the writer thread (strictly increasing, from the
 * clock in microseconds), so the age order is the commit order.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <lmdb.h>

#include "util.h"
#include "xmalloc.h"
#include "queue.h"
#include "queue_private.h"
#include "rcache.h"

#define RCACHE_VERSION		1
#define RCACHE_HDR		29
#define RCACHE_KEY_MAX		(RCACHE_DOMAIN_MAX + 1 + RCACHE_ADDR_MAX)
#define RCACHE_EVICT_BATCH	256	/* evictions per write (after a shrink) */

struct rcache {
	struct queue *q;
	MDB_dbi db_rcpt, db_age;
	int absent;		/* read-only and no cache written yet */
	unsigned long max;
	uint64_t last_stamp;	/* writer thread only (after open) */
	unsigned refs;		/* pending writes + the owner */
	struct rcache_op *ops;	/* writes not yet committed, newest first */
};

enum rcache_op_kind { RCACHE_OP_STORE, RCACHE_OP_FORGET };

struct rcache_op {
	struct rcache *rc;
	struct rcache_op *prev, *next;	/* rc->ops (loop thread only) */
	enum rcache_op_kind kind;
	unsigned char key[RCACHE_KEY_MAX + 1];
	size_t klen;
	int prefix;		/* FORGET: every key starting with key */
	unsigned char *val;	/* STORE: record without a stamp yet */
	size_t vlen;
	unsigned long max;
};

const char *rcache_state_name(enum rcache_state s)
{
	return s == RCACHE_VALID ? "valid" : s == RCACHE_INVALID ? "invalid" : "?";
}

const char *rcache_source_name(enum rcache_source s)
{
	switch (s) {
	case RCACHE_SRC_PROBE:
		return "probe";
	case RCACHE_SRC_LEARNED:
		return "learned";
	case RCACHE_SRC_LIST:
		return "list";
	}
	return "?";
}

/* ASCII only: the locale must not change keys. */
static int rcache_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : (unsigned char)c;
}

/* The key for (domain, addr); 0 when either is too long or empty. */
static size_t rcache_key(const char *domain, const char *addr,
    unsigned char *key)
{
	size_t dl = strlen(domain), al = addr != NULL ? strlen(addr) : 0;

	if (dl == 0 || dl > RCACHE_DOMAIN_MAX || al > RCACHE_ADDR_MAX)
		return 0;
	for (size_t i = 0; i < dl; i++)
		key[i] = (unsigned char)rcache_lower(domain[i]);
	key[dl] = '\0';
	for (size_t i = 0; i < al; i++)
		key[dl + 1 + i] = (unsigned char)rcache_lower(addr[i]);
	return dl + 1 + al;
}

/* Decode a record; 0 ok, -1 malformed. */
static int rcache_decode(const MDB_val *k, const MDB_val *v,
    struct rcache_entry *e, uint64_t *stamp_r)
{
	const unsigned char *p = v->mv_data, *kp = k->mv_data, *nul;
	size_t tl, dl, al;

	if (v->mv_size < RCACHE_HDR || p[0] != RCACHE_VERSION)
		return -1;
	tl = (size_t)p[27] << 8 | p[28];
	if (RCACHE_HDR + tl != v->mv_size || tl > RCACHE_TEXT_MAX)
		return -1;
	if ((p[1] != RCACHE_VALID && p[1] != RCACHE_INVALID) ||
	    p[2] < RCACHE_SRC_PROBE || p[2] > RCACHE_SRC_LIST)
		return -1;
	nul = memchr(kp, '\0', k->mv_size);
	if (nul == NULL)
		return -1;
	dl = (size_t)(nul - kp);
	al = k->mv_size - dl - 1;
	if (dl > RCACHE_DOMAIN_MAX || al > RCACHE_ADDR_MAX)
		return -1;
	if (e != NULL) {
		memcpy(e->domain, kp, dl);
		e->domain[dl] = '\0';
		memcpy(e->addr, nul + 1, al);
		e->addr[al] = '\0';
		e->state = p[1];
		e->source = p[2];
		e->expires = (time_t)queue_be64_get(p + 3);
		e->updated = (time_t)queue_be64_get(p + 11);
		memcpy(e->text, p + RCACHE_HDR, tl);
		e->text[tl] = '\0';
	}
	if (stamp_r != NULL)
		*stamp_r = queue_be64_get(p + 19);
	return 0;
}

/* Open both databases and find the newest stamp. */
static int rcache_setup(MDB_txn *txn, unsigned flags, void *arg)
{
	struct rcache *rc = arg;
	MDB_cursor *cur;
	MDB_val k, v;
	/* Through the queue: it reopens them after a compaction. */
	int r = queue_ext_dbi_open(rc->q, txn, "rcpt", flags, &rc->db_rcpt);

	if (r == 0)
		r = queue_ext_dbi_open(rc->q, txn, "rcptage", flags, &rc->db_age);
	if (r == 0 && (r = mdb_cursor_open(txn, rc->db_age, &cur)) == 0) {
		if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
			rc->last_stamp = queue_be64_get(k.mv_data);
		mdb_cursor_close(cur);
	}
	return r;
}

struct rcache *rcache_open(struct queue *q, unsigned long max_entries,
    char *err, size_t errlen)
{
	struct rcache *rc = xcalloc(1, sizeof(*rc));
	int r;

	rc->q = q;
	rc->max = max_entries;
	rc->refs = 1;
	r = queue_ext_setup(q, rcache_setup, rc, "recipient cache", err, errlen);
	if (r < 0) {
		free(rc);
		return NULL;
	}
	rc->absent = r > 0;
	return rc;
}

void rcache_set_max(struct rcache *rc, unsigned long max_entries)
{
	rc->max = max_entries;
}

static void rcache_unref(struct rcache *rc)
{
	if (--rc->refs == 0)
		free(rc);
}

void rcache_close(struct rcache **rcp)
{
	if (*rcp == NULL)
		return;
	rcache_unref(*rcp);
	*rcp = NULL;
}

int rcache_lookup(struct rcache *rc, const char *domain, const char *addr,
    struct rcache_entry *e)
{
	unsigned char key[RCACHE_KEY_MAX + 1];
	struct rcache_op *op;
	MDB_txn *txn;
	MDB_val k, v;
	int r, found = 0;

	if (rc->absent || (k.mv_size = rcache_key(domain, addr, key)) == 0 ||
	    addr == NULL || *addr == '\0')
		return 0;
	k.mv_data = key;
	/* A write still on its way to the writer thread is the truth. */
	for (op = rc->ops; op != NULL; op = op->next) {
		if (op->kind == RCACHE_OP_STORE && op->klen == k.mv_size &&
		    memcmp(op->key, key, k.mv_size) == 0) {
			v.mv_data = op->val;
			v.mv_size = op->vlen;
			return rcache_decode(&k, &v, e, NULL) == 0 ? 1 : 0;
		}
		if (op->kind == RCACHE_OP_FORGET && (op->prefix ?
		    k.mv_size >= op->klen && memcmp(op->key, key, op->klen) == 0 :
		    op->klen == k.mv_size && memcmp(op->key, key, k.mv_size) == 0))
			return 0;
	}
	if (mdb_txn_begin(queue_ext_env(rc->q), NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	r = mdb_get(txn, rc->db_rcpt, &k, &v);
	if (r == 0)
		found = rcache_decode(&k, &v, e, NULL) == 0 ? 1 : 0;
	else if (r != MDB_NOTFOUND)
		found = QUEUE_EIO;
	mdb_txn_abort(txn);
	return found;
}

/* ---- writes (writer thread) ---- */

/* Remove the entry at key (and its age record). */
static int rcache_del_key(struct rcache *rc, MDB_txn *txn, MDB_val *k)
{
	MDB_val v, ak;
	unsigned char sb[8];
	uint64_t stamp;
	int r;

	r = mdb_get(txn, rc->db_rcpt, k, &v);
	if (r != 0)
		return r == MDB_NOTFOUND ? 0 : r;
	if (rcache_decode(k, &v, NULL, &stamp) == 0) {
		queue_be64_put(sb, stamp);
		ak.mv_data = sb;
		ak.mv_size = 8;
		r = mdb_del(txn, rc->db_age, &ak, NULL);
		if (r != 0 && r != MDB_NOTFOUND)
			return r;
	}
	return mdb_del(txn, rc->db_rcpt, k, NULL);
}

/* Drop the least recently stored entries until at most max remain. */
static int rcache_evict(struct rcache *rc, MDB_txn *txn, unsigned long max)
{
	MDB_stat st;
	MDB_cursor *cur;
	MDB_val ak, av, k;
	unsigned char kb[RCACHE_KEY_MAX + 1];
	int r, n = 0;

	if ((r = mdb_stat(txn, rc->db_rcpt, &st)) != 0)
		return r;
	if (st.ms_entries <= max)
		return 0;
	if ((r = mdb_cursor_open(txn, rc->db_age, &cur)) != 0)
		return r;
	while (st.ms_entries > max && n++ < RCACHE_EVICT_BATCH) {
		r = mdb_cursor_get(cur, &ak, &av, MDB_FIRST);
		if (r != 0)
			break;
		if (av.mv_size > RCACHE_KEY_MAX) {
			r = mdb_cursor_del(cur, 0);
			if (r != 0)
				break;
			continue;
		}
		memcpy(kb, av.mv_data, av.mv_size);
		k.mv_data = kb;
		k.mv_size = av.mv_size;
		if ((r = mdb_cursor_del(cur, 0)) != 0)
			break;
		r = mdb_del(txn, rc->db_rcpt, &k, NULL);
		if (r != 0 && r != MDB_NOTFOUND)
			break;
		r = 0;
		st.ms_entries--;
	}
	mdb_cursor_close(cur);
	return r == MDB_NOTFOUND ? 0 : r;
}

static int rcache_apply_store(struct rcache *rc, MDB_txn *txn,
    struct rcache_op *op)
{
	MDB_val k = { op->klen, op->key }, v, ak;
	unsigned char sb[8];
	struct timeval tv;
	uint64_t now;
	int r;

	if ((r = rcache_del_key(rc, txn, &k)) != 0)
		return r;
	gettimeofday(&tv, NULL);
	now = (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
	rc->last_stamp = now > rc->last_stamp ? now : rc->last_stamp + 1;
	queue_be64_put(op->val + 19, rc->last_stamp);
	queue_be64_put(sb, rc->last_stamp);
	v.mv_data = op->val;
	v.mv_size = op->vlen;
	if ((r = mdb_put(txn, rc->db_rcpt, &k, &v, 0)) != 0)
		return r;
	ak.mv_data = sb;
	ak.mv_size = 8;
	v.mv_data = op->key;
	v.mv_size = op->klen;
	if ((r = mdb_put(txn, rc->db_age, &ak, &v, 0)) != 0)
		return r;
	return rcache_evict(rc, txn, op->max);
}

static int rcache_apply_forget(struct rcache *rc, MDB_txn *txn,
    struct rcache_op *op)
{
	MDB_cursor *cur;
	MDB_val k, v;
	unsigned char kb[RCACHE_KEY_MAX + 1];
	int r;

	if (!op->prefix) {
		k.mv_data = op->key;
		k.mv_size = op->klen;
		return rcache_del_key(rc, txn, &k);
	}
	if ((r = mdb_cursor_open(txn, rc->db_rcpt, &cur)) != 0)
		return r;
	for (;;) {
		k.mv_data = op->key;
		k.mv_size = op->klen;
		r = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (r != 0 || k.mv_size < op->klen ||
		    memcmp(k.mv_data, op->key, op->klen) != 0 ||
		    k.mv_size > RCACHE_KEY_MAX) {
			r = r == MDB_NOTFOUND ? 0 : r;
			break;
		}
		memcpy(kb, k.mv_data, k.mv_size);
		k.mv_data = kb;
		if ((r = rcache_del_key(rc, txn, &k)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	return r;
}

static int rcache_apply(MDB_txn *txn, void *arg)
{
	struct rcache_op *op = arg;

	if (op->kind == RCACHE_OP_STORE)
		return rcache_apply_store(op->rc, txn, op);
	return rcache_apply_forget(op->rc, txn, op);
}

static void rcache_op_free(void *arg)
{
	struct rcache_op *op = arg;

	/* Committed (or failed): lookups read LMDB again. */
	if (op->prev != NULL)
		op->prev->next = op->next;
	else
		op->rc->ops = op->next;
	if (op->next != NULL)
		op->next->prev = op->prev;
	rcache_unref(op->rc);
	free(op->val);
	free(op);
}

static void rcache_submit(struct rcache *rc, struct rcache_op *op,
    queue_done_fn *done, void *arg)
{
	op->rc = rc;
	op->max = rc->max > 0 ? rc->max : 1;
	rc->refs++;
	op->next = rc->ops;
	if (rc->ops != NULL)
		rc->ops->prev = op;
	rc->ops = op;
	queue_ext_submit(rc->q, rcache_apply, rcache_op_free, op, done, arg);
}

void rcache_store(struct rcache *rc, const char *domain, const char *addr,
    enum rcache_state state, enum rcache_source source, time_t expires,
    const char *text, queue_done_fn *done, void *arg)
{
	struct rcache_op *op = xcalloc(1, sizeof(*op));
	size_t tl = text != NULL ? strlen(text) : 0;

	op->kind = RCACHE_OP_STORE;
	op->klen = rcache_key(domain, addr, op->key);
	if (op->klen == 0 || *addr == '\0' || rc->absent) {
		free(op);
		if (done != NULL)
			done(arg, QUEUE_OK);
		return;
	}
	if (tl > RCACHE_TEXT_MAX)
		tl = RCACHE_TEXT_MAX;
	op->vlen = RCACHE_HDR + tl;
	op->val = xcalloc(1, op->vlen);
	op->val[0] = RCACHE_VERSION;
	op->val[1] = (unsigned char)state;
	op->val[2] = (unsigned char)source;
	queue_be64_put(op->val + 3, (uint64_t)expires);
	queue_be64_put(op->val + 11, (uint64_t)time(NULL));
	op->val[27] = (unsigned char)(tl >> 8);
	op->val[28] = (unsigned char)tl;
	if (tl > 0)
		memcpy(op->val + RCACHE_HDR, text, tl);
	rcache_submit(rc, op, done, arg);
}

void rcache_forget(struct rcache *rc, const char *domain, const char *addr,
    queue_done_fn *done, void *arg)
{
	struct rcache_op *op = xcalloc(1, sizeof(*op));

	op->kind = RCACHE_OP_FORGET;
	op->klen = rcache_key(domain, addr != NULL ? addr : "", op->key);
	op->prefix = addr == NULL;
	if (op->klen == 0 || rc->absent) {
		free(op);
		if (done != NULL)
			done(arg, QUEUE_OK);
		return;
	}
	rcache_submit(rc, op, done, arg);
}

/* ---- listing ---- */

int rcache_foreach(struct rcache *rc, const char *domain,
    int (*cb)(void *arg, const struct rcache_entry *e), void *arg)
{
	unsigned char prefix[RCACHE_KEY_MAX + 1];
	size_t plen = 0;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	struct rcache_entry *e;
	int r, op = MDB_FIRST;

	if (rc->absent)
		return QUEUE_OK;
	if (domain != NULL && (plen = rcache_key(domain, "", prefix)) == 0)
		return QUEUE_OK;
	if (mdb_txn_begin(queue_ext_env(rc->q), NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	if ((r = mdb_cursor_open(txn, rc->db_rcpt, &cur)) != 0) {
		mdb_txn_abort(txn);
		return QUEUE_EIO;
	}
	e = xmalloc(sizeof(*e));
	if (plen > 0) {
		k.mv_data = prefix;
		k.mv_size = plen;
		op = MDB_SET_RANGE;
	}
	while ((r = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (plen > 0 && (k.mv_size < plen ||
		    memcmp(k.mv_data, prefix, plen) != 0))
			break;
		if (rcache_decode(&k, &v, e, NULL) != 0)
			continue;
		if (cb(arg, e) != 0)
			break;
	}
	free(e);
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return r == 0 || r == MDB_NOTFOUND ? QUEUE_OK : QUEUE_EIO;
}

unsigned long rcache_count(struct rcache *rc)
{
	MDB_txn *txn;
	MDB_stat st;
	unsigned long n = 0;

	if (rc->absent ||
	    mdb_txn_begin(queue_ext_env(rc->q), NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_stat(txn, rc->db_rcpt, &st) == 0)
		n = (unsigned long)st.ms_entries;
	mdb_txn_abort(txn);
	return n;
}
