/*
 * bounce - RFC 3464 delivery status notifications (multipart/report).
 *
 * Pure formatting: builds the envelope and body of a DSN about some
 * recipients of a queued message; the caller commits it with queue_update()
 * in the same transaction as the recipients' state change.
 */
#ifndef OD_BOUNCE_H
#define OD_BOUNCE_H

#include <stddef.h>
#include <time.h>

#include "queue.h"

enum bounce_action {
	BOUNCE_FAILED = 0,
	BOUNCE_DELAYED,
	BOUNCE_DELIVERED,
	BOUNCE_RELAYED
};

struct bounce_rcpt {
	size_t index;			/* into orig->rcpts */
	enum bounce_action action;
	const char *status;		/* "5.1.1"; NULL: derived from action */
	const char *remote_mta;		/* host name or NULL */
	const char *diagnostic;		/* remote reply "550 5.1.1 ...", or NULL */
};

/*
 * Whether the sender asked to hear about `action` for recipient r
 * (RFC 3461 4.1: no NOTIFY = failures only; NEVER = nothing), and never
 * for the null sender or about a DSN.
 */
int bounce_wanted(const struct queue_envelope *orig, const struct queue_rcpt *r,
    enum bounce_action action);

/*
 * Build a DSN about rcpts of orig. body_reader (may be NULL) supplies the
 * original message for RET=FULL (or its header for RET=HDRS and by
 * default); at most max_return octets of it are included. On success
 * returns 0, fills *env_r (null sender, one recipient: orig's sender; the
 * caller frees the strings with bounce_envelope_clear) and *body_r
 * (malloc'd, CRLF lines). Returns -1 if no DSN is due (null sender, DSN
 * about a DSN, nothing wanted).
 */
int bounce_build(const char *hostname, const struct queue_envelope *orig,
    const struct bounce_rcpt *rcpts, size_t nrcpts, struct queue *q,
    size_t max_return, time_t now, struct queue_envelope *env_r,
    char **body_r, size_t *len_r);
void bounce_envelope_clear(struct queue_envelope *env);
/* The domain part of an address, lower-cased, into buf ("" if none). */
const char *bounce_addr_domain(const char *addr, char *buf, size_t size);

struct config;
/*
 * Address a built notice like mail received for its recipient: when the
 * sender's domain is one we hold mail for (directly or as a subdomain),
 * the notice is indexed under that configured domain and, for hold = yes,
 * waits for ETRN/ATRN like the customer's other mail.
 */
void bounce_route(struct queue_envelope *benv, const struct config *cfg);

#endif
