/*
 * check_queue - the LMDB queue: round trips, big bodies, indexes, updates
 * with bounces, quota, map full, version refusal, crash recovery, and the
 * asynchronous writer with group commit.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <lmdb.h>

#include "queue.h"
#include "queue_private.h"

static char tmpdir[64];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_queue.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

static struct queue *open_q(uint64_t map_size, struct event_base *base)
{
	char err[256] = "";
	struct queue *q = queue_open(tmpdir, base, map_size, err, sizeof(err));

	ck_assert_msg(q != NULL, "queue_open: %s", err);
	return q;
}

/* Deterministic body bytes: position-dependent so misplaced chunks show. */
static unsigned char body_byte(size_t i)
{
	return (unsigned char)((i * 2654435761u) >> 13);
}

static void fill_body(unsigned char *buf, size_t off, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = body_byte(off + i);
}

struct done {
	int called;
	int result;
};

static void on_done(void *arg, int result)
{
	struct done *d = arg;

	d->called++;
	d->result = result;
}

/* A simple envelope: rcpts given as "addr" strings, domain after '@'. */
static void env_init(struct queue_envelope *env, const char *sender,
    const char **addrs, size_t n, time_t next_attempt)
{
	size_t i;

	memset(env, 0, sizeof(*env));
	env->sender = (char *)sender;
	env->envid = (char *)"ENV1";
	env->ret = QUEUE_RET_HDRS;
	env->flags = QUEUE_F_8BITMIME;
	env->arrival = 1700000000;
	env->helo = (char *)"client.example";
	env->client_addr = (char *)"192.0.2.1";
	env->rcpts = calloc(n, sizeof(*env->rcpts));
	env->nrcpts = n;
	for (i = 0; i < n; i++) {
		env->rcpts[i].addr = (char *)addrs[i];
		env->rcpts[i].domain = strchr(addrs[i], '@') + 1;
		env->rcpts[i].notify = QUEUE_NOTIFY_FAILURE;
		env->rcpts[i].next_attempt = next_attempt;
	}
	env->rcpts[0].orcpt = (char *)"rfc822;first@example";
}

/* Put a message synchronously (base == NULL); returns its id. */
static int put_msg(struct queue *q, struct queue_envelope *env, size_t size,
    char *id_r)
{
	struct queue_put *p = queue_put_begin(q);
	unsigned char buf[70001];
	size_t off = 0;
	struct done d = { 0, 0 };
	int rc;

	strcpy(id_r, queue_put_id(p));
	ck_assert(queue_id_valid(id_r));
	while (off < size) {
		size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);

		fill_body(buf, off, n);
		rc = queue_put_write(p, buf, n);
		if (rc < 0) {
			queue_put_abandon(&p);
			return rc;
		}
		off += n;
	}
	queue_put_commit(p, env, on_done, &d);
	ck_assert_int_eq(d.called, 1);
	return d.result;
}

static void check_body(struct queue *q, const char *id, size_t size)
{
	struct queue_body *b = NULL;
	const unsigned char *data;
	size_t len, off = 0, i, nchunks = 0;
	int rc;

	ck_assert_int_eq(queue_body_open(q, id, &b), QUEUE_OK);
	while ((rc = queue_body_read(b, &data, &len)) == 1) {
		ck_assert_uint_le(len, QUEUE_CHUNK_SIZE);
		ck_assert_uint_le(off + len, size);
		for (i = 0; i < len; i++)
			if (data[i] != body_byte(off + i))
				ck_abort_msg("body differs at %zu", off + i);
		off += len;
		nchunks++;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(off, size);
	ck_assert_uint_eq(nchunks, (size + QUEUE_CHUNK_SIZE - 1) / QUEUE_CHUNK_SIZE);
	queue_body_free(&b);
	ck_assert_ptr_null(b);
}

struct idset {
	char ids[64][QUEUE_ID_LEN + 1];
	int n;
};

static int collect(void *arg, const char *id)
{
	struct idset *s = arg;

	ck_assert_int_lt(s->n, 64);
	strcpy(s->ids[s->n++], id);
	return 0;
}

static int count_env(void *arg, const struct queue_envelope *env)
{
	(void)env;
	(*(int *)arg)++;
	return 0;
}

/* Raw LMDB look: entries in db `name` whose key starts with prefix. */
static size_t raw_count(const char *name, const void *prefix, size_t plen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *c;
	MDB_val k, d;
	size_t n = 0;
	int rc;

	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 16);
	ck_assert_int_eq(mdb_env_open(env, tmpdir, MDB_RDONLY | MDB_NOTLS, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, name, 0, &dbi), 0);
	ck_assert_int_eq(mdb_cursor_open(txn, dbi, &c), 0);
	for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT))
		if (k.mv_size >= plen && memcmp(k.mv_data, prefix, plen) == 0)
			n++;
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

