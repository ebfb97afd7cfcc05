/*
 * smtpd_private - what the SMTP server's files share: the session,
 * transaction and manager structs, limits and states. Not an interface:
 * only relay/smtpd*.c include it; everyone else uses smtpd.h.
 */
#ifndef OD_SMTPD_PRIVATE_H
#define OD_SMTPD_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <netinet/in.h>

#include <event2/util.h>
#include <openssl/ssl.h>

#include "lineio.h"
#include "passwd.h"
#include "server.h"
#include "queue.h"
#include "smtp_parse.h"
#include "smtpd.h"

#define SMTPD_LINE_MAX		2048	/* command line, CRLF included (spec) */
#define SMTPD_AUTH_LINE_MAX	12288	/* AUTH data lines (RFC 4954 4) */
#define SMTPD_READ_HIWAT	(64 * 1024)	/* bounded input buffer */
#define SMTPD_OUT_MAX		(64 * 1024)	/* stop reading above this */
#define SMTPD_DATA_CHUNK	(16 * 1024)	/* DATA scan/write unit */
#define SMTPD_HELO_MAX		255

/* Same bit values in both modules; checked here once. */
_Static_assert(SMTP_NOTIFY_NEVER == QUEUE_NOTIFY_NEVER &&
    SMTP_NOTIFY_SUCCESS == QUEUE_NOTIFY_SUCCESS &&
    SMTP_NOTIFY_FAILURE == QUEUE_NOTIFY_FAILURE &&
    SMTP_NOTIFY_DELAY == QUEUE_NOTIFY_DELAY, "notify bits");
_Static_assert(SMTP_RET_FULL == QUEUE_RET_FULL &&
    SMTP_RET_HDRS == QUEUE_RET_HDRS, "ret values");

enum smtpd_state {
	SMTPD_ST_GREETED,	/* before HELO/EHLO */
	SMTPD_ST_HELO,		/* between transactions */
	SMTPD_ST_MAIL,		/* MAIL accepted, RCPTs being collected */
	SMTPD_ST_DATA,		/* reading message text */
	SMTPD_ST_COMMIT,	/* waiting for the queue's commit callback */
	SMTPD_ST_CLOSING	/* flushing the last reply, then free */
};

/* DATA scanner states (see smtpd_data_scan). */
enum smtpd_ds {
	SMTPD_DS_BOL,		/* at the start of a line */
	SMTPD_DS_MID,		/* inside a line */
	SMTPD_DS_CR,		/* CR seen, LF must follow */
	SMTPD_DS_DOT,		/* "." at the start of a line */
	SMTPD_DS_DOTCR		/* ".\r" at the start of a line */
};

/* Why a message in DATA will be refused at its end. */
#define SMTPD_BAD_LINE	0x1	/* bare CR, bare LF or NUL */
#define SMTPD_BAD_SIZE	0x2	/* over max_message_size */
#define SMTPD_BAD_LOOP	0x4	/* too many Received headers */
#define SMTPD_BAD_QUEUE	0x8	/* a chunk write failed */

/* One mail transaction; owned by its session. */
struct smtpd_tx {
	char *sender;			/* reverse path, "" for <> */
	struct smtp_mail_params mp;
	struct queue_rcpt *rcpts;	/* strings owned here */
	size_t nrcpts, rcap;
	struct queue_put *put;		/* open body, or NULL */
	char id[QUEUE_ID_LEN + 1];
	enum smtpd_ds ds;
	int in_headers;
	size_t line_len;		/* octets of the current line so far */
	char hdr[10];			/* start of the current line */
	unsigned nreceived;
	uint64_t size;			/* text octets (unstuffed, CRLF) */
	size_t received_len;		/* our Received header, stored first */
	unsigned bad;			/* SMTPD_BAD_* */
	int qerr;			/* queue error for SMTPD_BAD_QUEUE */
	struct recip_wait *rcpt_wait;	/* RCPT verdict pending (probe) */
	struct queue_rcpt pend;		/* the RCPT waiting for it */
	const struct config_domain *pend_dom;
};

struct smtpd_session {
	struct smtpd *s;
	struct server_conn *conn;	/* registry, limits, deadline */
	uint64_t sid;
	struct config *cfg;		/* referenced */
	SSL_CTX *tls;			/* referenced, or NULL */
	struct bufferevent *bev;	/* NULL once the peer is gone */
	char ip[INET6_ADDRSTRLEN];
	int v6;
	char helo[SMTPD_HELO_MAX + 1];
	int esmtp;
	int tls_on;
	struct lineio lines;		/* bounded command lines */
	int paused;			/* queue backpressure: not reading */
	int in_input;			/* inside smtpd_session_input */
	enum smtpd_state state;
	unsigned errors;
	struct smtpd_tx *tx;
	struct authc_req *sasl;		/* AUTH exchange in progress */
	size_t data_bytes;		/* DATA octets since the deadline moved */
	char user[PASSWD_NAME_MAX + 1];	/* authenticated user, or "" */
	struct dnsbl_check *dnsbl;	/* started at connect, or NULL */
	struct milter_sess *milter;	/* NULL: no milters configured */
	int milter_wait;		/* a RCPT waits for the milters */
	struct queue_rcpt mrcpt;	/* that RCPT, added if they agree */
	unsigned port;
};

struct smtpd {
	struct event_base *base;
	struct config *cfg;		/* referenced */
	struct queue *q;
	SSL_CTX *tls;			/* referenced, or NULL */
	struct server *srv;		/* listeners, limits, sessions */
	smtpd_etrn_fn *etrn_fn;
	void *etrn_arg;
	void (*added_fn)(void *arg, const char *id);
	void *added_arg;
	struct authc *auth;		/* borrowed; NULL: no AUTH */
	struct recip *recip;		/* borrowed; NULL: lists only */
	struct dnsbl *dnsbl;		/* borrowed; NULL: no DNSBL */
	uint64_t next_sid;
	int shutting_down;
};

/* Shared between the smtpd files (internal, not an interface). */
extern const char *const smtpd_state_names[];	/* by enum smtpd_state */
void smtpd_deadline_arm(struct smtpd_session *ss);
void smtpd_deadline_cb(void *arg);
void smtpd_reply(struct smtpd_session *ss, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void smtpd_enter_state(struct smtpd_session *ss, enum smtpd_state st);
void smtpd_session_close(struct smtpd_session *ss);
int smtpd_session_reap(struct smtpd_session *ss);
void smtpd_tx_free(struct smtpd_tx **txp);
void smtpd_tx_reset(struct smtpd_session *ss);
void smtpd_received(struct smtpd_session *ss, char *buf, size_t size);
void smtpd_resume(void *arg);
int smtpd_data_scan(struct smtpd_session *ss);
const char *smtpd_reply_line1(char *buf, size_t size, const char *reply);
void smtpd_mrcpt_clear(struct smtpd_session *ss);
void smtpd_dnsbl_done(void *arg);
void smtpd_session_input(struct smtpd_session *ss);
void smtpd_session_lost(struct smtpd_session *ss);
void smtpd_session_setup_bev(struct smtpd_session *ss);
void smtpd_session_free(struct smtpd_session *ss);

#endif
