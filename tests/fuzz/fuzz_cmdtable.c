/*
 * fuzz_cmdtable - libFuzzer target for common/cmdtable's dispatcher on a
 * table with every kind of row (states, needs, NOARG/ARG, fixed replies,
 * a check, the end of a pipelined group, PRE_TLS/PRE_AUTH).
 *
 * Input: records of one state byte, two bytes of session facts, then a
 * command line up to LF. For each line exactly one thing must happen (an
 * answer, a desync, the row's check refusing, or its handler); a handler
 * runs only when its row allows the state and the facts, and gets its
 * argument NUL-terminated, inside the line, without surrounding blanks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmdtable.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

enum { FZ_A, FZ_B, FZ_C, FZ_NSTATES };

static struct {
	const char *line;	/* the line being dispatched */
	size_t len;
	unsigned state, have;
	int events;		/* things that happened for this line */
	const struct cmdtable_row *called;
} fz;

static const struct cmdtable_row fz_rows[];

static int
fz_answer(void *sess, const char *line, enum cmdtable_why why)
{
	CHECK(sess == &fz);
	CHECK(line != NULL && line[0] >= '2' && line[0] <= '5');
	CHECK(why <= CMDT_WHY_REFUSED);
	fz.events++;
	return 0;
}

static int
fz_desync(void *sess)
{
	CHECK(sess == &fz);
	CHECK(fz.have & CMDT_PENDING);
	fz.events++;
	return 1;
}

/* The row this handler belongs to: the one whose verb the line has. */
static int
fz_handler(void *sess, char *arg, size_t arglen)
{
	const struct cmdtable_row *r = NULL;
	size_t i, vlen;

	CHECK(sess == &fz);
	CHECK(arg >= fz.line && arg + arglen <= fz.line + fz.len);
	CHECK(arg[arglen] == '\0' && strlen(arg) == arglen);
	CHECK(arglen == 0 || (arg[0] != ' ' && arg[arglen - 1] != ' ' &&
	    arg[arglen - 1] != '\t'));
	for (vlen = 0; vlen < fz.len && fz.line[vlen] != ' '; vlen++)
		;
	for (i = 0; fz_rows[i].verb != NULL; i++)
		if (strlen(fz_rows[i].verb) == vlen &&
		    strncasecmp(fz_rows[i].verb, fz.line, vlen) == 0)
			r = &fz_rows[i];
	CHECK(r != NULL);
	CHECK(r->states == 0 || (r->states & CMDT_ST(fz.state)));
	CHECK((r->need & fz.have) == r->need);
	CHECK(!(r->flags & CMDT_NOARG) || arglen == 0);
	CHECK(!(r->flags & CMDT_ARG) || arglen > 0);
	CHECK(!(r->flags & CMDT_NOT_TLS) || !(fz.have & CMDT_TLS));
	CHECK(!(r->flags & CMDT_GROUP_END) || !(fz.have & CMDT_PENDING));
	CHECK(!(fz.have & CMDT_TLS_REQUIRED) || (r->flags & CMDT_PRE_TLS) ||
	    (fz.have & CMDT_TLS));
	CHECK(!(fz.have & CMDT_AUTH_REQUIRED) || (r->flags & CMDT_PRE_AUTH) ||
	    (fz.have & CMDT_AUTHED));
	fz.called = r;
	fz.events++;
	return 0;
}

/* Refuses when the argument starts with "no". */
static int
fz_check(void *sess, char *arg, size_t arglen)
{
	CHECK(sess == &fz && arg[arglen] == '\0');
	if (arglen >= 2 && strncmp(arg, "no", 2) == 0) {
		fz.events++;
		return 1;
	}
	return 0;
}

static const struct cmdtable_row fz_rows[] = {
	{ "EHLO", 0, 0, CMDT_ARG | CMDT_PRE_TLS | CMDT_PRE_AUTH, "501 s",
	    NULL, NULL, NULL, fz_handler },
	{ "MAIL", CMDT_ST(FZ_B), CMDT_HELO, 0, NULL, "503 w", NULL, NULL,
	    fz_handler },
	{ "DATA", CMDT_ST(FZ_C), 0, CMDT_NOARG | CMDT_GROUP_END, "501 s",
	    "503 w", NULL, fz_check, fz_handler },
	{ "BDAT", CMDT_ST(FZ_C), 0, CMDT_ARG | CMDT_GROUP_END, "501 s",
	    "503 w", NULL, fz_check, fz_handler },
	{ "STARTTLS", CMDT_ST(FZ_A) | CMDT_ST(FZ_B), CMDT_TLS_OFFER,
	    CMDT_NOARG | CMDT_NOT_TLS | CMDT_PRE_TLS | CMDT_PRE_AUTH, "501 s",
	    "503 w", NULL, NULL, fz_handler },
	{ "AUTH", CMDT_ST(FZ_A) | CMDT_ST(FZ_B), CMDT_AUTH_OFFER | CMDT_TLS |
	    CMDT_EHLO | CMDT_NOT_AUTHED, CMDT_PRE_AUTH, NULL, "503 w", NULL,
	    NULL, fz_handler },
	{ "NOOP", 0, 0, CMDT_PRE_TLS | CMDT_PRE_AUTH, NULL, NULL, "250 ok",
	    NULL, NULL },
	{ "EXPN", 0, 0, CMDT_ERROR, NULL, NULL, "502 n", NULL, NULL },
	{ "QUIT", 0, 0, CMDT_NOARG | CMDT_PRE_TLS | CMDT_PRE_AUTH, "501 s",
	    NULL, NULL, NULL, fz_handler },
	{ NULL, 0, 0, 0, NULL, NULL, NULL, NULL, NULL }
};

static const struct cmdtable_need fz_needs[] = {
	{ CMDT_TLS_OFFER, "502 o" }, { CMDT_AUTH_OFFER, "502 o" },
	{ CMDT_TLS, "530 t" }, { CMDT_AUTHED, "530 a" },
	{ CMDT_EHLO, "503 e" }, { CMDT_HELO, "503 h" },
	{ CMDT_NOT_AUTHED, "503 n" },
};

static const struct cmdtable fz_table = {
	fz_rows, sizeof(fz_rows) / sizeof(fz_rows[0]) - 1,
	fz_needs, sizeof(fz_needs) / sizeof(fz_needs[0]),
	"500 u", "501 c", fz_answer, fz_desync
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (size - off >= 3) {
		const uint8_t *p = data + off + 3, *nl;
		size_t len;
		char *line;

		fz.state = data[off] % FZ_NSTATES;
		fz.have = (unsigned)(data[off + 1] << 8 | data[off + 2]);
		nl = memchr(p, '\n', size - off - 3);
		len = nl != NULL ? (size_t)(nl - p) : size - off - 3;
		off += 3 + len + (nl != NULL);
		/* exactly len octets and the NUL the dispatcher may write */
		line = malloc(len + 1);
		CHECK(line != NULL);
		memcpy(line, p, len);
		line[len] = '\0';
		fz.line = line;
		fz.len = len;
		fz.events = 0;
		fz.called = NULL;
		(void)cmdtable_dispatch(&fz_table, &fz, fz.state, fz.have, line,
		    len);
		CHECK(fz.events == 1);
		free(line);
	}
	return 0;
}
