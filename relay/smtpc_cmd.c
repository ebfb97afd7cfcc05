/*
 * smtpc_cmd - smtpc's command mode (see smtpc.h): the caller's dialogue on
 * smtpc's connection, reply reader and TLS switch-over. odpull uses it for
 * both of its client sides (the provider before ATRN, the local MTA).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "xmalloc.h"
#include "smtp_parse.h"
#include "smtpc.h"
#include "tlspolicy.h"
#include "smtpc_private.h"

static void smtpc_cmd_readable(evutil_socket_t fd, short what, void *arg);

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
	/* A plain socket (not a TLS bufferevent): smtpc's own I/O on it. */
	s->cmd_plain = bufferevent_getfd(bev) >= 0 &&
	    bufferevent_get_underlying(bev) == NULL &&
	    bufferevent_openssl_get_ssl(bev) == NULL;
	if (s->cmd_plain) {
		s->cmd_rd = event_new(base, bufferevent_getfd(bev),
		    EV_READ | EV_PERSIST, smtpc_cmd_readable, s);
		if (s->cmd_rd != NULL) {
			bufferevent_disable(bev, EV_READ);
			event_add(s->cmd_rd, NULL);
		}
	}
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS |
		    BEV_TRIG_DEFER_CALLBACKS);
	return s;
}

/*
 * The plain socket under a command-mode session, or -1 (TLS: the filter
 * owns the bytes). A caller that takes one step at a time writes each
 * command at once and looks for the reply at once: that spares a pass of
 * the loop and two epoll_ctl calls per command, and often the wait, which
 * is what odpull's relay costs per message.
 */
static evutil_socket_t smtpc_cmd_fd(const struct smtpc *s)
{
	if (!s->cmd_plain || s->tls_done || s->state != S_CMD || s->bev == NULL)
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

/*
 * Reading a plain socket in command mode: smtpc's own recv(2) into the
 * bufferevent's input, not the bufferevent's read (which asks the kernel
 * with ioctl(FIONREAD) before each readv): one call where there were two,
 * per reply. On TLS the filter reads, as in a delivery.
 */
static void smtpc_cmd_recv(struct smtpc *s)
{
	evutil_socket_t fd = smtpc_cmd_fd(s);
	struct evbuffer *in;
	char buf[16384];
	ssize_t n;

	if (fd < 0 || s->cmd_rd == NULL || s->cmd_eof)
		return;
	n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0) {
		event_del(s->cmd_rd);
		smtpc_eventcb(s->bev, n == 0 ? BEV_EVENT_READING |
		    BEV_EVENT_EOF : BEV_EVENT_READING | BEV_EVENT_ERROR, s);
		return;
	}
	in = bufferevent_get_input(s->bev);
	/* A bufferevent's input takes octets only from its own reads
	 * unless unfrozen. */
	evbuffer_unfreeze(in, 0);
	evbuffer_add(in, buf, (size_t)n);
	evbuffer_freeze(in, 0);
	smtpc_readcb(s->bev, s);
}

/* Read while input is wanted and below SMTPC_IN_MAX (a reply held for the
 * caller keeps what follows it; a flood of it stops the reading). */
static void smtpc_cmd_reading(struct smtpc *s)
{
	if (s->cmd_rd == NULL || s->dead || s->state == S_DONE)
		return;
	if (s->cmd_eof || evbuffer_get_length(bufferevent_get_input(s->bev)) >=
	    SMTPC_IN_MAX)
		event_del(s->cmd_rd);
	else if (!event_pending(s->cmd_rd, EV_READ, NULL))
		event_add(s->cmd_rd, NULL);
}

static void smtpc_cmd_readable(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *s = arg;

	(void)fd;
	(void)what;
	s->busy++;
	smtpc_cmd_recv(s);
	smtpc_cmd_reading(s);
	smtpc_leave(s);
}

void smtpc_expect(struct smtpc *s)
{
	if (s->state == S_DONE || !s->cmd_hold)
		return;
	s->cmd_hold = 0;
	s->busy++;
	smtpc_readcb(s->bev, s);
	/* Not read ahead: a reply to the command just written is often
	 * there already (the peer runs on another CPU while write(2)
	 * returns); one recv(2) now spares the wait. */
	if (!s->dead && !s->cmd_hold)
		smtpc_cmd_recv(s);
	smtpc_cmd_reading(s);
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
	/* The TLS filter reads the socket through the bufferevent. */
	if (s->cmd_rd != NULL) {
		event_free(s->cmd_rd);
		s->cmd_rd = NULL;
		bufferevent_enable(s->bev, EV_READ);
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
	if (s->cmd_rd != NULL)
		event_del(s->cmd_rd);
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
	if (s->cmd_rd != NULL) {
		event_free(s->cmd_rd);
		s->cmd_rd = NULL;
	}
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_set_timeouts(bev, NULL, NULL);
	bufferevent_setwatermark(bev, EV_READ | EV_WRITE, 0, 0);
	smtpc_destroy(s);
	return bev;
}
