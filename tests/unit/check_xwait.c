/* Unit tests for pull/xwait: the registry of XWAIT sessions by domain. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "xwait.h"

struct waker {
	int woken;
	struct xwait *w;
	struct xwait_entry **cancel;	/* cancelled from inside a callback */
};

static void wake(void *arg)
{
	struct waker *k = arg;

	k->woken++;
	if (k->cancel != NULL)
		xwait_cancel(k->cancel);
}

START_TEST(test_wake_by_domain)
{
	struct xwait *w = xwait_new();
	struct waker a = { 0 }, b = { 0 }, c = { 0 };
	const char *da[] = { "example.org", "other.example" };
	const char *db[] = { "example.org" };
	const char *dc[] = { "third.example" };
	struct xwait_entry *ec;

	xwait_add(w, da, 2, wake, &a);
	xwait_add(w, db, 1, wake, &b);
	ec = xwait_add(w, dc, 1, wake, &c);
	ck_assert_uint_eq(xwait_count(w), 3);
	ck_assert_uint_eq(xwait_domain_count(w, "example.org"), 2);
	ck_assert_uint_eq(xwait_domain_count(w, "other.example"), 1);
	ck_assert_uint_eq(xwait_arrived(w, "nobody.example"), 0);
	ck_assert_uint_eq(xwait_arrived(w, "example.org"), 2);
	ck_assert_int_eq(a.woken, 1);
	ck_assert_int_eq(b.woken, 1);
	/* a was removed from every domain it waited for. */
	ck_assert_uint_eq(xwait_domain_count(w, "other.example"), 0);
	ck_assert_uint_eq(xwait_arrived(w, "other.example"), 0);
	ck_assert_int_eq(a.woken, 1);
	ck_assert_uint_eq(xwait_count(w), 1);
	xwait_cancel(&ec);
	ck_assert_ptr_null(ec);
	ck_assert_uint_eq(xwait_arrived(w, "third.example"), 0);
	ck_assert_int_eq(c.woken, 0);
	ck_assert_uint_eq(xwait_count(w), 0);
	xwait_free(&w);
	ck_assert_ptr_null(w);
}
END_TEST

START_TEST(test_duplicate_domain_and_cancel_in_callback)
{
	struct xwait *w = xwait_new();
	struct waker a = { 0 }, b = { 0 };
	const char *dup[] = { "example.org", "example.org" };
	struct xwait_entry *ea;

	ea = xwait_add(w, dup, 2, wake, &a);
	ck_assert_uint_eq(xwait_domain_count(w, "example.org"), 1);
	xwait_add(w, dup, 1, wake, &b);
	/* The newest waiter is woken first; its callback cancels a (a
	 * session closing another one): a must not be called. */
	b.cancel = &ea;
	ck_assert_uint_eq(xwait_arrived(w, "example.org"), 1);
	ck_assert_int_eq(b.woken, 1);
	ck_assert_int_eq(a.woken, 0);
	ck_assert_ptr_null(ea);
	ck_assert_uint_eq(xwait_count(w), 0);
	xwait_free(&w);
}
END_TEST

START_TEST(test_many)
{
	struct xwait *w = xwait_new();
	struct waker k[1000];
	char names[10][32];
	size_t i, total = 0;

	for (i = 0; i < 10; i++)
		snprintf(names[i], sizeof(names[i]), "d%zu.example", i);
	for (i = 0; i < 1000; i++) {
		const char *d[] = { names[i % 10] };

		k[i].woken = 0;
		k[i].cancel = NULL;
		xwait_add(w, d, 1, wake, &k[i]);
	}
	ck_assert_uint_eq(xwait_count(w), 1000);
	for (i = 0; i < 10; i++)
		total += xwait_arrived(w, names[i]);
	ck_assert_uint_eq(total, 1000);
	for (i = 0; i < 1000; i++)
		ck_assert_int_eq(k[i].woken, 1);
	xwait_free(&w);
}
END_TEST

static void count_domain(void *arg, const char *domain, size_t waiting)
{
	size_t *n = arg;

	(void)domain;
	n[0]++;
	n[1] += waiting;
}

/* Tens of thousands of domains: the table grows under entries that
 * stay linked, and every look-up, wake-up and cancel still finds them. */
START_TEST(test_many_domains_grow)
{
	enum { N = 20000 };
	struct xwait *w = xwait_new();
	static struct waker k[N];
	static struct xwait_entry *e[N];
	static char names[N + 1][32];
	size_t i, seen[2] = { 0, 0 }, woken = 0;

	for (i = 0; i <= N; i++)
		snprintf(names[i], sizeof(names[i]), "c%zu.example", i);
	for (i = 0; i < N; i++) {
		const char *d[] = { names[i], names[i + 1] };

		k[i].woken = 0;
		k[i].cancel = NULL;
		e[i] = xwait_add(w, d, 2, wake, &k[i]);
	}
	ck_assert_uint_eq(xwait_count(w), N);
	ck_assert_uint_eq(xwait_domain_count(w, names[0]), 1);
	ck_assert_uint_eq(xwait_domain_count(w, names[N / 2]), 2);
	ck_assert_uint_eq(xwait_domain_count(w, names[N]), 1);
	xwait_foreach_domain(w, count_domain, seen);
	ck_assert_uint_eq(seen[0], N + 1);
	ck_assert_uint_eq(seen[1], 2 * N);
	/* The odd ones leave; each even one is woken by its own domain. */
	for (i = 1; i < N; i += 2)
		xwait_cancel(&e[i]);
	for (i = 0; i < N; i += 2)
		woken += xwait_arrived(w, names[i]);
	ck_assert_uint_eq(woken, N / 2);
	for (i = 0; i < N; i++)
		ck_assert_int_eq(k[i].woken, i % 2 == 0);
	ck_assert_uint_eq(xwait_count(w), 0);
	seen[0] = seen[1] = 0;
	xwait_foreach_domain(w, count_domain, seen);
	ck_assert_uint_eq(seen[0], 0);
	xwait_free(&w);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("xwait");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_wake_by_domain);
	tcase_add_test(tc, test_duplicate_domain_and_cancel_in_callback);
	tcase_add_test(tc, test_many);
	tcase_add_test(tc, test_many_domains_grow);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
