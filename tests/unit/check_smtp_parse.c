/*
 * check_smtp_parse - command split, paths (relay tricks), ESMTP parameters,
 * ETRN arguments and the reply parser.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

/* ---- helpers ---- */

static int
rcpt(const char *arg, int utf8, struct smtp_path *p)
{
	struct smtp_rcpt_params rp;

	return smtp_parse_rcpt(arg, strlen(arg), utf8, p, &rp);
}

static int
mail(const char *arg, struct smtp_path *p, struct smtp_mail_params *mp)
{
	return smtp_parse_mail(arg, strlen(arg), p, mp);
}

/* ---- command split ---- */

START_TEST(test_command_basic)
{
	char verb[SMTP_VERB_MAX + 1];
	const char *arg;
	size_t alen;
	const char *l = "mail FROM:<a@b.example>  ";

	ck_assert_int_eq(smtp_parse_command(l, strlen(l), verb, sizeof(verb),
	    &arg, &alen), 0);
	ck_assert_str_eq(verb, "MAIL");
	ck_assert_int_eq(alen, strlen("FROM:<a@b.example>"));
	ck_assert(strncmp(arg, "FROM:<a@b.example>", alen) == 0);

	l = "QuIt";
	ck_assert_int_eq(smtp_parse_command(l, strlen(l), verb, sizeof(verb),
	    &arg, &alen), 0);
	ck_assert_str_eq(verb, "QUIT");
	ck_assert_int_eq(alen, 0);

	l = "EHLO    host.example";
	ck_assert_int_eq(smtp_parse_command(l, strlen(l), verb, sizeof(verb),
	    &arg, &alen), 0);
	ck_assert_str_eq(verb, "EHLO");
	ck_assert(strncmp(arg, "host.example", alen) == 0);
	ck_assert_int_eq(alen, 12);
}
END_TEST

START_TEST(test_command_bad)
{
	char verb[SMTP_VERB_MAX + 1];
	const char *arg;
	size_t alen;
	const char nul[] = "EHLO a\0b";

	ck_assert_int_eq(smtp_parse_command("", 0, verb, sizeof(verb), &arg,
	    &alen), SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_command(" NOOP", 5, verb, sizeof(verb),
	    &arg, &alen), SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_command(nul, sizeof(nul) - 1, verb,
	    sizeof(verb), &arg, &alen), SMTP_PARSE_ECHAR);
	ck_assert_int_eq(smtp_parse_command("NO\bOP", 5, verb, sizeof(verb),
	    &arg, &alen), SMTP_PARSE_ECHAR);
	ck_assert_int_eq(smtp_parse_command("NOOP\x7f", 5, verb, sizeof(verb),
	    &arg, &alen), SMTP_PARSE_ECHAR);
	ck_assert_int_eq(smtp_parse_command("AVERYVERYLONGVERBNAME", 21, verb,
	    sizeof(verb), &arg, &alen), SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_command("MA:L x", 6, verb, sizeof(verb),
	    &arg, &alen), SMTP_PARSE_ESYNTAX);
}
END_TEST

/* ---- paths ---- */

