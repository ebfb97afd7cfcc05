/*
 * odmr_private - what the ODMR listener's files share: the manager and
 * session structs, states and limits. Only pull/odmr.c and
 * pull/odmr_cmd.c include it; everyone else uses odmr.h.
 */
#ifndef OD_ODMR_PRIVATE_H
#define OD_ODMR_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>
#include <netinet/in.h>

#include <event2/util.h>
#include <openssl/ssl.h>

#include "lineio.h"
#include "odmr.h"
#include "passwd.h"
#include "server.h"

struct bufferevent;

#define ODMR_LINE_MAX		4096
#define ODMR_AUTH_LINE_MAX	12288
#define ODMR_PREAUTH_TIMEOUT	120	/* seconds: DoS guard before AUTH */
#define ODMR_MAX_DOMAINS	64
#define ODMR_RATE_SLOTS		64
#define ODMR_OUT_MAX		(64 * 1024)	/* stop reading above this */
#define ODMR_CLOSE_GRACE	10	/* seconds for a last reply to leave */
#define ODMR_RECHECK_INFLIGHT	64	/* reload: users asked at once */
#define ODMR_RECHECK_WAIT	10	/* seconds for the auth process's answer */

enum odmr_state {
	ODMR_INITIAL,
	ODMR_AUTH_EXCHANGE,	/* waiting for a SASL response line */
	ODMR_AUTHED,
	ODMR_DELAYED,		/* AUTH: waiting for the auth process */
	ODMR_WAITING,		/* XWAIT: until mail arrives or the wait ends */
	ODMR_CLOSING
};

struct odmr {
	struct event_base *base;
	struct config *cfg;
	struct queue *q;
	SSL_CTX *tls;
	struct authc *auth;		/* borrowed; NULL: AUTH gets 454 */
	struct server *srv;		/* listeners, limits, sessions */
	struct odmr_atrn_log *reversed;	/* ATRN deliveries running */
	struct util_rate_slot rate[ODMR_RATE_SLOTS];
	struct xwait *waiters;		/* XWAIT sessions by domain */
	/* Reload: logged-in sessions whose user the auth process is asked
	 * about again, a window at a time (the channel's queues are
	 * bounded; thousands of push customers may be waiting). */
	TAILQ_HEAD(, odmr_session) recheck;
	TAILQ_HEAD(, odmr_session) asked;	/* asked, oldest first */
	size_t rechecking;		/* in asked */
	struct event *recheck_ev;	/* asks the next ones, from the loop */
	struct event *asked_ev;		/* ends those not answered in time */
	unsigned reload_gen;		/* reloads so far */
};

struct odmr_session {
	struct odmr *o;
	struct server_conn *conn;	/* registry, limits, deadline */
	struct config *cfg;
	struct bufferevent *bev;
	enum odmr_state state;
	int tls_active;
	int implicit_tls;
	int helo_seen;
	struct lineio lines;	/* bounded command lines */
	unsigned errors;
	char ip[64];
	char *user;		/* authenticated user (any length), or NULL */
	char *domains;		/* the user's domains (split into domv) */
	char *domv[ODMR_MAX_DOMAINS];
	size_t ndomv;
	struct authc_req *sasl;	/* AUTH exchange in the auth process */
	struct xwait_entry *wait;	/* XWAIT registration */
	struct event *wait_ev;		/* odmr_wait_timeout */
	int woken;			/* XWAIT woken by an arrival */
	unsigned auth_gen;		/* o->reload_gen when AUTH started */
	struct authc_req *check;	/* reload: the auth process asked */
	int recheck_queued;		/* reload: in o->recheck */
	TAILQ_ENTRY(odmr_session) recheck_link;	/* recheck or asked */
	time_t asked_at;		/* monotonic seconds */
};

/* Reload: commands wait (reading stops) until the user is confirmed. */
#define odmr_checking(s)	((s)->check != NULL || (s)->recheck_queued)

/* Shared between the odmr files (internal, not an interface). */
void odmr_reply(struct odmr_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void odmr_close_when_flushed(struct odmr_session *s);
void odmr_write_cb(struct bufferevent *bev, void *arg);
void odmr_event_cb(struct bufferevent *bev, short what, void *arg);
void odmr_set_timeout(struct odmr_session *s);
void odmr_session_free(struct odmr_session *s);
void odmr_reversed_abort_all(struct odmr *o);
void odmr_wait_end(struct odmr_session *s);
void odmr_read_cb(struct bufferevent *bev, void *arg);
void odmr_recheck_queue(struct odmr_session *s);

#endif
