/*
 * qmarks - the expiry scans' positions in a named database of the queue's
 * environment; see qmarks.h.
 */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmarks.h"
#include "queue_private.h"
#include "xmalloc.h"

#define QMARKS_DB "expiry-marks"

struct qmarks {
	struct queue *q;
	MDB_dbi db;
	int absent;		/* read-only queue without the database */
};

struct qmarks_op {
	MDB_dbi db;
	char key[24];
	char mark[QUEUE_ID_LEN];
};

static size_t qmarks_key(long age, char *buf, size_t size)
{
	int n = snprintf(buf, size, "age:%ld", age);

	return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

static int qmarks_setup(MDB_txn *txn, unsigned flags, void *arg)
{
	struct qmarks *m = arg;

	/* Through the queue: it reopens it with this handle after a
	 * compaction. */
	return queue_ext_dbi_open(m->q, txn, QMARKS_DB, flags, &m->db);
}

struct qmarks *qmarks_open(struct queue *q, char *err, size_t errlen)
{
	struct qmarks *m = xcalloc(1, sizeof(*m));
	int r;

	m->q = q;
	r = queue_ext_setup(q, qmarks_setup, m, "expiry marks", err, errlen);
	if (r < 0) {
		free(m);
		return NULL;
	}
	m->absent = r > 0;
	return m;
}

void qmarks_close(struct qmarks **m)
{
	if (m == NULL || *m == NULL)
		return;
	free(*m);
	*m = NULL;
}

int qmarks_get(struct qmarks *m, long age, char *mark_r)
{
	char key[24];
	MDB_val k, v;
	MDB_txn *txn;
	int found = 0;

	mark_r[0] = '\0';
	if (m == NULL || m->absent ||
	    (k.mv_size = qmarks_key(age, key, sizeof(key))) == 0)
		return 0;
	k.mv_data = key;
	if (mdb_txn_begin(queue_ext_env(m->q), NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_get(txn, m->db, &k, &v) == 0 && v.mv_size == QUEUE_ID_LEN) {
		memcpy(mark_r, v.mv_data, QUEUE_ID_LEN);
		mark_r[QUEUE_ID_LEN] = '\0';
		found = queue_id_valid(mark_r);
		if (!found)
			mark_r[0] = '\0';
	}
	mdb_txn_abort(txn);
	return found;
}

/* Writer thread, inside its batch: the handle is open (qmarks_open). */
static int qmarks_apply(MDB_txn *txn, void *arg)
{
	struct qmarks_op *op = arg;
	MDB_val k = { strlen(op->key), op->key };
	MDB_val v = { QUEUE_ID_LEN, op->mark };

	return mdb_put(txn, op->db, &k, &v, 0);
}

void qmarks_put(struct qmarks *m, long age, const char *mark)
{
	struct qmarks_op *op;

	if (m == NULL || m->absent || queue_ext_rdonly(m->q) ||
	    !queue_id_valid(mark))
		return;
	op = xcalloc(1, sizeof(*op));
	if (qmarks_key(age, op->key, sizeof(op->key)) == 0) {
		free(op);
		return;
	}
	op->db = m->db;
	memcpy(op->mark, mark, QUEUE_ID_LEN);
	queue_ext_submit(m->q, qmarks_apply, free, op, NULL, NULL);
}