START_TEST(test_path_plain)
{
	struct smtp_path p;

	ck_assert_int_eq(rcpt("TO:<User@Example.ORG>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");
	ck_assert_str_eq(p.local, "User");
	ck_assert_str_eq(p.addr, "User@example.org");
	ck_assert_int_eq(p.local_routing, 0);
	ck_assert_int_eq(p.literal, 0);
	ck_assert_int_eq(p.had_route, 0);

	/* trailing dot removed, case folded */
	ck_assert_int_eq(rcpt("to:<u@EXAMPLE.ORG.>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");
	ck_assert_str_eq(p.addr, "u@example.org");

	/* tolerated space after the colon */
	ck_assert_int_eq(rcpt("TO: <u@example.org>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");
}
END_TEST

START_TEST(test_path_percent_bang)
{
	struct smtp_path p;

	/* %-hack: the domain is what follows the last unquoted @ */
	ck_assert_int_eq(rcpt("TO:<u%victim.test@example.org>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");
	ck_assert_str_eq(p.local, "u%victim.test");
	ck_assert_int_eq(p.local_routing, 1);

	/* bang path with a domain */
	ck_assert_int_eq(rcpt("TO:<victim.test!u@example.org>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");
	ck_assert_int_eq(p.local_routing, 1);

	/* bang path / %-hack with no domain at all: syntax error */
	ck_assert_int_eq(rcpt("TO:<victim.test!u>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u%victim.test>", 0, &p), SMTP_PARSE_EPATH);
}
END_TEST

START_TEST(test_path_source_route)
{
	struct smtp_path p;

	ck_assert_int_eq(rcpt("TO:<@example.org:u@victim.test>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "victim.test");
	ck_assert_int_eq(p.had_route, 1);
	ck_assert_str_eq(p.addr, "u@victim.test");

	ck_assert_int_eq(rcpt("TO:<@a.example,@example.org:u@victim.test>", 0,
	    &p), 0);
	ck_assert_str_eq(p.domain, "victim.test");

	ck_assert_int_eq(rcpt("TO:<@[192.0.2.25]:u@victim.test>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "victim.test");

	/* route to one of ours: the final domain counts */
	ck_assert_int_eq(rcpt("TO:<@victim.test:u@example.org>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");

	/* malformed routes */
	ck_assert_int_eq(rcpt("TO:<@example.org>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<@:u@example.org>", 0, &p),
	    SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<@a,b:u@example.org>", 0, &p),
	    SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<@a.example:>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert(rcpt("TO:<@a_b:u@example.org>", 0, &p) != 0);
}
END_TEST

START_TEST(test_path_quoted)
{
	struct smtp_path p;

	ck_assert_int_eq(rcpt("TO:<\"u@victim.test\"@example.org>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");
	ck_assert_int_eq(p.quoted, 1);
	ck_assert_int_eq(p.local_routing, 1);
	ck_assert_str_eq(p.local, "\"u@victim.test\"");

	/* '>' inside quotes does not end the path */
	ck_assert_int_eq(rcpt("TO:<\"a>b\"@example.org>", 0, &p), 0);
	ck_assert_str_eq(p.domain, "example.org");

	/* escaped quote inside */
	ck_assert_int_eq(rcpt("TO:<\"a\\\"@victim.test\"@example.org>", 0, &p),
	    0);
	ck_assert_str_eq(p.domain, "example.org");
	ck_assert_int_eq(p.local_routing, 1);

	/* quoted address without domain */
	ck_assert_int_eq(rcpt("TO:<\"u@victim.test\">", 0, &p),
	    SMTP_PARSE_EPATH);
	/* double @ */
	ck_assert_int_eq(rcpt("TO:<u@victim.test@example.org>", 0, &p),
	    SMTP_PARSE_EPATH);
	/* backslash outside quotes */
	ck_assert_int_eq(rcpt("TO:<u\\@victim.test@example.org>", 0, &p),
	    SMTP_PARSE_EPATH);
	/* unterminated quote */
	ck_assert(rcpt("TO:<\"u@example.org>", 0, &p) != 0);
	/* quoted string followed by junk before @ */
	ck_assert(rcpt("TO:<\"u\"x@example.org>", 0, &p) != 0);
}
END_TEST

START_TEST(test_path_literal)
{
	struct smtp_path p;

	ck_assert_int_eq(rcpt("TO:<u@[192.0.2.25]>", 0, &p), 0);
	ck_assert_int_eq(p.literal, 1);
	ck_assert_str_eq(p.domain, "[192.0.2.25]");
	ck_assert_int_eq(rcpt("TO:<u@[IPv6:2001:db8::7]>", 0, &p), 0);
	ck_assert_int_eq(p.literal, 1);
	ck_assert_int_eq(rcpt("TO:<u@[]>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u@[1.2.3.4>", 0, &p), SMTP_PARSE_EPATH);
}
END_TEST

START_TEST(test_path_bad_forms)
{
	struct smtp_path p;
	char buf[600];

	/* missing brackets */
	ck_assert_int_eq(rcpt("TO:u@example.org", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u@example.org", 0, &p), SMTP_PARSE_EPATH);
	/* spaces inside the brackets */
	ck_assert_int_eq(rcpt("TO:< u@example.org >", 0, &p),
	    SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u @example.org>", 0, &p), SMTP_PARSE_EPATH);
	/* junk directly after '>' */
	ck_assert_int_eq(rcpt("TO:<u@example.org>x", 0, &p), SMTP_PARSE_EPATH);
	/* wrong keyword */
	ck_assert_int_eq(rcpt("FROM:<u@example.org>", 0, &p),
	    SMTP_PARSE_ESYNTAX);
	/* null path not for RCPT */
	ck_assert_int_eq(rcpt("TO:<>", 0, &p), SMTP_PARSE_EPATH);
	/* domain syntax */
	ck_assert_int_eq(rcpt("TO:<u@>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u@exa_mple.org>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u@-a.org>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u@a-.org>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u@a..org>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u@.>", 0, &p), SMTP_PARSE_EPATH);
	/* local part syntax */
	ck_assert_int_eq(rcpt("TO:<.u@example.org>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<u.@example.org>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<a..b@example.org>", 0, &p),
	    SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<a(b)@example.org>", 0, &p),
	    SMTP_PARSE_EPATH);
	/* too long: local part 65, path over 256 */
	memset(buf, 0, sizeof(buf));
	strcpy(buf, "TO:<");
	memset(buf + 4, 'a', 65);
	strcat(buf, "@example.org>");
	ck_assert_int_eq(rcpt(buf, 0, &p), SMTP_PARSE_ETOOLONG);
	memset(buf, 0, sizeof(buf));
	strcpy(buf, "TO:<a@");
	memset(buf + 6, 'b', 60);
	for (int i = 0; i < 4; i++) {
		strcat(buf, ".");
		memset(buf + strlen(buf), 'c', 60);
	}
	strcat(buf, ">");
	ck_assert_int_eq(rcpt(buf, 0, &p), SMTP_PARSE_ETOOLONG);
	/* label over 63 */
	memset(buf, 0, sizeof(buf));
	strcpy(buf, "TO:<a@");
	memset(buf + 6, 'b', 64);
	strcat(buf, ".org>");
	ck_assert_int_eq(rcpt(buf, 0, &p), SMTP_PARSE_ETOOLONG);
}
END_TEST

START_TEST(test_path_postmaster)
{
	struct smtp_path p;
	struct smtp_mail_params mp;

	ck_assert_int_eq(rcpt("TO:<Postmaster>", 0, &p), 0);
	ck_assert_int_eq(p.no_domain, 1);
	ck_assert_str_eq(p.domain, "");
	/* not for MAIL, not other names */
	ck_assert_int_eq(mail("FROM:<postmaster>", &p, &mp), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<root>", 0, &p), SMTP_PARSE_EPATH);
}
END_TEST

START_TEST(test_path_utf8)
{
	struct smtp_path p;
	struct smtp_mail_params mp;

	ck_assert_int_eq(rcpt("TO:<j\xc3\xb6rg@example.org>", 0, &p),
	    SMTP_PARSE_E8BIT);
	ck_assert_int_eq(rcpt("TO:<j\xc3\xb6rg@example.org>", 1, &p), 0);
	ck_assert_int_eq(p.utf8, 1);
	ck_assert_int_eq(rcpt("TO:<u@ex\xc3\xa4mple.org>", 0, &p),
	    SMTP_PARSE_E8BIT);
	ck_assert_int_eq(rcpt("TO:<u@ex\xc3\xa4mple.org>", 1, &p), 0);
	ck_assert_str_eq(p.domain, "ex\xc3\xa4mple.org");
	/* invalid UTF-8 is refused even with SMTPUTF8 */
	ck_assert(rcpt("TO:<j\xc3rg@example.org>", 1, &p) != 0);
	ck_assert(rcpt("TO:<j\xc0\xafrg@example.org>", 1, &p) != 0);
	/* MAIL: SMTPUTF8 parameter enables UTF-8 in the path itself */
	ck_assert_int_eq(mail("FROM:<j\xc3\xb6rg@example.org>", &p, &mp),
	    SMTP_PARSE_E8BIT);
	ck_assert_int_eq(mail("FROM:<j\xc3\xb6rg@example.org> SMTPUTF8", &p,
	    &mp), 0);
	ck_assert_int_eq(mp.smtputf8, 1);
}
END_TEST

/* ---- MAIL / RCPT parameters ---- */

START_TEST(test_mail_params_good)
{
	struct smtp_path p;
	struct smtp_mail_params mp;

	ck_assert_int_eq(mail("FROM:<>", &p, &mp), 0);
	ck_assert_int_eq(p.null_path, 1);
	ck_assert_str_eq(p.addr, "");

	ck_assert_int_eq(mail("FROM:<a@b.example> SIZE=12345 BODY=8BITMIME "
	    "RET=HDRS ENVID=QQ+2B314", &p, &mp), 0);
	ck_assert_int_eq(mp.has_size, 1);
	ck_assert(mp.size == 12345);
	ck_assert_int_eq(mp.body, SMTP_BODY_8BITMIME);
	ck_assert_int_eq(mp.ret, SMTP_RET_HDRS);
	ck_assert_str_eq(mp.envid, "QQ+2B314");
	ck_assert_str_eq(p.addr, "a@b.example");

	ck_assert_int_eq(mail("FROM:<a@b.example> body=7bit ret=full", &p,
	    &mp), 0);
	ck_assert_int_eq(mp.body, SMTP_BODY_7BIT);
	ck_assert_int_eq(mp.ret, SMTP_RET_FULL);
	ck_assert_int_eq(mp.has_size, 0);

	ck_assert_int_eq(mail("FROM:<a@b.example> SIZE=18446744073709551615",
	    &p, &mp), 0);
	ck_assert(mp.size == UINT64_MAX);
}
END_TEST

START_TEST(test_mail_params_bad)
{
	struct smtp_path p;
	struct smtp_mail_params mp;

	ck_assert_int_eq(mail("FROM:<a@b.example> SIZE=", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> SIZE=-1", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> SIZE=12x", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> SIZE=18446744073709551616",
	    &p, &mp), SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> SIZE=1 SIZE=2", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> BODY=BINARYMIME", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> RET=ALL", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> ENVID=a+zz", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> ENVID=a+2", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> SMTPUTF8=yes", &p, &mp),
	    SMTP_PARSE_EPARAMVAL);
	ck_assert_int_eq(mail("FROM:<a@b.example> FOO=bar", &p, &mp),
	    SMTP_PARSE_EPARAM);
	ck_assert_int_eq(mail("FROM:<a@b.example> NOTIFY=NEVER", &p, &mp),
	    SMTP_PARSE_EPARAM);
	ck_assert_int_eq(mail("FROM:<a@b.example> =x", &p, &mp),
	    SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(mail("TO:<a@b.example>", &p, &mp), SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(mail("FROM:", &p, &mp), SMTP_PARSE_EPATH);
}
END_TEST

START_TEST(test_rcpt_params)
{
	struct smtp_path p;
	struct smtp_rcpt_params rp;
	const char *a;

	a = "TO:<u@example.org> NOTIFY=SUCCESS,FAILURE,DELAY "
	    "ORCPT=rfc822;u+40example.org";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp), 0);
	ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_SUCCESS |
	    SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
	ck_assert_str_eq(rp.orcpt, "rfc822;u+40example.org");

	a = "TO:<u@example.org> notify=never";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp), 0);
	ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_NEVER);

	a = "TO:<u@example.org> NOTIFY=NEVER,SUCCESS";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> NOTIFY=SUCCESS,SUCCESS";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> NOTIFY=SOMETIMES";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> NOTIFY=";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> NOTIFY=SUCCESS,";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> ORCPT=rfc822";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> ORCPT=;x";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> ORCPT=rfc822;";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAMVAL);
	a = "TO:<u@example.org> SIZE=10";
	ck_assert_int_eq(smtp_parse_rcpt(a, strlen(a), 0, &p, &rp),
	    SMTP_PARSE_EPARAM);
}
END_TEST

START_TEST(test_xtext)
{
	ck_assert_int_eq(smtp_xtext_valid("abc", 3), 1);
	ck_assert_int_eq(smtp_xtext_valid("a+2Bb", 5), 1);
	ck_assert_int_eq(smtp_xtext_valid("a+2b", 4), 0);
	ck_assert_int_eq(smtp_xtext_valid("a+", 2), 0);
	ck_assert_int_eq(smtp_xtext_valid("a=b", 3), 0);
	ck_assert_int_eq(smtp_xtext_valid("a b", 3), 0);
	ck_assert_int_eq(smtp_xtext_valid("", 0), 1);
}
END_TEST

/* ---- ETRN ---- */

START_TEST(test_etrn)
{
	char node[SMTP_DOMAIN_MAX + 1];
	int kind;

	ck_assert_int_eq(smtp_parse_etrn("Example.ORG.", 12, &kind, node,
	    sizeof(node)), 0);
	ck_assert_int_eq(kind, 0);
	ck_assert_str_eq(node, "example.org");
	ck_assert_int_eq(smtp_parse_etrn("@example.org", 12, &kind, node,
	    sizeof(node)), 0);
	ck_assert_int_eq(kind, '@');
	ck_assert_int_eq(smtp_parse_etrn("#queue", 6, &kind, node,
	    sizeof(node)), 0);
	ck_assert_int_eq(kind, '#');
	ck_assert_str_eq(node, "queue");
	ck_assert_int_eq(smtp_parse_etrn("", 0, &kind, node, sizeof(node)),
	    SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_etrn("@", 1, &kind, node, sizeof(node)),
	    SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_etrn("@org", 4, &kind, node, sizeof(node)),
	    SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_etrn("@.", 2, &kind, node, sizeof(node)),
	    SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_etrn("[1.2.3.4]", 9, &kind, node,
	    sizeof(node)), SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_etrn("a b", 3, &kind, node, sizeof(node)),
	    SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_etrn("ex\xc3\xa4mple.org", 13, &kind, node,
	    sizeof(node)), SMTP_PARSE_ESYNTAX);
}
END_TEST

/* Issue 17: "a.test.." was stored as "a.test." beside "a.test"; an
 * ETRN node of 255 octets plus its dot overflowed smtpd's copy. */
START_TEST(test_empty_labels)
{
	struct smtp_path p;
	char node[SMTP_DOMAIN_MAX + 1], big[300];
	int kind;

	ck_assert_int_eq(rcpt("TO:<v@a.test..>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<v@a.test...>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<v@a..test>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<v@.a.test>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<v@.>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<v@..>", 0, &p), SMTP_PARSE_EPATH);
	ck_assert_int_eq(rcpt("TO:<v@a.test.>", 0, &p), 0);
	ck_assert_str_eq(p.addr, "v@a.test");
	ck_assert_int_eq(smtp_parse_etrn("a.test..", 8, &kind, node,
	    sizeof(node)), SMTP_PARSE_ESYNTAX);
	ck_assert_int_eq(smtp_parse_etrn("@a.test..", 9, &kind, node,
	    sizeof(node)), SMTP_PARSE_ESYNTAX);

	/* "@" + 255 octets + ".": the node is the 255 octets */
	memset(big, 'a', sizeof(big));
	big[0] = '@';
	big[64] = big[128] = big[192] = '.';
	big[256] = '.';
	ck_assert_int_eq(smtp_parse_etrn(big, 257, &kind, node,
	    sizeof(node)), 0);
	ck_assert_int_eq(kind, '@');
	ck_assert_uint_eq(strlen(node), 255);
	big[257] = 'a';
	ck_assert_int_ne(smtp_parse_etrn(big, 258, &kind, node,
	    sizeof(node)), 0);
}
END_TEST

START_TEST(test_strerror)
{
	ck_assert(strncmp(smtp_parse_strerror(SMTP_PARSE_EPATH, 0),
	    "501 5.1.7", 9) == 0);
	ck_assert(strncmp(smtp_parse_strerror(SMTP_PARSE_EPATH, 1),
	    "501 5.1.3", 9) == 0);
	ck_assert(strncmp(smtp_parse_strerror(SMTP_PARSE_E8BIT, 1),
	    "553 5.6.7", 9) == 0);
	ck_assert(strncmp(smtp_parse_strerror(SMTP_PARSE_EPARAM, 1),
	    "555 5.5.4", 9) == 0);
}
END_TEST

/* ---- replies ---- */

START_TEST(test_reply_multiline)
{
	struct smtp_reply r;
	const char *t;
	size_t len;

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-mx.example", 14), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-PIPELINING", 14), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 SIZE 1000", 13), 1);
	ck_assert_int_eq(r.code, 250);
	ck_assert_int_eq(r.nlines, 3);
	ck_assert_int_eq(r.done, 1);
	t = smtp_reply_line(&r, 1, &len);
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(len, 10);
	ck_assert(strncmp(t, "PIPELINING", 10) == 0);
	t = smtp_reply_line(&r, 2, &len);
	ck_assert(strncmp(t, "SIZE 1000", len) == 0 && len == 9);
	ck_assert_ptr_null(smtp_reply_line(&r, 3, &len));
	/* nothing after the last line */
	ck_assert_int_eq(smtp_reply_feed(&r, "250 again", 9), -1);
}
END_TEST

START_TEST(test_reply_enhanced)
{
	struct smtp_reply r;

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "550 5.7.1 Relay access denied",
	    29), 1);
	ck_assert_int_eq(r.code, 550);
	ck_assert_str_eq(r.enh, "5.7.1");

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 2.0.0", 9), 1);
	ck_assert_str_eq(r.enh, "2.0.0");

	/* class must match the code */
	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 5.0.0 odd", 13), 1);
	ck_assert_str_eq(r.enh, "");

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "220 mx.example ESMTP", 20), 1);
	ck_assert_str_eq(r.enh, "");

	/* bare code */
	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "354", 3), 1);
	ck_assert_int_eq(r.code, 354);
}
END_TEST

START_TEST(test_reply_bad)
{
	struct smtp_reply r;

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "25", 2), -1);
	ck_assert_int_eq(smtp_reply_feed(&r, "2x0 ok", 6), -1);
	ck_assert_int_eq(smtp_reply_feed(&r, "", 0), -1);
	ck_assert_int_eq(smtp_reply_feed(&r, "abc ok", 6), -1);
	ck_assert_int_eq(smtp_reply_feed(&r, "150 ok", 6), -1);
	ck_assert_int_eq(smtp_reply_feed(&r, "650 ok", 6), -1);
	ck_assert_int_eq(smtp_reply_feed(&r, "050 ok", 6), -1);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-first", 9), 0);
	/* code changes between lines */
	ck_assert_int_eq(smtp_reply_feed(&r, "251 second", 10), -1);
}
END_TEST

/* The grammar every reply reader (smtpc, odpull) shares. */
START_TEST(test_reply_lenient)
{
	struct smtp_reply r;
	const char *t;
	size_t len;

	/* A missing space ends the reply; the text starts after the code. */
	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "220mx", 5), 1);
	ck_assert_int_eq(r.code, 220);
	t = smtp_reply_line(&r, 0, &len);
	ck_assert(len == 2 && strncmp(t, "mx", 2) == 0);
	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-a", 5), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250_ok", 6), 1);
	t = smtp_reply_line(&r, 1, &len);
	ck_assert(len == 3 && strncmp(t, "_ok", 3) == 0);
	/* "NNN-" with no text continues; "NNN " ends with empty text. */
	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-", 4), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 ", 4), 1);
	ck_assert_int_eq(r.nlines, 2);
	t = smtp_reply_line(&r, 1, &len);
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(len, 0);
	/* init starts a new reply after a done one */
	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "554 5.7.1 no", 12), 1);
	ck_assert_int_eq(r.code, 554);
	ck_assert_str_eq(r.enh, "5.7.1");
}
END_TEST

