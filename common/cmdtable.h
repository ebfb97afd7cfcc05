/*
 * cmdtable - one shape for the commands of an SMTP-like server (the SMTP
 * listener and the ODMR listener each keep a table of rows and their own
 * handlers). A row is a verb, the session states it is allowed in, what
 * the session must have done first (HELO, TLS, AUTH, ...), flags, and its
 * handler; adding a verb is adding one row.
 *
 * cmdtable_dispatch parses the line (smtp_parse_command), finds the row
 * and makes every check in one fixed order, with the table's and the
 * row's reply lines:
 *   1. unknown verb or bad line        table->unknown / table->badchar
 *   2. facts the row needs             table->needs[], in their order
 *   3. CMDT_NOARG / CMDT_ARG           row->syntax
 *   4. state (and CMDT_NOT_TLS)        row->wrong_state
 *   5. row->check, the verb's own precondition (it replies itself)
 *   6. CMDT_GROUP_END with more input  table->desync
 *   7. row->fn, or for a row without handler its fixed row->reply
 * Replies (1-4, 7) go through table->answer with their kind, so each server
 * counts its protocol errors its own way. No I/O here; pure and
 * reentrant.
 */
#ifndef OD_CMDTABLE_H
#define OD_CMDTABLE_H

#include <stddef.h>

/* A state's bit in cmdtable_row.states (states are small enums). */
#define CMDT_ST(n)	(1u << (n))

/*
 * What the session has (cmdtable_dispatch's `have`); a row's `need` uses
 * the same bits. The *_REQUIRED bits say the session wants TLS (or AUTH)
 * before any command not flagged CMDT_PRE_TLS (CMDT_PRE_AUTH).
 */
#define CMDT_HELO		0x0001u	/* HELO or EHLO done */
#define CMDT_EHLO		0x0002u	/* EHLO done */
#define CMDT_TLS		0x0004u	/* TLS is on */
#define CMDT_AUTHED		0x0008u	/* authenticated */
#define CMDT_TLS_OFFER		0x0010u	/* STARTTLS is offered */
#define CMDT_AUTH_OFFER		0x0020u	/* AUTH is offered */
#define CMDT_NOT_AUTHED		0x0040u	/* not yet authenticated */
#define CMDT_TLS_REQUIRED	0x0100u	/* (have only) see above */
#define CMDT_AUTH_REQUIRED	0x0200u	/* (have only) see above */
#define CMDT_PENDING		0x0400u	/* (have only) more input waits */

/* Row flags. */
#define CMDT_NOARG	0x01u	/* takes no argument: else row->syntax */
#define CMDT_ARG	0x02u	/* needs an argument: else row->syntax */
#define CMDT_PRE_TLS	0x04u	/* allowed before TLS when it is required */
#define CMDT_PRE_AUTH	0x08u	/* allowed before AUTH when it is required */
#define CMDT_GROUP_END	0x10u	/* ends a pipelined group (RFC 2920 3.1):
				 * input after it is a desync */
#define CMDT_NOT_TLS	0x20u	/* refused (wrong_state) once TLS is on */
#define CMDT_ERROR	0x40u	/* row->reply counts as a protocol error */

/* Why table->answer is called. */
enum cmdtable_why {
	CMDT_WHY_REPLY,		/* a row's fixed reply (not an error) */
	CMDT_WHY_UNKNOWN,	/* unknown verb or unparsable line */
	CMDT_WHY_REFUSED	/* a check failed, or a CMDT_ERROR reply */
};

/* Handlers return 1 when the session's input loop must stop (the
 * session is closing, paused, or its connection changed), else 0. arg is
 * NUL-terminated at arglen (leading and trailing blanks removed). */
typedef int cmdtable_fn(void *sess, char *arg, size_t arglen);

struct cmdtable_row {
	const char *verb;		/* upper case */
	unsigned states;		/* CMDT_ST() bits; 0: every state */
	unsigned need;			/* CMDT_HELO ... CMDT_NOT_AUTHED */
	unsigned flags;			/* CMDT_NOARG ... */
	const char *syntax;		/* reply for CMDT_NOARG / CMDT_ARG */
	const char *wrong_state;	/* reply outside `states` */
	const char *reply;		/* fn == NULL: the whole answer */
	cmdtable_fn *check;		/* NULL, or 1 when it refused */
	cmdtable_fn *fn;
};

struct cmdtable_need {
	unsigned have;			/* one CMDT_* fact */
	const char *reply;		/* when a row needs it and it is missing */
};

struct cmdtable {
	const struct cmdtable_row *rows;
	size_t nrows;
	const struct cmdtable_need *needs;	/* checked in this order */
	size_t nneeds;
	const char *unknown;		/* unknown verb, bad verb */
	const char *badchar;		/* control octets; NULL: unknown */
	/* Send one reply line (no CRLF); returns like a handler. */
	int (*answer)(void *sess, const char *line, enum cmdtable_why why);
	/* CMDT_GROUP_END with more input already read; returns likewise. */
	int (*desync)(void *sess);
};

/* A table from its arrays of rows and needs (a server's one line). */
#define CMDTABLE(rows, needs, unknown, badchar, answer, desync)	\
	{ (rows), sizeof(rows) / sizeof((rows)[0]), (needs),		\
	    sizeof(needs) / sizeof((needs)[0]), (unknown), (badchar),	\
	    (answer), (desync) }

/*
 * Dispatch one command line: len octets without CRLF, followed by a NUL
 * (the line is written to: the argument is NUL-terminated in place). state
 * is the session's state (an enum below 32), have its CMDT_* facts.
 * Returns what the handler or answer returned.
 */
int cmdtable_dispatch(const struct cmdtable *t, void *sess, unsigned state,
    unsigned have, char *line, size_t len);
/* The row for verb (upper case), or NULL. */
const struct cmdtable_row *cmdtable_find(const struct cmdtable *t,
    const char *verb);

#endif
