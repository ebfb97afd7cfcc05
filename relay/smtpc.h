/*
 * smtpc - the SMTP (and LMTP) client session used for every delivery:
 * outbound after ETRN and retries, the reversed ATRN session, and, in
 * command mode, odpull's two client sides (the provider before ATRN and
 * the relay to the local MTA).
 *
 * A session runs on a connected bufferevent it is given, starting at "wait
 * for the 220". Messages come from a source (a struct of callbacks), and
 * every recipient gets exactly one result through the source: a reply code
 * (2xx sent, 4xx deferred, 5xx bounced) and a reply text. Replies the
 * server never gave (connection lost, timeout, local checks such as SIZE)
 * are synthesized with a fitting code and "X.Y.Z text".
 *
 * All calls on the loop thread.
 */
#ifndef OD_SMTPC_H
#define OD_SMTPC_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct event_base;
struct bufferevent;
struct smtpc;
struct tlspolicy;

/* Session flags. */
#define SMTPC_REVERSED		0x1	/* ATRN: no STARTTLS, no BDAT */
#define SMTPC_ONE_LINE_WRITES	0x2	/* implicit TLS pump: no pipelining,
					 * end-of-data in its own write */
#define SMTPC_LMTP		0x4	/* LHLO, one reply per rcpt after DATA */
#define SMTPC_NO_PIPELINING	0x8	/* never pipeline (tests, odd peers) */
#define SMTPC_QUICKACK		0x10	/* ACK each reply at once (TCP_QUICKACK):
					 * for peers that write reply lines one
					 * by one without TCP_NODELAY */
#define SMTPC_PROBE		0x20	/* recipient probes: MAIL, RCPT, then
					 * RSET; each RCPT reply is the result */
#define SMTPC_COMMANDS		0x40	/* command mode (smtpc_open) */

/* Message flags (same values as QUEUE_F_*). */
#define SMTPC_F_8BITMIME	0x1
#define SMTPC_F_SMTPUTF8	0x2

/* DSN NOTIFY bits (same values as QUEUE_NOTIFY_*). */
#define SMTPC_NOTIFY_NEVER	0x1
#define SMTPC_NOTIFY_SUCCESS	0x2
#define SMTPC_NOTIFY_FAILURE	0x4
#define SMTPC_NOTIFY_DELAY	0x8

/* RET (same values as QUEUE_RET_*). */
#define SMTPC_RET_NONE	0
#define SMTPC_RET_FULL	1
#define SMTPC_RET_HDRS	2

/* Limits of what the server may send. */
#define SMTPC_MAX_LINE		4096	/* octets per reply line, CRLF included */
#define SMTPC_MAX_LINES		100	/* lines per reply */
#define SMTPC_MAX_REPLY		(64 * 1024)	/* octets per reply */
#define SMTPC_MAX_TEXT		512	/* reply text kept for results/logs */
#define SMTPC_MAX_RCPTS		100	/* recipients per transaction */

struct smtpc_rcpt {
	const char *addr;	/* without <> */
	const char *orcpt;	/* DSN ORCPT "type;xtext", or NULL */
	unsigned notify;	/* SMTPC_NOTIFY_*, 0 = not given */
};

/* A message, as the source describes it. Borrowed until msg_done. */
struct smtpc_msg {
	const char *sender;	/* "" = null sender */
	const char *envid;	/* DSN ENVID xtext, or NULL */
	int ret;		/* SMTPC_RET_* */
	unsigned flags;		/* SMTPC_F_* */
	uint64_t size;		/* body octets (for SIZE=) */
	const struct smtpc_rcpt *rcpts;
	size_t nrcpts;
};

struct smtpc_stats {
	unsigned messages;	/* messages with at least one rcpt accepted */
	unsigned rcpts_ok, rcpts_temp, rcpts_perm;
	uint64_t bytes;		/* body octets sent (after stuffing) */
	int ok;			/* ended normally: QUIT sent after the last message */
	int tls;		/* STARTTLS done */
	char tls_version[16];	/* "TLSv1.3" once done, else "" */
	/* What the TLS policy established: "no", "ca", "fingerprint",
	 * "dane", "sts"; "" without TLS. */
	char verified[16];
	/* For metrics: "clear", "encrypted", "verified" (any of the above
	 * but "no"), "missing" (required, not offered: 4.7.4), "failed"
	 * (handshake or policy check failed: 4.7.5); "" before it was
	 * decided. */
	const char *tls_result;
	char reason[256];	/* how it ended, for the log */
};

