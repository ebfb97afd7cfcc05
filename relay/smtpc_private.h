/*
 * smtpc_private - what the SMTP client's files share: the session struct,
 * its states and limits. Only relay/smtpc.c and relay/smtpc_proto.c
 * include it; everyone else uses smtpc.h.
 */
#ifndef OD_SMTPC_PRIVATE_H
#define OD_SMTPC_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include "smtp_parse.h"
#include "smtpc.h"

#include <event2/util.h>

struct bufferevent;
struct evbuffer;

#define SMTPC_OUT_HIGH	(64 * 1024)	/* stop feeding the body above this */
#define SMTPC_OUT_LOW	(16 * 1024)	/* resume below this */
#define SMTPC_SLICE	(16 * 1024)	/* body bytes stuffed per step */
#define SMTPC_IN_MAX	(64 * 1024)	/* input buffered before we stop reading */

enum smtpc_state {
	S_GREETING,
	S_EHLO,
	S_HELO,
	S_STARTTLS,
	S_HANDSHAKE,
	S_RSET,
	S_TX,		/* replies to MAIL / RCPT / DATA */
	S_BODY,		/* streaming the message text */
	S_DOT,		/* waiting for the end-of-data reply(s) */
	S_DOT_DISCARD,	/* 354 with no recipient: "." sent, reply ignored */
	S_QUIT,
	S_IDLE,		/* probe: between questions, connection kept */
	S_CMD,		/* command mode: each reply goes to the caller */
	S_CLOSING,	/* result given; the QUIT goes, its reply awaited */
	S_DONE
};

enum rcpt_state {
	R_PENDING = 0,	/* to be tried in a next transaction */
	R_TX,		/* RCPT sent in this transaction, no reply yet */
	R_ACCEPTED,	/* RCPT 2xx in this transaction */
	R_RETRY,	/* 452 in this transaction */
	R_DONE		/* result given */
};

struct smtpc {
	struct event_base *base;
	struct bufferevent *bev;
	struct smtpc_source src;
	struct smtpc_cmd_cbs cmd;	/* command mode (SMTPC_COMMANDS) */
	int cmd_hold;		/* a reply was handed over: read no further
				 * until smtpc_expect */
	int cmd_eof;		/* closed with input still held */
	struct event *cmd_rd;	/* plain socket: smtpc reads it itself */
	int cmd_plain;		/* opened on a plain socket bufferevent */
	void *arg;
	char *helo;
	char *peer;
	unsigned flags;
	SSL_CTX *tls;
	struct tlspolicy *pol;	/* NULL: may */
	struct smtpc_timeouts to;
	enum smtpc_state state;
	int busy;
	int dead;
	int silent;		/* smtpc_free: no more callbacks */
	struct event *deadline;	/* the reply (or the text) awaited now */
	uint64_t started;	/* monotonic ms at smtpc_start */
	uint64_t due_since;	/* SMTPC_QUICKACK: waiting for due replies */
	int quickack;		/* a reply came late: ACK at once from now on */

	/* reply being read (done: none yet), and the last one's text */
	struct smtp_reply reply;
	size_t rbytes;		/* octets of the reply being read */
	char rtext[SMTPC_MAX_TEXT];

	/* server capabilities (last EHLO) */
	int esmtp;
	int cap_pipelining, cap_8bit, cap_utf8, cap_dsn, cap_starttls, cap_size;
	uint64_t size_max;
	int tls_done;

	/* current message */
	int have_msg;
	struct smtpc_msg msg;
	unsigned char *rst;	/* enum rcpt_state per rcpt */
	size_t rst_alloc;
	int msg_counted;

	/* current transaction */
	size_t *tx;		/* rcpt indices, in RCPT order */
	size_t ntx;
	size_t tx_alloc;
	size_t tx_sent;		/* commands written: MAIL, RCPT x ntx, DATA */
	size_t tx_replied;
	int pipelined;
	int mail_ok;
	size_t *acc;		/* accepted rcpts, in order (LMTP replies) */
	size_t nacc;
	size_t lmtp_next;
	int progress;		/* some rcpt got a final 2xx */
	char retry_text[SMTPC_MAX_TEXT];
	int need_rset;
	int idle_wanted;	/* the source said "nothing now" (next() == 2) */

	/* body */
	int body_is_open;
	const unsigned char *chunk;
	size_t chunk_len, chunk_off;
	int bol;
	unsigned char last[2];
	uint64_t body_len;
	int body_eof;

	struct smtpc_stats st;
	int draining;		/* failing what is left: no new messages wanted */
	int quit_queued;	/* smtpc_goodbye: QUIT written after a refusal */
	int closing;		/* on the closing list (S_CLOSING) */
	LIST_ENTRY(smtpc) close_link;
};

/* Shared between the smtpc files (internal, not an interface). */
extern const char *const smtpc_state_names[];	/* by enum smtpc_state */
uint64_t smtpc_now_ms(void);
int smtpc_safe(const char *p);
void smtpc_deadline(struct smtpc *s, uint64_t ms);
void smtpc_set_timeout(struct smtpc *s, unsigned rd_ms);
void smtpc_send(struct smtpc *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void smtpc_result(struct smtpc *s, size_t i, int code, const char *text);
void smtpc_body_close(struct smtpc *s);
void smtpc_msg_end(struct smtpc *s);
void smtpc_msg_all(struct smtpc *s, int code, const char *text);
int smtpc_load_msg(struct smtpc *s);
void smtpc_finish(struct smtpc *s);
void smtpc_fail(struct smtpc *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void smtpc_quit(struct smtpc *s);
void smtpc_goodbye(struct smtpc *s);
void smtpc_ehlo(struct smtpc *s);
void smtpc_starttls(struct smtpc *s);
void smtpc_cmd_reply(struct smtpc *s);
int smtpc_cmd_tls_done(struct smtpc *s);
void smtpc_cmd_fail(struct smtpc *s, const char *why);
void smtpc_setup_bev(struct smtpc *s);
int smtpc_tls_required(const struct smtpc *s);
void smtpc_next_tx(struct smtpc *s);
void smtpc_send_dot(struct smtpc *s);
void smtpc_pump(struct smtpc *s);
void smtpc_line(struct smtpc *s, const char *line, size_t len);
void smtpc_readcb(struct bufferevent *bev, void *arg);
void smtpc_writecb(struct bufferevent *bev, void *arg);
void smtpc_leave(struct smtpc *s);
void smtpc_destroy(struct smtpc *s);
void smtpc_deadline_cb(evutil_socket_t fd, short what, void *arg);
void smtpc_eventcb(struct bufferevent *bev, short what, void *arg);

#endif
