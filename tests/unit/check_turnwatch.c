/* Unit tests: turnwatch, the slow event-loop turn log. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "turnwatch.h"

static int ran;

static void busy_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timespec t0, t;

	(void)fd;
	(void)what;
	(void)arg;
	turnwatch_begin("busy");
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	do	/* 8 ms of CPU */
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000000000L + t.tv_nsec - t0.tv_nsec <
	    8000000L);
	turnwatch_end();
	ran++;
}

static void quick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	turnwatch_begin("quick");
	turnwatch_end();
	ran++;
}

/* Runs a busy turn and a quick one; returns what was logged. */
static char *run_two_turns(void)
{
	struct event_base *base = event_base_new();
	struct timeval t1 = { 0, 1000 }, t2 = { 0, 30000 }, t3 = { 0, 60000 };
	char path[] = "/tmp/check_turnwatch.XXXXXX";
	int fd = mkstemp(path);
	static char buf[8192];
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
	log_init("check_turnwatch", 1, LOG_LEVEL_INFO);
	turnwatch_init();
	ran = 0;
	event_base_once(base, -1, EV_TIMEOUT, busy_cb, NULL, &t1);
	event_base_once(base, -1, EV_TIMEOUT, quick_cb, NULL, &t2);
	event_base_loopexit(base, &t3);
	ck_assert_int_eq(turnwatch_dispatch(base), 0);
	ck_assert_int_eq(ran, 2);
	event_base_free(base);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	close(fd);
	return buf;
}

START_TEST(test_slow_turn_logged)
{
	char *log, *line;
	double wall, cpu;

	setenv("ODRELAY_SLOW_TURN_MS", "4", 1);
	log = run_two_turns();
	ck_assert_int_eq(turnwatch_on, 1);
	line = strstr(log, "slow turn at ");
	ck_assert_msg(line != NULL, "no slow turn logged: %s", log);
	ck_assert_msg(strstr(line, "busy x1 ") != NULL, "%s", line);
	/* the busy callback's 8 ms of CPU were counted (the quick turn is
	 * not asserted absent: a loaded machine may deschedule it) */
	ck_assert_msg(sscanf(line, "slow turn at %*f: %lf ms wall, %lf ms cpu",
	    &wall, &cpu) == 2, "%s", line);
	ck_assert_msg(cpu >= 7.5 && wall >= 7.5, "%s", line);
}
END_TEST

START_TEST(test_off_without_variable)
{
	char *log;

	unsetenv("ODRELAY_SLOW_TURN_MS");
	log = run_two_turns();
	ck_assert_int_eq(turnwatch_on, 0);
	ck_assert_msg(strstr(log, "slow turn") == NULL, "%s", log);
}
END_TEST

START_TEST(test_bad_value_ignored)
{
	char *log;

	setenv("ODRELAY_SLOW_TURN_MS", "5ms", 1);
	log = run_two_turns();
	ck_assert_int_eq(turnwatch_on, 0);
	ck_assert_msg(strstr(log, "ODRELAY_SLOW_TURN_MS=5ms: not a number")
	    != NULL, "%s", log);
}
END_TEST

static Suite *turnwatch_suite(void)
{
	Suite *su = suite_create("turnwatch");
	TCase *tc = tcase_create("core");

	/* each test in its own process: turnwatch's state is global */
	tcase_add_test(tc, test_slow_turn_logged);
	tcase_add_test(tc, test_off_without_variable);
	tcase_add_test(tc, test_bad_value_ignored);
	suite_add_tcase(su, tc);
	return su;
}

int main(void)
{
	SRunner *sr = srunner_create(turnwatch_suite());
	int failed;

	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
