/*
 * check_domstate - per-domain operator facts kept in the queue's LMDB
 * environment (last ATRN pull, last ETRN), and the queue's oldest message
 * per domain.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domstate.h"
#include "qmarks.h"
#include "queue.h"

static char tmpdir[64];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_domstate.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* A synchronous queue (no event base): writes are done on return. */
static struct queue *open_q(void)
{
	char err[256] = "";
	struct queue *q = queue_open(tmpdir, NULL, 0, err, sizeof(err));

	ck_assert_msg(q != NULL, "queue_open: %s", err);
	return q;
}

static struct domstate *open_ds(struct queue *q)
{
	char err[256] = "";
	struct domstate *ds = domstate_open(q, err, sizeof(err));

	ck_assert_msg(ds != NULL, "domstate_open: %s", err);
	return ds;
}

START_TEST(test_notes)
{
	struct queue *q = open_q(), *ro;
	struct domstate *ds = open_ds(q), *rds;
	struct domstate_rec r;
	char err[256];

	/* Nothing yet: never, and a read-only view agrees. */
	ck_assert_int_eq(domstate_get(ds, "a.example", &r), 0);
	ck_assert(r.last[DOMSTATE_ATRN] == 0 && r.last[DOMSTATE_ETRN] == 0);
	ro = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(ro != NULL, "%s", err);
	rds = open_ds(ro);
	ck_assert_int_eq(domstate_get(rds, "a.example", &r), 0);
	ck_assert(r.last[DOMSTATE_ATRN] == 0);
	domstate_note(rds, "a.example", DOMSTATE_ATRN, 5);	/* no-op */
	domstate_close(&rds);
	queue_close(&ro);

	domstate_note(ds, "a.example", DOMSTATE_ATRN, 1000);
	domstate_note(ds, "A.Example", DOMSTATE_ETRN, 2000);	/* any case */
	domstate_note(ds, "a.example", DOMSTATE_ATRN, 500);	/* older: kept */
	domstate_note(ds, "", DOMSTATE_ATRN, 7);		/* ignored */
	ck_assert_int_eq(domstate_get(ds, "a.example", &r), 0);
	ck_assert_int_eq((long)r.last[DOMSTATE_ATRN], 1000);
	ck_assert_int_eq((long)r.last[DOMSTATE_ETRN], 2000);
	ck_assert_int_eq(domstate_get(ds, "b.example", &r), 0);
	ck_assert(r.last[DOMSTATE_ATRN] == 0 && r.last[DOMSTATE_ETRN] == 0);
	domstate_close(&ds);
	queue_close(&q);

	/* Kept across a restart, and readable without the daemon. */
	ro = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(ro != NULL, "%s", err);
	rds = open_ds(ro);
	ck_assert_int_eq(domstate_get(rds, "A.EXAMPLE", &r), 0);
	ck_assert_int_eq((long)r.last[DOMSTATE_ATRN], 1000);
	ck_assert_int_eq((long)r.last[DOMSTATE_ETRN], 2000);
	domstate_close(&rds);
	queue_close(&ro);

	/* The process-wide instance: notes go nowhere until it is set. */
	q = open_q();
	ds = open_ds(q);
	domstate_note_now("c.example", DOMSTATE_ETRN);
	ck_assert_int_eq(domstate_get(ds, "c.example", &r), 0);
	ck_assert(r.last[DOMSTATE_ETRN] == 0);
	domstate_set_default(ds);
	domstate_note_now("c.example", DOMSTATE_ETRN);
	ck_assert_int_eq(domstate_get(ds, "c.example", &r), 0);
	ck_assert(r.last[DOMSTATE_ETRN] > 0);
	domstate_close(&ds);		/* also unsets the default */
	domstate_note_now("c.example", DOMSTATE_ATRN);
	queue_close(&q);
}
END_TEST

struct seen {
	int n;
	long atrn_a, etrn_b;
};

static int collect(void *arg, const char *domain, const struct domstate_rec *r)
{
	struct seen *s = arg;

	s->n++;
	if (strcmp(domain, "a.example") == 0)
		s->atrn_a = (long)r->last[DOMSTATE_ATRN];
	if (strcmp(domain, "b.example") == 0)
		s->etrn_b = (long)r->last[DOMSTATE_ETRN];
	return 0;
}

/* One walk gives every record (odrelayctl stats with 50,000 domains). */
START_TEST(test_foreach)
{
	struct queue *q = open_q(), *ro;
	struct domstate *ds = open_ds(q), *rds;
	struct seen s = { 0, 0, 0 };
	char err[256];

	ck_assert_int_eq(domstate_foreach(ds, collect, &s), 0);
	ck_assert_int_eq(s.n, 0);
	domstate_note(ds, "A.example", DOMSTATE_ATRN, 100);
	domstate_note(ds, "b.example", DOMSTATE_ETRN, 200);
	domstate_note(ds, "c.example", DOMSTATE_ETRN, 300);
	ck_assert_int_eq(domstate_foreach(ds, collect, &s), 0);
	ck_assert_int_eq(s.n, 3);
	ck_assert_int_eq(s.atrn_a, 100);
	ck_assert_int_eq(s.etrn_b, 200);
	domstate_close(&ds);
	queue_close(&q);
	ro = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(ro != NULL, "%s", err);
	rds = open_ds(ro);
	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(domstate_foreach(rds, collect, &s), 0);
	ck_assert_int_eq(s.n, 3);
	ck_assert_int_eq(s.etrn_b, 200);
	domstate_close(&rds);
	queue_close(&ro);
}
END_TEST

