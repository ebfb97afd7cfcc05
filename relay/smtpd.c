/*
 * smtpd - the SMTP listener (MX role), manager part: listeners, accept
 * with the connection limits (total, per address, descriptor budget),
 * pausing accept on EMFILE, deferred freeing of sessions, reload and
 * shutdown. The command session is in smtpd_session.c, message text in
 * smtpd_data.c; smtpd_private.h holds what they share.
 *
 * One session per connection, one transaction (MAIL..end of data) hanging
 * off it. 250 after DATA is only sent from the queue's commit callback,
 * i.e. after fsync.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "authc.h"
#include "authproto.h"
#include "config.h"
#include "dnsbl.h"
#include "fdbudget.h"
#include "milter.h"
#include "log.h"
#include "queue.h"
#include "smtp_parse.h"
#include "room.h"
#include "smtpd.h"
#include "metrics.h"
#include "passwd.h"
#include "recip.h"
#include "sasl.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"
#include "smtpd_private.h"

/* ---- sessions ---- */

static void
smtpd_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd *s = arg;
	void (*fn)(void *) = s->done_fn;

	(void)fd;
	(void)what;
	s->done_fn = NULL;
	if (fn != NULL)
		fn(s->done_arg);
}

static void
smtpd_check_done(struct smtpd *s)
{
	struct timeval tv = { 0, 0 };

	if (!s->shutting_down || s->nsessions != 0 || s->done_fn == NULL)
		return;
	/* from the loop, not from inside a caller's stack */
	if (s->done_ev == NULL)
		s->done_ev = evtimer_new(s->base, smtpd_done_cb, s);
	if (!evtimer_pending(s->done_ev, NULL))
		evtimer_add(s->done_ev, &tv);
}

void
smtpd_session_free(struct smtpd_session *ss)
{
	struct smtpd *s = ss->s;

	if (ss->tx != NULL && ss->tx->put != NULL &&
	    ss->state == SMTPD_ST_COMMIT) {
		/* commit in flight: the queue owns the put; suppress cb */
		queue_put_abandon(&ss->tx->put);
	}
	milter_sess_free(&ss->milter);
	smtpd_mrcpt_clear(ss);
	smtpd_tx_free(&ss->tx);
	authc_cancel(&ss->sasl);
	dnsbl_check_free(&ss->dnsbl);
	if (ss->deadline != NULL)
		event_free(ss->deadline);
	if (ss->bev != NULL)
		tls_bev_close_flushed(ss->bev);
	if (ss->tls != NULL)
		SSL_CTX_free(ss->tls);
	config_free(&ss->cfg);
	if (ss->prev != NULL)
		ss->prev->next = ss->next;
	else
		s->sessions = ss->next;
	if (ss->next != NULL)
		ss->next->prev = ss->prev;
	s->nsessions--;
	if (ss->budget_held)
		fdbudget_put(s->budget);
	free(ss);
	smtpd_check_done(s);
}

static size_t
smtpd_count_ip(struct smtpd *s, const char *ip)
{
	struct smtpd_session *ss;
	size_t n = 0;

	for (ss = s->sessions; ss != NULL; ss = ss->next)
		if (!ss->rejected && strcmp(ss->ip, ip) == 0)
			n++;
	return n;
}

