/*
 * smtp_parse - pure SMTP syntax: command lines, RFC 5321 paths with ESMTP
 * parameters, ETRN arguments, and multi-line replies (for clients).
 *
 * No I/O, no allocation, no global state: every function works on the
 * caller's bounded buffers, so it can be fuzzed and shared by odrelayd's
 * listeners, the ODMR reversed session and odpull.
 */
#ifndef OD_SMTP_PARSE_H
#define OD_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_LOCAL_MAX	64	/* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX	255	/* RFC 5321 4.5.3.1.2 */
#define SMTP_PATH_MAX	256	/* RFC 5321 4.5.3.1.3, with the brackets */
#define SMTP_VERB_MAX	16
#define SMTP_ENVID_MAX	100	/* RFC 3461 5.4 minimums we accept */
#define SMTP_ORCPT_MAX	500

/* Error codes returned by the parsers (0 = ok). */
#define SMTP_PARSE_OK		0
#define SMTP_PARSE_ESYNTAX	-1	/* 501 5.5.2: malformed command/argument */
#define SMTP_PARSE_EPATH	-2	/* 501 5.1.3 / 5.1.7: bad address syntax */
#define SMTP_PARSE_ETOOLONG	-3	/* 501 5.1.3: path/local part/domain too long */
#define SMTP_PARSE_E8BIT	-4	/* 553 5.6.7: non-ASCII without SMTPUTF8 */
#define SMTP_PARSE_EPARAM	-5	/* 555 5.5.4: unknown parameter */
#define SMTP_PARSE_EPARAMVAL	-6	/* 501 5.5.4: bad or duplicate value */
#define SMTP_PARSE_ECHAR	-7	/* 501 5.5.2: NUL/control char in line */

/* DSN NOTIFY bits; same values as QUEUE_NOTIFY_*. */
#define SMTP_NOTIFY_NEVER	0x1
#define SMTP_NOTIFY_SUCCESS	0x2
#define SMTP_NOTIFY_FAILURE	0x4
#define SMTP_NOTIFY_DELAY	0x8

/* BODY= and RET= values; RET values equal QUEUE_RET_*. */
#define SMTP_BODY_NONE		0
#define SMTP_BODY_7BIT		1
#define SMTP_BODY_8BITMIME	2
#define SMTP_RET_NONE		0
#define SMTP_RET_FULL		1
#define SMTP_RET_HDRS		2

/*
 * A parsed path. A source route is checked for syntax and dropped (RFC
 * 5321 4.1.1.3: the final mailbox's domain is what counts). The domain is
 * only what follows the last unquoted '@'; '%' and '!' are plain local-part
 * characters, never routing.
 */
struct smtp_path {
	char addr[SMTP_PATH_MAX + 1];	/* local@domain (domain normalised); "" = <> */
	char local[SMTP_LOCAL_MAX + 1];	/* as received (quotes kept) */
	char domain[SMTP_DOMAIN_MAX + 1]; /* lower case, no trailing dot; or [literal] */
	int null_path;		/* <> */
	int had_route;		/* a source route was given and ignored */
	int literal;		/* domain is an address literal [..] */
	int local_routing;	/* local part holds '%', '!' or a quoted '@' */
	int quoted;		/* local part was a quoted string */
	int utf8;		/* non-ASCII octets present */
	int no_domain;		/* bare <postmaster> (RCPT only) */
};

struct smtp_mail_params {
	uint64_t size;		/* SIZE=, 0 if not given */
	int has_size;
	int body;		/* SMTP_BODY_* */
	int smtputf8;
	int ret;		/* SMTP_RET_* */
	char envid[SMTP_ENVID_MAX + 1];	/* xtext as received; "" = none */
};

struct smtp_rcpt_params {
	unsigned notify;	/* SMTP_NOTIFY_* bits; 0 = not given */
	char orcpt[SMTP_ORCPT_MAX + 1];	/* "type;xtext" as received; "" = none */
};

/*
 * Split a command line (without CRLF, len octets, may hold NULs) into a
 * verb (upper-cased into verb_r) and *arg_r (borrowed from line: the text
 * after the first space, leading spaces skipped; "" when none). Trailing
 * spaces are dropped from the argument length (*arglen_r). Returns 0,
 * SMTP_PARSE_ECHAR for NUL/control octets (TAB allowed), or
 * SMTP_PARSE_ESYNTAX for an empty or overlong verb.
 */
