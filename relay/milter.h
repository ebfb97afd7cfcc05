/*
 * milter - the MTA side of the milter protocol for smtpd: one milter
 * session per SMTP session, talking to every filter of `milters` in
 * parallel over non-blocking sockets on the daemon's loop.
 *
 * Filters are contacted at the first recipient of a domain that uses
 * them (CONNECT, HELO and MAIL are replayed then); a transaction whose
 * recipients all belong to `milters = none` domains never touches one.
 * Once a transaction is filtered, its message text goes through
 * milter_sess_write instead of the queue: headers are kept in memory
 * (bounded) so that filters can change them, the body is spooled (memory,
 * then an unlinked file in the queue directory) and streamed to the
 * filters in 64 KiB chunks. At end of data every filter answers, the
 * header changes are applied and the message is written into the queue
 * put; only then does smtpd commit and reply.
 *
 * A filter that cannot be reached, times out, or sends garbage gets
 * milter_default_action for the message at hand; the next transaction
 * tries it again. All calls on the loop thread; callbacks never run from
 * inside the call that started them.
 */
#ifndef OD_MILTER_H
#define OD_MILTER_H

#include <stddef.h>

struct event_base;
struct config;
struct queue_put;
struct milter_sess;

enum milter_action {
	MILTER_CONTINUE = 0,	/* go on (accept this step) */
	MILTER_REJECT,		/* reply holds a 5xx */
	MILTER_TEMPFAIL,	/* reply holds a 4xx */
	MILTER_DISCARD		/* say 250, drop the message */
};

struct milter_verdict {
	enum milter_action action;
	char reply[1024];	/* SMTP reply, lines joined by CRLF */
	char milter[128];	/* which filter decided, for the log */
};

#define MILTER_DEL_MAX	64	/* recipients deleted per message */

struct milter_result {
	struct milter_verdict v;
	int quarantine;		/* hold the message aside */
	char qreason[256];
	char *sender;		/* new reverse path (CHGFROM), or NULL */
	size_t ndeleted;
	char *deleted[MILTER_DEL_MAX];	/* addresses without <> */
};

typedef void milter_verdict_fn(void *arg, const struct milter_verdict *v);
typedef void milter_eom_fn(void *arg, const struct milter_result *r);

/* NULL when cfg has no milters. cfg is referenced. */
struct milter_sess *milter_sess_new(struct event_base *base,
    struct config *cfg, const char *ip, int v6, unsigned port);
void milter_sess_helo(struct milter_sess *ms, const char *helo);
void milter_sess_tls(struct milter_sess *ms, const char *version,
    const char *cipher);
void milter_sess_auth(struct milter_sess *ms, const char *user);
/* MAIL accepted by smtpd: a new transaction (nothing sent yet). */
void milter_sess_mail(struct milter_sess *ms, const char *sender);
/*
 * A recipient smtpd would accept. filtered: its domain uses milters.
 * Returns 0 when no filter needs asking (accept it), or 1 when fn will
 * give the verdict.
 */
int milter_sess_rcpt(struct milter_sess *ms, const char *rcpt, int filtered,
    milter_verdict_fn *fn, void *arg);
/* 1 if the current transaction goes through the filters. */
int milter_sess_filtering(const struct milter_sess *ms);
/* DATA accepted (filtering): the queue id for the macros. */
void milter_sess_data(struct milter_sess *ms, const char *queue_id);
/*
 * Message text as stored (CRLF lines, unstuffed). 0, or 1 when reading
 * must pause until the resume callback runs.
 */
int milter_sess_write(struct milter_sess *ms, const char *data, size_t len);
void milter_sess_set_resume(struct milter_sess *ms, void (*fn)(void *arg),
    void *arg);
/*
 * End of data: every filter answers; with an accepting verdict the
 * message (header changes applied) is written into put, then done runs.
 * The result is valid during the call only.
 */
void milter_sess_eom(struct milter_sess *ms, struct queue_put *put,
    milter_eom_fn *done, void *arg);
/* The transaction is over (committed, refused, RSET, QUIT). */
void milter_sess_end_tx(struct milter_sess *ms);
/* QUIT the filters (or keep their connections: milter_reuse) and free.
 * *ms set to NULL. */
void milter_sess_free(struct milter_sess **ms);
/* Close the kept filter connections (at exit). */
void milter_pool_free(void);

#endif