START_TEST(test_reply_keyword)
{
	struct smtp_reply r;
	char arg[16];

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-mx.example ATRN", 19), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-pipelining", 14), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-SIZE=1000", 13), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-AUTH SCRAM-SHA-256 CRAM-MD5", 31),
	    0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-DSNX", 8), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 8BITMIME", 12), 1);
	/* Case-insensitive, whole words, never the greeting line. */
	ck_assert_int_eq(smtp_reply_keyword(&r, "PIPELINING", NULL, 0), 1);
	ck_assert_int_eq(smtp_reply_keyword(&r, "ATRN", NULL, 0), 0);
	ck_assert_int_eq(smtp_reply_keyword(&r, "DSN", NULL, 0), 0);
	ck_assert_int_eq(smtp_reply_keyword(&r, "8BITMIME", arg, sizeof(arg)), 1);
	ck_assert_str_eq(arg, "");
	ck_assert_int_eq(smtp_reply_keyword(&r, "size", arg, sizeof(arg)), 1);
	ck_assert_str_eq(arg, "1000");
	/* The argument is cut to fit. */
	ck_assert_int_eq(smtp_reply_keyword(&r, "AUTH", arg, 8), 1);
	ck_assert_str_eq(arg, "SCRAM-S");
}
END_TEST

