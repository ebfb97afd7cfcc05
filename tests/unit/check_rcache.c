/*
 * check_rcache - the recipient cache: store/lookup round trip, case
 * folding, renewal, eviction of the least recently stored, forget (one
 * address, a whole domain), persistence across a close/reopen, a read-only
 * open, over-long keys, and writes through the asynchronous writer thread.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "queue.h"
#include "rcache.h"

static char tmpdir[64];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_rcache.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

static struct queue *open_q(struct event_base *base)
{
	char err[256] = "";
	struct queue *q = queue_open(tmpdir, base, 16 * 1024 * 1024, err,
	    sizeof(err));

	ck_assert_msg(q != NULL, "queue_open: %s", err);
	return q;
}

static struct rcache *open_rc(struct queue *q, unsigned long max)
{
	char err[256] = "";
	struct rcache *rc = rcache_open(q, max, err, sizeof(err));

	ck_assert_msg(rc != NULL, "rcache_open: %s", err);
	return rc;
}

static void on_done(void *arg, int result)
{
	int *r = arg;

	*r = result;
}

START_TEST(test_roundtrip)
{
	struct queue *q = open_q(NULL);
	struct rcache *rc = open_rc(q, 100);
	struct rcache_entry e;
	int res = 99;

	ck_assert_int_eq(rcache_lookup(rc, "example.org", "a@example.org", &e), 0);
	rcache_store(rc, "example.org", "Bob@Example.ORG", RCACHE_INVALID,
	    RCACHE_SRC_PROBE, 1234567, "550 5.1.1 no such user", on_done, &res);
	ck_assert_int_eq(res, QUEUE_OK);
	/* Lookups fold case. */
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "bob@example.org", &e), 1);
	ck_assert_str_eq(e.addr, "bob@example.org");
	ck_assert_str_eq(e.domain, "example.org");
	ck_assert_int_eq(e.state, RCACHE_INVALID);
	ck_assert_int_eq(e.source, RCACHE_SRC_PROBE);
	ck_assert_int_eq((long)e.expires, 1234567);
	ck_assert_str_eq(e.text, "550 5.1.1 no such user");
	ck_assert_int_eq(rcache_lookup(rc, "EXAMPLE.org", "BOB@example.org", &e), 1);
	/* Another domain section is another key. */
	ck_assert_int_eq(rcache_lookup(rc, "other.org", "bob@example.org", &e), 0);
	/* Renewal replaces the record. */
	rcache_store(rc, "example.org", "bob@example.org", RCACHE_VALID,
	    RCACHE_SRC_LEARNED, 99, NULL, NULL, NULL);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "bob@example.org", &e), 1);
	ck_assert_int_eq(e.state, RCACHE_VALID);
	ck_assert_int_eq(e.source, RCACHE_SRC_LEARNED);
	ck_assert_str_eq(e.text, "");
	ck_assert_uint_eq(rcache_count(rc), 1);
	ck_assert_str_eq(rcache_state_name(RCACHE_INVALID), "invalid");
	ck_assert_str_eq(rcache_source_name(RCACHE_SRC_LIST), "list");
	rcache_close(&rc);
	queue_close(&q);
}
END_TEST

START_TEST(test_long)
{
	struct queue *q = open_q(NULL);
	struct rcache *rc = open_rc(q, 100);
	struct rcache_entry e;
	char addr[400], text[400];
	int res = 99;

	memset(addr, 'a', sizeof(addr));
	strcpy(addr + 300, "@example.org");
	rcache_store(rc, "example.org", addr, RCACHE_VALID, RCACHE_SRC_PROBE,
	    5, NULL, on_done, &res);
	ck_assert_int_eq(res, QUEUE_OK);
	ck_assert_uint_eq(rcache_count(rc), 0);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", addr, &e), 0);
	/* A long remote text is cut, not refused. */
	memset(text, 'x', sizeof(text));
	text[sizeof(text) - 1] = '\0';
	rcache_store(rc, "example.org", "c@example.org", RCACHE_INVALID,
	    RCACHE_SRC_PROBE, 5, text, NULL, NULL);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "c@example.org", &e), 1);
	ck_assert_uint_eq(strlen(e.text), RCACHE_TEXT_MAX);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "", &e), 0);
	rcache_close(&rc);
	queue_close(&q);
}
END_TEST