struct smtpc_source {
	/* Next message: fill *m and return 1, or 0 when there is no more
	 * (QUIT). 2: none now, keep the connection (idle until smtpc_wake). */
	int (*next)(void *arg, struct smtpc_msg *m);
	/*
	 * Body of the current message, from its start (called for each DATA:
	 * a message may be sent in several transactions). Bytes as stored:
	 * CRLF lines, not dot-stuffed. body_read: 1 with data (borrowed until
	 * the next call), 0 at the end, -1 on error (the transaction is then
	 * abandoned: its recipients get 451 4.3.0). open/close may be NULL.
	 */
	int (*body_open)(void *arg);
	int (*body_read)(void *arg, const unsigned char **data, size_t *len);
	void (*body_close)(void *arg);
	/* The one result for recipient i of the current message. */
	void (*rcpt_result)(void *arg, size_t i, int code, const char *text);
	/* Every recipient of the current message has its result. */
	void (*msg_done)(void *arg);
	/*
	 * The server's own reply to RCPT for recipient i (before any
	 * result; a 2xx here may still end in a DATA failure). Never
	 * called for synthesized replies. May be NULL.
	 */
	void (*rcpt_reply)(void *arg, size_t i, int code, const char *text);
	/* The session ended; the smtpc frees itself (and the bufferevent)
	 * once this returns, or, after a refusal it answered with QUIT, once
	 * the QUIT has gone and its reply or the close came (at most
	 * SMTPC_CLOSE_WAIT ms; see smtpc_close_all). Unfinished messages
	 * got their results first. */
	void (*done)(void *arg, const struct smtpc_stats *st);
};

/*
 * RFC 5321 4.5.3.2 client timeouts, milliseconds. Each is a deadline, not
 * an idle timeout: a reply must arrive whole within it, however the server
 * trickles its bytes.
 */
struct smtpc_timeouts {
	unsigned greeting;	/* 5 min (and the TLS handshake) */
	unsigned ehlo;		/* 5 min (also RSET, STARTTLS, QUIT) */
	unsigned mail;		/* 5 min */
	unsigned rcpt;		/* 5 min */
	unsigned data;		/* 2 min: the 354 */
	unsigned block;		/* 3 min: each data block's send */
	unsigned dot;		/* 10 min: the reply to end-of-data */
	/* The whole message text must be taken within block plus its size
	 * at this rate (octets per second; 0: block per write only). */
	unsigned min_rate;	/* 500 */
	/* No new message is started after this long on one connection; the
	 * rest get 451 4.4.2 and wait for the next attempt (0: no limit). */
	unsigned session;	/* 1 hour */
};
void smtpc_timeouts_default(struct smtpc_timeouts *t);

struct smtpc_params {
	const char *helo;	/* our name for EHLO/HELO/LHLO */
	const char *peer;	/* server host name: SNI, logs; may be NULL */
	unsigned flags;		/* SMTPC_* */
	SSL_CTX *tls;		/* STARTTLS when offered; NULL: never */
	/* What TLS must achieve (copied); NULL: tls = may. A failure
	 * defers every recipient (451 4.7.4 / 4.7.5), never clear text. */
	const struct tlspolicy *policy;
	const struct smtpc_timeouts *timeouts;	/* NULL: defaults */
};

/*
 * Start a session on bev (connected; ownership passes to smtpc, its
 * callbacks are replaced). p and src are copied; strings in p are copied.
 * Nothing is called back before this returns.
 */
struct smtpc *smtpc_start(struct event_base *base, struct bufferevent *bev,
    const struct smtpc_params *p, const struct smtpc_source *src, void *arg);
