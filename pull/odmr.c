/*
 * odmr - ODMR listener and sessions (RFC 2645): session life (replies,
 * deadlines, close after flush, free) on the session core (common/server:
 * listeners, limits, budget, registry). The commands are in odmr_cmd.c.
 *
 * States: INITIAL (EHLO, STARTTLS, AUTH, QUIT, NOOP, RSET) -> AUTHED (ATRN,
 * XWAIT, EHLO, QUIT, NOOP, RSET; XWAIT may go to WAITING and back, see
 * odmr_cmd_xwait) -> REVERSED (the bufferevent now belongs to
 * relay/deliver). ATRN is answered at once with one line (fetchmail reads
 * one line and waits only 300 s); the mail is gathered before the answer
 * with cheap index reads, and sent after the customer's 220.
 *
 * Trust: everything read here comes from an unauthenticated peer: lines
 * are bounded (4096 octets, 12288 for SASL data), failures are slowed and
 * counted per address, and the 450 text never says which domain failed.
 */
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "authc.h"
#include "authd.h"
#include "authproto.h"
#include "lineio.h"
#include "config.h"
#include "deliver.h"
#include "fdbudget.h"
#include "log.h"
#include "metrics.h"
#include "odmr.h"
#include "domstate.h"
#include "queue.h"
#include "server.h"
#include "sasl.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"
#include "xwait.h"
#include "odmr_private.h"

static void odmr_recheck_forget(struct odmr_session *s);
static void odmr_recheck_pump(evutil_socket_t fd, short what, void *arg);
static void odmr_asked_timeout(evutil_socket_t fd, short what, void *arg);

void odmr_reply(struct odmr_session *s, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	va_list ap;

	va_start(ap, fmt);
	lineio_vputf(out, fmt, ap);
	va_end(ap);
}

/* Close once the reply is written. */
void odmr_close_when_flushed(struct odmr_session *s)
{
	struct timeval grace = { ODMR_CLOSE_GRACE, 0 };

	odmr_wait_end(s);
	odmr_recheck_forget(s);
	s->state = ODMR_CLOSING;
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		odmr_session_free(s);
		return;
	}
	/* A peer that does not read must not keep the slot: the deadline
	 * frees a closing session after the grace period. */
	server_conn_arm(s->conn, grace.tv_sec);
}

void odmr_write_cb(struct bufferevent *bev, void *arg)
{
	struct odmr_session *s = arg;

	if (s->state == ODMR_CLOSING) {
		odmr_session_free(s);
		return;
	}
	/* Replies drained below the limit: read the pipelined rest. */
	if (s->state != ODMR_DELAYED && !odmr_checking(s) && s->bev == bev &&
	    !(bufferevent_get_enabled(bev) & EV_READ)) {
		bufferevent_enable(bev, EV_READ);
		odmr_read_cb(bev, s);
	}
}

void odmr_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct odmr_session *s = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;		/* TLS handshake done (odmrs, STARTTLS) */
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->state != ODMR_CLOSING) {
			log_info("odmr: client=[%s], user=%s, timeout", s->ip,
			    s->user != NULL ? s->user : "-");
			odmr_reply(s, "421 4.4.2 %s Timeout, closing", s->cfg->hostname);
			odmr_close_when_flushed(s);
			return;
		}
	}
	if (what & BEV_EVENT_ERROR)
		log_debug("odmr: client=[%s], connection error", s->ip);
	odmr_session_free(s);
}

void odmr_set_timeout(struct odmr_session *s)
{
	struct timeval tv = { s->state == ODMR_AUTHED ? s->cfg->smtp_timeout :
	    ODMR_PREAUTH_TIMEOUT, 0 };

	if (s->state == ODMR_WAITING) {
		/* Exempt from smtp_timeout: odmr_wait_timeout rules. */
		bufferevent_set_timeouts(s->bev, NULL, NULL);
		server_conn_arm(s->conn, 0);
		return;
	}
	if (s->state != ODMR_AUTHED && s->cfg->smtp_timeout < tv.tv_sec)
		tv.tv_sec = s->cfg->smtp_timeout;
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	/* The read timeout restarts on every byte; this one only when a
	 * whole line has come, so a trickling client is timed out too. */
	server_conn_arm(s->conn, tv.tv_sec);
}