START_TEST(test_evict)
{
	struct queue *q = open_q(NULL);
	struct rcache *rc = open_rc(q, 5);
	struct rcache_entry e;
	char addr[64];
	int i;

	for (i = 0; i < 5; i++) {
		snprintf(addr, sizeof(addr), "u%d@example.org", i);
		rcache_store(rc, "example.org", addr, RCACHE_VALID,
		    RCACHE_SRC_LEARNED, 100, NULL, NULL, NULL);
	}
	/* Renewing u0 makes u1 the oldest. */
	rcache_store(rc, "example.org", "u0@example.org", RCACHE_VALID,
	    RCACHE_SRC_LEARNED, 200, NULL, NULL, NULL);
	ck_assert_uint_eq(rcache_count(rc), 5);
	rcache_store(rc, "example.org", "u5@example.org", RCACHE_VALID,
	    RCACHE_SRC_LEARNED, 100, NULL, NULL, NULL);
	ck_assert_uint_eq(rcache_count(rc), 5);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u1@example.org", &e), 0);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u0@example.org", &e), 1);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u5@example.org", &e), 1);
	/* A smaller bound takes effect at the next write. */
	rcache_set_max(rc, 2);
	rcache_store(rc, "example.org", "u6@example.org", RCACHE_VALID,
	    RCACHE_SRC_LEARNED, 100, NULL, NULL, NULL);
	ck_assert_uint_eq(rcache_count(rc), 2);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u5@example.org", &e), 1);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u6@example.org", &e), 1);
	rcache_close(&rc);
	queue_close(&q);
}
END_TEST

static int collect(void *arg, const struct rcache_entry *e)
{
	char *buf = arg;

	strcat(buf, e->addr);
	strcat(buf, " ");
	return 0;
}

START_TEST(test_forget_and_persist)
{
	struct queue *q = open_q(NULL);
	struct rcache *rc = open_rc(q, 100);
	struct rcache_entry e;
	char buf[512] = "";
	char err[256];
	int res = 99;

	rcache_store(rc, "a.example", "x@a.example", RCACHE_VALID,
	    RCACHE_SRC_PROBE, 100, NULL, NULL, NULL);
	rcache_store(rc, "a.example", "y@a.example", RCACHE_INVALID,
	    RCACHE_SRC_PROBE, 100, NULL, NULL, NULL);
	rcache_store(rc, "a.example", "z@a.example", RCACHE_INVALID,
	    RCACHE_SRC_PROBE, 100, NULL, NULL, NULL);
	/* "a.example.net" must not be taken for a prefix of "a.example". */
	rcache_store(rc, "a.example.net", "x@a.example.net", RCACHE_VALID,
	    RCACHE_SRC_LEARNED, 100, NULL, NULL, NULL);
	rcache_store(rc, "b.example", "x@b.example", RCACHE_VALID,
	    RCACHE_SRC_LEARNED, 100, NULL, NULL, NULL);
	ck_assert_int_eq(rcache_foreach(rc, "a.example", collect, buf), QUEUE_OK);
	ck_assert_str_eq(buf, "x@a.example y@a.example z@a.example ");
	rcache_forget(rc, "a.example", "Y@a.example", on_done, &res);
	ck_assert_int_eq(res, QUEUE_OK);
	ck_assert_int_eq(rcache_lookup(rc, "a.example", "y@a.example", &e), 0);
	ck_assert_uint_eq(rcache_count(rc), 4);
	rcache_close(&rc);
	queue_close(&q);

	/* Reopened: still there; read-only sees the same. */
	q = open_q(NULL);
	rc = open_rc(q, 100);
	ck_assert_int_eq(rcache_lookup(rc, "a.example", "z@a.example", &e), 1);
	ck_assert_int_eq(e.state, RCACHE_INVALID);
	rcache_forget(rc, "a.example", NULL, NULL, NULL);
	ck_assert_int_eq(rcache_lookup(rc, "a.example", "x@a.example", &e), 0);
	ck_assert_int_eq(rcache_lookup(rc, "a.example.net", "x@a.example.net", &e), 1);
	ck_assert_uint_eq(rcache_count(rc), 2);
	/* Eviction still works after forget (age records went too). */
	rcache_set_max(rc, 1);
	rcache_store(rc, "c.example", "n@c.example", RCACHE_VALID,
	    RCACHE_SRC_LEARNED, 100, NULL, NULL, NULL);
	ck_assert_uint_eq(rcache_count(rc), 1);
	ck_assert_int_eq(rcache_lookup(rc, "c.example", "n@c.example", &e), 1);
	rcache_close(&rc);
	queue_close(&q);

	q = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(q != NULL, "%s", err);
	rc = open_rc(q, 100);
	ck_assert_int_eq(rcache_lookup(rc, "c.example", "n@c.example", &e), 1);
	buf[0] = '\0';
	ck_assert_int_eq(rcache_foreach(rc, NULL, collect, buf), QUEUE_OK);
	ck_assert_str_eq(buf, "n@c.example ");
	rcache_close(&rc);
	queue_close(&q);
}
END_TEST

