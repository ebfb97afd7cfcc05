/*
 * check_deliver - which queued recipients a delivery takes
 * (deliver_env_has, the rule deliver_add uses): by section, exactly the
 * node's domain (ETRN node), or the node and below (ETRN @node), and for
 * a node below a section only what was accepted for that section.
 */
#include <check.h>
#include <stdlib.h>

#include "deliver.h"
#include "queue.h"

static struct queue_rcpt rcpts[1];
static struct queue_envelope env = { .rcpts = rcpts, .nrcpts = 1 };

/* env holds one queued recipient addr, accepted for section. */
static const struct queue_envelope *one(const char *addr, const char *section)
{
	rcpts[0].addr = (char *)addr;
	rcpts[0].domain = (char *)section;
	rcpts[0].state = QUEUE_RCPT_QUEUED;
	return &env;
}

START_TEST(test_section)
{
	/* a subdomain's recipient belongs to its section */
	ck_assert_int_eq(deliver_env_has(one("a@sub.example.org", "example.org"),
	    "example.org", DELIVER_MATCH_SECTION, NULL), 1);
	ck_assert_int_eq(deliver_env_has(one("a@example.net", "example.net"),
	    "example.org", DELIVER_MATCH_SECTION, NULL), 0);
	/* only queued ones */
	one("a@example.org", "example.org");
	rcpts[0].state = QUEUE_RCPT_SENT;
	ck_assert_int_eq(deliver_env_has(&env, "example.org",
	    DELIVER_MATCH_SECTION, NULL), 0);
}
END_TEST

START_TEST(test_exact)
{
	ck_assert_int_eq(deliver_env_has(one("a@sub.example.org", "example.org"),
	    "example.org", DELIVER_MATCH_EXACT, NULL), 0);
	ck_assert_int_eq(deliver_env_has(one("a@Sub.Example.org", "example.org"),
	    "sub.example.org", DELIVER_MATCH_EXACT, "example.org"), 1);
	ck_assert_int_eq(deliver_env_has(one("a@deep.sub.example.org",
	    "example.org"), "sub.example.org", DELIVER_MATCH_EXACT,
	    "example.org"), 0);
	/* accepted for another section: not this node's run */
	ck_assert_int_eq(deliver_env_has(one("a@sub.example.org",
	    "sub.example.org"), "sub.example.org", DELIVER_MATCH_EXACT,
	    "example.org"), 0);
}
END_TEST

START_TEST(test_tree)
{
	ck_assert_int_eq(deliver_env_has(one("a@sub.example.org", "example.org"),
	    "sub.example.org", DELIVER_MATCH_TREE, "example.org"), 1);
	ck_assert_int_eq(deliver_env_has(one("a@deep.sub.example.org",
	    "example.org"), "sub.example.org", DELIVER_MATCH_TREE,
	    "example.org"), 1);
	/* whole labels only */
	ck_assert_int_eq(deliver_env_has(one("a@badsub.example.org",
	    "example.org"), "sub.example.org", DELIVER_MATCH_TREE,
	    "example.org"), 0);
	ck_assert_int_eq(deliver_env_has(one("a@example.org", "example.org"),
	    "sub.example.org", DELIVER_MATCH_TREE, "example.org"), 0);
	ck_assert_int_eq(deliver_env_has(one("a@x.sub.example.org",
	    "x.sub.example.org"), "sub.example.org", DELIVER_MATCH_TREE,
	    "example.org"), 0);
	ck_assert_int_eq(deliver_env_has(one("a@x.sub.example.org", NULL),
	    "sub.example.org", DELIVER_MATCH_TREE, "example.org"), 0);
}
END_TEST

static Suite *deliver_suite(void)
{
	Suite *s = suite_create("deliver");
	TCase *tc = tcase_create("match");

	tcase_add_test(tc, test_section);
	tcase_add_test(tc, test_exact);
	tcase_add_test(tc, test_tree);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(deliver_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
