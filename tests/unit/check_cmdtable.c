/*
 * check_cmdtable - the command table's dispatcher: lookup, the order of
 * the checks (needs, syntax, state, the row's own check, the end of a
 * pipelined group), the *_REQUIRED facts with CMDT_PRE_TLS/CMDT_PRE_AUTH,
 * fixed replies, and that the handler gets its argument NUL-terminated.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdtable.h"

enum { ST_START, ST_READY, ST_TX };

/* What the fake session saw. */
struct fake {
	char last[256];		/* last answer line, or "fn:VERB:arg" */
	enum cmdtable_why why;
	int answers, desyncs, calls;
	int check_refuses;
};

static int
answer(void *sess, const char *line, enum cmdtable_why why)
{
	struct fake *f = sess;

	snprintf(f->last, sizeof(f->last), "%s", line);
	f->why = why;
	f->answers++;
	return why == CMDT_WHY_UNKNOWN ? 7 : 0;
}

static int
desync(void *sess)
{
	struct fake *f = sess;

	f->desyncs++;
	snprintf(f->last, sizeof(f->last), "desync");
	return 1;
}

#define HANDLER(name, verb)						\
static int								\
name(void *sess, char *arg, size_t arglen)				\
{									\
	struct fake *f = sess;						\
									\
	ck_assert_uint_eq(strlen(arg), arglen);				\
	snprintf(f->last, sizeof(f->last), "fn:%s:%s", verb, arg);	\
	f->calls++;							\
	return 0;							\
}
HANDLER(fn_mail, "MAIL")
HANDLER(fn_data, "DATA")
HANDLER(fn_auth, "AUTH")
HANDLER(fn_tls, "STARTTLS")
HANDLER(fn_vrfy, "VRFY")
HANDLER(fn_quit, "QUIT")

static int
check_data(void *sess, char *arg, size_t arglen)
{
	struct fake *f = sess;

	(void)arg;
	(void)arglen;
	if (f->check_refuses) {
		snprintf(f->last, sizeof(f->last), "554 no recipients");
		return 1;
	}
	return 0;
}

static const struct cmdtable_row rows[] = {
	{ "MAIL", CMDT_ST(ST_READY), CMDT_HELO, 0, NULL, "503 nested", NULL,
	    NULL, fn_mail },
	{ "DATA", CMDT_ST(ST_TX), 0, CMDT_NOARG | CMDT_GROUP_END,
	    "501 syntax DATA", "503 need MAIL", NULL, check_data, fn_data },
	{ "AUTH", CMDT_ST(ST_START) | CMDT_ST(ST_READY), CMDT_AUTH_OFFER |
	    CMDT_TLS | CMDT_EHLO | CMDT_NOT_AUTHED, CMDT_PRE_AUTH, NULL,
	    "503 in tx", NULL, NULL, fn_auth },
	{ "STARTTLS", CMDT_ST(ST_START) | CMDT_ST(ST_READY), CMDT_TLS_OFFER,
	    CMDT_NOARG | CMDT_NOT_TLS | CMDT_PRE_TLS | CMDT_PRE_AUTH,
	    "501 syntax STARTTLS", "503 not now", NULL, NULL, fn_tls },
	{ "VRFY", 0, 0, CMDT_ARG, "501 syntax VRFY", NULL, NULL, NULL,
	    fn_vrfy },
	{ "NOOP", 0, 0, CMDT_PRE_TLS | CMDT_PRE_AUTH, NULL, NULL, "250 ok",
	    NULL, NULL },
	{ "EXPN", 0, 0, CMDT_ERROR, NULL, NULL, "502 no", NULL, NULL },
	{ "QUIT", 0, 0, CMDT_PRE_TLS | CMDT_PRE_AUTH, NULL, NULL, NULL, NULL,
	    fn_quit },
};

static const struct cmdtable_need needs[] = {
	{ CMDT_TLS_OFFER, "502 not offered" },
	{ CMDT_AUTH_OFFER, "502 not offered" },
	{ CMDT_TLS, "530 starttls first" },
	{ CMDT_AUTHED, "530 auth required" },
	{ CMDT_EHLO, "503 ehlo first" },
	{ CMDT_HELO, "503 helo first" },
	{ CMDT_NOT_AUTHED, "503 already" },
};

static const struct cmdtable tab = {
	rows, sizeof(rows) / sizeof(rows[0]),
	needs, sizeof(needs) / sizeof(needs[0]),
	"500 unknown", "501 bad char", answer, desync
};

