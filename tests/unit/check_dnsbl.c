/* Unit tests: dnsbl list specs, return codes, networks, query names. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnsbl.h"

static int match(const char *spec, unsigned a, unsigned b, unsigned c,
    unsigned d)
{
	struct dnsbl_spec s;
	char err[200];
	uint8_t ip[4] = { (uint8_t)a, (uint8_t)b, (uint8_t)c, (uint8_t)d };

	ck_assert_int_eq(dnsbl_spec_parse(spec, &s, err, sizeof(err)), 0);
	return dnsbl_spec_match(&s, ip);
}

START_TEST(test_spec_codes)
{
	struct dnsbl_spec s;
	char err[200];

	ck_assert(match("zen.spamhaus.org=127.0.0.[2..11]", 127, 0, 0, 2));
	ck_assert(match("zen.spamhaus.org=127.0.0.[2..11]", 127, 0, 0, 11));
	ck_assert(!match("zen.spamhaus.org=127.0.0.[2..11]", 127, 0, 0, 1));
	ck_assert(!match("zen.spamhaus.org=127.0.0.[2..11]", 127, 0, 1, 2));
	ck_assert(match("bl.test=127.0.[0;1].[2;4..5]", 127, 0, 1, 4));
	ck_assert(!match("bl.test=127.0.[0;1].[2;4..5]", 127, 0, 1, 3));
	ck_assert(match("bl.test=127.0.0.2", 127, 0, 0, 2));
	/* no codes: 127/8 but not the lists' 127.255.255.x errors */
	ck_assert(match("BL.Test", 127, 0, 0, 2));
	ck_assert(!match("bl.test", 10, 0, 0, 2));
	ck_assert(!match("bl.test", 127, 255, 255, 254));
	ck_assert_int_eq(dnsbl_spec_parse("BL.Test", &s, err, sizeof(err)), 0);
	ck_assert_str_eq(s.list, "bl.test");
	ck_assert_int_lt(dnsbl_spec_parse("bl.test=127.0.0", &s, err,
	    sizeof(err)), 0);
	ck_assert_int_lt(dnsbl_spec_parse("bl.test=127.0.0.[3..2]", &s, err,
	    sizeof(err)), 0);
	ck_assert_int_lt(dnsbl_spec_parse("bl.test=127.0.0.256", &s, err,
	    sizeof(err)), 0);
	ck_assert_int_lt(dnsbl_spec_parse("bl.test=127.0.0.[2", &s, err,
	    sizeof(err)), 0);
	ck_assert_int_lt(dnsbl_spec_parse("bad..list", &s, err, sizeof(err)),
	    0);
	ck_assert_int_lt(dnsbl_spec_parse("=127.0.0.2", &s, err, sizeof(err)),
	    0);
	ck_assert_int_lt(dnsbl_spec_parse("bl.test=127.0.0.2x", &s, err,
	    sizeof(err)), 0);
}
END_TEST

START_TEST(test_cidr)
{
	struct dnsbl_cidr n[3];

	ck_assert_int_eq(dnsbl_cidr_parse("10.0.0.0/8", &n[0]), 0);
	ck_assert_int_eq(dnsbl_cidr_parse("2001:db8::/32", &n[1]), 0);
	ck_assert_int_eq(dnsbl_cidr_parse("192.0.2.1", &n[2]), 0);
	ck_assert(dnsbl_cidr_match(n, 3, "10.1.2.3"));
	ck_assert(dnsbl_cidr_match(n, 3, "::ffff:10.1.2.3"));
	ck_assert(dnsbl_cidr_match(n, 3, "2001:db8:1::1"));
	ck_assert(dnsbl_cidr_match(n, 3, "192.0.2.1"));
	ck_assert(!dnsbl_cidr_match(n, 3, "192.0.2.2"));
	ck_assert(!dnsbl_cidr_match(n, 3, "11.0.0.1"));
	ck_assert(!dnsbl_cidr_match(n, 3, "2001:db9::1"));
	ck_assert(!dnsbl_cidr_match(n, 0, "10.1.2.3"));
	ck_assert_int_eq(dnsbl_cidr_parse("10.0.0.0/12", &n[0]), 0);
	ck_assert(dnsbl_cidr_match(n, 1, "10.15.0.1"));
	ck_assert(!dnsbl_cidr_match(n, 1, "10.16.0.1"));
	ck_assert_int_lt(dnsbl_cidr_parse("10.0.0.0/33", &n[0]), 0);
	ck_assert_int_lt(dnsbl_cidr_parse("10.0.0.0/", &n[0]), 0);
	ck_assert_int_lt(dnsbl_cidr_parse("::1/129", &n[0]), 0);
	ck_assert_int_lt(dnsbl_cidr_parse("example.org", &n[0]), 0);
}
END_TEST

START_TEST(test_query_name)
{
	char buf[300];
	enum dnsbl_action a;

	ck_assert_int_eq(dnsbl_query_name("192.0.2.99", "bl.test", buf,
	    sizeof(buf)), 0);
	ck_assert_str_eq(buf, "99.2.0.192.bl.test");
	ck_assert_int_eq(dnsbl_query_name("::ffff:192.0.2.99", "bl.test", buf,
	    sizeof(buf)), 0);
	ck_assert_str_eq(buf, "99.2.0.192.bl.test");
	/* RFC 5782 2.4 example */
	ck_assert_int_eq(dnsbl_query_name("2001:db8:1:2:3:4:567:89ab",
	    "ugly.example.com", buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0."
	    "8.b.d.0.1.0.0.2.ugly.example.com");
	ck_assert_int_lt(dnsbl_query_name("junk", "bl.test", buf,
	    sizeof(buf)), 0);
	ck_assert_int_lt(dnsbl_query_name("192.0.2.99", "bl.test", buf, 8), 0);
	ck_assert_int_eq(dnsbl_action_parse("Tempfail", &a), 0);
	ck_assert_int_eq(a, DNSBL_TEMPFAIL);
	ck_assert_int_lt(dnsbl_action_parse("drop", &a), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dnsbl");
	TCase *tc = tcase_create("parse");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_spec_codes);
	tcase_add_test(tc, test_cidr);
	tcase_add_test(tc, test_query_name);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
