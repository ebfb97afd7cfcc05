/*
 * smtpc_cmd - smtpc's command mode (see smtpc.h): the caller's dialogue on
 * smtpc's connection, reply reader and TLS switch-over. odpull uses it for
 * both of its client sides (the provider before ATRN, the local MTA).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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

/*
 * The plain socket under a command-mode session, or -1 (TLS: the filter
 * owns the bytes). A caller that takes one step at a time writes each
 * command at once: that spares a pass of the loop and two epoll_ctl calls
 * per command, which is what odpull's relay costs per message.
 */
static evutil_socket_t smtpc_cmd_fd(const struct smtpc *s)
{
	if (s->tls_done || s->state != S_CMD || s->bev == NULL)
		return -1;
	return bufferevent_getfd(s->bev);
}

/* What goes out: at once when nothing is queued, the rest (or all, on
 * TLS) through the bufferevent, which also reports a failed write. */
static void smtpc_cmd_out(struct smtpc *s, const char *data, size_t len)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	evutil_socket_t fd = smtpc_cmd_fd(s);

	if (fd >= 0 && evbuffer_get_length(out) == 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		if (n > 0) {
			data += n;
			len -= (size_t)n;
		}
	}
	if (len > 0)
		evbuffer_add(out, data, len);
}

void smtpc_expect(struct smtpc *s)
{
	if (s->state == S_DONE || !s->cmd_hold)
		return;
	s->cmd_hold = 0;
	s->busy++;
	/* Only what was read ahead: a reply to a command just written is
	 * hardly ever there yet, so no read(2) is tried here (it would
	 * fail with EAGAIN before the loop's read, on every command). */
	smtpc_readcb(s->bev, s);
	if (!s->dead && s->state != S_DONE && !s->cmd_hold && s->cmd_eof)
		smtpc_fail(s, 451, "connection lost with %s",
		    s->peer ? s->peer : "server");
	smtpc_leave(s);
}

int smtpc_closed(const struct smtpc *s)
{
	return s->state == S_DONE || s->cmd_eof;
}

void smtpc_command(struct smtpc *s, const char *line, size_t len)
{
	char buf[SMTPC_MAX_LINE + 2];

	/* One segment for the line and its CRLF. */
	if (len + 2 <= sizeof(buf)) {
		memcpy(buf, line, len);
		memcpy(buf + len, "\r\n", 2);
		smtpc_cmd_out(s, buf, len + 2);
	} else {
		smtpc_cmd_out(s, line, len);
		smtpc_cmd_out(s, "\r\n", 2);
	}
}

void smtpc_write(struct smtpc *s, const void *data, size_t len)
{
	smtpc_cmd_out(s, data, len);
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