/* Abort at once: no callback, the connection is closed. *s = NULL. */
void smtpc_free(struct smtpc **s);
/*
 * Sessions on base that are still saying goodbye (a QUIT after a refused
 * greeting, EHLO or TLS, its reply awaited; no callbacks left): closed
 * now. Call before event_base_free.
 */
void smtpc_close_all(struct event_base *base);
#define SMTPC_CLOSE_WAIT	3000	/* ms for the QUIT to go and be answered */
/* An idle session (next() said 2) asks the source again. */
void smtpc_wake(struct smtpc *s);
/* 1 if the server's last EHLO offered DSN (NOTIFY/ORCPT were passed on). */
int smtpc_peer_has_dsn(const struct smtpc *s);
/* 1 once the session fails what is left (connection lost, time limit):
 * a source should then hand out no messages it has not taken yet. */
int smtpc_draining(const struct smtpc *s);

/*
 * ---- command mode: the caller's dialogue (odpull) ----
 *
 * The same client (reply reader, limits, STARTTLS switch-over) without the
 * delivery state machine: the caller writes each command and gets each
 * whole reply back, for dialogues smtpc does not know (AUTH, ATRN, XWAIT,
 * ETRN) or a relay command by command. Replies go through smtp_parse's
 * reader (at most SMTPC_MAX_LINE octets a line, SMTPC_MAX_LINES lines).
 * The caller bounds its waits (no deadline of smtpc's own but the TLS
 * handshake's).
 */
struct smtp_reply;
struct smtpc_cmd_cbs {
	/* A whole reply (the greeting, or a command's); borrowed. */
	void (*reply)(void *arg, const struct smtp_reply *r);
	/* STARTTLS done and checked against the policy (smtpc_tls). */
	void (*tls)(void *arg, const char *version, const char *verified);
	/* The connection is unusable: closed, malformed or over-long reply,
	 * TLS failure. No callback follows; smtpc_free it. */
	void (*error)(void *arg, const char *why);
};
/* Start command mode on a connected bev (ownership passes to smtpc); the
 * first reply awaited is the greeting. peer: SNI and name checks. */
struct smtpc *smtpc_open(struct event_base *base, struct bufferevent *bev,
    const char *peer, const struct smtpc_cmd_cbs *cbs, void *arg);
/* The caller waits for the next reply: one reply callback per call (a
 * reply read ahead is held until then). */
void smtpc_expect(struct smtpc *s);
/* Write one command line (CRLF added). */
void smtpc_command(struct smtpc *s, const char *line, size_t len);
/* Write octets as they are (message text being relayed). */
void smtpc_write(struct smtpc *s, const void *data, size_t len);
/* 1 once the connection is closed or failed (no more replies). */
int smtpc_closed(const struct smtpc *s);
/* Octets written and not yet sent. */
size_t smtpc_unsent(const struct smtpc *s);
/*
 * After a 220 to STARTTLS: the handshake (ctx; the policy is copied, NULL
 * for may), then the tls or the error callback. -1 at once if the server
 * sent anything after its 220 (that would be plaintext injected into the
 * TLS session), or TLS cannot start.
 */
int smtpc_tls(struct smtpc *s, SSL_CTX *ctx, const struct tlspolicy *pol);
/* Take the connection back (ODMR: after ATRN the roles reverse); unread
 * input stays in it. Frees the smtpc; *s = NULL. Not inside a callback. */
struct bufferevent *smtpc_detach(struct smtpc **s);

/* ---- helpers, exposed for tests and callers ---- */

/* 2xx: 0 (done), 4xx: 1 (temporary), 5xx/other: 2 (permanent). */
#define SMTPC_CLASS_OK	0
#define SMTPC_CLASS_TEMP	1
#define SMTPC_CLASS_PERM	2
int smtpc_code_class(int code);
/*
 * The enhanced status code (RFC 3463) at the start of a reply's text
 * ("550 5.1.1 text" -> "5.1.1"), into buf; if there is none, one derived
 * from the code ("4.0.0" / "5.0.0" / "2.0.0"). Returns buf.
 */
const char *smtpc_status(int code, const char *text, char *buf, size_t size);

#endif