static void
smtpd_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct smtpd *s = arg;
	struct smtpd_session *ss;
	size_t active;

	(void)lev;
	(void)salen;
	if (s->shutting_down) {
		evutil_closesocket(fd);
		return;
	}
	if (!fdbudget_take(s->budget)) {
		/* Every descriptor the budget allows is in use (both
		 * listeners count): refuse at once, no session. */
		static const char busy[] =
		    "421 4.3.2 Too many connections, try later\r\n";

		metrics_inc(METRIC_REJECTED, "connections");
		(void)!write(fd, busy, sizeof(busy) - 1);
		evutil_closesocket(fd);
		fdbudget_refused(s->budget, "smtpd");
		return;
	}
	ss = xcalloc(1, sizeof(*ss));
	ss->budget_held = 1;
	ss->s = s;
	ss->sid = ++s->next_sid;
	ss->cfg = config_ref(s->cfg);
	if (s->tls != NULL) {
		SSL_CTX_up_ref(s->tls);
		ss->tls = s->tls;
	}
	if (sa->sa_family == AF_INET6) {
		ss->v6 = 1;
		ss->port = ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
		evutil_inet_ntop(AF_INET6,
		    &((struct sockaddr_in6 *)sa)->sin6_addr, ss->ip,
		    sizeof(ss->ip));
	} else {
		evutil_inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr,
		    ss->ip, sizeof(ss->ip));
		ss->port = ntohs(((struct sockaddr_in *)sa)->sin_port);
	}
	active = s->nsessions;
	ss->next = s->sessions;
	if (s->sessions != NULL)
		s->sessions->prev = ss;
	s->sessions = ss;
	s->nsessions++;
	ss->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (ss->bev == NULL) {
		evutil_closesocket(fd);
		smtpd_session_free(ss);
		return;
	}
	smtpd_session_setup_bev(ss);
	if ((ss->cfg->max_connections > 0 &&
	    active >= ss->cfg->max_connections) ||
	    (ss->cfg->max_connections_per_ip > 0 &&
	    smtpd_count_ip(s, ss->ip) > ss->cfg->max_connections_per_ip)) {
		ss->rejected = 1;
		log_info("smtpd: client=[%s], too many connections", ss->ip);
		metrics_inc(METRIC_REJECTED, "connections");
		smtpd_reply(ss, "421 4.7.0 %s Too many connections, try later",
		    ss->cfg->hostname);
		smtpd_session_close(ss);
		return;
	}
	log_debug("smtpd: sid=%llx, connect from [%s]",
	    (unsigned long long)ss->sid, ss->ip);
	smtpd_reply(ss, "220 %s ESMTP odrelay", ss->cfg->hostname);
	{
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		ss->started = now.tv_sec;
	}
	ss->deadline = evtimer_new(s->base, smtpd_deadline_cb, ss);
	smtpd_deadline_arm(ss);
	ss->dnsbl = dnsbl_check_start(s->dnsbl, ss->cfg, ss->ip,
	    smtpd_dnsbl_done, ss);
	ss->milter = milter_sess_new(s->base, ss->cfg, ss->ip, ss->v6,
	    ss->port);
}

static void
smtpd_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd *s = arg;
	struct smtpd_listener *l;

	(void)fd;
	(void)what;
	if (s->shutting_down)
		return;
	for (l = s->listeners; l != NULL; l = l->next)
		evconnlistener_enable(l->lev);
}

static void
smtpd_accept_error(struct evconnlistener *lev, void *arg)
{
	struct smtpd *s = arg;
	struct timeval tv = { 1, 0 };
	int e = EVUTIL_SOCKET_ERROR();

	(void)lev;
	log_warn("smtpd: accept: %s", evutil_socket_error_to_string(e));
	/* EMFILE/ENFILE: pause accepting instead of spinning */
	if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
		struct smtpd_listener *l;
		for (l = s->listeners; l != NULL; l = l->next)
			evconnlistener_disable(l->lev);
		evtimer_add(s->accept_retry, &tv);
	}
}

/* ---- manager API ---- */

struct smtpd *
smtpd_new(struct event_base *base, struct config *cfg, struct queue *q,
    SSL_CTX *tls)
{
	struct smtpd *s = xcalloc(1, sizeof(*s));

	s->base = base;
	s->cfg = config_ref(cfg);
	s->q = q;
	if (tls != NULL) {
		SSL_CTX_up_ref(tls);
		s->tls = tls;
	}
	s->accept_retry = evtimer_new(base, smtpd_accept_retry, s);
	return s;
}

void
smtpd_set_budget(struct smtpd *s, struct fdbudget *b)
{
	s->budget = b;
}

void
smtpd_set_auth(struct smtpd *s, struct authc *auth)
{
	s->auth = auth;
}

