/*
 * domstate - per-domain operator facts in the queue's LMDB environment.
 *
 * Database "domstate": lowercase domain -> u8 version, then one u64
 * big-endian Unix time per event (DOMSTATE_NEVENTS of them, 0 = never).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "domstate.h"
#include "queue.h"
#include "queue_private.h"
#include "util.h"
#include "xmalloc.h"

#define DOMSTATE_VERSION	1
#define DOMSTATE_DOMAIN_MAX	255
#define DOMSTATE_LEN		(1 + 8 * DOMSTATE_NEVENTS)

struct domstate {
	struct queue *q;
	MDB_dbi db;
	int absent;		/* read-only and not created yet */
	int have_db;		/* db is open (else created by the first note) */
	unsigned refs;		/* the owner + notes in flight */
};

static struct domstate *domstate_default;

struct domstate_op {
	struct domstate *ds;	/* referenced until the done callback */
	MDB_dbi db;
	int create;		/* the database does not exist yet */
	char key[DOMSTATE_DOMAIN_MAX + 1];
	size_t klen;
	enum domstate_event ev;
	uint64_t when;
};

/* Lower-cased key; 0 when the name is empty or too long. */
static size_t domstate_key(const char *domain, char *buf)
{
	size_t n = strlen(domain);

	if (n == 0 || n > DOMSTATE_DOMAIN_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		buf[i] = (domain[i] >= 'A' && domain[i] <= 'Z') ?
		    (char)(domain[i] - 'A' + 'a') : domain[i];
	buf[n] = '\0';
	return n;
}

/*
 * The database is created by the first note, on the writer thread: a
 * queue that never saw an ATRN or ETRN (or a file system with no page to
 * spare) is left as it was. Opening an existing one happens here, at
 * start-up, in a write transaction when the queue is writable: LMDB lets
 * only one transaction at a time open a handle, and write transactions
 * are serialised with the writer thread's (which may be opening one).
 */
static int domstate_setup(MDB_txn *txn, unsigned flags, void *arg)
{
	struct domstate *ds = arg;
	int r;

	(void)flags;	/* never created here: see above */
	/* Through the queue: it reopens it after a compaction. */
	r = queue_ext_dbi_open(ds->q, txn, "domstate", 0, &ds->db);
	if (r == 0)
		ds->have_db = 1;
	else if (r == MDB_NOTFOUND) {
		ds->absent = queue_ext_rdonly(ds->q);
		r = 0;
	}
	return r;
}

struct domstate *domstate_open(struct queue *q, char *err, size_t errlen)
{
	struct domstate *ds = xcalloc(1, sizeof(*ds));

	ds->q = q;
	ds->refs = 1;
	/* domstate_setup sets absent: it is never created here */
	if (queue_ext_setup(q, domstate_setup, ds, "domain state", err,
	    errlen) == 0)
		return ds;
	free(ds);
	return NULL;
}

static void domstate_unref(struct domstate *ds)
{
	if (--ds->refs == 0)
		free(ds);
}

void domstate_close(struct domstate **dsp)
{
	if (*dsp == NULL)
		return;
	if (*dsp == domstate_default)
		domstate_default = NULL;
	domstate_unref(*dsp);
	*dsp = NULL;
}

static void domstate_decode(const MDB_val *v, struct domstate_rec *r)
{
	const unsigned char *p = v->mv_data;

	memset(r, 0, sizeof(*r));
	if (v->mv_size < DOMSTATE_LEN || p[0] != DOMSTATE_VERSION)
		return;		/* unknown layout: read as never */
	for (int i = 0; i < DOMSTATE_NEVENTS; i++)
		r->last[i] = (time_t)queue_be64_get(p + 1 + 8 * i);
}

int domstate_get(struct domstate *ds, const char *domain,
    struct domstate_rec *r)
{
	char key[DOMSTATE_DOMAIN_MAX + 1];
	MDB_val k, v;
	MDB_txn *txn;
	int rc;

	memset(r, 0, sizeof(*r));
	if (ds == NULL || ds->absent || !ds->have_db ||
	    (k.mv_size = domstate_key(domain, key)) == 0)
		return 0;
	k.mv_data = key;
	if (mdb_txn_begin(queue_ext_env(ds->q), NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	rc = mdb_get(txn, ds->db, &k, &v);
	if (rc == 0)
		domstate_decode(&v, r);
	mdb_txn_abort(txn);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : QUEUE_EIO;
}

int domstate_foreach(struct domstate *ds, int (*cb)(void *arg,
    const char *domain, const struct domstate_rec *r), void *arg)
{
	MDB_cursor *c;
	MDB_txn *txn;
	MDB_val k, v;
	int rc;

	if (ds == NULL || ds->absent || !ds->have_db)
		return 0;
	if (mdb_txn_begin(queue_ext_env(ds->q), NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	if (mdb_cursor_open(txn, ds->db, &c) != 0) {
		mdb_txn_abort(txn);
		return QUEUE_EIO;
	}
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		char name[DOMSTATE_DOMAIN_MAX + 1];
		struct domstate_rec r;

		if (k.mv_size == 0 || k.mv_size > DOMSTATE_DOMAIN_MAX)
			continue;
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = '\0';
		domstate_decode(&v, &r);
		if (cb(arg, name, &r) != 0)
			break;
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : QUEUE_EIO;
}

/* Writer thread: read, raise one field, write back (idempotent). */
static int domstate_apply(MDB_txn *txn, void *arg)
{
	struct domstate_op *op = arg;
	unsigned char buf[DOMSTATE_LEN];
	MDB_val k = { op->klen, op->key }, v;
	struct domstate_rec r;
	int rc;

	if (op->create &&
	    (rc = queue_ext_dbi_open(op->ds->q, txn, "domstate", MDB_CREATE,
	    &op->db)) != 0)
		return rc;
	rc = mdb_get(txn, op->db, &k, &v);
	if (rc == 0)
		domstate_decode(&v, &r);
	else if (rc == MDB_NOTFOUND)
		memset(&r, 0, sizeof(r));
	else
		return rc;
	if ((uint64_t)r.last[op->ev] >= op->when)
		return 0;
	r.last[op->ev] = (time_t)op->when;
	buf[0] = DOMSTATE_VERSION;
	for (int i = 0; i < DOMSTATE_NEVENTS; i++)
		queue_be64_put(buf + 1 + 8 * i, (uint64_t)r.last[i]);
	v.mv_data = buf;
	v.mv_size = sizeof(buf);
	return mdb_put(txn, op->db, &k, &v, 0);
}

/* Loop thread, after the write: a created database is now readable.
 * (The op itself is freed by the queue after this.) */
static void domstate_done(void *arg, int result)
{
	struct domstate_op *op = arg;

	if (result == QUEUE_OK && op->create && !op->ds->have_db) {
		op->ds->db = op->db;
		op->ds->have_db = 1;
	}
	domstate_unref(op->ds);
}

void domstate_note(struct domstate *ds, const char *domain,
    enum domstate_event ev, time_t when)
{
	struct domstate_op *op;

	if (ds == NULL || ds->absent || (unsigned)ev >= DOMSTATE_NEVENTS ||
	    when <= 0)
		return;
	op = xcalloc(1, sizeof(*op));
	if ((op->klen = domstate_key(domain, op->key)) == 0) {
		free(op);
		return;
	}
	op->ds = ds;
	op->db = ds->db;
	op->create = !ds->have_db;
	op->ev = ev;
	op->when = (uint64_t)when;
	ds->refs++;
	queue_ext_submit(ds->q, domstate_apply, free, op, domstate_done, op);
}

void domstate_set_default(struct domstate *ds)
{
	domstate_default = ds;
}

void domstate_note_now(const char *domain, enum domstate_event ev)
{
	domstate_note(domstate_default, domain, ev, time(NULL));
}
