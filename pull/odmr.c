/*
 * odmr - ODMR listener and sessions (RFC 2645): listeners, limits, session
 * life (replies, deadlines, close after flush, free). The commands are in
 * odmr_cmd.c.
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
#include "config.h"
#include "deliver.h"
#include "fdbudget.h"
#include "log.h"
#include "metrics.h"
#include "odmr.h"
#include "domstate.h"
#include "queue.h"
#include "sasl.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"
#include "xwait.h"
#include "odmr_private.h"

void odmr_reply(struct odmr_session *s, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

/* Close once the reply is written. */
void odmr_close_when_flushed(struct odmr_session *s)
{
	struct timeval grace = { ODMR_CLOSE_GRACE, 0 };

	odmr_wait_end(s);
	s->state = ODMR_CLOSING;
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		odmr_session_free(s);
		return;
	}
	/* A peer that does not read must not keep the slot: the deadline
	 * frees a closing session after the grace period. */
	if (s->deadline != NULL)
		evtimer_add(s->deadline, &grace);
}

void odmr_write_cb(struct bufferevent *bev, void *arg)
{
	struct odmr_session *s = arg;

	if (s->state == ODMR_CLOSING) {
		odmr_session_free(s);
		return;
	}
	/* Replies drained below the limit: read the pipelined rest. */
	if (s->state != ODMR_DELAYED && s->bev == bev &&
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
		if (s->deadline != NULL)
			evtimer_del(s->deadline);
		return;
	}
	if (s->state != ODMR_AUTHED && s->cfg->smtp_timeout < tv.tv_sec)
		tv.tv_sec = s->cfg->smtp_timeout;
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	/* The read timeout restarts on every byte; this one only when a
	 * whole line has come, so a trickling client is timed out too. */
	if (s->deadline != NULL)
		evtimer_add(s->deadline, &tv);
}

static void odmr_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct odmr_session *s = arg;

	(void)fd;
	(void)what;
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

void odmr_session_free(struct odmr_session *s)
{
	struct odmr *o = s->o;

	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		o->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	o->nsessions--;
	if (s->budget_held)
		fdbudget_put(o->budget);
	odmr_wait_end(s);
	if (s->wait_ev != NULL)
		event_free(s->wait_ev);
	if (s->bev != NULL)
		tls_bev_close_flushed(s->bev);
	if (s->deadline != NULL)
		event_free(s->deadline);
	authc_cancel(&s->sasl);
	config_unref(&s->cfg);
	free(s->user);
	free(s->domains);
	free(s);
	if (o->shutting_down && o->nsessions == 0 && o->shutdown_done != NULL) {
		void (*done)(void *) = o->shutdown_done;

		o->shutdown_done = NULL;
		done(o->shutdown_arg);
	}
}

/* ---- listener ---- */

static void odmr_accept(struct odmr *o, evutil_socket_t fd,
    struct sockaddr *sa, int implicit_tls)
{
	struct odmr_session *s;
	struct bufferevent *bev;

	{
		char ip[64];
		size_t same = 0;

		util_sockaddr_ip(sa, ip, sizeof(ip));
		/* Waiting sessions have their own limit (max_waiting). */
		for (s = o->sessions; s != NULL; s = s->next)
			if (s->state != ODMR_WAITING && strcmp(s->ip, ip) == 0)
				same++;
		if (o->shutting_down || o->nsessions - xwait_count(o->waiters) >=
		    o->cfg->max_connections ||
		    (o->cfg->max_connections_per_ip > 0 &&
		    same >= o->cfg->max_connections_per_ip)) {
			static const char busy[] =
			    "421 4.7.0 Too many connections, try later\r\n";

			log_info("odmr: client=[%s], too many connections", ip);
			metrics_inc(METRIC_REJECTED, "connections");
			/* Plain text even on odmrs: a refusal, not a session. */
			(void)!write(fd, busy, sizeof(busy) - 1);
			evutil_closesocket(fd);
			return;
		}
		/* One budget for both listeners, waiting sessions too: each
		 * holds a descriptor. */
		if (!fdbudget_take(o->budget)) {
			static const char busy[] =
			    "421 4.3.2 Too many connections, try later\r\n";

			metrics_inc(METRIC_REJECTED, "connections");
			(void)!write(fd, busy, sizeof(busy) - 1);
			evutil_closesocket(fd);
			fdbudget_refused(o->budget, "odmr");
			return;
		}
	}
	if (implicit_tls) {
		SSL *ssl = o->tls ? SSL_new(o->tls) : NULL;

		if (ssl == NULL) {
			evutil_closesocket(fd);
			fdbudget_put(o->budget);
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
		fdbudget_put(o->budget);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->budget_held = 1;
	s->o = o;
	s->cfg = config_ref(o->cfg);
	s->bev = bev;
	s->implicit_tls = implicit_tls;
	s->tls_active = implicit_tls;
	util_sockaddr_ip(sa, s->ip, sizeof(s->ip));
	s->next = o->sessions;
	if (o->sessions != NULL)
		o->sessions->prev = s;
	o->sessions = s;
	o->nsessions++;
	log_debug("odmr: connect from [%s]%s", s->ip, implicit_tls ? " (TLS)" : "");
	bufferevent_setcb(bev, odmr_read_cb, odmr_write_cb, odmr_event_cb, s);
	{
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		s->started = now.tv_sec;
	}
	s->deadline = evtimer_new(o->base, odmr_deadline_cb, s);
	odmr_set_timeout(s);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	odmr_reply(s, "220 %s ESMTP odrelay ODMR service", s->cfg->hostname);
}

static void odmr_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	struct odmr *o = arg;

	(void)fd;
	(void)what;
	if (o->shutting_down)
		return;
	for (struct odmr_listener *ol = o->listeners; ol != NULL; ol = ol->next)
		evconnlistener_enable(ol->l);
}

/*
 * accept() failed. Without this callback libevent logs and retries at
 * once, and a full descriptor table made that a busy loop (issue 17):
 * out of descriptors or memory, pause every ODMR listener for a second.
 */
static void odmr_accept_error(struct evconnlistener *l, void *arg)
{
	struct odmr *o = arg;
	int e = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { 1, 0 };

	(void)l;
	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
		log_warn("odmr: accept: %s", evutil_socket_error_to_string(e));
		return;
	}
	if (!evtimer_pending(o->accept_retry, NULL))
		log_warn("odmr: accept: %s: not accepting for 1 s",
		    evutil_socket_error_to_string(e));
	for (struct odmr_listener *ol = o->listeners; ol != NULL; ol = ol->next)
		evconnlistener_disable(ol->l);
	evtimer_add(o->accept_retry, &tv);
}

