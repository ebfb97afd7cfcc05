/*
 * smtpc_cmd - smtpc's command mode (see smtpc.h): the caller's dialogue on
 * smtpc's connection, reply reader and TLS switch-over. odpull uses it for
 * both of its client sides (the provider before ATRN, the local MTA).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "xmalloc.h"
#include "smtp_parse.h"
#include "smtpc.h"
#include "tlspolicy.h"
#include "smtpc_private.h"

struct smtpc *smtpc_open(struct event_base *base, struct bufferevent *bev,
    const char *peer, const struct smtpc_cmd_cbs *cbs, void *arg)
{
	struct smtpc *s = xcalloc(1, sizeof(*s));

	s->base = base;
	s->bev = bev;
	s->cmd = *cbs;
	s->arg = arg;
	s->helo = xstrdup("localhost");
	s->peer = peer != NULL ? xstrdup(peer) : NULL;
	s->flags = SMTPC_COMMANDS;
	smtpc_timeouts_default(&s->to);
	s->state = S_CMD;
	s->reply.done = 1;	/* the next line starts a reply */
	s->started = smtpc_now_ms();
	s->deadline = evtimer_new(base, smtpc_deadline_cb, s);
	smtpc_setup_bev(s);
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS |
		    BEV_TRIG_DEFER_CALLBACKS);
	return s;
}

void smtpc_expect(struct smtpc *s)
{
	if (s->state == S_DONE || !s->cmd_hold)
		return;
	s->cmd_hold = 0;
	s->busy++;
	smtpc_readcb(s->bev, s);
	if (!s->dead && s->state != S_DONE && !s->cmd_hold && s->cmd_eof)
		smtpc_fail(s, 451, "connection lost with %s",
		    s->peer ? s->peer : "server");
	smtpc_leave(s);
}

void smtpc_command(struct smtpc *s, const char *line, size_t len)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);

	evbuffer_add(out, line, len);
	evbuffer_add(out, "\r\n", 2);
}

void smtpc_write(struct smtpc *s, const void *data, size_t len)
{
	evbuffer_add(bufferevent_get_output(s->bev), data, len);
}

size_t smtpc_unsent(const struct smtpc *s)
{
	return evbuffer_get_length(bufferevent_get_output(s->bev));
}

int smtpc_tls(struct smtpc *s, SSL_CTX *ctx, const struct tlspolicy *pol)
{
	if (s->state != S_CMD ||
	    evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
		return -1;
	s->tls = ctx;
	free(s->pol);
	s->pol = NULL;
	if (pol != NULL) {
		s->pol = xmalloc(sizeof(*s->pol));
		*s->pol = *pol;
	}
	s->busy++;
	smtpc_starttls(s);
	smtpc_leave(s);
	return s->state == S_HANDSHAKE ? 0 : -1;
}

/* A whole reply in command mode. */
void smtpc_cmd_reply(struct smtpc *s)
{
	s->cmd_hold = 1;
	if (!s->silent && s->cmd.reply != NULL)
		s->cmd.reply(s->arg, &s->reply);
}

/* The handshake passed the policy: back to commands, no deadline. */
int smtpc_cmd_tls_done(struct smtpc *s)
{
	s->state = S_CMD;
	smtpc_deadline(s, 0);
	bufferevent_set_timeouts(s->bev, NULL, NULL);
	if (!s->silent && s->cmd.tls != NULL)
		s->cmd.tls(s->arg, s->st.tls_version, s->st.verified);
	if (s->dead || s->state != S_CMD)
		return -1;
	/* Replies may already be waiting. */
	smtpc_readcb(s->bev, s);
	return 0;
}

/* smtpc_fail in command mode: tell the caller once, stop all I/O. The
 * caller frees the session (never freed from inside). */
void smtpc_cmd_fail(struct smtpc *s, const char *why)
{
	const char *p = why;

	/* "451 4.7.5 text": the caller words its own message. */
	if (strlen(p) > 10 && p[3] == ' ' && p[5] == '.' && p[9] == ' ')
		p += 10;
	s->state = S_DONE;
	bufferevent_disable(s->bev, EV_READ);
	evtimer_del(s->deadline);
	if (!s->silent && s->cmd.error != NULL)
		s->cmd.error(s->arg, p);
	s->silent = 1;
}

struct bufferevent *smtpc_detach(struct smtpc **sp)
{
	struct smtpc *s = *sp;
	struct bufferevent *bev;

	if (s == NULL)
		return NULL;
	*sp = NULL;
	bev = s->bev;
	s->bev = NULL;
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_set_timeouts(bev, NULL, NULL);
	bufferevent_setwatermark(bev, EV_READ | EV_WRITE, 0, 0);
	smtpc_destroy(s);
	return bev;
}
