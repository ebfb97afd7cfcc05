/*
 * check_recip - the RCPT verdict without a network: which replies mean
 * "no such user", learning from delivery replies (valid, invalid, not
 * learned, expiry from learn_ttl), the recipient list winning over what
 * was learned, and the verify_* / learn_* keys with domain overrides.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "queue.h"
#include "rcache.h"
#include "recip.h"

static char tmpdir[64];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_recip.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void cfg_err(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "%s\n", msg);
}

static struct config *load(const char *text)
{
	char path[128];
	FILE *fp;
	struct config *cfg;

	snprintf(path, sizeof(path), "%s/odrelay.conf", tmpdir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fprintf(fp, "hostname = relay.test\nqueue_dir = %s/q\n%s", tmpdir, text);
	fclose(fp);
	cfg = config_load(path, cfg_err, NULL);
	return cfg;
}

START_TEST(test_no_such_user)
{
	ck_assert_int_eq(recip_no_such_user(550, "550 5.1.1 <a@b>: no such user"), 1);
	ck_assert_int_eq(recip_no_such_user(550, "550 5.1.0 bad address"), 1);
	ck_assert_int_eq(recip_no_such_user(553, "553 5.1.6 moved"), 1);
	ck_assert_int_eq(recip_no_such_user(550, "550 unknown user"), 1);
	ck_assert_int_eq(recip_no_such_user(551, "551 not local"), 1);
	ck_assert_int_eq(recip_no_such_user(553, "553 mailbox name not allowed"), 1);
	ck_assert_int_eq(recip_no_such_user(550, "550"), 1);
	/* Other permanent refusals say nothing about the address. */
	ck_assert_int_eq(recip_no_such_user(550, "550 5.7.1 relaying denied"), 0);
	ck_assert_int_eq(recip_no_such_user(552, "552 5.2.2 mailbox full"), 0);
	ck_assert_int_eq(recip_no_such_user(554, "554 transaction failed"), 0);
	ck_assert_int_eq(recip_no_such_user(550, "550 5.1.10 null MX"), 0);
	ck_assert_int_eq(recip_no_such_user(450, "450 4.1.1 try later"), 0);
	ck_assert_int_eq(recip_no_such_user(250, "250 2.1.5 ok"), 0);
	ck_assert_int_eq(recip_no_such_user(550, NULL), 1);
}
END_TEST

START_TEST(test_config_keys)
{
	struct config *cfg = load(
	    "verify_timeout = 7s\nverify_unknown = tempfail\n"
	    "learn_ttl = 10d\nverify_cache_size = 5\n"
	    "[domain a.example]\nverify_recipients = probe\n"
	    "verify_unknown = accept\nverify_negative_ttl = 1h\n"
	    "[domain b.example]\nrecipients = learn\n"
	    "[domain c.example]\nrecipients = learn, boss@c.example\n");
	const struct config_domain *a, *b, *c;

	ck_assert_ptr_nonnull(cfg);
	a = config_domain_by_name(cfg, "a.example");
	b = config_domain_by_name(cfg, "b.example");
	c = config_domain_by_name(cfg, "c.example");
	ck_assert_int_eq(cfg->verify_cache_size, 5);
	ck_assert_int_eq(a->verify_probe, 1);
	ck_assert_int_eq(a->verify_unknown, 0);
	ck_assert_int_eq(a->verify_timeout, 7);
	ck_assert_int_eq(a->verify_negative_ttl, 3600);
	ck_assert_int_eq(a->verify_positive_ttl, 30L * 86400);
	ck_assert_int_eq(b->verify_unknown, 1);
	ck_assert_int_eq(b->learn_ttl, 10L * 86400);
	ck_assert_int_eq(b->learn_negative_ttl, 30L * 86400);
	ck_assert_int_eq(b->recipients_learn, 1);
	ck_assert_int_eq(b->has_recipient_list, 0);
	ck_assert_int_eq(c->recipients_learn, 1);
	ck_assert_int_eq(c->has_recipient_list, 1);
	config_free(&cfg);
	ck_assert_ptr_null(load("verify_unknown = maybe\n"));
	ck_assert_ptr_null(load("[domain a.example]\nverify_recipients = yes\n"));
	ck_assert_ptr_null(load("verify_cache_size = 0\n"));
}
END_TEST