START_TEST(test_reply_truncated)
{
	struct smtp_reply r;
	char line[1004];
	int i;

	memset(line, 'x', sizeof(line));
	memcpy(line, "250-", 4);
	smtp_reply_init(&r);
	for (i = 0; i < 10; i++)
		ck_assert_int_eq(smtp_reply_feed(&r, line, sizeof(line)), 0);
	memcpy(line, "250 ", 4);
	ck_assert_int_eq(smtp_reply_feed(&r, line, sizeof(line)), 1);
	ck_assert_int_eq(r.nlines, 11);
	ck_assert_int_eq(r.truncated, 1);
	ck_assert(r.textlen <= sizeof(r.text));
}
END_TEST

static Suite *
smtp_parse_suite(void)
{
	Suite *s = suite_create("smtp_parse");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_command_basic);
	tcase_add_test(tc, test_command_bad);
	tcase_add_test(tc, test_path_plain);
	tcase_add_test(tc, test_path_percent_bang);
	tcase_add_test(tc, test_path_source_route);
	tcase_add_test(tc, test_path_quoted);
	tcase_add_test(tc, test_path_literal);
	tcase_add_test(tc, test_path_bad_forms);
	tcase_add_test(tc, test_path_postmaster);
	tcase_add_test(tc, test_path_utf8);
	tcase_add_test(tc, test_mail_params_good);
	tcase_add_test(tc, test_mail_params_bad);
	tcase_add_test(tc, test_rcpt_params);
	tcase_add_test(tc, test_xtext);
	tcase_add_test(tc, test_etrn);
	tcase_add_test(tc, test_empty_labels);
	tcase_add_test(tc, test_strerror);
	tcase_add_test(tc, test_reply_multiline);
	tcase_add_test(tc, test_reply_enhanced);
	tcase_add_test(tc, test_reply_bad);
	tcase_add_test(tc, test_reply_lenient);
	tcase_add_test(tc, test_reply_keyword);
	tcase_add_test(tc, test_reply_truncated);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(smtp_parse_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