int smtp_parse_command(const char *line, size_t len, char *verb_r,
    size_t verbsize, const char **arg_r, size_t *arglen_r);

/*
 * MAIL argument ("FROM:<path> [params]", len octets). The path may use
 * UTF-8 only when SMTPUTF8 is among the parameters. Returns 0 or an
 * SMTP_PARSE_E* code.
 */
int smtp_parse_mail(const char *arg, size_t len, struct smtp_path *path_r,
    struct smtp_mail_params *params_r);
/*
 * RCPT argument ("TO:<path> [params]"). smtputf8: the transaction's MAIL
 * carried SMTPUTF8. <> is refused; bare <postmaster> (any case) is
 * accepted with no_domain set.
 */
int smtp_parse_rcpt(const char *arg, size_t len, int smtputf8,
    struct smtp_path *path_r, struct smtp_rcpt_params *params_r);
/*
 * Parse the inside of a path (no brackets). is_mail: allows "" (null path).
 * Exposed for odpull and tests.
 */
int smtp_parse_path(const char *s, size_t len, int utf8_ok, int is_mail,
    struct smtp_path *path_r);
/*
 * Normalise a domain name: validate (LDH labels; UTF-8 labels when
 * utf8_ok), drop one trailing dot, lower-case. Address literals are not
 * accepted here. Returns 0 or an SMTP_PARSE_E* code.
 */
int smtp_parse_domain(const char *s, size_t len, int utf8_ok, char *out,
    size_t outsize);
/* xtext (RFC 3461 4): 1 if valid, else 0. */
int smtp_xtext_valid(const char *s, size_t len);

/*
 * ETRN argument: "[@|#]node". *kind_r gets 0, '@' or '#'; node_r the name
 * (a domain: lower-cased, trailing dot dropped; a '#' queue name: the same
 * rules). Returns 0 or SMTP_PARSE_ESYNTAX.
 */
int smtp_parse_etrn(const char *arg, size_t len, int *kind_r, char *node_r,
    size_t nodesize);

/*
 * The complete reply line (without CRLF) for a parser error, e.g.
 * "501 5.1.7 Bad sender address syntax". is_rcpt picks sender/recipient
 * wording.
 */
const char *smtp_parse_strerror(int code, int is_rcpt);

/* ---- replies (client side) ---- */

#define SMTP_REPLY_TEXT_MAX	4096

/*
 * A reply assembled from its lines. text holds the lines' texts (after
 * "NNN-" / "NNN "), each terminated by '\n'; lines that do not fit are
 * counted but not stored (truncated is set).
 */
struct smtp_reply {
	int code;		/* 3 digits, 0 until the first line */
	char enh[16];		/* enhanced status of the first line, or "" */
	size_t nlines;
	int done;		/* the last line ("NNN " or "NNN") was seen */
	int truncated;
	size_t textlen;
	char text[SMTP_REPLY_TEXT_MAX];
};

void smtp_reply_init(struct smtp_reply *r);
/*
 * Feed one reply line (without CRLF). Returns 1 when the reply is complete,
 * 0 when more lines follow, -1 for a malformed line (no 3-digit code 200 to
 * 599, code changing between lines, or a line after the end). "NNN-text"
 * continues; "NNN text", "NNN" and also "NNNtext" (no space, as deployed
 * clients accept it) end the reply. The one reply parser: smtpc and odpull
 * read every reply through it.
 */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);
/* Line i's text (borrowed, not NUL-terminated), its length in *len_r; NULL
 * if i is out of range or was not stored. */
const char *smtp_reply_line(const struct smtp_reply *r, size_t i,
    size_t *len_r);
/*
 * 1 if an EHLO reply lists keyword kw (case-insensitive, as a whole word:
 * "SIZE", "SIZE 1000", "SIZE=1000"); its argument (what follows the
 * space or '=', cut to fit) into arg_r if not NULL. Lines beyond the
 * stored text are not seen. Read by smtpc and odpull alike.
 */
int smtp_reply_keyword(const struct smtp_reply *r, const char *kw,
    char *arg_r, size_t argsize);

#endif