int
smtpd_listen(struct smtpd *s, const char *addr, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss), one = 1;
	evutil_socket_t fd;
	struct evconnlistener *lev;
	struct smtpd_listener *l;

	memset(&ss, 0, sizeof(ss));
	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss,
	    &sslen) != 0) {
		snprintf(err, errlen, "%s: bad listen address", addr);
		return -1;
	}
	if (((struct sockaddr_in *)&ss)->sin_port == 0)
		((struct sockaddr_in *)&ss)->sin_port = htons(25);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", addr, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* one listener per family: [::] must not also take IPv4 */
	if (ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
		snprintf(err, errlen, "%s: IPV6_V6ONLY: %s", addr,
		    strerror(errno));
		close(fd);
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen) != 0 ||
	    listen(fd, 128) != 0) {
		snprintf(err, errlen, "%s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	lev = evconnlistener_new(s->base, smtpd_accept, s,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (lev == NULL) {
		snprintf(err, errlen, "%s: evconnlistener_new failed", addr);
		close(fd);
		return -1;
	}
	evconnlistener_set_error_cb(lev, smtpd_accept_error);
	l = xcalloc(1, sizeof(*l));
	l->lev = lev;
	l->next = s->listeners;
	s->listeners = l;
	return 0;
}

void
smtpd_reload(struct smtpd *s, struct config *cfg, SSL_CTX *tls)
{
	config_free(&s->cfg);
	s->cfg = config_ref(cfg);
	if (s->tls != NULL)
		SSL_CTX_free(s->tls);
	s->tls = NULL;
	if (tls != NULL) {
		SSL_CTX_up_ref(tls);
		s->tls = tls;
	}
}

void
smtpd_set_dnsbl(struct smtpd *s, struct dnsbl *bl)
{
	s->dnsbl = bl;
}

void
smtpd_set_etrn_handler(struct smtpd *s, smtpd_etrn_fn *fn, void *arg)
{
	s->etrn_fn = fn;
	s->etrn_arg = arg;
}

void
smtpd_set_recip(struct smtpd *s, struct recip *r)
{
	s->recip = r;
}

void
smtpd_set_added_handler(struct smtpd *s, void (*fn)(void *arg,
    const char *id), void *arg)
{
	s->added_fn = fn;
	s->added_arg = arg;
}

static void
smtpd_close_listeners(struct smtpd *s)
{
	struct smtpd_listener *l;

	while ((l = s->listeners) != NULL) {
		s->listeners = l->next;
		evconnlistener_free(l->lev);
		free(l);
	}
}

void
smtpd_shutdown(struct smtpd *s, void (*done)(void *arg), void *arg)
{
	struct smtpd_session *ss, *next;

	s->shutting_down = 1;
	s->done_fn = done;
	s->done_arg = arg;
	smtpd_close_listeners(s);
	evtimer_del(s->accept_retry);
	for (ss = s->sessions; ss != NULL; ss = next) {
		next = ss->next;
		switch (ss->state) {
		case SMTPD_ST_COMMIT:
			/* 250 (then 421) once the commit completes */
			break;
		case SMTPD_ST_DATA:
			/* not acknowledged: drop it, the client retries */
			smtpd_session_lost(ss);
			smtpd_session_free(ss);
			break;
		case SMTPD_ST_CLOSING:
			break;
		default:
			smtpd_reply(ss, "421 4.3.2 %s Service shutting down",
			    ss->cfg->hostname);
			smtpd_tx_reset(ss);
			smtpd_session_close(ss);
			if (!ss->in_input)
				smtpd_session_reap(ss);
			break;
		}
	}
	smtpd_check_done(s);
}

size_t
smtpd_session_count(const struct smtpd *s)
{
	return s->nsessions;
}

void
smtpd_free(struct smtpd **sp)
{
	struct smtpd *s = *sp;

	if (s == NULL)
		return;
	s->done_fn = NULL;
	while (s->sessions != NULL)
		smtpd_session_free(s->sessions);
	smtpd_close_listeners(s);
	if (s->accept_retry != NULL)
		event_free(s->accept_retry);
	if (s->done_ev != NULL)
		event_free(s->done_ev);
	if (s->tls != NULL)
		SSL_CTX_free(s->tls);
	config_free(&s->cfg);
	free(s);
	*sp = NULL;
}