/* Write one record behind the queue's back (the queue closed). */
static void raw_put(const char *name, MDB_val *k, MDB_val *d)
{
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi dbi;

	ck_assert_int_eq(mdb_env_create(&menv), 0);
	mdb_env_set_maxdbs(menv, 16);
	ck_assert_int_eq(mdb_env_open(menv, tmpdir, MDB_NOTLS, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(menv, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, name, 0, &dbi), 0);
	ck_assert_int_eq(mdb_put(txn, dbi, k, d, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(menv);
}

static size_t raw_last_txnid(void)
{
	MDB_env *env;
	MDB_envinfo info;

	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 16);
	ck_assert_int_eq(mdb_env_open(env, tmpdir, MDB_RDONLY | MDB_NOTLS, 0600), 0);
	mdb_env_info(env, &info);
	mdb_env_close(env);
	return info.me_last_txnid;
}

START_TEST(test_roundtrip)
{
	const char *addrs[] = { "a@one.example", "b@Two.example", "c@one.example" };
	struct queue_envelope env, *got = NULL;
	struct queue_domain_stats st;
	struct idset s = { .n = 0 };
	struct queue *q = open_q(0, NULL);
	char id[QUEUE_ID_LEN + 1];
	int n = 0;

	env_init(&env, "sender@src.example", addrs, 3, 0);
	env.rcpts[1].notify = QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY;
	ck_assert_int_eq(put_msg(q, &env, 1234, id), QUEUE_OK);
	ck_assert_int_eq(queue_get(q, id, &got), 1);
	ck_assert_str_eq(got->id, id);
	ck_assert_str_eq(got->sender, "sender@src.example");
	ck_assert_str_eq(got->envid, "ENV1");
	ck_assert_str_eq(got->helo, "client.example");
	ck_assert_str_eq(got->client_addr, "192.0.2.1");
	ck_assert_int_eq(got->ret, QUEUE_RET_HDRS);
	ck_assert_uint_eq(got->flags, QUEUE_F_8BITMIME);
	ck_assert_int_eq(got->arrival, 1700000000);
	ck_assert_uint_eq(got->size, 1234);
	ck_assert_uint_eq(got->nrcpts, 3);
	ck_assert_str_eq(got->rcpts[0].addr, "a@one.example");
	ck_assert_str_eq(got->rcpts[0].orcpt, "rfc822;first@example");
	ck_assert_ptr_null(got->rcpts[1].orcpt);
	ck_assert_str_eq(got->rcpts[1].domain, "Two.example");
	ck_assert_uint_eq(got->rcpts[1].notify, QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY);
	ck_assert_int_eq(got->rcpts[2].state, QUEUE_RCPT_QUEUED);
	ck_assert_ptr_null(got->rcpts[2].last_reply);
	queue_envelope_free(&got);
	ck_assert_ptr_null(got);
	check_body(q, id, 1234);

	/* Per-domain index and counters, case-insensitive domains. */
	ck_assert_int_eq(queue_foreach_domain(q, "one.example", collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 1);
	ck_assert_str_eq(s.ids[0], id);
	s.n = 0;
	ck_assert_int_eq(queue_foreach_domain(q, "two.example", collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 1);
	s.n = 0;
	ck_assert_int_eq(queue_foreach_domain(q, "one.exampl", collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 0);
	ck_assert_int_eq(queue_domain_stats(q, "one.example", &st), QUEUE_OK);
	ck_assert_uint_eq(st.messages, 1);
	ck_assert_uint_eq(st.bytes, 1234);
	ck_assert_int_eq(queue_domain_stats(q, "none.example", &st), QUEUE_OK);
	ck_assert_uint_eq(st.messages, 0);
	ck_assert_int_eq(queue_foreach(q, count_env, &n), QUEUE_OK);
	ck_assert_int_eq(n, 1);
	/* Held mail (next_attempt 0) is not in the retry index. */
	s.n = 0;
	ck_assert_int_eq(queue_foreach_due(q, time(NULL) + 1000, collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 0);
	ck_assert_int_eq(queue_get(q, "0000000000000000", &got), 0);
	ck_assert_int_eq(queue_get(q, "bad", &got), 0);

	/* Survives a reopen; readonly open sees it too. */
	queue_close(&q);
	ck_assert_ptr_null(q);
	{
		char err[256];
		struct queue *ro = queue_open_readonly(tmpdir, err, sizeof(err));

		ck_assert_msg(ro != NULL, "%s", err);
		ck_assert_int_eq(queue_get(ro, id, &got), 1);
		queue_envelope_free(&got);
		check_body(ro, id, 1234);
		queue_close(&ro);
	}
	free(env.rcpts);
}
END_TEST

START_TEST(test_ids)
{
	struct queue *q = open_q(0, NULL);
	char prev[QUEUE_ID_LEN + 1] = "";
	int i;

	for (i = 0; i < 1000; i++) {
		struct queue_put *p = queue_put_begin(q);

		ck_assert(queue_id_valid(queue_put_id(p)));
		ck_assert_int_lt(strcmp(prev, queue_put_id(p)), 0);
		strcpy(prev, queue_put_id(p));
		queue_put_abandon(&p);
		ck_assert_ptr_null(p);
	}
	ck_assert(!queue_id_valid("0123456789abcdef"));
	ck_assert(!queue_id_valid("0123456789ABCDE"));
	ck_assert(!queue_id_valid("0123456789ABCDEF0"));
	ck_assert(queue_id_valid("0123456789ABCDEF"));
	queue_close(&q);
}
END_TEST

START_TEST(test_big_body)
{
	const char *addrs[] = { "x@big.example" };
	struct queue_envelope env;
	struct queue *q = open_q(0, NULL);
	char id[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1];
	size_t size = 3 * QUEUE_CHUNK_SIZE + 12345;	/* 1 MB + */

	env_init(&env, "", addrs, 1, 0);
	ck_assert_int_eq(put_msg(q, &env, size, id), QUEUE_OK);
	check_body(q, id, size);
	/* Exactly one chunk, and an empty body. */
	ck_assert_int_eq(put_msg(q, &env, QUEUE_CHUNK_SIZE, id2), QUEUE_OK);
	check_body(q, id2, QUEUE_CHUNK_SIZE);
	ck_assert_int_eq(put_msg(q, &env, 0, id2), QUEUE_OK);
	check_body(q, id2, 0);
	queue_close(&q);
	ck_assert_uint_eq(raw_count("body", id, QUEUE_ID_LEN), 4);
	ck_assert_uint_eq(raw_count("incomplete", "", 0), 0);
	free(env.rcpts);
}
END_TEST

START_TEST(test_due)
{
	const char *addrs[] = { "a@r.example", "b@r.example", "c@s.example" };
	struct queue_envelope env;
	struct idset s = { .n = 0 };
	struct queue *q = open_q(0, NULL);
	char id1[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1];

	env_init(&env, "s@x.example", addrs, 3, 100);
	env.rcpts[1].next_attempt = 150;
	env.rcpts[2].next_attempt = 0;
	ck_assert_int_eq(put_msg(q, &env, 10, id1), QUEUE_OK);
	env.rcpts[0].next_attempt = 120;
	env.rcpts[1].next_attempt = 120;
	ck_assert_int_eq(put_msg(q, &env, 10, id2), QUEUE_OK);
	ck_assert_int_eq(queue_foreach_due(q, 99, collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 0);
	ck_assert_int_eq(queue_foreach_due(q, 100, collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 1);
	ck_assert_str_eq(s.ids[0], id1);
	s.n = 0;
	ck_assert_int_eq(queue_foreach_due(q, 1000, collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 2);	/* once each, in due order */
	ck_assert_str_eq(s.ids[0], id1);
	ck_assert_str_eq(s.ids[1], id2);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

static int find_dsn(void *arg, const struct queue_envelope *env)
{
	char *id = arg;

	if (env->flags & QUEUE_F_DSN) {
		ck_assert_str_eq(env->sender, "");
		ck_assert_uint_eq(env->nrcpts, 1);
		ck_assert_str_eq(env->rcpts[0].addr, "sender@src.example");
		strcpy(id, env->id);
	}
	return 0;
}

START_TEST(test_update)
{
	const char *addrs[] = { "a@one.example", "b@two.example", "c@one.example" };
	struct queue_envelope env, benv, *got = NULL;
	const char *baddr[] = { "sender@src.example" };
	struct queue_rcpt_update up[2];
	struct queue_domain_stats st;
	struct idset s = { .n = 0 };
	struct queue *q = open_q(0, NULL);
	struct queue_body *b = NULL;
	char id[QUEUE_ID_LEN + 1], bid[QUEUE_ID_LEN + 1] = "";
	struct done d = { 0, 0 };
	const unsigned char *data;
	size_t len;
	int n = 0;

	env_init(&env, "sender@src.example", addrs, 3, 0);
	ck_assert_int_eq(put_msg(q, &env, 500000, id), QUEUE_OK);

	/* b sent: two.example no longer indexed. */
	memset(up, 0, sizeof(up));
	up[0].index = 1;
	up[0].state = QUEUE_RCPT_SENT;
	up[0].reply = "250 ok";
	queue_update(q, id, up, 1, NULL, NULL, 0, on_done, &d);
	ck_assert_int_eq(d.called, 1);
	ck_assert_int_eq(d.result, QUEUE_OK);
	ck_assert_int_eq(queue_foreach_domain(q, "two.example", collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 0);
	ck_assert_int_eq(queue_domain_stats(q, "two.example", &st), QUEUE_OK);
	ck_assert_uint_eq(st.messages, 0);
	ck_assert_int_eq(queue_get(q, id, &got), 1);
	ck_assert_int_eq(got->rcpts[1].state, QUEUE_RCPT_SENT);
	ck_assert_str_eq(got->rcpts[1].last_reply, "250 ok");
	ck_assert_uint_eq(got->rcpts[1].attempts, 1);
	queue_envelope_free(&got);

	/* a deferred with a retry time; c bounced with a bounce message. */
	up[0].index = 0;
	up[0].state = QUEUE_RCPT_QUEUED;
	up[0].reply = "451 later";
	up[0].next_attempt = 5000;
	up[1].index = 2;
	up[1].state = QUEUE_RCPT_BOUNCED;
	up[1].reply = "550 no such user";
	env_init(&benv, "", baddr, 1, 0);
	benv.flags = QUEUE_F_DSN;
	benv.envid = NULL;
	benv.rcpts[0].orcpt = NULL;
	d.called = 0;
	queue_update(q, id, up, 2, &benv, "Subject: bounce\r\n\r\nhi\r\n", 23, on_done, &d);
	ck_assert_int_eq(d.called, 1);
	ck_assert_int_eq(d.result, QUEUE_OK);
	ck_assert_int_eq(queue_foreach(q, count_env, &n), QUEUE_OK);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(queue_foreach(q, find_dsn, bid), QUEUE_OK);
	ck_assert(queue_id_valid(bid));
	ck_assert_int_eq(queue_body_open(q, bid, &b), QUEUE_OK);
	ck_assert_int_eq(queue_body_read(b, &data, &len), 1);
	ck_assert_uint_eq(len, 23);
	ck_assert_mem_eq(data, "Subject: bounce\r\n\r\nhi\r\n", 23);
	ck_assert_int_eq(queue_body_read(b, &data, &len), 0);
	queue_body_free(&b);
	ck_assert_int_eq(queue_domain_stats(q, "src.example", &st), QUEUE_OK);
	ck_assert_uint_eq(st.messages, 1);
	ck_assert_uint_eq(st.bytes, 23);
	s.n = 0;
	ck_assert_int_eq(queue_foreach_due(q, 6000, collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 1);
	ck_assert_str_eq(s.ids[0], id);
	ck_assert_int_eq(queue_domain_stats(q, "one.example", &st), QUEUE_OK);
	ck_assert_uint_eq(st.messages, 1);
	ck_assert_uint_eq(st.bytes, 500000);

	/* Delay flag alone is not an attempt. */
	up[0].reply = NULL;
	up[0].delay_warned = 1;
	queue_update(q, id, up, 1, NULL, NULL, 0, NULL, NULL);
	ck_assert_int_eq(queue_get(q, id, &got), 1);
	ck_assert_int_eq(got->rcpts[0].delay_warned, 1);
	ck_assert_uint_eq(got->rcpts[0].attempts, 1);
	ck_assert_str_eq(got->rcpts[0].last_reply, "451 later");
	ck_assert_int_eq(got->rcpts[0].next_attempt, 5000);
	queue_envelope_free(&got);

	/* Last recipient done: message, body and indexes go. */
	up[0].state = QUEUE_RCPT_SENT;
	up[0].delay_warned = 0;
	d.called = 0;
	queue_update(q, id, up, 1, NULL, NULL, 0, on_done, &d);
	ck_assert_int_eq(d.result, QUEUE_OK);
	ck_assert_int_eq(queue_get(q, id, &got), 0);
	ck_assert_int_eq(queue_body_open(q, id, &b), QUEUE_ENOTFOUND);
	s.n = 0;
	ck_assert_int_eq(queue_foreach_due(q, 6000, collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 0);
	ck_assert_int_eq(queue_foreach_domain(q, "one.example", collect, &s), QUEUE_OK);
	ck_assert_int_eq(s.n, 0);
	ck_assert_int_eq(queue_domain_stats(q, "one.example", &st), QUEUE_OK);
	ck_assert_uint_eq(st.messages, 0);
	ck_assert_uint_eq(st.bytes, 0);
	/* Update of a missing message. */
	queue_update(q, id, up, 1, NULL, NULL, 0, on_done, &d);
	ck_assert_int_eq(d.result, QUEUE_ENOTFOUND);
	queue_close(&q);
	ck_assert_uint_eq(raw_count("body", id, QUEUE_ID_LEN), 0);
	free(env.rcpts);
	free(benv.rcpts);
}
END_TEST

START_TEST(test_delete_and_lease)
{
	const char *addrs[] = { "a@one.example" };
	struct queue_envelope env, *got = NULL;
	struct queue *q = open_q(0, NULL), *ro;
	char id[QUEUE_ID_LEN + 1], err[256];
	struct done d = { 0, 0 };

	env_init(&env, "s@x.example", addrs, 1, 0);
	ck_assert_int_eq(put_msg(q, &env, 300000, id), QUEUE_OK);
	ck_assert_int_eq(queue_lease(q, id, "flush-1"), QUEUE_OK);
	ck_assert_int_eq(queue_lease(q, id, "flush-2"), QUEUE_EBUSY);
	ck_assert_int_eq(queue_is_leased(q, id), 1);
	ro = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(ro != NULL, "%s", err);
	ck_assert_int_eq(queue_is_leased(ro, id), 1);
	queue_unlease(q, id);
	ck_assert_int_eq(queue_is_leased(q, id), 0);
	ck_assert_int_eq(queue_is_leased(ro, id), 0);
	ck_assert_int_eq(queue_lease(q, id, "flush-3"), QUEUE_OK);
	/* A second writer (another daemon, a tool) is refused. */
	{
		struct queue *q2 = queue_open(tmpdir, NULL, 0, err, sizeof(err));

		ck_assert_ptr_null(q2);
		ck_assert_msg(strstr(err, "in use") != NULL, "%s", err);
	}
	queue_close(&q);
	/* Leases do not survive a restart. */
	q = open_q(0, NULL);
	ck_assert_int_eq(queue_is_leased(q, id), 0);
	ck_assert_int_eq(queue_is_leased(ro, id), 0);
	queue_delete(q, id, on_done, &d);
	ck_assert_int_eq(d.called, 1);
	ck_assert_int_eq(d.result, QUEUE_OK);
	ck_assert_int_eq(queue_get(q, id, &got), 0);
	ck_assert_int_eq(queue_get(ro, id, &got), 0);
	queue_delete(q, id, on_done, &d);
	ck_assert_int_eq(d.result, QUEUE_ENOTFOUND);
	/* Writes through a read-only handle fail cleanly. */
	queue_delete(ro, id, on_done, &d);
	ck_assert_int_eq(d.result, QUEUE_EIO);
	queue_close(&ro);
	queue_close(&q);
	ck_assert_uint_eq(raw_count("body", id, QUEUE_ID_LEN), 0);
	free(env.rcpts);
}
END_TEST

START_TEST(test_quota)
{
	const char *addrs[] = { "a@small.example", "b@big.example" };
	struct queue_envelope env;
	struct queue_domain_stats st;
	struct queue *q = open_q(0, NULL);
	char id[QUEUE_ID_LEN + 1];

	queue_set_quota(q, "Small.Example", 900000);
	env_init(&env, "s@x.example", addrs, 2, 0);
	ck_assert_int_eq(put_msg(q, &env, 600000, id), QUEUE_OK);
	ck_assert_int_eq(put_msg(q, &env, 600000, id), QUEUE_EQUOTA);
	/* Nothing of the refused put remains. */
	queue_close(&q);
	ck_assert_uint_eq(raw_count("body", id, QUEUE_ID_LEN), 0);
	ck_assert_uint_eq(raw_count("msg", id, QUEUE_ID_LEN), 0);
	ck_assert_uint_eq(raw_count("incomplete", "", 0), 0);
	q = open_q(0, NULL);
	queue_set_quota(q, "small.example", 900000);
	ck_assert_int_eq(put_msg(q, &env, 200000, id), QUEUE_OK);
	ck_assert_int_eq(queue_domain_stats(q, "small.example", &st), QUEUE_OK);
	ck_assert_uint_eq(st.messages, 2);
	ck_assert_uint_eq(st.bytes, 800000);
	/* Another domain is not limited. */
	env.nrcpts = 1;
	env.rcpts[0] = env.rcpts[1];
	ck_assert_int_eq(put_msg(q, &env, 600000, id), QUEUE_OK);
	queue_set_quota(q, "small.example", 0);
	free(env.rcpts);
	env_init(&env, "s@x.example", addrs, 1, 0);
	ck_assert_int_eq(put_msg(q, &env, 600000, id), QUEUE_OK);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

START_TEST(test_map_full)
{
	const char *addrs[] = { "a@one.example" };
	struct queue_envelope env;
	struct queue *q = open_q(1024 * 1024, NULL);
	char ids[40][QUEUE_ID_LEN + 1];
	int i, n = 0, rc = QUEUE_OK;

	env_init(&env, "s@x.example", addrs, 1, 0);
	for (i = 0; i < 40; i++) {
		rc = put_msg(q, &env, 100000, ids[i]);
		if (rc != QUEUE_OK)
			break;
		n++;
	}
	ck_assert_int_eq(rc, QUEUE_EFULL);
	ck_assert_int_gt(n, 2);
	for (i = 0; i < n; i++)
		check_body(q, ids[i], 100000);
	/* A delete frees room again; the queue stays usable. */
	queue_delete(q, ids[0], NULL, NULL);
	queue_delete(q, ids[1], NULL, NULL);
	queue_delete(q, ids[2], NULL, NULL);
	ck_assert_int_eq(put_msg(q, &env, 100000, ids[0]), QUEUE_OK);
	queue_close(&q);
	q = open_q(1024 * 1024, NULL);
	for (i = 3; i < n; i++)
		check_body(q, ids[i], 100000);
	check_body(q, ids[0], 100000);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

START_TEST(test_version)
{
	struct queue *q = open_q(0, NULL);
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi dbi;
	unsigned char v[4] = { 0, 0, 0, 99 };
	MDB_val k = { 7, "version" }, d = { 4, v };
	char err[256] = "";

	queue_close(&q);
	raw_put("meta", &k, &d);

	q = queue_open(tmpdir, NULL, 0, err, sizeof(err));
	ck_assert_ptr_null(q);
	ck_assert_msg(strstr(err, "version 99") != NULL, "%s", err);
	q = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_ptr_null(q);

	/* Left as it was. */
	ck_assert_int_eq(mdb_env_create(&menv), 0);
	mdb_env_set_maxdbs(menv, 16);
	ck_assert_int_eq(mdb_env_open(menv, tmpdir, MDB_NOTLS | MDB_RDONLY, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(menv, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	ck_assert_int_eq(mdb_get(txn, dbi, &k, &d), 0);
	ck_assert_uint_eq(d.mv_size, 4);
	ck_assert_int_eq(((unsigned char *)d.mv_data)[3], 99);
	mdb_txn_abort(txn);
	mdb_env_close(menv);
}
END_TEST

/* The queue's notices (it never logs), gathered for a test. */
struct notices {
	char text[1024];
	int n, errors;
};

static void notice_keep(void *arg, enum queue_notice_level level,
    const char *text)
{
	struct notices *ns = arg;
	size_t used = strlen(ns->text);

	snprintf(ns->text + used, sizeof(ns->text) - used, "%s\n", text);
	ns->n++;
	if (level == QUEUE_NOTICE_ERROR)
		ns->errors++;
}

START_TEST(test_recovery)
{
	const char *addrs[] = { "a@one.example" };
	struct queue_envelope env;
	struct queue *q = open_q(0, NULL);
	char id[QUEUE_ID_LEN + 1], cid[QUEUE_ID_LEN + 1];
	int fds[2], status;
	pid_t pid;

	env_init(&env, "s@x.example", addrs, 1, 0);
	ck_assert_int_eq(put_msg(q, &env, 700000, id), QUEUE_OK);
	/* LMDB handles must not cross fork(): close first. */
	queue_close(&q);
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct queue *cq;
		struct queue_put *p;
		unsigned char *buf = malloc(3 * QUEUE_CHUNK_SIZE + 10);
		char err[256];

		close(fds[0]);
		cq = queue_open(tmpdir, NULL, 0, err, sizeof(err));
		if (cq == NULL || buf == NULL)
			_exit(1);
		p = queue_put_begin(cq);
		fill_body(buf, 0, 3 * QUEUE_CHUNK_SIZE + 10);
		if (queue_put_write(p, buf, 3 * QUEUE_CHUNK_SIZE + 10) < 0)
			_exit(1);
		if (write(fds[1], queue_put_id(p), QUEUE_ID_LEN) != QUEUE_ID_LEN)
			_exit(1);
		for (;;)
			pause();
	}
	close(fds[1]);
	ck_assert_int_eq(read(fds[0], cid, QUEUE_ID_LEN), QUEUE_ID_LEN);
	cid[QUEUE_ID_LEN] = '\0';
	close(fds[0]);
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status));
	/* The child's chunks reached the file before it died. */
	ck_assert_uint_eq(raw_count("body", cid, QUEUE_ID_LEN), 3);
	ck_assert_uint_eq(raw_count("incomplete", cid, QUEUE_ID_LEN), 1);

	q = open_q(0, NULL);
	{
		/* Reported to the caller, not logged: the open's facts and
		 * the same as a notice for the daemon's log. */
		struct queue_open_info info;
		struct notices ns = { "", 0, 0 };

		queue_open_info(q, &info);
		ck_assert_uint_eq(info.orphans_removed, 1);
		ck_assert_int_eq(info.upgraded_from, 0);
		ck_assert_int_eq(info.oldest_missing, 0);
		queue_set_notice_hook(q, notice_keep, &ns);
		queue_notices_flush(q);
		ck_assert_int_eq(ns.n, 1);
		ck_assert_str_eq(ns.text,
		    "queue: removed 1 unfinished message bodies\n");
		queue_notices_flush(q);
		ck_assert_int_eq(ns.n, 1);
	}
	check_body(q, id, 700000);
	queue_close(&q);
	{
		/* Nothing left to repair: nothing reported. */
		struct queue_open_info info;

		q = open_q(0, NULL);
		queue_open_info(q, &info);
		ck_assert_uint_eq(info.orphans_removed, 0);
		queue_close(&q);
	}
	ck_assert_uint_eq(raw_count("body", cid, QUEUE_ID_LEN), 0);
	ck_assert_uint_eq(raw_count("incomplete", "", 0), 0);
	ck_assert_uint_eq(raw_count("body", id, QUEUE_ID_LEN), 3);
	free(env.rcpts);
}
END_TEST

START_TEST(test_abandon)
{
	struct queue *q = open_q(0, NULL);
	struct queue_put *p = queue_put_begin(q);
	unsigned char *buf = calloc(1, 2 * QUEUE_CHUNK_SIZE + 1);
	char id[QUEUE_ID_LEN + 1];

	strcpy(id, queue_put_id(p));
	ck_assert_int_ge(queue_put_write(p, buf, 2 * QUEUE_CHUNK_SIZE + 1), 0);
	queue_put_abandon(&p);
	ck_assert_ptr_null(p);
	queue_close(&q);
	ck_assert_uint_eq(raw_count("body", id, QUEUE_ID_LEN), 0);
	ck_assert_uint_eq(raw_count("incomplete", "", 0), 0);
	free(buf);
}
END_TEST

static int count_id(void *arg, const char *id)
{
	int *n = arg;

	ck_assert(queue_id_valid(id));
	return ++*n == 10 && n[1];	/* n[1]: stop after 10 */
}

static int count_env_stop(void *arg, const struct queue_envelope *env)
{
	return count_id(arg, env->id);
}

/* More records than one scan batch; callbacks can stop a scan. */
START_TEST(test_many)
{
	const char *addrs[] = { "a@many.example" };
	struct queue_envelope env;
	struct queue *q = open_q(0, NULL);
	char id[QUEUE_ID_LEN + 1];
	int i, n[2];

	env_init(&env, "s@x.example", addrs, 1, 50);
	for (i = 0; i < 300; i++)
		ck_assert_int_eq(put_msg(q, &env, 10, id), QUEUE_OK);
	n[0] = 0, n[1] = 0;
	ck_assert_int_eq(queue_foreach_domain(q, "many.example", count_id, n), QUEUE_OK);
	ck_assert_int_eq(n[0], 300);
	n[0] = 0, n[1] = 1;
	ck_assert_int_eq(queue_foreach_domain(q, "many.example", count_id, n), QUEUE_OK);
	ck_assert_int_eq(n[0], 10);
	n[0] = 0, n[1] = 0;
	ck_assert_int_eq(queue_foreach(q, count_env_stop, n), QUEUE_OK);
	ck_assert_int_eq(n[0], 300);
	n[0] = 0, n[1] = 1;
	ck_assert_int_eq(queue_foreach(q, count_env_stop, n), QUEUE_OK);
	ck_assert_int_eq(n[0], 10);
	n[0] = 0, n[1] = 0;
	ck_assert_int_eq(queue_foreach_due(q, 50, count_id, n), QUEUE_OK);
	ck_assert_int_eq(n[0], 300);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

/* Every truncation and byte flip of a record decodes or fails cleanly. */
START_TEST(test_corrupt_record)
{
	const char *addrs[] = { "a@one.example", "b@two.example" };
	struct queue_envelope env, *got;
	unsigned char *rec, *copy;
	size_t len, i;
	int rc;

	env_init(&env, "s@x.example", addrs, 2, 7);
	env.size = 10;
	rec = queue_record_encode(&env, 1, &len);
	ck_assert_int_eq(queue_record_decode("0123456789ABCDEF", rec, len, &got, NULL), QUEUE_OK);
	ck_assert_str_eq(got->rcpts[1].addr, "b@two.example");
	queue_envelope_free(&got);
	for (i = 0; i < len; i++) {
		ck_assert_int_eq(queue_record_decode("0123456789ABCDEF", rec, i, &got, NULL),
		    QUEUE_EIO);
		ck_assert_ptr_null(got);
	}
	copy = malloc(len);
	for (i = 0; i < len; i++) {
		memcpy(copy, rec, len);
		copy[i] ^= 0xff;
		rc = queue_record_decode("0123456789ABCDEF", copy, len, &got, NULL);
		ck_assert(rc == QUEUE_OK || rc == QUEUE_EIO);
		queue_envelope_free(&got);
	}
	/* Wrong chunk count for the size. */
	free(rec);
	rec = queue_record_encode(&env, 2, &len);
	ck_assert_int_eq(queue_record_decode("0123456789ABCDEF", rec, len, &got, NULL), QUEUE_EIO);
	free(rec);
	free(copy);
	free(env.rcpts);
	{
		/* A corrupt record met in a scan: skipped, counted, and a
		 * notice for the caller to log. */
		struct queue *q = open_q(0, NULL);
		struct queue_stats st;
		struct notices ns = { "", 0, 0 };
		MDB_val k = { QUEUE_ID_LEN, "0000000000000001" }, d = { 3, "bad" };
		int n = 0;

		queue_close(&q);
		raw_put("msg", &k, &d);
		q = open_q(0, NULL);
		queue_set_notice_hook(q, notice_keep, &ns);
		ck_assert_int_eq(queue_foreach(q, count_env, &n), QUEUE_EIO);
		queue_stats(q, &st);
		ck_assert_uint_eq(st.corrupt_records, 1);
		queue_notices_flush(q);
		ck_assert_int_eq(ns.errors, 1);
		ck_assert_str_eq(ns.text,
		    "0000000000000001: corrupt queue record skipped\n");
		queue_close(&q);
	}
}
END_TEST

/* ---- asynchronous mode ---- */

#define NASYNC 20

struct async_put {
	struct queue_put *p;
	struct event_base *base;
	size_t off, size;
	int done, result, paused;
	int *remaining;
	struct queue_envelope *env;
	char id[QUEUE_ID_LEN + 1];
};

static void async_done(void *arg, int result)
{
	struct async_put *a = arg;

	a->done++;
	a->result = result;
	if (--*a->remaining == 0)
		event_base_loopbreak(a->base);
}

static void async_feed(void *arg)
{
	struct async_put *a = arg;
	unsigned char buf[65536];
	int rc = 0;

	a->paused = 0;
	while (a->off < a->size) {
		size_t n = a->size - a->off < sizeof(buf) ? a->size - a->off : sizeof(buf);

		fill_body(buf, a->off, n);
		rc = queue_put_write(a->p, buf, n);
		ck_assert_int_ge(rc, 0);
		a->off += n;
		if (rc == 1) {
			a->paused++;
			return;	/* resume will call us again */
		}
	}
	queue_put_commit(a->p, a->env, async_done, a);
	a->p = NULL;
}

static void async_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	ck_abort_msg("async test timed out");
}

START_TEST(test_async)
{
	const char *addrs[] = { "a@one.example", "b@two.example" };
	struct queue_envelope env;
	struct event_base *base;
	struct event *tev;
	struct timeval tv = { 30, 0 };
	struct async_put a[NASYNC], big;
	struct queue *q;
	int i, remaining = NASYNC, total_paused = 0;
	size_t txns;

	ck_assert_int_eq(evthread_use_pthreads(), 0);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	tev = evtimer_new(base, async_timeout, NULL);
	evtimer_add(tev, &tv);
	q = open_q(0, NULL);
	queue_close(&q);
	/* Opening takes one write transaction (recovery). */
	txns = raw_last_txnid() + 1;
	q = open_q(0, base);
	env_init(&env, "s@x.example", addrs, 2, 0);

	/* Many small puts committed while the writer is held: group commit. */
	queue_test_hold_writer(q, 1);
	memset(a, 0, sizeof(a));
	for (i = 0; i < NASYNC; i++) {
		a[i].base = base;
		a[i].remaining = &remaining;
		a[i].env = &env;
		a[i].size = 1000 + i;
		a[i].p = queue_put_begin(q);
		strcpy(a[i].id, queue_put_id(a[i].p));
		async_feed(&a[i]);
		ck_assert_int_eq(a[i].done, 0);	/* not inline */
	}
	queue_test_hold_writer(q, 0);
	event_base_dispatch(base);
	ck_assert_int_eq(remaining, 0);
	for (i = 0; i < NASYNC; i++) {
		struct queue_envelope *got = NULL;

		ck_assert_int_eq(a[i].done, 1);
		ck_assert_int_eq(a[i].result, QUEUE_OK);
		ck_assert_int_eq(queue_get(q, a[i].id, &got), 1);
		ck_assert_uint_eq(got->size, 1000 + i);
		queue_envelope_free(&got);
		check_body(q, a[i].id, 1000 + i);
	}
	/* One transaction (and the close) for NASYNC commits. */
	queue_close(&q);
	ck_assert_msg(raw_last_txnid() - txns <= 2,
	    "%zu transactions for %d puts", raw_last_txnid() - txns, NASYNC);
	q = open_q(0, base);

	/* A big body with backpressure: write returns 1, resume continues. */
	memset(&big, 0, sizeof(big));
	remaining = 1;
	big.base = base;
	big.remaining = &remaining;
	big.env = &env;
	big.size = 40 * QUEUE_CHUNK_SIZE + 77;
	big.p = queue_put_begin(q);
	strcpy(big.id, queue_put_id(big.p));
	queue_put_set_resume(big.p, async_feed, &big);
	async_feed(&big);
	total_paused = big.paused;
	event_base_dispatch(base);
	ck_assert_int_eq(big.done, 1);
	ck_assert_int_eq(big.result, QUEUE_OK);
	ck_assert_int_gt(total_paused + big.paused, 0);
	check_body(q, big.id, big.size);

	/* Abandon while the commit is in flight: no callback, no leak. */
	{
		struct queue_put *p = queue_put_begin(q);
		struct done d = { 0, 0 };
		char pid[QUEUE_ID_LEN + 1];
		struct queue_envelope *got = NULL;

		strcpy(pid, queue_put_id(p));
		ck_assert_int_eq(queue_put_write(p, "x\r\n", 3), 0);
		queue_put_commit(p, &env, on_done, &d);
		queue_put_abandon(&p);
		queue_close(&q);	/* waits for the writer */
		ck_assert_int_eq(d.called, 0);
		q = open_q(0, NULL);
		ck_assert_int_eq(queue_get(q, pid, &got), 1);
		queue_envelope_free(&got);
		queue_close(&q);
	}
	event_free(tev);
	event_base_free(base);
	free(env.rcpts);
}
END_TEST

/* One put in a group-commit batch hits MDB_MAP_FULL: only it fails. */
START_TEST(test_async_full)
{
	const char *addrs[] = { "a@one.example" };
	struct queue_envelope env;
	struct event_base *base;
	struct event *tev;
	struct timeval tv = { 30, 0 };
	struct async_put a[4];
	struct queue *q;
	int i, remaining = 4;

	ck_assert_int_eq(evthread_use_pthreads(), 0);
	base = event_base_new();
	tev = evtimer_new(base, async_timeout, NULL);
	evtimer_add(tev, &tv);
	q = open_q(1024 * 1024, base);
	env_init(&env, "s@x.example", addrs, 1, 0);
	memset(a, 0, sizeof(a));
	for (i = 0; i < 4; i++) {
		unsigned char *buf;

		a[i].base = base;
		a[i].remaining = &remaining;
		a[i].env = &env;
		a[i].size = i == 2 ? 2 * 1024 * 1024 : 5000;
		a[i].p = queue_put_begin(q);
		strcpy(a[i].id, queue_put_id(a[i].p));
		/* All at once, ignoring backpressure, so they share batches. */
		buf = malloc(a[i].size);
		fill_body(buf, 0, a[i].size);
		ck_assert_int_ge(queue_put_write(a[i].p, buf, a[i].size), 0);
		free(buf);
		queue_put_commit(a[i].p, &env, async_done, &a[i]);
	}
	event_base_dispatch(base);
	ck_assert_int_eq(remaining, 0);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(a[i].done, 1);
		ck_assert_int_eq(a[i].result, i == 2 ? QUEUE_EFULL : QUEUE_OK);
		if (i != 2)
			check_body(q, a[i].id, a[i].size);
	}
	queue_close(&q);
	ck_assert_uint_eq(raw_count("body", a[2].id, QUEUE_ID_LEN), 0);
	ck_assert_uint_eq(raw_count("msg", "", 0), 3);
	ck_assert_uint_eq(raw_count("incomplete", "", 0), 0);
	event_free(tev);
	event_base_free(base);
	free(env.rcpts);
}
END_TEST


/* ---- scale: counters, paged index reads, scans by time, compaction ---- */

struct scan_ctx {
	int seen;
	char stop_at[QUEUE_ID_LEN + 1];
	char last[QUEUE_ID_LEN + 1];
	int disorder;
	int stopped;
};

static int scan_cb(void *arg, const struct queue_envelope *env)
{
	struct scan_ctx *c = arg;

	if (strcmp(env->id, c->stop_at) == 0) {
		c->stop_at[0] = '\0';	/* once: taken on the next call */
		c->stopped = 1;
		return 1;
	}
	if (c->last[0] != '\0' && strcmp(c->last, env->id) >= 0)
		c->disorder = 1;
	memcpy(c->last, env->id, sizeof(c->last));
	c->seen++;
	return 0;
}

struct count_ctx {
	int n;
	uint64_t a_msgs, b_msgs;
};

static int count_cb(void *arg, const char *domain, const struct queue_domain_stats *st)
{
	struct count_ctx *c = arg;

	c->n++;
	if (strcmp(domain, "a.example") == 0)
		c->a_msgs = st->messages;
	if (strcmp(domain, "b.example") == 0)
		c->b_msgs = st->messages;
	return 0;
}


struct oldest_ctx {
	time_t a, b;
	int a_known, b_known, n;
};

static int oldest_cb(void *arg, const char *domain,
    const struct queue_domain_stats *st)
{
	struct oldest_ctx *c = arg;

	c->n++;
	if (strcmp(domain, "a.example") == 0) {
		c->a = st->oldest;
		c->a_known = st->oldest_known;
	} else if (strcmp(domain, "b.example") == 0) {
		c->b = st->oldest;
		c->b_known = st->oldest_known;
	}
	return 0;
}

static struct oldest_ctx oldest_now(struct queue *q)
{
	struct oldest_ctx c;

	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(queue_foreach_count(q, oldest_cb, &c), QUEUE_OK);
	return c;
}

/* Each domain's oldest message is kept with its counters (stats reads
 * one record per domain): moved on when the oldest goes, kept through an
 * update, gone with the last message, rebuilt for a queue without them. */
START_TEST(test_oldest_records)
{
	const char *a[] = { "x@a.example" }, *b[] = { "y@B.example" };
	struct queue_envelope env;
	struct queue_rcpt_update up;
	struct oldest_ctx c;
	struct queue *q = open_q(0, NULL);
	char ids[3][QUEUE_ID_LEN + 1], idb[QUEUE_ID_LEN + 1];
	struct done d = { 0, 0 };
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi dbi;

	env_init(&env, "s@x.example", a, 1, 0);
	for (int i = 0; i < 3; i++) {
		env.arrival = 1000 * (i + 1);
		ck_assert_int_eq(put_msg(q, &env, 100, ids[i]), QUEUE_OK);
	}
	free(env.rcpts);
	env_init(&env, "s@x.example", b, 1, 0);
	env.arrival = 500;
	ck_assert_int_eq(put_msg(q, &env, 100, idb), QUEUE_OK);
	free(env.rcpts);
	c = oldest_now(q);
	ck_assert_int_eq(c.n, 2);
	ck_assert(c.a_known && c.a == 1000 && c.b_known && c.b == 500);

	/* An update of the oldest (a delivery attempt) keeps it. */
	memset(&up, 0, sizeof(up));
	up.index = 0;
	up.state = QUEUE_RCPT_QUEUED;
	up.reply = "421 later";
	up.next_attempt = 1700000000;
	queue_update(q, ids[0], &up, 1, NULL, NULL, 0, on_done, &d);
	ck_assert_int_eq(d.result, QUEUE_OK);
	c = oldest_now(q);
	ck_assert(c.a_known && c.a == 1000);
	/* The oldest goes: the next one; a later one goes: unchanged. */
	queue_delete(q, ids[0], NULL, NULL);
	c = oldest_now(q);
	ck_assert(c.a_known && c.a == 2000);
	queue_delete(q, ids[2], NULL, NULL);
	c = oldest_now(q);
	ck_assert(c.a_known && c.a == 2000);
	queue_delete(q, ids[1], NULL, NULL);
	c = oldest_now(q);
	ck_assert_int_eq(c.n, 1);
	ck_assert(c.b_known && c.b == 500);
	ck_assert_uint_eq(raw_count("oldest", "", 0), 1);
	queue_close(&q);

	/* A queue from before the records: rebuilt once at open. */
	ck_assert_int_eq(mdb_env_create(&menv), 0);
	mdb_env_set_maxdbs(menv, 16);
	ck_assert_int_eq(mdb_env_open(menv, tmpdir, MDB_NOTLS, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(menv, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "oldest", 0, &dbi), 0);
	ck_assert_int_eq(mdb_drop(txn, dbi, 1), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(menv);
	q = open_q(0, NULL);
	c = oldest_now(q);
	ck_assert(c.b_known && c.b == 500);
	queue_close(&q);
}
END_TEST

#define SCALE_N 600

START_TEST(test_scale_counters)
{
	const char *both[] = { "x@a.example", "y@B.example", "z@b.example" };
	struct queue_envelope env;
	struct queue_totals t;
	struct count_ctx cc = { 0, 0, 0 };
	struct queue *q = open_q(0, NULL);
	static char ids[SCALE_N][QUEUE_ID_LEN + 1];
	char page[100][QUEUE_ID_LEN + 1], after[QUEUE_ID_LEN + 1] = "";
	int i, n, total = 0;

	env_init(&env, "s@x.example", both, 3, 0);
	for (i = 0; i < SCALE_N; i++) {
		/* every third message also for b.example */
		env.nrcpts = i % 3 == 0 ? 3 : 1;
		ck_assert_int_eq(put_msg(q, &env, 100, ids[i]), QUEUE_OK);
	}
	ck_assert_int_eq(queue_totals(q, &t), QUEUE_OK);
	ck_assert_uint_eq(t.messages, SCALE_N);
	ck_assert_uint_eq(t.bytes, SCALE_N * 100);
	ck_assert_uint_eq(t.recipients, SCALE_N + 2 * (SCALE_N / 3));
	ck_assert_uint_eq(t.retrying, 0);
	ck_assert_int_eq(queue_foreach_count(q, count_cb, &cc), QUEUE_OK);
	ck_assert_int_eq(cc.n, 2);
	ck_assert_uint_eq(cc.a_msgs, SCALE_N);
	ck_assert_uint_eq(cc.b_msgs, SCALE_N / 3);
	/* The domain index read in pieces: every id once, in order. */
	while ((n = queue_domain_ids(q, "A.example", after, page, 100)) > 0) {
		for (int k = 0; k < n; k++)
			ck_assert_str_eq(page[k], ids[total + k]);
		total += n;
		memcpy(after, page[n - 1], sizeof(after));
	}
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(total, SCALE_N);
	/* Deleting keeps the counters right. */
	for (i = 0; i < SCALE_N; i += 2)
		queue_delete(q, ids[i], NULL, NULL);
	ck_assert_int_eq(queue_totals(q, &t), QUEUE_OK);
	ck_assert_uint_eq(t.messages, SCALE_N / 2);
	ck_assert_uint_eq(t.bytes, SCALE_N / 2 * 100);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

START_TEST(test_scale_scan)
{
	const char *addrs[] = { "x@a.example" };
	struct queue_envelope env;
	struct queue *q = open_q(0, NULL);
	struct scan_ctx c;
	static char ids[SCALE_N][QUEUE_ID_LEN + 1];
	char cursor[QUEUE_ID_LEN + 1] = "";
	time_t t0 = time(NULL);
	int i, n, calls = 0;

	env_init(&env, "s@x.example", addrs, 1, 0);
	for (i = 0; i < SCALE_N; i++)
		ck_assert_int_eq(put_msg(q, &env, 10, ids[i]), QUEUE_OK);
	memset(&c, 0, sizeof(c));
	/* Nothing is older than an hour: nothing read, the cursor stays. */
	ck_assert_int_eq(queue_scan(q, cursor, t0 - 3600, 1000, scan_cb, &c), 0);
	ck_assert_str_eq(cursor, "");
	/* In slices of 64, with one stop: each message exactly once. */
	memcpy(c.stop_at, ids[SCALE_N / 2], sizeof(c.stop_at));
	for (calls = 0; calls < 100; calls++) {
		n = queue_scan(q, cursor, time(NULL), 64, scan_cb, &c);
		ck_assert_int_le(n, 64);
		if (n == 0 && !c.stopped)
			break;
		c.stopped = 0;
	}
	ck_assert_int_eq(c.seen, SCALE_N);
	ck_assert_int_eq(c.disorder, 0);
	ck_assert_str_eq(cursor, ids[SCALE_N - 1]);
	/* Caught up: nothing more until newer mail. */
	ck_assert_int_eq(queue_scan(q, cursor, time(NULL), 64, scan_cb, &c), 0);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

/* Call queue_scan_ahead until it neither took anything nor waits for the
 * read-ahead (bounded); returns what it took in all. */
static int scan_ahead_all(struct queue *q, char *cursor, time_t until,
    struct scan_ctx *c, int *calls_r)
{
	int total = 0, n, more = 1;

	for (*calls_r = 0; *calls_r < 20000; (*calls_r)++) {
		n = queue_scan_ahead(q, cursor, until, 64, &more, scan_cb, c);
		ck_assert_int_ge(n, 0);
		ck_assert_int_le(n, 64);
		total += n;
		if (n == 0 && !more && !c->stopped)
			break;
		c->stopped = 0;
		if (more)
			usleep(1000);
	}
	ck_assert_int_eq(more, 0);
	return total;
}

/* The loop's form: the same records, each once, in order, from two scans
 * (two windows of the read-ahead thread) interleaved. */
START_TEST(test_scale_scan_ahead)
{
	const char *addrs[] = { "x@a.example" };
	struct queue_envelope env;
	struct queue *q = open_q(0, NULL);
	struct scan_ctx c1, c2;
	static char ids[SCALE_N][QUEUE_ID_LEN + 1];
	char cur1[QUEUE_ID_LEN + 1] = "", cur2[QUEUE_ID_LEN + 1] = "";
	time_t t0 = time(NULL), until;
	int i, n, calls, more;

	env_init(&env, "s@x.example", addrs, 1, 0);
	for (i = 0; i < SCALE_N; i++)
		ck_assert_int_eq(put_msg(q, &env, 10, ids[i]), QUEUE_OK);
	memset(&c1, 0, sizeof(c1));
	memset(&c2, 0, sizeof(c2));
	/* Nothing older than an hour: nothing read, the cursor stays. */
	ck_assert_int_eq(scan_ahead_all(q, cur1, t0 - 3600, &c1, &calls), 0);
	ck_assert_str_eq(cur1, "");
	ck_assert_int_eq(c1.seen, 0);
	/* With one stop on the first scan; the second interleaved. */
	memcpy(c1.stop_at, ids[SCALE_N / 2], sizeof(c1.stop_at));
	until = time(NULL);
	for (calls = 0; calls < 20000 && (c1.seen < SCALE_N || c2.seen < SCALE_N);
	    calls++) {
		n = queue_scan_ahead(q, cur1, until, 50, &more, scan_cb, &c1);
		ck_assert_int_ge(n, 0);
		c1.stopped = 0;
		n = queue_scan_ahead(q, cur2, until, 70, &more, scan_cb, &c2);
		ck_assert_int_ge(n, 0);
		usleep(200);
	}
	ck_assert_int_eq(c1.seen, SCALE_N);
	ck_assert_int_eq(c2.seen, SCALE_N);
	ck_assert_int_eq(c1.disorder, 0);
	ck_assert_int_eq(c2.disorder, 0);
	ck_assert_str_eq(cur1, ids[SCALE_N - 1]);
	ck_assert_str_eq(cur2, ids[SCALE_N - 1]);
	/* Caught up: nothing more until newer mail. */
	ck_assert_int_eq(scan_ahead_all(q, cur1, until, &c1, &calls), 0);
	ck_assert_int_eq(c1.seen, SCALE_N);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

START_TEST(test_scale_room)
{
	const char *addrs[] = { "x@quota.example" };
	struct queue_envelope env;
	struct queue_space sp;
	struct queue *q = open_q(0, NULL);
	char id[QUEUE_ID_LEN + 1];

	queue_set_quota(q, "quota.example", 1000);
	ck_assert_int_eq(queue_check_room(q, "quota.example", 0), QUEUE_OK);
	ck_assert_int_eq(queue_check_room(q, "quota.example", 1001), QUEUE_EQUOTA);
	ck_assert_int_eq(queue_check_room(q, "other.example", 1001), QUEUE_OK);
	env_init(&env, "s@x.example", addrs, 1, 0);
	ck_assert_int_eq(put_msg(q, &env, 1000, id), QUEUE_OK);
	/* Full: refused at RCPT even without a size. */
	ck_assert_int_eq(queue_check_room(q, "quota.example", 0), QUEUE_EQUOTA);
	ck_assert_int_eq(queue_check_room(q, NULL, 0), QUEUE_OK);
	/* The file system reserve: nothing fits when it asks for more than
	 * any disk has; a delivery can still be recorded. */
	queue_set_min_free(q, UINT64_MAX / 4);
	ck_assert_int_eq(queue_check_room(q, NULL, 10), QUEUE_EFULL);
	ck_assert_int_eq(put_msg(q, &env, 10, id), QUEUE_EFULL);
	ck_assert_int_eq(queue_space(q, &sp), QUEUE_OK);
	ck_assert_int_eq(sp.low, 1);
	ck_assert_uint_gt(sp.reserve, 0);
	ck_assert_uint_gt(sp.map_used, 0);
	ck_assert_uint_ge(sp.file_size, sp.map_used);
	queue_set_min_free(q, 0);
	ck_assert_int_eq(queue_check_room(q, NULL, 10), QUEUE_OK);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

static void compact_check(struct queue *q, char (*ids)[QUEUE_ID_LEN + 1], int n)
{
	struct queue_totals t;

	ck_assert_int_eq(queue_totals(q, &t), QUEUE_OK);
	ck_assert_uint_eq(t.messages, (uint64_t)n / 10);
	for (int i = 0; i < n; i += 10)
		check_body(q, ids[i], 20000);
}

START_TEST(test_scale_compact)
{
	const char *addrs[] = { "x@a.example" };
	struct queue_envelope env;
	struct queue *q = open_q(0, NULL);
	static char ids[SCALE_N][QUEUE_ID_LEN + 1];
	struct done d = { 0, 0 };
	uint64_t before = 0, after = 0;
	int i;

	env_init(&env, "s@x.example", addrs, 1, 0);
	for (i = 0; i < SCALE_N; i++)
		ck_assert_int_eq(put_msg(q, &env, 20000, ids[i]), QUEUE_OK);
	for (i = 0; i < SCALE_N; i++)
		if (i % 10 != 0)
			queue_delete(q, ids[i], NULL, NULL);
	queue_compact(q, &before, &after, on_done, &d);
	ck_assert_int_eq(d.called, 1);
	ck_assert_int_eq(d.result, QUEUE_OK);
	ck_assert_uint_lt(after * 2, before);
	compact_check(q, ids, SCALE_N);
	/* Still writable after the swap, and intact after a reopen. */
	ck_assert_int_eq(put_msg(q, &env, 20000, ids[1]), QUEUE_OK);
	queue_delete(q, ids[1], NULL, NULL);
	queue_close(&q);
	q = open_q(0, NULL);
	compact_check(q, ids, SCALE_N);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

static void compact_async_done(void *arg, int result)
{
	struct done *d = arg;

	d->called++;
	d->result = result;
}

struct compact_async {
	struct queue *q;
	struct queue_envelope *env;
	int puts_done, puts_ok;
	struct event_base *base;
};

static void compact_put_done(void *arg, int result)
{
	struct compact_async *ca = arg;

	ca->puts_done++;
	if (result == QUEUE_OK)
		ca->puts_ok++;
	if (ca->puts_done == 20)
		event_base_loopexit(ca->base, NULL);
}

static void compact_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopexit(arg, NULL);
}

/* With the writer thread: puts sent around a compaction all land. */
START_TEST(test_scale_compact_async)
{
	const char *addrs[] = { "x@a.example" };
	struct queue_envelope env;
	struct event_base *base;
	struct queue *q;
	struct compact_async ca;
	struct done d = { 0, 0 };
	struct queue_totals t;
	unsigned char buf[5000];
	int i;

	evthread_use_pthreads();
	base = event_base_new();
	q = open_q(0, base);
	env_init(&env, "s@x.example", addrs, 1, 0);
	memset(&ca, 0, sizeof(ca));
	ca.q = q;
	ca.base = base;
	fill_body(buf, 0, sizeof(buf));
	for (i = 0; i < 20; i++) {
		struct queue_put *p = queue_put_begin(q);

		ck_assert_int_ge(queue_put_write(p, buf, sizeof(buf)), 0);
		queue_put_commit(p, &env, compact_put_done, &ca);
		if (i == 9)
			queue_compact(q, NULL, NULL, compact_async_done, &d);
	}
	{
		/* Keeps the loop running until the completions arrive. */
		struct event *tev = evtimer_new(base, compact_timeout, base);
		struct timeval tv = { 30, 0 };

		evtimer_add(tev, &tv);
		event_base_dispatch(base);
		event_free(tev);
	}
	ck_assert_int_eq(ca.puts_ok, 20);
	ck_assert_int_eq(d.called, 1);
	ck_assert_int_eq(d.result, QUEUE_OK);
	ck_assert_int_eq(queue_totals(q, &t), QUEUE_OK);
	ck_assert_uint_eq(t.messages, 20);
	queue_close(&q);
	q = open_q(0, NULL);
	ck_assert_int_eq(queue_totals(q, &t), QUEUE_OK);
	ck_assert_uint_eq(t.messages, 20);
	queue_close(&q);
	event_base_free(base);
	free(env.rcpts);
}
END_TEST

/* A format 1 queue (no totals) is upgraded when opened for writing. */
START_TEST(test_scale_upgrade_v1)
{
	const char *addrs[] = { "x@a.example" };
	struct queue_envelope env;
	struct queue_totals t;
	struct queue *q = open_q(0, NULL);
	char id[QUEUE_ID_LEN + 1];
	unsigned char v[4] = { 0, 0, 0, 1 };
	MDB_val k = { 7, "version" }, d = { 4, v }, tk = { 6, "totals" };
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi dbi;
	int i;

	env_init(&env, "s@x.example", addrs, 1, 0);
	for (i = 0; i < 7; i++)
		ck_assert_int_eq(put_msg(q, &env, 300, id), QUEUE_OK);
	queue_close(&q);
	ck_assert_int_eq(mdb_env_create(&menv), 0);
	mdb_env_set_maxdbs(menv, 16);
	mdb_env_set_mapsize(menv, 4ULL << 30);
	ck_assert_int_eq(mdb_env_open(menv, tmpdir, MDB_NOTLS, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(menv, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &d, 0), 0);
	ck_assert_int_eq(mdb_del(txn, dbi, &tk, NULL), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(menv);
	/* Read-only (odrelayctl before the daemon upgraded it): counted. */
	{
		char err[256];
		struct queue *ro = queue_open_readonly(tmpdir, err, sizeof(err));

		ck_assert_msg(ro != NULL, "%s", err);
		ck_assert_int_eq(queue_totals(ro, &t), QUEUE_OK);
		ck_assert_uint_eq(t.messages, 7);
		ck_assert_uint_eq(t.recipients, 7);
		queue_close(&ro);
	}
	q = open_q(0, NULL);
	ck_assert_int_eq(queue_totals(q, &t), QUEUE_OK);
	ck_assert_uint_eq(t.messages, 7);
	ck_assert_uint_eq(t.bytes, 2100);
	queue_close(&q);
	free(env.rcpts);
}
END_TEST

static Suite *queue_suite(void)
{
	Suite *s = suite_create("queue");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_ids);
	tcase_add_test(tc, test_big_body);
	tcase_add_test(tc, test_due);
	tcase_add_test(tc, test_update);
	tcase_add_test(tc, test_delete_and_lease);
	tcase_add_test(tc, test_quota);
	tcase_add_test(tc, test_map_full);
	tcase_add_test(tc, test_version);
	tcase_add_test(tc, test_recovery);
	tcase_add_test(tc, test_abandon);
	tcase_add_test(tc, test_many);
	tcase_add_test(tc, test_corrupt_record);
	tcase_add_test(tc, test_async);
	tcase_add_test(tc, test_async_full);
	tcase_add_test(tc, test_scale_counters);
	tcase_add_test(tc, test_oldest_records);
	tcase_add_test(tc, test_scale_scan);
	tcase_add_test(tc, test_scale_scan_ahead);
	tcase_add_test(tc, test_scale_room);
	tcase_add_test(tc, test_scale_compact);
	tcase_add_test(tc, test_scale_compact_async);
	tcase_add_test(tc, test_scale_upgrade_v1);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(queue_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