/* The expiry scans' positions survive a restart; read-only sees them. */
START_TEST(test_marks)
{
	struct queue *q, *ro;
	struct qmarks *m;
	char mark[QUEUE_ID_LEN + 1], err[256];

	/* Read-only, before the database exists: nothing, no error. */
	q = open_q();
	queue_close(&q);
	ro = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(ro != NULL, "%s", err);
	m = qmarks_open(ro, err, sizeof(err));
	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_int_eq(qmarks_get(m, 3600, mark), 0);
	qmarks_close(&m);
	queue_close(&ro);

	q = open_q();
	m = qmarks_open(q, err, sizeof(err));
	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_int_eq(qmarks_get(m, 3600, mark), 0);
	ck_assert_str_eq(mark, "");
	qmarks_put(m, 3600, "0000000100000002");
	qmarks_put(m, 60, "0000000300000004");
	qmarks_put(m, 60, "0000000500000006");	/* the later one wins */
	qmarks_put(m, 7, "not-an-id");		/* ignored */
	ck_assert_int_eq(qmarks_get(m, 3600, mark), 1);
	ck_assert_str_eq(mark, "0000000100000002");
	qmarks_close(&m);
	queue_close(&q);
	q = open_q();
	m = qmarks_open(q, err, sizeof(err));
	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_int_eq(qmarks_get(m, 60, mark), 1);
	ck_assert_str_eq(mark, "0000000500000006");
	ck_assert_int_eq(qmarks_get(m, 7, mark), 0);
	ck_assert_int_eq(qmarks_get(m, 61, mark), 0);
	qmarks_close(&m);
	queue_close(&q);
	ro = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(ro != NULL, "%s", err);
	m = qmarks_open(ro, err, sizeof(err));
	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_int_eq(qmarks_get(m, 3600, mark), 1);
	qmarks_put(m, 3600, "0000000900000009");	/* no-op */
	ck_assert_str_eq(mark, "0000000100000002");
	qmarks_close(&m);
	queue_close(&ro);
}
END_TEST

static void on_done(void *arg, int result)
{
	*(int *)arg = result;
}

static void put(struct queue *q, const char *rcpt, time_t arrival, char *id)
{
	struct queue_rcpt r;
	struct queue_envelope env;
	struct queue_put *p = queue_put_begin(q);
	int result = -1;

	memset(&r, 0, sizeof(r));
	r.addr = (char *)rcpt;
	r.domain = strchr(rcpt, '@') + 1;
	memset(&env, 0, sizeof(env));
	env.sender = (char *)"s@sender.example";
	env.arrival = arrival;
	env.rcpts = &r;
	env.nrcpts = 1;
	strcpy(id, queue_put_id(p));
	ck_assert_int_ge(queue_put_write(p, "Subject: x\r\n\r\nx\r\n", 17), 0);
	queue_put_commit(p, &env, on_done, &result);
	ck_assert_int_eq(result, QUEUE_OK);
}

START_TEST(test_oldest)
{
	struct queue *q = open_q();
	char id1[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1], id3[QUEUE_ID_LEN + 1];
	time_t t;
	int result = -1;

	ck_assert_int_eq(queue_domain_oldest(q, "x.example", &t), QUEUE_OK);
	ck_assert_int_eq((long)t, 0);
	put(q, "a@x.example", 1700000000, id1);
	put(q, "b@x.example", 1700000100, id2);
	put(q, "c@y.example", 1600000000, id3);
	ck_assert_int_eq(queue_domain_oldest(q, "x.example", &t), QUEUE_OK);
	ck_assert_int_eq((long)t, 1700000000);
	ck_assert_int_eq(queue_domain_oldest(q, "X.EXAMPLE", &t), QUEUE_OK);
	ck_assert_int_eq((long)t, 1700000000);
	ck_assert_int_eq(queue_domain_oldest(q, "y.example", &t), QUEUE_OK);
	ck_assert_int_eq((long)t, 1600000000);
	/* A prefix of a domain is not that domain. */
	ck_assert_int_eq(queue_domain_oldest(q, "x.exampl", &t), QUEUE_OK);
	ck_assert_int_eq((long)t, 0);
	queue_delete(q, id1, on_done, &result);
	ck_assert_int_eq(result, QUEUE_OK);
	ck_assert_int_eq(queue_domain_oldest(q, "x.example", &t), QUEUE_OK);
	ck_assert_int_eq((long)t, 1700000100);
	queue_close(&q);
}
END_TEST

static Suite *domstate_suite(void)
{
	Suite *s = suite_create("domstate");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_notes);
	tcase_add_test(tc, test_foreach);
	tcase_add_test(tc, test_marks);
	tcase_add_test(tc, test_oldest);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(domstate_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
