/*
 * stscache - cached MTA-STS policies (see stscache.h).
 *
 * Key: the domain (lower case). Value: expires (8 octets, big-endian), the
 * id's length (1 octet), the id, the policy text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "queue_private.h"
#include "stscache.h"
#include "util.h"
#include "xmalloc.h"

#define STSCACHE_DB	"mtasts"
#define STSCACHE_KEY_MAX	255

struct stscache {
	struct queue *q;
	MDB_dbi db;
	int absent;		/* read-only queue without the database */
};

struct stscache_op {
	MDB_dbi db;
	size_t klen, vlen;
	char key[STSCACHE_KEY_MAX];
	unsigned char *val;
};

static int stscache_setup(MDB_txn *txn, unsigned flags, void *arg)
{
	struct stscache *c = arg;

	return queue_ext_dbi_open(c->q, txn, STSCACHE_DB, flags, &c->db);
}

struct stscache *stscache_open(struct queue *q, char *err, size_t errlen)
{
	struct stscache *c = xcalloc(1, sizeof(*c));
	int r;

	c->q = q;
	r = queue_ext_setup(q, stscache_setup, c, "MTA-STS cache", err, errlen);
	if (r < 0) {
		free(c);
		return NULL;
	}
	c->absent = r > 0;
	return c;
}

void stscache_close(struct stscache **c)
{
	if (c == NULL || *c == NULL)
		return;
	free(*c);
	*c = NULL;
}

int stscache_lookup(struct stscache *c, const char *domain,
    struct stscache_entry *e)
{
	MDB_txn *txn;
	MDB_val k, v;
	const unsigned char *p;
	uint64_t ex = 0;
	size_t idl, n = strlen(domain);
	int r;

	memset(e, 0, sizeof(*e));
	if (c->absent || n == 0 || n > STSCACHE_KEY_MAX)
		return 0;
	if (mdb_txn_begin(queue_ext_env(c->q), NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	k.mv_data = (void *)domain;
	k.mv_size = n;
	r = mdb_get(txn, c->db, &k, &v);
	if (r != 0) {
		mdb_txn_abort(txn);
		return r == MDB_NOTFOUND ? 0 : -1;
	}
	p = v.mv_data;
	if (v.mv_size < 9 || (idl = p[8]) > STSCACHE_ID_MAX ||
	    v.mv_size < 9 + idl || v.mv_size - 9 - idl > STSCACHE_TEXT_MAX) {
		mdb_txn_abort(txn);
		return 0;	/* not ours: as absent */
	}
	for (int i = 0; i < 8; i++)
		ex = ex << 8 | p[i];
	e->expires = (time_t)ex;
	memcpy(e->id, p + 9, idl);
	e->id[idl] = '\0';
	e->len = v.mv_size - 9 - idl;
	e->text = xmalloc(e->len + 1);
	memcpy(e->text, p + 9 + idl, e->len);
	e->text[e->len] = '\0';
	mdb_txn_abort(txn);
	return 1;
}

static int stscache_apply(MDB_txn *txn, void *arg)
{
	struct stscache_op *op = arg;
	MDB_val k = { op->klen, op->key }, v = { op->vlen, op->val };

	return mdb_put(txn, op->db, &k, &v, 0);
}

static void stscache_op_free(void *arg)
{
	struct stscache_op *op = arg;

	free(op->val);
	free(op);
}

void stscache_store(struct stscache *c, const char *domain, const char *id,
    time_t expires, const char *text, size_t len)
{
	struct stscache_op *op;
	size_t n = strlen(domain), idl = strlen(id);
	uint64_t ex = (uint64_t)expires;

	if (c->absent || n == 0 || n > STSCACHE_KEY_MAX ||
	    idl > STSCACHE_ID_MAX || len > STSCACHE_TEXT_MAX)
		return;
	op = xcalloc(1, sizeof(*op));
	op->db = c->db;
	op->klen = n;
	memcpy(op->key, domain, n);
	op->vlen = 9 + idl + len;
	op->val = xmalloc(op->vlen);
	for (int i = 7; i >= 0; i--) {
		op->val[i] = (unsigned char)ex;
		ex >>= 8;
	}
	op->val[8] = (unsigned char)idl;
	memcpy(op->val + 9, id, idl);
	memcpy(op->val + 9 + idl, text, len);
	queue_ext_submit(c->q, stscache_apply, stscache_op_free, op, NULL, NULL);
}