/* Dispatch a copy of text (the dispatcher writes into its line). */
static int
run(struct fake *f, unsigned state, unsigned have, const char *text)
{
	char line[512];
	size_t len = strlen(text);

	ck_assert_uint_lt(len, sizeof(line));
	memcpy(line, text, len + 1);
	f->last[0] = '\0';
	return cmdtable_dispatch(&tab, f, state, have, line, len);
}

START_TEST(test_find)
{
	ck_assert_ptr_eq(cmdtable_find(&tab, "DATA"), &rows[1]);
	ck_assert_ptr_null(cmdtable_find(&tab, "data"));
	ck_assert_ptr_null(cmdtable_find(&tab, "XYZZY"));
}
END_TEST

START_TEST(test_unknown_and_bad)
{
	struct fake f = { 0 };

	ck_assert_int_eq(run(&f, ST_READY, CMDT_HELO, "XYZZY foo"), 7);
	ck_assert_str_eq(f.last, "500 unknown");
	ck_assert_int_eq(f.why, CMDT_WHY_UNKNOWN);
	ck_assert_int_eq(run(&f, ST_READY, CMDT_HELO, ""), 7);
	ck_assert_str_eq(f.last, "500 unknown");
	ck_assert_int_eq(run(&f, ST_READY, CMDT_HELO, "MA-IL x"), 7);
	ck_assert_str_eq(f.last, "500 unknown");
	ck_assert_int_eq(run(&f, ST_READY, CMDT_HELO, "MAIL a\001b"), 7);
	ck_assert_str_eq(f.last, "501 bad char");
	ck_assert_int_eq(f.calls, 0);
}
END_TEST

START_TEST(test_case_and_argument)
{
	struct fake f = { 0 };

	/* verb in any case; argument without its blanks, NUL-terminated */
	run(&f, ST_READY, CMDT_HELO, "mail   FROM:<a@b>  \t ");
	ck_assert_str_eq(f.last, "fn:MAIL:FROM:<a@b>");
	ck_assert_int_eq(f.calls, 1);
}
END_TEST

START_TEST(test_state_and_needs)
{
	struct fake f = { 0 };

	/* need (HELO) before the state */
	run(&f, ST_START, 0, "MAIL FROM:<>");
	ck_assert_str_eq(f.last, "503 helo first");
	ck_assert_int_eq(f.why, CMDT_WHY_REFUSED);
	run(&f, ST_TX, CMDT_HELO, "MAIL FROM:<>");
	ck_assert_str_eq(f.last, "503 nested");
	/* the needs in the table's order: offer, TLS, EHLO, not authed */
	run(&f, ST_READY, CMDT_HELO, "AUTH PLAIN");
	ck_assert_str_eq(f.last, "502 not offered");
	run(&f, ST_READY, CMDT_HELO | CMDT_AUTH_OFFER, "AUTH PLAIN");
	ck_assert_str_eq(f.last, "530 starttls first");
	run(&f, ST_READY, CMDT_HELO | CMDT_AUTH_OFFER | CMDT_TLS, "AUTH PLAIN");
	ck_assert_str_eq(f.last, "503 ehlo first");
	run(&f, ST_READY, CMDT_HELO | CMDT_EHLO | CMDT_AUTH_OFFER | CMDT_TLS |
	    CMDT_AUTHED, "AUTH PLAIN");
	ck_assert_str_eq(f.last, "503 already");
	run(&f, ST_TX, CMDT_HELO | CMDT_EHLO | CMDT_AUTH_OFFER | CMDT_TLS |
	    CMDT_NOT_AUTHED, "AUTH PLAIN");
	ck_assert_str_eq(f.last, "503 in tx");
	ck_assert_int_eq(f.calls, 0);
	run(&f, ST_READY, CMDT_HELO | CMDT_EHLO | CMDT_AUTH_OFFER | CMDT_TLS |
	    CMDT_NOT_AUTHED, "AUTH PLAIN");
	ck_assert_str_eq(f.last, "fn:AUTH:PLAIN");
	ck_assert_int_eq(f.answers, 7);
}
END_TEST