static void odmr_deadline_cb(void *arg)
{
	struct odmr_session *s = arg;

	if (s->state == ODMR_CLOSING || s->bev == NULL) {
		if (s->state == ODMR_CLOSING)
			odmr_session_free(s);
		return;
	}
	if (s->state == ODMR_DELAYED) {
		odmr_set_timeout(s);
		return;
	}
	odmr_event_cb(s->bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING, s);
}

/* Idempotent; the memory goes from the loop, after every callback. */
void odmr_session_free(struct odmr_session *s)
{
	if (s->conn == NULL)
		return;
	odmr_wait_end(s);
	odmr_recheck_forget(s);
	if (s->wait_ev != NULL)
		event_free(s->wait_ev);
	s->wait_ev = NULL;
	authc_cancel(&s->sasl);
	config_unref(&s->cfg);
	free(s->user);
	free(s->domains);
	s->user = s->domains = NULL;
	server_conn_free(&s->conn, &s->bev, free, s);
}

/* ---- listener ---- */

/* The session core admitted a connection (it holds a budget slot). */
static void odmr_start(void *arg, evutil_socket_t fd,
    const struct server_peer *peer, int implicit_tls)
{
	struct odmr *o = arg;
	struct odmr_session *s;
	struct bufferevent *bev;

	if (implicit_tls) {
		SSL *ssl = o->tls ? SSL_new(o->tls) : NULL;

		if (ssl == NULL) {
			evutil_closesocket(fd);
			server_release_slot(o->srv);
			return;
		}
		bev = bufferevent_openssl_socket_new(o->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	} else {
		bev = bufferevent_socket_new(o->base, fd,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	}
	if (bev == NULL) {
		evutil_closesocket(fd);
		server_release_slot(o->srv);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->o = o;
	s->conn = server_conn_new(o->srv, peer, s, odmr_deadline_cb);
	s->cfg = config_ref(o->cfg);
	s->bev = bev;
	s->implicit_tls = implicit_tls;
	s->tls_active = implicit_tls;
	util_strlcpy(s->ip, peer->ip, sizeof(s->ip));
	log_debug("odmr: connect from [%s]%s", s->ip, implicit_tls ? " (TLS)" : "");
	bufferevent_setcb(bev, odmr_read_cb, odmr_write_cb, odmr_event_cb, s);
	odmr_set_timeout(s);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	odmr_reply(s, "220 %s ESMTP odrelay ODMR service", s->cfg->hostname);
}

int odmr_adopt(struct odmr *o, int fd, const struct sockaddr *sa,
    int implicit_tls)
{
	server_adopt(o->srv, fd, sa, implicit_tls);
	return 0;
}

struct odmr *odmr_new(struct event_base *base, struct config *cfg,
    struct queue *q, SSL_CTX *tls, char *err, size_t errlen)
{
	struct odmr *o;

	(void)err;
	(void)errlen;
	o = xcalloc(1, sizeof(*o));
	o->base = base;
	o->cfg = config_ref(cfg);
	o->q = q;
	o->tls = tls;
	o->waiters = xwait_new();
	TAILQ_INIT(&o->recheck);
	TAILQ_INIT(&o->asked);
	o->recheck_ev = event_new(base, -1, 0, odmr_recheck_pump, o);
	o->asked_ev = evtimer_new(base, odmr_asked_timeout, o);
	o->srv = server_new(base, "odmr", odmr_start, o);
	server_set_limits(o->srv, cfg->max_connections,
	    cfg->max_connections_per_ip, cfg->hostname);
	return o;
}

void odmr_set_budget(struct odmr *o, struct fdbudget *b)
{
	server_set_budget(o->srv, b);
}

void odmr_set_auth(struct odmr *o, struct authc *auth)
{
	o->auth = auth;
}

int odmr_listen(struct odmr *o, const char *addr, int implicit_tls,
    char *err, size_t errlen)
{
	if (implicit_tls && o->tls == NULL) {
		snprintf(err, errlen, "odmrs_listen needs tls_cert_file and tls_key_file");
		return -1;
	}
	if (server_listen(o->srv, addr, 366, implicit_tls, err, errlen) < 0)
		return -1;
	log_info("odmr: listening on %s%s", addr, implicit_tls ? " (TLS)" : "");
	return 0;
}

/* ---- reload: keep the sessions whose user still has its domains ---- */

static time_t odmr_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Forget a pending re-check (the session ends or is asked again). */
static void odmr_recheck_forget(struct odmr_session *s)
{
	struct odmr *o = s->o;

	if (s->recheck_queued) {
		TAILQ_REMOVE(&o->recheck, s, recheck_link);
		s->recheck_queued = 0;
	}
	if (s->check != NULL) {
		authc_cancel(&s->check);
		TAILQ_REMOVE(&o->asked, s, recheck_link);
		o->rechecking--;
		/* Its place in the window is free: ask the next one. */
		if (!TAILQ_EMPTY(&o->recheck))
			event_active(o->recheck_ev, EV_TIMEOUT, 0);
	}
}

/* Why the new configuration (o->cfg) no longer serves s, or NULL. */
static const char *odmr_unfit(const struct odmr_session *s, char *buf,
    size_t size)
{
	const struct config *cfg = s->o->cfg;

	if (s->implicit_tls ? cfg->odmrs_listen.n == 0 :
	    cfg->odmr_listen.n == 0)
		return s->implicit_tls ? "odmrs_listen removed" :
		    "odmr_listen removed";
	for (size_t i = 0; i < s->ndomv; i++) {
		if (config_find_domain(cfg, s->domv[i]) == NULL) {
			snprintf(buf, size, "domain %.100s no longer configured",
			    s->domv[i]);
			return buf;
		}
	}
	return NULL;
}

/* 1 if the comma-separated list holds the same domains as s->domv (in
 * any order or case, each list cut at ODMR_MAX_DOMAINS as at AUTH). */
static int odmr_same_domains(const struct odmr_session *s, const char *list)
{
	char *copy = xstrdup(list), *p, *c, *v[ODMR_MAX_DOMAINS];
	size_t n = 0, i, j;
	int same = 1;

	for (p = copy; p != NULL && *p != '\0' && n < ODMR_MAX_DOMAINS;
	    p = c) {
		if ((c = strchr(p, ',')) != NULL)
			*c++ = '\0';
		v[n++] = p;
	}
	if (n != s->ndomv)
		same = 0;
	/* Both ways: a name listed twice must not hide another. */
	for (i = 0; same && i < n; i++) {
		for (j = 0; j < s->ndomv; j++)
			if (strcasecmp(v[i], s->domv[j]) == 0)
				break;
		if (j == s->ndomv)
			same = 0;
	}
	for (j = 0; same && j < s->ndomv; j++) {
		for (i = 0; i < n; i++)
			if (strcasecmp(v[i], s->domv[j]) == 0)
				break;
		if (i == n)
			same = 0;
	}
	free(copy);
	return same;
}

static void odmr_reload_end(struct odmr_session *s, const char *why)
{
	log_info("odmr: client=[%s], user=%s, session ended by reload (%s)",
	    s->ip, s->user != NULL ? s->user : "-", why);
	metrics_inc(METRIC_ODMR_RELOAD, "ended");
	odmr_reply(s, "421 4.7.0 %s Configuration reloaded, log in again",
	    s->cfg->hostname);
	odmr_close_when_flushed(s);
}

/* The auth process's answer about s->user under the new password file. */
static void odmr_recheck_done(void *arg, int rc, const char *reply,
    const char *user, const char *domains)
{
	struct odmr_session *s = arg;
	struct odmr *o = s->o;
	const char *why;
	char buf[160];

	(void)reply;
	(void)user;
	s->check = NULL;	/* freed by authc when we return */
	TAILQ_REMOVE(&o->asked, s, recheck_link);
	o->rechecking--;
	if (!TAILQ_EMPTY(&o->recheck))
		event_active(o->recheck_ev, EV_TIMEOUT, 0);
	if (rc == SASL_FAIL)
		why = "user removed";
	else if (rc != SASL_OK)
		why = "auth process unavailable";
	else if (!odmr_same_domains(s, domains != NULL ? domains : ""))
		why = "user's domains changed";
	else
		why = odmr_unfit(s, buf, sizeof(buf));
	if (why != NULL) {
		odmr_reload_end(s, why);
		return;
	}
	log_debug("odmr: client=[%s], user=%s, session kept across reload",
	    s->ip, s->user);
	metrics_inc(METRIC_ODMR_RELOAD, "kept");
	if (s->state == ODMR_CLOSING || s->bev == NULL)
		return;
	/* Commands that came meanwhile (an ATRN after a wake-up). */
	bufferevent_enable(s->bev, EV_READ);
	odmr_read_cb(s->bev, s);
}

/* Ask about the next sessions, ODMR_RECHECK_INFLIGHT at a time. */
static void odmr_recheck_pump(evutil_socket_t fd, short what, void *arg)
{
	struct odmr *o = arg;
	struct odmr_session *s;

	(void)fd;
	(void)what;
	while (o->rechecking < ODMR_RECHECK_INFLIGHT &&
	    (s = TAILQ_FIRST(&o->recheck)) != NULL) {
		TAILQ_REMOVE(&o->recheck, s, recheck_link);
		s->recheck_queued = 0;
		s->check = authc_check(o->auth, s->user, odmr_recheck_done, s);
		if (s->check == NULL) {
			/* Cannot be confirmed: end it, as before keeping
			 * sessions across reloads. */
			odmr_reload_end(s, "auth process unavailable");
			continue;
		}
		TAILQ_INSERT_TAIL(&o->asked, s, recheck_link);
		s->asked_at = odmr_mono();
		o->rechecking++;
		if (!evtimer_pending(o->asked_ev, NULL)) {
			struct timeval tv = { ODMR_RECHECK_WAIT, 0 };

			evtimer_add(o->asked_ev, &tv);
		}
	}
}

/*
 * An answer that never comes (a reply the auth process could not queue)
 * must not leave a session unread for ever: it ends as when the auth
 * process is away.
 */
static void odmr_asked_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct odmr *o = arg;
	struct odmr_session *s;
	time_t now = odmr_mono();
	struct timeval tv = { ODMR_RECHECK_WAIT, 0 };

	(void)fd;
	(void)what;
	while ((s = TAILQ_FIRST(&o->asked)) != NULL &&
	    now - s->asked_at >= ODMR_RECHECK_WAIT)
		odmr_reload_end(s, "auth process did not answer");
	if ((s = TAILQ_FIRST(&o->asked)) != NULL) {
		tv.tv_sec = ODMR_RECHECK_WAIT - (now - s->asked_at);
		evtimer_add(o->asked_ev, &tv);
	}
}

/*
 * s (logged in) waits for the auth process to confirm its user under the
 * new password file; it reads no command meanwhile (an ATRN then runs
 * with what is true now). Also used by AUTH when a reload came during the
 * exchange: its answer may have been made from the old file.
 */
void odmr_recheck_queue(struct odmr_session *s)
{
	struct odmr *o = s->o;

	odmr_recheck_forget(s);
	TAILQ_INSERT_TAIL(&o->recheck, s, recheck_link);
	s->recheck_queued = 1;
	if (s->bev != NULL)
		bufferevent_disable(s->bev, EV_READ);
	event_active(o->recheck_ev, EV_TIMEOUT, 0);
}

void odmr_reload(struct odmr *o, struct config *cfg, SSL_CTX *tls)
{
	struct server_conn *c, *cnext;
	struct odmr_session *s;
	const char *why;
	char buf[160];

	config_unref(&o->cfg);
	o->cfg = config_ref(cfg);
	o->tls = tls;
	o->reload_gen++;
	server_set_limits(o->srv, cfg->max_connections,
	    cfg->max_connections_per_ip, cfg->hostname);
	/*
	 * A logged-in session holds the user's domains as they were at AUTH;
	 * the password file may have removed the user or moved a domain.
	 * Sessions whose user the new file still gives the same domains, all
	 * still configured, go on (thousands of XWAIT sessions must not all
	 * reconnect at every reload); the others get 421 and log in again.
	 * The caller has asked the auth process to reload first
	 * (authc_reload): the channel keeps the order, so each answer comes
	 * from the new file. Sessions before AUTH go on under the new
	 * configuration; one in the middle of AUTH is checked when it
	 * succeeds (auth_gen); reversed ones (ATRN) finish their delivery.
	 */
	for (c = server_first(o->srv); c != NULL; c = cnext) {
		cnext = server_conn_next(c);
		s = server_conn_owner(c);
		if (s->state == ODMR_CLOSING)
			continue;
		/* Every session moves to the new configuration: an old one
		 * must not stay pinned by sessions that last for days. */
		config_unref(&s->cfg);
		s->cfg = config_ref(cfg);
		if (s->state != ODMR_AUTHED && s->state != ODMR_WAITING)
			continue;
		if ((why = odmr_unfit(s, buf, sizeof(buf))) != NULL) {
			odmr_reload_end(s, why);
			continue;
		}
		odmr_recheck_queue(s);
	}
}

int odmr_check_config(const struct config *cfg,
    void (*errfn)(void *arg, const char *msg), void *arg)
{
	if (cfg->odmr_listen.n == 0 && cfg->odmrs_listen.n == 0)
		return 0;
	return authd_check_passwd(cfg, errfn, arg, 1);
}

void odmr_shutdown(struct odmr *o, void (*done)(void *arg), void *arg)
{
	struct server_conn *c, *cnext;
	struct odmr_session *s;

	server_shutdown(o->srv, done, arg);
	odmr_reversed_abort_all(o);
	for (c = server_first(o->srv); c != NULL; c = cnext) {
		cnext = server_conn_next(c);
		s = server_conn_owner(c);
		if (s->state == ODMR_CLOSING)
			continue;
		odmr_reply(s, "421 4.3.2 %s Service shutting down", s->cfg->hostname);
		odmr_close_when_flushed(s);
	}
}

size_t odmr_session_count(const struct odmr *o)
{
	return server_count(o->srv);
}

size_t odmr_arrived(struct odmr *o, const char *domain)
{
	size_t n = xwait_arrived(o->waiters, domain);

	if (n > 0)
		metrics_add(METRIC_XWAIT_WAKEUPS, NULL, n);
	return n;
}

size_t odmr_waiting_count(const struct odmr *o)
{
	return xwait_count(o->waiters);
}

size_t odmr_domain_waiting(const struct odmr *o, const char *domain)
{
	return xwait_domain_count(o->waiters, domain);
}

void odmr_foreach_waiting(const struct odmr *o,
    void (*fn)(void *arg, const char *domain, size_t waiting), void *arg)
{
	xwait_foreach_domain(o->waiters, fn, arg);
}

void odmr_free(struct odmr **op)
{
	struct odmr *o = *op;
	struct server_conn *c;

	if (o == NULL)
		return;
	odmr_reversed_abort_all(o);
	while ((c = server_first(o->srv)) != NULL)
		odmr_session_free(server_conn_owner(c));
	server_free(&o->srv);
	event_free(o->recheck_ev);
	event_free(o->asked_ev);
	xwait_free(&o->waiters);
	config_unref(&o->cfg);
	free(o);
	*op = NULL;
}
