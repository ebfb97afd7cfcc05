/*
 * odpull_private - what odpull's files share: options, the connection
 * (on the loop, client sides through smtpc), limits and the signal state.
 * Only pull/odpull*.c include it.
 */
#ifndef OD_ODPULL_PRIVATE_H
#define OD_ODPULL_PRIVATE_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "config.h"
#include "smtp_parse.h"
#include "tlspolicy.h"

#define LINE_MAX_IN	4096		/* a reply or command line */
#define DATA_BLOCK	(64 * 1024)	/* message text due per --timeout */


struct opts {
	char *server;		/* the provider being talked to now */
	struct strlist servers;	/* --server, repeated */
	int servers_cli;	/* a --server on the command line replaces the file's */
	int watch;
	long interval;		/* --interval: polling without XWAIT [5m] */
	char *user;
	char *password_file;
	char *password;
	struct strlist domains;
	char *deliver;
	int lmtp;
	int tls;		/* enum tlspolicy_mode: none, may, encrypt,
				 * verify, fingerprint */
	int tls_set;
	char *tls_fingerprint;	/* pins for tls = fingerprint */
	int deliver_tls;	/* the same for the local MTA [none] */
	char *deliver_fingerprint;
	char *ca_file;
	int timeout;
	int max_time;		/* --max-time: seconds per pull, 0 = none */
	int etrn;
	int verbose;
	char *hostname;
};

struct smtpc;
struct bufferevent;
struct event_base;

struct conn {
	const char *name;	/* "provider" / "local" for -v and errors */
	int timeout;
	int verbose;
	int fd;			/* for socket options; -1 closed */
	int dead;		/* unusable (or a wait was cut short) */
	int failed;		/* smtpc or the socket reported an error */
	int eof;		/* the peer closed (serving side) */
	int interruptible;	/* SIGTERM may end a wait on this connection */
	/* Deadlines (monotonic ms, 0 = none): the reply, command line or
	 * text block being read, and the whole pull; a peer trickling one
	 * byte every few seconds cannot stretch either. */
	long long until;
	long long pull_end;
	/* Client side (smtpc, command mode) or, after ATRN, serving side. */
	struct smtpc *sc;
	struct bufferevent *bev;
	int tls;		/* STARTTLS done and checked */
	char tls_version[16], tls_verified[16];
	/* waits */
	struct smtp_reply *want;	/* where the awaited reply goes */
	int got_reply;
	int connecting;		/* 1 connected, -1 failed */
	int connect_err;
	size_t seen;		/* input octets already looked at */
};

/* Counts of one pull (the reversed session). */
struct tally {
	unsigned messages, rcpts, refused, deferred, failed_msgs;
	unsigned long long bytes;
};

/* Shared between the odpull files (internal, not an interface). */
extern volatile sig_atomic_t stop_requested;	/* SIGTERM (--watch) */
extern sigset_t sig_open;	/* watch_all: the mask while waiting for children */
extern struct opts opt;		/* the options in force */
int stop_pending(void);
void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long long now_ms(void);
struct event_base *odpull_base(void);
void odpull_run(long long ms);
void conn_deadline(struct conn *c);
void conn_serve(struct conn *c);
int conn_connect(struct conn *c, const char *hostport, int defport);
void conn_close(struct conn *c);
void conn_drop(struct conn *c);
ssize_t conn_peek(struct conn *c, char *buf, size_t len);
void conn_consume(struct conn *c, size_t len);
int conn_write(struct conn *c, const char *data, size_t len);
int conn_printf(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
ssize_t conn_read_line(struct conn *c, char *out, size_t max, int *crlf_r);
int conn_reply(struct conn *c, struct smtp_reply *r);
const char *reply_text(const struct smtp_reply *r, char *buf, size_t size);
int odpull_tls_mode(const char *v);
int ehlo(struct conn *c, struct smtp_reply *r);
int provider_hello(struct conn *p, int defport, struct smtp_reply *caps,
    char *host, size_t hostsize, const char *who);
int atrn_domains(char *buf, size_t size);
SSL_CTX *side_ctx(int mode, char *err, size_t errlen);
int side_starttls(struct conn *c, struct smtp_reply *caps, SSL_CTX *ctx,
    const char *host, int mode, const char *pins, const char *opt_name);
int provider_tls(struct conn *p, struct smtp_reply *caps, SSL_CTX *ctx,
    const char *host);
int authenticate(struct conn *p, const struct smtp_reply *caps, int tls_on);
int reversed_session(struct conn *p, struct tally *t);
int watch_mode(void);

#endif
