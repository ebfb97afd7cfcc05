/*
 * smtpd - the SMTP listener (MX role), manager part: starting sessions
 * that common/server admitted (listeners, limits, descriptor budget and
 * the pause on EMFILE are the session core's), freeing them, reload and
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
#include "server.h"
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

void
smtpd_session_free(struct smtpd_session *ss)
{
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
	if (ss->tls != NULL)
		SSL_CTX_free(ss->tls);
	ss->tls = NULL;
	config_free(&ss->cfg);
	/* the memory goes from the loop, after every callback */
	server_conn_free(&ss->conn, &ss->bev, free, ss);
}

/* The session core admitted a connection (it holds a budget slot). */
static void
smtpd_start(void *arg, evutil_socket_t fd, const struct server_peer *peer,
    int flags)
{
	struct smtpd *s = arg;
	struct smtpd_session *ss;

	(void)flags;
	ss = xcalloc(1, sizeof(*ss));
	ss->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (ss->bev == NULL) {
		evutil_closesocket(fd);
		server_release_slot(s->srv);
		free(ss);
		return;
	}
	ss->s = s;
	ss->conn = server_conn_new(s->srv, peer, ss, smtpd_deadline_cb);
	ss->sid = ++s->next_sid;
	ss->cfg = config_ref(s->cfg);
	if (s->tls != NULL) {
		SSL_CTX_up_ref(s->tls);
		ss->tls = s->tls;
	}
	util_strlcpy(ss->ip, peer->ip, sizeof(ss->ip));
	ss->v6 = peer->v6;
	ss->port = peer->port;
	smtpd_session_setup_bev(ss);
	log_debug("smtpd: sid=%llx, connect from [%s]",
	    (unsigned long long)ss->sid, ss->ip);
	smtpd_reply(ss, "220 %s ESMTP odrelay", ss->cfg->hostname);
	smtpd_deadline_arm(ss);
	ss->dnsbl = dnsbl_check_start(s->dnsbl, ss->cfg, ss->ip,
	    smtpd_dnsbl_done, ss);
	ss->milter = milter_sess_new(s->base, ss->cfg, ss->ip, ss->v6,
	    ss->port);
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
	s->srv = server_new(base, "smtpd", smtpd_start, s);
	server_set_limits(s->srv, cfg->max_connections,
	    cfg->max_connections_per_ip, cfg->hostname);
	return s;
}

void
smtpd_set_budget(struct smtpd *s, struct fdbudget *b)
{
	server_set_budget(s->srv, b);
}

void
smtpd_set_auth(struct smtpd *s, struct authc *auth)
{
	s->auth = auth;
}

int
smtpd_listen(struct smtpd *s, const char *addr, char *err, size_t errlen)
{
	return server_listen(s->srv, addr, 25, 0, err, errlen);
}

void
smtpd_adopt(struct smtpd *s, int fd, const struct sockaddr *sa)
{
	server_adopt(s->srv, fd, sa, 0);
}

void
smtpd_reload(struct smtpd *s, struct config *cfg, SSL_CTX *tls)
{
	config_free(&s->cfg);
	s->cfg = config_ref(cfg);
	server_set_limits(s->srv, cfg->max_connections,
	    cfg->max_connections_per_ip, cfg->hostname);
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

void
smtpd_shutdown(struct smtpd *s, void (*done)(void *arg), void *arg)
{
	struct server_conn *c, *next;
	struct smtpd_session *ss;

	s->shutting_down = 1;
	server_shutdown(s->srv, done, arg);
	for (c = server_first(s->srv); c != NULL; c = next) {
		next = server_conn_next(c);
		ss = server_conn_owner(c);
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
}

size_t
smtpd_session_count(const struct smtpd *s)
{
	return server_count(s->srv);
}

void
smtpd_free(struct smtpd **sp)
{
	struct smtpd *s = *sp;
	struct server_conn *c;

	if (s == NULL)
		return;
	while ((c = server_first(s->srv)) != NULL)
		smtpd_session_free(server_conn_owner(c));
	server_free(&s->srv);
	if (s->tls != NULL)
		SSL_CTX_free(s->tls);
	config_free(&s->cfg);
	free(s);
	*sp = NULL;
}
