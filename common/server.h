/*
 * server - the session core of the SMTP-like listeners (relay/smtpd and
 * pull/odmr): listening sockets, accept with the listener error callback
 * (out of descriptors: pause every listener for a second), admission
 * (connection limits in total and per address, the descriptor budget
 * shared by all listeners), the registry of live connections, per-command
 * and whole-session deadlines, the STARTTLS switch-over, and the deferred
 * free of sessions (never inside their own callbacks). Lines are read
 * with lineio, commands dispatched with cmdtable; each server keeps only
 * its protocol.
 *
 * All calls on the loop thread.
 */
#ifndef OD_SERVER_H
#define OD_SERVER_H

#include <stddef.h>
#include <time.h>

#include <event2/util.h>
#include <openssl/ssl.h>

struct bufferevent;
struct event_base;
struct fdbudget;
struct sockaddr;
struct server;
struct server_conn;

#define SERVER_IP_MAX	64

/* Who connected. */
struct server_peer {
	char ip[SERVER_IP_MAX];
	unsigned port;
	int v6;
};

/*
 * A connection was admitted: it holds a slot of the budget, fd is the
 * protocol's (it must call server_conn_new or close fd and call
 * server_release_slot). flags: the listener's (server_listen).
 */
typedef void server_start_fn(void *arg, evutil_socket_t fd,
    const struct server_peer *peer, int flags);

/* name: for the log ("smtpd", "odmr"). */
struct server *server_new(struct event_base *base, const char *name,
    server_start_fn *start, void *arg);
/* The shared descriptor budget (borrowed; NULL: none). */
void server_set_budget(struct server *srv, struct fdbudget *b);
struct fdbudget *server_budget(const struct server *srv);
/*
 * Connection limits (0: none). Sessions marked exempt do not count. The
 * refusal is "421 4.7.0 HOSTNAME Too many connections, try later" (the
 * hostname is copied). Call again on reload.
 */
void server_set_limits(struct server *srv, size_t max_total,
    size_t max_per_ip, const char *hostname);
/* Bind and listen on "addr:port" / "[v6]:port" (default_port when none);
 * flags are handed to start. 0, or -1 with err set. */
int server_listen(struct server *srv, const char *addr, int default_port,
    int flags, char *err, size_t errlen);
/* A connected socket from elsewhere (socket activation, tests): admitted
 * like an accepted one. fd is ours from now on. */
void server_adopt(struct server *srv, evutil_socket_t fd,
    const struct sockaddr *sa, int flags);
/* Give back the slot of an admitted connection that got no session. */
void server_release_slot(struct server *srv);
/*
 * Close the listeners and refuse new connections; done (may be NULL) runs
 * from the loop once no connection is left (after server_conn_free of the
 * last one).
 */
void server_shutdown(struct server *srv, void (*done)(void *arg), void *arg);
size_t server_count(const struct server *srv);
/* Connections in the order of the registry (newest first). */
struct server_conn *server_first(const struct server *srv);
void server_free(struct server **srvp);

/* ---- connections ---- */

/*
 * Register an admitted connection (it takes over the budget slot) for
 * owner, the protocol's session. timeout(owner) runs when the command
 * deadline passes (server_conn_arm).
 */
struct server_conn *server_conn_new(struct server *srv,
    const struct server_peer *peer, void *owner,
    void (*timeout)(void *owner));
struct server_conn *server_conn_next(const struct server_conn *c);
void *server_conn_owner(const struct server_conn *c);
/* Not counted against the connection limits (e.g. an XWAIT session). */
void server_conn_set_exempt(struct server_conn *c, int exempt);
/* The budget slot leaves with the descriptor (e.g. to a delivery, which
 * gives it back with fdbudget_put): 1 if the connection held one. */
int server_conn_give_slot(struct server_conn *c);
/* (Re)arm the command deadline to secs from now; 0: stop it. The
 * deadline moves only when a whole command has come: a client sending a
 * byte at a time cannot hold its slot. */
void server_conn_arm(struct server_conn *c, long secs);
/* Seconds since the connection was accepted (monotonic). */
long server_conn_age(const struct server_conn *c);
/*
 * The session is over: *bevp (may be NULL) is closed once its output is
 * written and set to NULL; c is unregistered (the budget slot is given
 * back) and freed; free_fn(ptr) runs from the loop afterwards, outside
 * every callback of the session. Nothing happens when *cp is NULL.
 */
void server_conn_free(struct server_conn **cp, struct bufferevent **bevp,
    void (*free_fn)(void *ptr), void *ptr);

/* ---- I/O helpers ---- */

/* Replies are piling up (the client does not read): stop reading. */
int server_out_full(struct bufferevent *bev, size_t max);

enum server_tls {
	SERVER_TLS_OK,		/* *bevp is the TLS bufferevent now */
	SERVER_TLS_UNAVAILABLE,	/* 454 sent, session goes on in plain text */
	SERVER_TLS_FAILED	/* 220 sent but no TLS: close the session */
};
/*
 * The STARTTLS switch-over after the command was accepted: input already
 * read is dropped (plaintext pipelined after STARTTLS must never be read
 * as if it came through TLS, CVE-2011-0411 class), then "220 2.0.0 Ready
 * to start TLS" and a TLS filter on *bevp (callbacks to be set by the
 * caller). opts: BEV_OPT_* of the new bufferevent.
 */
enum server_tls server_starttls(struct server_conn *c,
    struct bufferevent **bevp, SSL_CTX *ctx, int opts);

#endif