START_TEST(test_readonly_empty)
{
	struct queue *q = open_q(NULL);
	struct rcache *rc;
	struct rcache_entry e;
	char err[256], buf[64] = "";
	int res = 99;

	queue_close(&q);	/* a queue that never had a cache */
	q = queue_open_readonly(tmpdir, err, sizeof(err));
	ck_assert_msg(q != NULL, "%s", err);
	rc = open_rc(q, 100);
	ck_assert_int_eq(rcache_lookup(rc, "a.example", "x@a.example", &e), 0);
	ck_assert_int_eq(rcache_foreach(rc, "a.example", collect, buf), QUEUE_OK);
	ck_assert_uint_eq(rcache_count(rc), 0);
	rcache_store(rc, "a.example", "x@a.example", RCACHE_VALID,
	    RCACHE_SRC_PROBE, 100, NULL, on_done, &res);
	ck_assert_int_eq(res, QUEUE_OK);
	rcache_close(&rc);
	queue_close(&q);
}
END_TEST

struct async {
	struct event_base *base;
	int left;
};

static void async_done(void *arg, int result)
{
	struct async *a = arg;

	ck_assert_int_eq(result, QUEUE_OK);
	if (--a->left == 0)
		event_base_loopbreak(a->base);
}

static void async_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	ck_abort_msg("writer thread did not complete");
}

START_TEST(test_async)
{
	struct event_base *base;
	struct event *tev;
	struct timeval tv = { 30, 0 };
	struct queue *q;
	struct rcache *rc;
	struct rcache_entry e;
	struct async a;
	char addr[64];
	int i;

	ck_assert_int_eq(evthread_use_pthreads(), 0);
	base = event_base_new();
	tev = evtimer_new(base, async_timeout, NULL);
	evtimer_add(tev, &tv);
	q = open_q(base);
	rc = open_rc(q, 50);
	a.base = base;
	a.left = 200;
	for (i = 0; i < 200; i++) {
		snprintf(addr, sizeof(addr), "u%d@example.org", i);
		rcache_store(rc, "example.org", addr, RCACHE_VALID,
		    RCACHE_SRC_PROBE, 100, NULL, async_done, &a);
	}
	/* Not committed yet, but already what lookups see. */
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u199@example.org", &e), 1);
	ck_assert_int_eq(e.state, RCACHE_VALID);
	rcache_store(rc, "example.org", "u198@example.org", RCACHE_INVALID,
	    RCACHE_SRC_PROBE, 100, "gone", async_done, &a);
	a.left++;
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u198@example.org", &e), 1);
	ck_assert_int_eq(e.state, RCACHE_INVALID);
	ck_assert_str_eq(e.text, "gone");
	rcache_forget(rc, "example.org", NULL, async_done, &a);
	a.left++;
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u198@example.org", &e), 0);
	rcache_store(rc, "example.org", "u197@example.org", RCACHE_VALID,
	    RCACHE_SRC_PROBE, 100, NULL, async_done, &a);
	a.left++;
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u197@example.org", &e), 1);
	/* The owner may let go while writes are in flight. */
	rcache_close(&rc);
	event_base_dispatch(base);
	ck_assert_int_eq(a.left, 0);
	rc = open_rc(q, 50);
	ck_assert_uint_eq(rcache_count(rc), 1);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u197@example.org", &e), 1);
	ck_assert_int_eq(rcache_lookup(rc, "example.org", "u199@example.org", &e), 0);
	rcache_close(&rc);
	queue_close(&q);
	event_free(tev);
	event_base_free(base);
}
END_TEST

static Suite *rcache_suite(void)
{
	Suite *s = suite_create("rcache");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_long);
	tcase_add_test(tc, test_evict);
	tcase_add_test(tc, test_forget_and_persist);
	tcase_add_test(tc, test_readonly_empty);
	tcase_add_test(tc, test_async);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(rcache_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
