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

struct qmarks_op {
	char key[24];
	char mark[QUEUE_ID_LEN];
};

static size_t qmarks_key(long age, char *buf, size_t size)
{
	int n = snprintf(buf, size, "age:%ld", age);

	return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

int qmarks_get(struct queue *q, long age, char *mark_r)
{
	char key[24];
	MDB_val k, v;
	MDB_txn *txn;
	MDB_dbi db;
	int found = 0;

	mark_r[0] = '\0';
	if ((k.mv_size = qmarks_key(age, key, sizeof(key))) == 0)
		return 0;
	k.mv_data = key;
	if (mdb_txn_begin(queue_ext_env(q), NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_dbi_open(txn, QMARKS_DB, 0, &db) == 0 &&
	    mdb_get(txn, db, &k, &v) == 0 && v.mv_size == QUEUE_ID_LEN) {
		memcpy(mark_r, v.mv_data, QUEUE_ID_LEN);
		mark_r[QUEUE_ID_LEN] = '\0';
		found = queue_id_valid(mark_r);
		if (!found)
			mark_r[0] = '\0';
	}
	mdb_txn_abort(txn);
	return found;
}

/* Writer thread, inside its batch. */
static int qmarks_apply(MDB_txn *txn, void *arg)
{
	struct qmarks_op *op = arg;
	MDB_val k = { strlen(op->key), op->key };
	MDB_val v = { QUEUE_ID_LEN, op->mark };
	MDB_dbi db;
	int rc;

	if ((rc = mdb_dbi_open(txn, QMARKS_DB, MDB_CREATE, &db)) != 0)
		return rc;
	return mdb_put(txn, db, &k, &v, 0);
}

void qmarks_put(struct queue *q, long age, const char *mark)
{
	struct qmarks_op *op;

	if (queue_ext_rdonly(q) || !queue_id_valid(mark))
		return;
	op = xcalloc(1, sizeof(*op));
	if (qmarks_key(age, op->key, sizeof(op->key)) == 0) {
		free(op);
		return;
	}
	memcpy(op->mark, mark, QUEUE_ID_LEN);
	queue_ext_submit(q, qmarks_apply, free, op, NULL, NULL);
}
