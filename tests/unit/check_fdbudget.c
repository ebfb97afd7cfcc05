/* Unit tests: fdbudget, one connection budget from the descriptor limit. */
#include <check.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "config.h"
#include "fdbudget.h"

START_TEST(test_take_put)
{
	struct fdbudget *b = fdbudget_new(2);

	ck_assert_int_eq(fdbudget_take(b), 1);
	ck_assert_int_eq(fdbudget_take(b), 1);
	ck_assert_int_eq(fdbudget_take(b), 0);
	ck_assert_uint_eq(fdbudget_used(b), 2);
	fdbudget_refused(b, "test");
	fdbudget_put(b);
	ck_assert_int_eq(fdbudget_take(b), 1);
	fdbudget_put(b);
	fdbudget_put(b);
	fdbudget_put(b);	/* never below zero */
	ck_assert_uint_eq(fdbudget_used(b), 0);
	fdbudget_free(&b);
	ck_assert_ptr_null(b);
	/* no budget: never refuses */
	ck_assert_int_eq(fdbudget_take(NULL), 1);
}
END_TEST

START_TEST(test_sessions_from_limit)
{
	struct config *cfg = config_defaults();
	size_t reserve = fdbudget_reserve(cfg), n;

	/* deliveries and listeners are reserved on top of the base */
	ck_assert_uint_ge(reserve, 64 + cfg->max_deliveries);
	n = fdbudget_sessions(cfg, 1024);
	ck_assert_uint_eq(n, 1024 - reserve);
	/* both default listeners (1000 each) cannot overrun 1024 */
	ck_assert_uint_lt(n, 1024);
	/* a milter costs its connection and the body's spool file */
	strlist_add(&cfg->milters, "inet:127.0.0.1:8891");
	ck_assert_uint_eq(fdbudget_sessions(cfg, 1024), (1024 - reserve) / 3);
	strlist_add(&cfg->milters, "inet:127.0.0.1:8892");
	ck_assert_uint_eq(fdbudget_sessions(cfg, 1024), (1024 - reserve) / 4);
	ck_assert_uint_eq(fdbudget_sessions(cfg, 10), 1);
	/* milter_reuse: the idle filter connections are reserved too */
	cfg->milter_reuse = 1;
	ck_assert_uint_eq(fdbudget_reserve(cfg),
	    reserve + CONFIG_MILTER_POOL_MAX);
	ck_assert_uint_eq(fdbudget_sessions(cfg, 1024),
	    (1024 - reserve - CONFIG_MILTER_POOL_MAX) / 4);
	config_free(&cfg);
}
END_TEST

START_TEST(test_raise_nofile)
{
	struct rlimit rl;
	unsigned long n;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = rl.rlim_max > 256 ? 256 : rl.rlim_max;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	ck_assert_int_eq(fdbudget_raise_nofile(&n), 0);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	ck_assert(rl.rlim_cur == rl.rlim_max);
	if (rl.rlim_max != RLIM_INFINITY)
		ck_assert_uint_eq(n, (unsigned long)rl.rlim_max);
}
END_TEST

static Suite *fdbudget_suite(void)
{
	Suite *su = suite_create("fdbudget");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_take_put);
	tcase_add_test(tc, test_sessions_from_limit);
	tcase_add_test(tc, test_raise_nofile);
	suite_add_tcase(su, tc);
	return su;
}

int main(void)
{
	SRunner *sr = srunner_create(fdbudget_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
