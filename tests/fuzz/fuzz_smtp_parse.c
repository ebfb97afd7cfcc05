/*
 * fuzz_smtp_parse - libFuzzer target for common/smtp_parse: command lines,
 * MAIL/RCPT arguments, ETRN arguments, paths, domains, xtext and the
 * client-side reply assembler with its EHLO keyword reader.
 *
 * Input: one selector byte, then the text. Selector (low 3 bits):
 *	0 command line		1 MAIL argument		2 RCPT argument
 *	3 ETRN argument		4 reply lines ('\n'-separated, fed in order)
 *	5 path			6 domain		7 xtext
 * Bit 3 sets the utf8/SMTPUTF8 flag where one exists. Results are checked
 * for the header's promises (NUL-terminated, bounded, lower/upper case), so
 * a violated contract aborts like a memory error does.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static void
check_path(const struct smtp_path *p)
{
	size_t i;

	CHECK(memchr(p->addr, '\0', sizeof(p->addr)) != NULL);
	CHECK(memchr(p->local, '\0', sizeof(p->local)) != NULL);
	CHECK(memchr(p->domain, '\0', sizeof(p->domain)) != NULL);
	for (i = 0; p->domain[i] != '\0'; i++)
		CHECK(!isupper((unsigned char)p->domain[i]) || p->literal);
	if (p->null_path)
		CHECK(p->addr[0] == '\0');
}

static void
fuzz_reply(const char *s, size_t len)
{
	struct smtp_reply r;
	const char *line, *nl;
	size_t i, n, l;
	int rc;

	smtp_reply_init(&r);
	while (len > 0) {
		nl = memchr(s, '\n', len);
		n = nl != NULL ? (size_t)(nl - s) : len;
		rc = smtp_reply_feed(&r, s, n);
		CHECK(rc >= -1 && rc <= 1);
		CHECK(r.textlen <= sizeof(r.text));
		if (rc == 1) {
			char arg[8];

			CHECK(r.done && r.code >= 200 && r.code <= 599);
			/* The EHLO keyword reader: a bounded argument. */
			if (smtp_reply_keyword(&r, "SIZE", arg, sizeof(arg)))
				CHECK(memchr(arg, '\0', sizeof(arg)) != NULL);
		}
		if (rc == 1 || rc == -1) {
			for (i = 0; i <= r.nlines; i++) {
				line = smtp_reply_line(&r, i, &l);
				if (line != NULL)
					CHECK(line >= r.text &&
					    line + l <= r.text + r.textlen);
			}
			smtp_reply_init(&r);
		}
		if (nl == NULL)
			break;
		s += n + 1;
		len -= n + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_path path;
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;
	char verb[SMTP_VERB_MAX + 1], node[SMTP_DOMAIN_MAX + 1];
	char dom[SMTP_DOMAIN_MAX + 1];
	const char *arg, *s;
	size_t arglen, len, i;
	int sel, utf8, kind, rc;
	char *copy;

	if (size < 1)
		return 0;
	sel = data[0] & 7;
	utf8 = (data[0] >> 3) & 1;
	/* an exact-size heap copy so ASan sees any read past the end */
	len = size - 1;
	copy = malloc(len > 0 ? len : 1);
	if (copy == NULL)
		abort();
	memcpy(copy, data + 1, len);
	s = copy;

	switch (sel) {
	case 0:
		rc = smtp_parse_command(s, len, verb, sizeof(verb), &arg,
		    &arglen);
		if (rc == SMTP_PARSE_OK) {
			CHECK(memchr(verb, '\0', sizeof(verb)) != NULL);
			for (i = 0; verb[i] != '\0'; i++)
				CHECK(!islower((unsigned char)verb[i]));
			CHECK(arg >= s && arg + arglen <= s + len);
		}
		break;
	case 1:
		memset(&mp, 0xa5, sizeof(mp));
		rc = smtp_parse_mail(s, len, &path, &mp);
		if (rc == SMTP_PARSE_OK) {
			check_path(&path);
			CHECK(memchr(mp.envid, '\0', sizeof(mp.envid)) != NULL);
			CHECK(path.utf8 == 0 || mp.smtputf8);
		}
		(void)smtp_parse_strerror(rc, 0);
		break;
	case 2:
		rc = smtp_parse_rcpt(s, len, utf8, &path, &rp);
		if (rc == SMTP_PARSE_OK) {
			check_path(&path);
			CHECK(!path.null_path);
			CHECK(memchr(rp.orcpt, '\0', sizeof(rp.orcpt)) != NULL);
			CHECK(path.utf8 == 0 || utf8);
		}
		(void)smtp_parse_strerror(rc, 1);
		break;
	case 3:
		rc = smtp_parse_etrn(s, len, &kind, node, sizeof(node));
		if (rc == SMTP_PARSE_OK) {
			CHECK(kind == 0 || kind == '@' || kind == '#');
			CHECK(memchr(node, '\0', sizeof(node)) != NULL);
		}
		/* a too-small buffer must be refused, never overrun */
		(void)smtp_parse_etrn(s, len, &kind, node, 8);
		break;
	case 4:
		fuzz_reply(s, len);
		break;
	case 5:
		rc = smtp_parse_path(s, len, utf8, 1, &path);
		if (rc == SMTP_PARSE_OK)
			check_path(&path);
		rc = smtp_parse_path(s, len, utf8, 0, &path);
		if (rc == SMTP_PARSE_OK)
			check_path(&path);
		break;
	case 6:
		rc = smtp_parse_domain(s, len, utf8, dom, sizeof(dom));
		if (rc == SMTP_PARSE_OK) {
			CHECK(memchr(dom, '\0', sizeof(dom)) != NULL);
			for (i = 0; dom[i] != '\0'; i++)
				CHECK(!isupper((unsigned char)dom[i]));
		}
		(void)smtp_parse_domain(s, len, utf8, dom, 16);
		break;
	case 7:
		(void)smtp_xtext_valid(s, len);
		break;
	}
	free(copy);
	return 0;
}