START_TEST(test_learn)
{
	struct config *cfg = load(
	    "[domain b.example]\nrecipients = learn\n"
	    "[domain c.example]\nrecipients = learn, boss@c.example\n"
	    "[domain d.example]\nhold = yes\n");
	char err[256], reply[RECIP_REPLY_MAX], path[128];
	const struct config_domain *b, *c, *d;
	struct queue *q;
	struct rcache *rc;
	struct recip *r;
	struct rcache_entry e;
	struct recip_wait *w;
	time_t now = time(NULL);

	ck_assert_ptr_nonnull(cfg);
	snprintf(path, sizeof(path), "%s/q", tmpdir);
	q = queue_open(path, NULL, 16 * 1024 * 1024, err, sizeof(err));
	ck_assert_msg(q != NULL, "%s", err);
	rc = rcache_open(q, 100, err, sizeof(err));
	ck_assert_ptr_nonnull(rc);
	r = recip_new(NULL, cfg, rc, NULL);
	b = config_domain_by_name(cfg, "b.example");
	c = config_domain_by_name(cfg, "c.example");
	d = config_domain_by_name(cfg, "d.example");

	recip_learn(r, "b.example", "ok@b.example", 250, "250 2.1.5 ok");
	recip_learn(r, "b.example", "gone@b.example", 550, "550 5.1.1 no such user");
	recip_learn(r, "b.example", "full@b.example", 552, "552 5.2.2 full");
	recip_learn(r, "b.example", "later@b.example", 450, "450 4.2.1 later");
	recip_learn(r, "c.example", "boss@c.example", 550, "550 5.1.1 gone");
	recip_learn(r, "d.example", "x@d.example", 550, "550 5.1.1 gone");
	recip_learn(r, "nowhere.example", "x@nowhere.example", 550, "550 5.1.1");

	ck_assert_int_eq(rcache_lookup(rc, "b.example", "ok@b.example", &e), 1);
	ck_assert_int_eq(e.state, RCACHE_VALID);
	ck_assert_int_eq(e.source, RCACHE_SRC_LEARNED);
	ck_assert(e.expires >= now + 180L * 86400 - 5 &&
	    e.expires <= now + 180L * 86400 + 5);
	ck_assert_int_eq(rcache_lookup(rc, "b.example", "gone@b.example", &e), 1);
	ck_assert_int_eq(e.state, RCACHE_INVALID);
	ck_assert(e.expires >= now + 30L * 86400 - 5 &&
	    e.expires <= now + 30L * 86400 + 5);
	ck_assert_int_eq(rcache_lookup(rc, "b.example", "full@b.example", &e), 0);
	ck_assert_int_eq(rcache_lookup(rc, "b.example", "later@b.example", &e), 0);
	/* Listed addresses and domains that do not learn: nothing stored. */
	ck_assert_int_eq(rcache_lookup(rc, "c.example", "boss@c.example", &e), 0);
	ck_assert_int_eq(rcache_lookup(rc, "d.example", "x@d.example", &e), 0);

	ck_assert_int_eq(recip_check(r, b, "gone@b.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_REFUSE);
	ck_assert(strncmp(reply, "550 5.1.1 ", 10) == 0);
	ck_assert_int_eq(recip_check(r, b, "ok@b.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_ACCEPT);
	ck_assert_int_eq(recip_check(r, b, "new@b.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_ACCEPT);
	/* The list wins; d has no list and does not learn. */
	ck_assert_int_eq(recip_check(r, c, "boss@c.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_ACCEPT);
	ck_assert_int_eq(recip_check(r, c, "new@c.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_ACCEPT);
	ck_assert_int_eq(recip_check(r, d, "x@d.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_ACCEPT);
	/* A delivery that succeeds later renews the address as valid. */
	recip_learn(r, "b.example", "gone@b.example", 250, "250 ok");
	ck_assert_int_eq(recip_check(r, b, "gone@b.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_ACCEPT);
	/* An expired refusal no longer counts. */
	rcache_store(rc, "b.example", "old@b.example", RCACHE_INVALID,
	    RCACHE_SRC_LEARNED, now - 1, NULL, NULL, NULL);
	ck_assert_int_eq(recip_check(r, b, "old@b.example", reply, sizeof(reply),
	    NULL, NULL, &w), RECIP_ACCEPT);
	/* Without a recip (no cache): lists only. */
	ck_assert_int_eq(recip_check(NULL, b, "gone@b.example", reply,
	    sizeof(reply), NULL, NULL, &w), RECIP_ACCEPT);

	recip_free(&r);
	rcache_close(&rc);
	queue_close(&q);
	config_free(&cfg);
}
END_TEST

static Suite *recip_suite(void)
{
	Suite *s = suite_create("recip");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_no_such_user);
	tcase_add_test(tc, test_config_keys);
	tcase_add_test(tc, test_learn);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(recip_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
