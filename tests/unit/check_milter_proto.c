/* Unit tests: milter_proto framing, reply parsing and encoding. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "milter_proto.h"

/* Parse a reply given as cmd + data (data may hold NULs). */
static int parse(const char *pkt, size_t len, struct milter_reply *r,
    unsigned char *buf)
{
	memcpy(buf, pkt, len);
	return milter_reply_parse(buf, len, r);
}

START_TEST(test_frame)
{
	const unsigned char ok[] = { 0, 0, 0, 1, 'c' };
	const unsigned char huge[] = { 0xff, 0xff, 0xff, 0xff, 'O' };
	const unsigned char zero[] = { 0, 0, 0, 0 };
	uint32_t n = 0;

	ck_assert_int_eq(milter_frame(ok, 3, &n), 0);
	ck_assert_int_eq(milter_frame(ok, sizeof(ok), &n), 1);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(milter_frame(huge, sizeof(huge), &n), -1);
	ck_assert_int_eq(milter_frame(zero, sizeof(zero), &n), -1);
}
END_TEST

START_TEST(test_replies)
{
	struct milter_reply r;
	unsigned char b[256];

	ck_assert_int_eq(parse("c", 1, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_CONTINUE);
	ck_assert_int_eq(parse("a", 1, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_ACCEPT);
	ck_assert_int_lt(parse("cx", 2, &r, b), 0);	/* trailing data */
	ck_assert_int_lt(parse("Z", 1, &r, b), 0);	/* unknown */
	ck_assert_int_eq(parse("O\0\0\0\6\0\0\1\xff\0\0\0\x10", 13, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_OPTNEG);
	ck_assert_uint_eq(r.version, 6);
	ck_assert_uint_eq(r.actions, 0x1ff);
	ck_assert_uint_eq(r.protocol, 0x10);
	ck_assert_int_lt(parse("O\0\0\0\6", 5, &r, b), 0);
	ck_assert_int_eq(parse("y550 5.7.1 no\0", 14, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_REPLYCODE);
	ck_assert_str_eq(r.text, "550 5.7.1 no");
	ck_assert_int_lt(parse("y250 ok\0", 8, &r, b), 0);	/* not 4xx/5xx */
	ck_assert_int_lt(parse("y550 no", 7, &r, b), 0);	/* no NUL */
	ck_assert_int_eq(parse("hX-A\0v\nalue\0", 12, &r, b), -1); /* bare LF */
	ck_assert_int_eq(parse("hX-A\0v\n\talue\0", 13, &r, b), 0);
	ck_assert_str_eq(r.name, "X-A");
	ck_assert_str_eq(r.value, "v\n\talue");
	ck_assert_int_lt(parse("hX A\0v\0", 7, &r, b), 0);	/* bad name */
	ck_assert_int_lt(parse("h\0v\0", 4, &r, b), 0);	/* empty name */
	ck_assert_int_eq(parse("i\0\0\0\2Sub\0x\0", 11, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_INSHEADER);
	ck_assert_uint_eq(r.index, 2);
	ck_assert_int_lt(parse("i\0\0", 3, &r, b), 0);
	ck_assert_int_eq(parse("m\0\0\0\1Subject\0\0", 14, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_CHGHEADER);
	ck_assert_str_eq(r.value, "");
	ck_assert_int_eq(parse("-<a@b>\0", 7, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_DELRCPT);
	ck_assert_str_eq(r.text, "<a@b>");
	ck_assert_int_eq(parse("qspam\0", 6, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_QUARANTINE);
	ck_assert_int_eq(parse("e<s@x>\0SIZE=1\0", 14, &r, b), 0);
	ck_assert_int_eq(r.type, MILTER_R_CHGFROM);
	ck_assert_str_eq(r.args, "SIZE=1");
	ck_assert_int_eq(parse("bnew", 4, &r, b), 0);
	ck_assert_uint_eq(r.datalen, 3);
}
END_TEST

START_TEST(test_replycode_text)
{
	ck_assert(milter_replycode_ok("451 4.7.1 later"));
	ck_assert(milter_replycode_ok("550-5.7.1 a\r\n550 5.7.1 b"));
	ck_assert(!milter_replycode_ok("550-5.7.1 a\r\n551 5.7.1 b"));
	ck_assert(!milter_replycode_ok("550 a\r\n550 b"));	/* ' ' then more */
	ck_assert(!milter_replycode_ok("550 a\nb"));
	ck_assert(!milter_replycode_ok("55"));
	ck_assert(milter_replycode_ok("554"));
}
END_TEST

START_TEST(test_encode)
{
	struct evbuffer *b = evbuffer_new();
	const char *names[] = { "i", "j" };
	const char *values[] = { "ID1", NULL };
	const char *v[] = { "<a@b>" };
	unsigned char *p;

	milter_put_optneg(b, SMFIF_ALL, MILTER_PROTO_OFFER);
	p = evbuffer_pullup(b, -1);
	ck_assert_uint_eq(evbuffer_get_length(b), 17);
	ck_assert_int_eq(p[3], 13);
	ck_assert_int_eq(p[4], 'O');
	ck_assert_int_eq(p[8], 6);
	evbuffer_drain(b, 17);
	milter_put_macros(b, 'T', names, values, 2);
	ck_assert_uint_eq(evbuffer_get_length(b), 4 + 1 + 1 + 2 + 4);
	p = evbuffer_pullup(b, -1);
	ck_assert(memcmp(p + 4, "DTi\0ID1\0", 8) == 0);
	evbuffer_drain(b, evbuffer_get_length(b));
	milter_put_connect(b, "[192.0.2.1]", '4', 2525, "192.0.2.1");
	p = evbuffer_pullup(b, -1);
	ck_assert_int_eq(p[4], 'C');
	ck_assert(memcmp(p + 5, "[192.0.2.1]\0" "4\x09\xdd" "192.0.2.1\0", 25) == 0);
	evbuffer_drain(b, evbuffer_get_length(b));
	milter_put_strings(b, 'R', v, 1);
	ck_assert_uint_eq(evbuffer_get_length(b), 4 + 1 + 6);
	evbuffer_drain(b, evbuffer_get_length(b));
	milter_put_body(b, "xyz", 3);
	p = evbuffer_pullup(b, -1);
	ck_assert_int_eq(p[3], 4);
	ck_assert_int_eq(p[4], 'B');
	evbuffer_free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("milter_proto");
	TCase *tc = tcase_create("proto");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_frame);
	tcase_add_test(tc, test_replies);
	tcase_add_test(tc, test_replycode_text);
	tcase_add_test(tc, test_encode);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