static void odmr_accept_plain(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)salen;
	odmr_accept(arg, fd, sa, 0);
}

static void odmr_accept_tls(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)salen;
	odmr_accept(arg, fd, sa, 1);
}

int odmr_adopt(struct odmr *o, int fd, const struct sockaddr *sa,
    int implicit_tls)
{
	/* A listener makes accepted sockets non-blocking; an inherited or
	 * test socket may not be. */
	if (evutil_make_socket_nonblocking(fd) < 0)
		log_warn("odmr: cannot make socket %d non-blocking", fd);
	/* odmr_accept only reads sa (libevent's callback type is not const). */
	odmr_accept(o, fd, (struct sockaddr *)sa, implicit_tls);
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
	o->accept_retry = evtimer_new(base, odmr_accept_retry, o);
	return o;
}

void odmr_set_budget(struct odmr *o, struct fdbudget *b)
{
	o->budget = b;
}

void odmr_set_auth(struct odmr *o, struct authc *auth)
{
	o->auth = auth;
}

int odmr_listen(struct odmr *o, const char *addr, int implicit_tls,
    char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct odmr_listener *ol;
	struct evconnlistener *l;

	if (implicit_tls && o->tls == NULL) {
		snprintf(err, errlen, "odmrs_listen needs tls_cert_file and tls_key_file");
		return -1;
	}
	if (util_sockaddr_parse(addr, 366, &ss, &sslen) < 0) {
		snprintf(err, errlen, "bad address");
		return -1;
	}
	l = evconnlistener_new_bind(o->base,
	    implicit_tls ? odmr_accept_tls : odmr_accept_plain, o,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC |
	    (ss.ss_family == AF_INET6 ? LEV_OPT_BIND_IPV6ONLY : 0), 128,
	    (struct sockaddr *)&ss, (int)sslen);
	if (l == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	evconnlistener_set_error_cb(l, odmr_accept_error);
	ol = xcalloc(1, sizeof(*ol));
	ol->l = l;
	ol->implicit_tls = implicit_tls;
	ol->next = o->listeners;
	o->listeners = ol;
	log_info("odmr: listening on %s%s", addr, implicit_tls ? " (TLS)" : "");
	return 0;
}

void odmr_reload(struct odmr *o, struct config *cfg, SSL_CTX *tls)
{
	struct odmr_session *s, *snext;

	config_unref(&o->cfg);
	o->cfg = config_ref(cfg);
	o->tls = tls;
	/*
	 * A logged-in session holds the user's domains as they were at AUTH;
	 * the password file may have removed the user or moved a domain. An
	 * XWAIT session can last for days: end idle logged-in sessions so
	 * that each logs in again under the new file (push clients reconnect).
	 */
	for (s = o->sessions; s != NULL; s = snext) {
		snext = s->next;
		if (s->state != ODMR_AUTHED && s->state != ODMR_WAITING)
			continue;
		log_info("odmr: client=[%s], user=%s, session ended by reload",
		    s->ip, s->user);
		odmr_reply(s, "421 4.7.0 %s Configuration reloaded, log in "
		    "again", s->cfg->hostname);
		odmr_close_when_flushed(s);
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
	struct odmr_listener *ol, *next;
	struct odmr_session *s, *snext;

	o->shutting_down = 1;
	evtimer_del(o->accept_retry);
	for (ol = o->listeners; ol != NULL; ol = next) {
		next = ol->next;
		evconnlistener_free(ol->l);
		free(ol);
	}
	o->listeners = NULL;
	o->shutdown_done = done;
	o->shutdown_arg = arg;
	odmr_reversed_abort_all(o);
	for (s = o->sessions; s != NULL; s = snext) {
		snext = s->next;
		if (s->state == ODMR_CLOSING)
			continue;
		odmr_reply(s, "421 4.3.2 %s Service shutting down", s->cfg->hostname);
		odmr_close_when_flushed(s);
	}
	if (o->nsessions == 0 && o->shutdown_done != NULL) {
		o->shutdown_done = NULL;
		done(arg);
	}
}

size_t odmr_session_count(const struct odmr *o)
{
	return o->nsessions;
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

void odmr_free(struct odmr **op)
{
	struct odmr *o = *op;
	struct odmr_listener *ol, *next;

	if (o == NULL)
		return;
	o->shutdown_done = NULL;
	odmr_reversed_abort_all(o);
	while (o->sessions != NULL)
		odmr_session_free(o->sessions);
	for (ol = o->listeners; ol != NULL; ol = next) {
		next = ol->next;
		evconnlistener_free(ol->l);
		free(ol);
	}
	xwait_free(&o->waiters);
	if (o->accept_retry != NULL)
		event_free(o->accept_retry);
	config_unref(&o->cfg);
	free(o);
	*op = NULL;
}