START_TEST(test_syntax_order)
{
	struct fake f = { 0 };

	/* syntax before state (DATA), needs before syntax (STARTTLS) */
	run(&f, ST_READY, CMDT_HELO, "DATA x");
	ck_assert_str_eq(f.last, "501 syntax DATA");
	run(&f, ST_READY, CMDT_HELO, "DATA");
	ck_assert_str_eq(f.last, "503 need MAIL");
	run(&f, ST_READY, 0, "STARTTLS x");
	ck_assert_str_eq(f.last, "502 not offered");
	run(&f, ST_READY, CMDT_TLS_OFFER, "STARTTLS x");
	ck_assert_str_eq(f.last, "501 syntax STARTTLS");
	run(&f, ST_TX, CMDT_TLS_OFFER, "STARTTLS");
	ck_assert_str_eq(f.last, "503 not now");
	run(&f, ST_READY, CMDT_TLS_OFFER | CMDT_TLS, "STARTTLS");
	ck_assert_str_eq(f.last, "503 not now");
	run(&f, ST_READY, CMDT_TLS_OFFER, "STARTTLS");
	ck_assert_str_eq(f.last, "fn:STARTTLS:");
	run(&f, ST_READY, 0, "VRFY");
	ck_assert_str_eq(f.last, "501 syntax VRFY");
	run(&f, ST_READY, 0, "VRFY   ");
	ck_assert_str_eq(f.last, "501 syntax VRFY");
	run(&f, ST_READY, 0, "VRFY bob");
	ck_assert_str_eq(f.last, "fn:VRFY:bob");
}
END_TEST

START_TEST(test_group_end)
{
	struct fake f = { 0 };

	/* more input behind DATA: desync, not the handler */
	ck_assert_int_eq(run(&f, ST_TX, CMDT_HELO | CMDT_PENDING, "DATA"), 1);
	ck_assert_str_eq(f.last, "desync");
	ck_assert_int_eq(f.desyncs, 1);
	ck_assert_int_eq(f.calls, 0);
	/* the verb's own check comes first: its refusal is no desync */
	f.check_refuses = 1;
	ck_assert_int_eq(run(&f, ST_TX, CMDT_HELO | CMDT_PENDING, "DATA"), 0);
	ck_assert_str_eq(f.last, "554 no recipients");
	ck_assert_int_eq(f.desyncs, 1);
	f.check_refuses = 0;
	/* a command that does not end a group may have input behind it */
	run(&f, ST_READY, CMDT_HELO | CMDT_PENDING, "MAIL FROM:<>");
	ck_assert_str_eq(f.last, "fn:MAIL:FROM:<>");
	run(&f, ST_TX, CMDT_HELO, "DATA");
	ck_assert_str_eq(f.last, "fn:DATA:");
	ck_assert_int_eq(f.desyncs, 1);
}
END_TEST

START_TEST(test_required)
{
	struct fake f = { 0 };
	unsigned tlsreq = CMDT_TLS_REQUIRED | CMDT_HELO | CMDT_TLS_OFFER;
	unsigned authreq = CMDT_AUTH_REQUIRED | CMDT_HELO;

	/* TLS required: only CMDT_PRE_TLS rows before it */
	run(&f, ST_READY, tlsreq, "MAIL FROM:<>");
	ck_assert_str_eq(f.last, "530 starttls first");
	run(&f, ST_READY, tlsreq, "NOOP");
	ck_assert_str_eq(f.last, "250 ok");
	run(&f, ST_READY, tlsreq, "STARTTLS");
	ck_assert_str_eq(f.last, "fn:STARTTLS:");
	run(&f, ST_READY, tlsreq | CMDT_TLS, "MAIL FROM:<>");
	ck_assert_str_eq(f.last, "fn:MAIL:FROM:<>");
	/* AUTH required: likewise with CMDT_PRE_AUTH */
	run(&f, ST_READY, authreq, "MAIL FROM:<>");
	ck_assert_str_eq(f.last, "530 auth required");
	run(&f, ST_READY, authreq, "QUIT");
	ck_assert_str_eq(f.last, "fn:QUIT:");
	run(&f, ST_READY, authreq | CMDT_AUTHED, "MAIL FROM:<>");
	ck_assert_str_eq(f.last, "fn:MAIL:FROM:<>");
}
END_TEST

START_TEST(test_fixed_replies)
{
	struct fake f = { 0 };

	run(&f, ST_START, 0, "NOOP whatever");
	ck_assert_str_eq(f.last, "250 ok");
	ck_assert_int_eq(f.why, CMDT_WHY_REPLY);
	run(&f, ST_START, 0, "EXPN list");
	ck_assert_str_eq(f.last, "502 no");
	ck_assert_int_eq(f.why, CMDT_WHY_REFUSED);
	ck_assert_int_eq(f.calls, 0);
}
END_TEST

static Suite *
cmdtable_suite(void)
{
	Suite *s = suite_create("cmdtable");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_find);
	tcase_add_test(tc, test_unknown_and_bad);
	tcase_add_test(tc, test_case_and_argument);
	tcase_add_test(tc, test_state_and_needs);
	tcase_add_test(tc, test_syntax_order);
	tcase_add_test(tc, test_group_end);
	tcase_add_test(tc, test_required);
	tcase_add_test(tc, test_fixed_replies);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(cmdtable_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
