/* Unit tests: selfaddr, "does this address:port reach our listener?". */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "selfaddr.h"
#include "util.h"

static int is_self(const struct selfaddr *s, const char *hostport)
{
	struct sockaddr_storage ss;
	socklen_t len;

	ck_assert_int_eq(util_sockaddr_parse(hostport, -1, &ss, &len), 0);
	return selfaddr_is_self(s, (struct sockaddr *)&ss);
}

static void add_if(struct selfaddr *s, const char *ip)
{
	struct sockaddr_storage ss;
	socklen_t len;

	ck_assert_int_eq(util_sockaddr_parse(ip, 1, &ss, &len), 0);
	selfaddr_add_interface(s, (struct sockaddr *)&ss);
}

START_TEST(test_exact_listener)
{
	struct config *cfg = config_defaults();
	struct selfaddr *s;

	strlist_free(&cfg->smtp_listen);
	strlist_add(&cfg->smtp_listen, "127.0.0.1:2525");
	strlist_add(&cfg->smtp_listen, "[::1]:2525");
	s = selfaddr_new(cfg);
	ck_assert(is_self(s, "127.0.0.1:2525"));
	ck_assert(is_self(s, "[::1]:2525"));
	ck_assert(is_self(s, "[::ffff:127.0.0.1]:2525"));
	/* another port on the same host is another MTA (a route to a
	 * local Postfix on 10025 must keep working) */
	ck_assert(!is_self(s, "127.0.0.1:25"));
	ck_assert(!is_self(s, "127.0.0.1:10025"));
	/* 0.0.0.0 and :: connect to loopback */
	ck_assert(is_self(s, "0.0.0.0:2525"));
	ck_assert(is_self(s, "[::]:2525"));
	ck_assert(!is_self(s, "0.0.0.0:2526"));
	/* bound to 127.0.0.1 only: 127.0.0.2 does not reach it */
	ck_assert(!is_self(s, "127.0.0.2:2525"));
	ck_assert(!is_self(s, "192.0.2.1:2525"));
	selfaddr_free(&s);
	ck_assert_ptr_null(s);
	config_free(&cfg);
}
END_TEST

START_TEST(test_wildcard_listener)
{
	struct config *cfg = config_defaults();
	struct selfaddr *s;

	strlist_free(&cfg->smtp_listen);
	strlist_add(&cfg->smtp_listen, "0.0.0.0:25");
	s = selfaddr_new(cfg);
	add_if(s, "192.0.2.7");
	add_if(s, "[2001:db8::7]");
	ck_assert(is_self(s, "192.0.2.7:25"));
	ck_assert(is_self(s, "127.0.0.1:25"));
	ck_assert(is_self(s, "127.3.2.1:25"));
	ck_assert(!is_self(s, "192.0.2.8:25"));
	ck_assert(!is_self(s, "192.0.2.7:26"));
	/* 0.0.0.0 does not take IPv6 */
	ck_assert(!is_self(s, "[2001:db8::7]:25"));
	selfaddr_free(&s);

	strlist_add(&cfg->smtp_listen, "[::]:25");
	s = selfaddr_new(cfg);
	add_if(s, "[2001:db8::7]");
	ck_assert(is_self(s, "[2001:db8::7]:25"));
	ck_assert(!is_self(s, "[2001:db8::8]:25"));
	selfaddr_free(&s);
	config_free(&cfg);
}
END_TEST

START_TEST(test_proxy_interfaces)
{
	struct config *cfg = config_defaults();
	struct selfaddr *s;

	strlist_free(&cfg->smtp_listen);
	strlist_add(&cfg->smtp_listen, "10.0.0.5:25");
	strlist_add(&cfg->proxy_interfaces, "198.51.100.9:25");
	strlist_add(&cfg->proxy_interfaces, "[2001:db8::9]:2525");
	s = selfaddr_new(cfg);
	ck_assert(is_self(s, "198.51.100.9:25"));
	ck_assert(!is_self(s, "198.51.100.9:587"));
	ck_assert(is_self(s, "[2001:db8::9]:2525"));
	ck_assert(is_self(s, "10.0.0.5:25"));
	ck_assert(!is_self(s, "198.51.100.10:25"));
	selfaddr_free(&s);
	config_free(&cfg);
}
END_TEST

static Suite *selfaddr_suite(void)
{
	Suite *su = suite_create("selfaddr");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_exact_listener);
	tcase_add_test(tc, test_wildcard_listener);
	tcase_add_test(tc, test_proxy_interfaces);
	suite_add_tcase(su, tc);
	return su;
}

int main(void)
{
	SRunner *sr = srunner_create(selfaddr_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
