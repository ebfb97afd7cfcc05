/*
 * smtpc - SMTP/LMTP client session (see smtpc.h): helpers, recipient
 * results, ending the session, the libevent callbacks and the public
 * functions. The dialogue itself (EHLO, STARTTLS, transactions, message
 * text, reply parsing) is in smtpc_proto.c.
 *
 * One state machine per connection. A transaction is a list of commands
 * (MAIL, RCPT..., DATA); with PIPELINING they are written together and the
 * replies matched in order, without it one at a time. Every recipient of a
 * message ends in exactly one rcpt_result; a message may take several
 * transactions (452 "too many recipients", or more than SMTPC_MAX_RCPTS).
 *
 * Entry points (bufferevent callbacks) hold a busy count; a session that
 * finishes inside one is only marked dead and freed when the outermost
 * entry point returns, so nothing touches freed memory.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>

#include "lineio.h"
#include "log.h"
#include "xmalloc.h"
#include "smtpc.h"
#include "tlspolicy.h"
#include "smtpc_private.h"

const char *const smtpc_state_names[] = {
	"greeting", "EHLO", "HELO", "STARTTLS", "TLS handshake", "RSET",
	"MAIL/RCPT/DATA", "message text", "end of data", "end of data",
	"QUIT", "idle", "command", "closing", "done"
};

/* ---- helpers ---- */

void smtpc_timeouts_default(struct smtpc_timeouts *t)
{
	t->greeting = 300 * 1000;
	t->ehlo = 300 * 1000;
	t->mail = 300 * 1000;
	t->rcpt = 300 * 1000;
	t->data = 120 * 1000;
	t->block = 180 * 1000;
	t->dot = 600 * 1000;
	t->min_rate = 500;
	t->session = 3600 * 1000;
}

uint64_t smtpc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int smtpc_code_class(int code)
{
	if (code >= 200 && code < 400)
		return SMTPC_CLASS_OK;
	if (code >= 400 && code < 500)
		return SMTPC_CLASS_TEMP;
	return SMTPC_CLASS_PERM;
}

const char *smtpc_status(int code, const char *text, char *buf, size_t size)
{
	const char *p = text;
	size_t n = 0;

	if (size == 0)
		return buf;
	/* Skip the reply code if the text carries it. */
	if (p != NULL && isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && (p[3] == ' ' || p[3] == '-'))
		p += 4;
	if (p != NULL && (p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.') {
		const char *q = p + 2;
		int d1 = 0, d2 = 0;

		while (isdigit((unsigned char)*q) && d1 < 3) {
			q++;
			d1++;
		}
		if (d1 > 0 && *q == '.') {
			q++;
			while (isdigit((unsigned char)*q) && d2 < 3) {
				q++;
				d2++;
			}
			if (d2 > 0 && (*q == '\0' || *q == ' ')) {
				n = (size_t)(q - p);
				if (n < size) {
					memcpy(buf, p, n);
					buf[n] = '\0';
					/* The class must agree with the code. */
					if (code >= 200 && code < 600 &&
					    buf[0] - '0' == code / 100)
						return buf;
				}
			}
		}
	}
	snprintf(buf, size, "%d.0.0", code >= 200 && code < 600 ? code / 100 :
	    5);
	return buf;
}

/* A string safe to put on a command line: no CR, LF or NUL-ish controls. */
int smtpc_safe(const char *p)
{
	for (; p != NULL && *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* Arm the deadline: ms from now (0: none). */
void smtpc_deadline(struct smtpc *s, uint64_t ms)
{
	struct timeval tv;

	if (ms == 0) {
		evtimer_del(s->deadline);
		return;
	}
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(s->deadline, &tv);
}

/*
 * The reply now awaited must arrive whole within rd_ms (0: no reply is
 * awaited). libevent's read timeout restarts on every byte, so a server
 * trickling one byte every few seconds would never time out; the deadline
 * moves only when a whole reply has come. Each write must progress
 * within the block timeout.
 */
void smtpc_set_timeout(struct smtpc *s, unsigned rd_ms)
{
	struct timeval wr;

	wr.tv_sec = s->to.block / 1000;
	wr.tv_usec = (s->to.block % 1000) * 1000;
	bufferevent_set_timeouts(s->bev, NULL, &wr);
	smtpc_deadline(s, rd_ms);
}

void smtpc_send(struct smtpc *s, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	va_list ap;

	va_start(ap, fmt);
	lineio_vputf(out, fmt, ap);
	va_end(ap);
}

/* ---- results ---- */

void smtpc_result(struct smtpc *s, size_t i, int code, const char *text)
{
	if (s->rst[i] == R_DONE)
		return;
	s->rst[i] = R_DONE;
	switch (smtpc_code_class(code)) {
	case SMTPC_CLASS_OK:
		s->st.rcpts_ok++;
		if (!s->msg_counted) {
			s->msg_counted = 1;
			s->st.messages++;
		}
		break;
	case SMTPC_CLASS_TEMP:
		s->st.rcpts_temp++;
		break;
	default:
		s->st.rcpts_perm++;
		break;
	}
	if (!s->silent)
		s->src.rcpt_result(s->arg, i, code, text);
}

void smtpc_body_close(struct smtpc *s)
{
	if (s->body_is_open) {
		s->body_is_open = 0;
		if (s->src.body_close != NULL && !s->silent)
			s->src.body_close(s->arg);
	}
	s->chunk = NULL;
	s->chunk_len = s->chunk_off = 0;
}

/* Every recipient of the current message has its result. */
void smtpc_msg_end(struct smtpc *s)
{
	smtpc_body_close(s);
	s->have_msg = 0;
	if (!s->silent && s->src.msg_done != NULL)
		s->src.msg_done(s->arg);
}

/* Give every unfinished recipient of the current message this result. */
void smtpc_msg_all(struct smtpc *s, int code, const char *text)
{
	size_t i;

	for (i = 0; i < s->msg.nrcpts; i++)
		smtpc_result(s, i, code, text);
}

/* Load the next message into s->msg; 0 when there is none. */
int smtpc_load_msg(struct smtpc *s)
{
	int r;

	memset(&s->msg, 0, sizeof(s->msg));
	if (s->silent)
		return 0;
	r = s->src.next(s->arg, &s->msg);
	s->idle_wanted = r == 2;
	if (r != 1)
		return 0;
	if (s->msg.nrcpts > s->rst_alloc) {
		s->rst = xreallocarray(s->rst, s->msg.nrcpts, 1);
		s->tx = xreallocarray(s->tx, s->msg.nrcpts, sizeof(*s->tx));
		s->acc = xreallocarray(s->acc, s->msg.nrcpts, sizeof(*s->acc));
		s->rst_alloc = s->msg.nrcpts;
	}
	if (s->msg.nrcpts > 0)
		memset(s->rst, R_PENDING, s->msg.nrcpts);
	s->have_msg = 1;
	s->msg_counted = 0;
	return 1;
}

/* ---- ending the session ---- */

/*
 * Sessions in S_CLOSING: their caller has its result and no pointer; they
 * end on their own (reply, close, SMTPC_CLOSE_WAIT) or in smtpc_close_all.
 * At most SMTPC_CLOSING_MAX at once, so refusing peers cannot make us
 * hold descriptors: beyond it a session closes at once, as it used to.
 */
#define SMTPC_CLOSING_MAX	64

static LIST_HEAD(smtpc_closing_list, smtpc) smtpc_closing =
    LIST_HEAD_INITIALIZER(smtpc_closing);
static size_t smtpc_nclosing;

void smtpc_destroy(struct smtpc *s)
{
	if (s->closing) {
		LIST_REMOVE(s, close_link);
		smtpc_nclosing--;
		s->closing = 0;
	}
	smtpc_body_close(s);
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	if (s->deadline != NULL)
		event_free(s->deadline);
	if (s->cmd_rd != NULL)
		event_free(s->cmd_rd);
	free(s->helo);
	free(s->peer);
	free(s->pol);
	free(s->rst);
	free(s->tx);
	free(s->acc);
	free(s);
}

/*
 * After a refusal we wrote QUIT (RFC 5321 3.3, 4.1.1.10: the client sends
 * QUIT and the server answers before closing). Freeing the bufferevent
 * now would drop the QUIT unsent: the peer would see a bare close. So the
 * session lives on without its caller until the QUIT is answered, the
 * peer closes, or SMTPC_CLOSE_WAIT passes (reading or writing).
 */
static void smtpc_close_wait(struct smtpc *s)
{
	struct timeval tv = { SMTPC_CLOSE_WAIT / 1000,
	    (SMTPC_CLOSE_WAIT % 1000) * 1000 };

	if (s->bev == NULL || smtpc_nclosing >= SMTPC_CLOSING_MAX) {
		s->dead = 1;
		return;
	}
	s->state = S_CLOSING;
	s->closing = 1;
	LIST_INSERT_HEAD(&smtpc_closing, s, close_link);
	smtpc_nclosing++;
	bufferevent_set_timeouts(s->bev, NULL, &tv);
	smtpc_deadline(s, SMTPC_CLOSE_WAIT);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	/* Input that came with the refusal is not the QUIT's reply. */
	evbuffer_drain(bufferevent_get_input(s->bev),
	    evbuffer_get_length(bufferevent_get_input(s->bev)));
	s->reply.done = 1;
}

/* The QUIT was answered, the peer closed, or the wait is over. */
static void smtpc_close_done(struct smtpc *s)
{
	s->state = S_DONE;
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	evtimer_del(s->deadline);
	s->dead = 1;
}

void smtpc_finish(struct smtpc *s)
{
	if (s->state == S_DONE || s->state == S_CLOSING)
		return;
	s->state = S_DONE;
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	evtimer_del(s->deadline);
	if (!s->silent && s->src.done != NULL)
		s->src.done(s->arg, &s->st);
	s->silent = 1;		/* the source may be gone now */
	if (s->quit_queued && !s->dead)
		smtpc_close_wait(s);
	else
		s->dead = 1;
}

void smtpc_close_all(struct event_base *base)
{
	struct smtpc *s, *next;

	for (s = LIST_FIRST(&smtpc_closing); s != NULL; s = next) {
		next = LIST_NEXT(s, close_link);
		if (s->base != base)
			continue;
		if (s->busy == 0)
			smtpc_destroy(s);
		else
			smtpc_close_done(s);	/* freed on the way out */
	}
}

/*
 * The connection is unusable (lost, timeout, protocol error, TLS failure):
 * every recipient without a result, of this message and of every message
 * the source still has, gets `code` (4xx: stays queued).
 */
void smtpc_fail(struct smtpc *s, int code, const char *fmt, ...)
{
	char why[200], text[SMTPC_MAX_TEXT];
	va_list ap;

	if (s->state == S_DONE)
		return;
	if (s->state == S_CLOSING) {
		/* Closed, timed out or garbled: the goodbye is over. */
		smtpc_close_done(s);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(s->st.reason, sizeof(s->st.reason), "%s", why);
	if (s->flags & SMTPC_COMMANDS) {
		smtpc_cmd_fail(s, why);
		return;
	}
	if (code / 100 == 4 && strncmp(why, "4", 1) == 0)
		snprintf(text, sizeof(text), "%s", why);
	else
		snprintf(text, sizeof(text), "%d 4.4.2 %s", code, why);
	log_debug("smtpc %s: %s", s->peer ? s->peer : "-", why);
	if (s->state == S_QUIT) {
		/* Everything was done already; a close after QUIT is fine. */
		s->st.ok = 1;
		smtpc_finish(s);
		return;
	}
	s->state = S_DONE;	/* no more I/O while we report */
	if (s->have_msg) {
		smtpc_msg_all(s, code, text);
		smtpc_msg_end(s);
	}
	s->draining = 1;
	while (smtpc_load_msg(s)) {
		smtpc_msg_all(s, code, text);
		smtpc_msg_end(s);
	}
	s->state = S_QUIT;	/* let smtpc_finish run */
	smtpc_finish(s);
}

/* QUIT after a refusal, before smtpc_fail: the session then waits for
 * the QUIT to go (smtpc_close_wait), not marked successful. */
void smtpc_goodbye(struct smtpc *s)
{
	smtpc_send(s, "QUIT");
	s->quit_queued = 1;
}

void smtpc_quit(struct smtpc *s)
{
	smtpc_send(s, "QUIT");
	s->state = S_QUIT;
	s->st.ok = 1;
	snprintf(s->st.reason, sizeof(s->st.reason), "QUIT");
	smtpc_set_timeout(s, s->to.ehlo);
}

/* ---- libevent callbacks ---- */

void smtpc_leave(struct smtpc *s)
{
	if (--s->busy == 0 && s->dead)
		smtpc_destroy(s);
}

/*
 * A peer that writes each reply line as its own small segment without
 * TCP_NODELAY (fetchmail's ODMR pump) sends the next line only when the
 * previous one is acknowledged; our delayed ACK (about 40 ms) then stalls
 * every pipelined reply after the first. Such a peer shows itself by a
 * late reply while others of the group were due and we had nothing to
 * send (which would carry the ACK); from then on, in that state, the ACK
 * goes at once (TCP_QUICKACK sends the pending one; Linux leaves quick-ACK
 * mode on its own, so it is set after each read). Peers that answer
 * promptly (odpull, MTAs) never see an extra ACK segment.
 */
#define SMTPC_QUICKACK_LATE	25	/* ms: a delayed ACK is 40 */

static int smtpc_replies_due(const struct smtpc *s)
{
	/* Of a pipelined group, of LMTP's end of data, or the rest of a
	 * multi-line reply. */
	return (s->state == S_TX && s->pipelined && s->tx_replied < s->tx_sent) ||
	    (s->state == S_DOT && (s->flags & SMTPC_LMTP)) || (s->reply.nlines > 0 && !s->reply.done);
}

/* Input arrived: was it late? */
static void smtpc_quickack_learn(struct smtpc *s)
{
	if (!(s->flags & SMTPC_QUICKACK) || s->due_since == 0)
		return;
	if (!s->quickack &&
	    smtpc_now_ms() - s->due_since >= SMTPC_QUICKACK_LATE) {
		s->quickack = 1;
		log_debug("smtpc %s: replies come one segment at a time; "
		    "acknowledging at once", s->peer ? s->peer : "-");
	}
	s->due_since = 0;
}

/* Input processed: more replies due, nothing to send? */
static void smtpc_quickack(struct smtpc *s)
{
	if (!(s->flags & SMTPC_QUICKACK) || s->dead || s->bev == NULL ||
	    !smtpc_replies_due(s) ||
	    evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
		return;
	if (!s->quickack) {
		s->due_since = smtpc_now_ms();
		return;
	}
#ifdef TCP_QUICKACK
	{
		evutil_socket_t fd = bufferevent_getfd(s->bev);
		int one = 1;

		if (fd >= 0)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one,
			    sizeof(one));
	}
#endif
}

void smtpc_readcb(struct bufferevent *bev, void *arg)
{
	struct smtpc *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	s->busy++;
	smtpc_quickack_learn(s);
	while (!s->dead && s->state != S_DONE && s->state != S_BODY &&
	    s->state != S_HANDSHAKE && !s->cmd_hold) {
		/* the servers' bounded reader: an overlong reply line (CRLF
		 * counted) ends the session, there is no way back in step */
		struct lineio li = { 0 };
		char line[SMTPC_MAX_LINE + 1];
		size_t n;
		enum lineio_result r = lineio_peek(&li, in, SMTPC_MAX_LINE, &n);

		if (r == LINEIO_MORE && !li.discarding)
			break;
		if (r != LINEIO_LINE) {
			smtpc_fail(s, 451, "reply line too long");
			break;
		}
		n = lineio_take(in, n, line, SMTPC_MAX_LINE);
		smtpc_line(s, line, n);
	}
	smtpc_quickack(s);
	smtpc_leave(s);
}

void smtpc_writecb(struct bufferevent *bev, void *arg)
{
	struct smtpc *s = arg;

	(void)bev;
	s->busy++;
	if (s->state == S_BODY) {
		if (s->body_eof) {
			bufferevent_setwatermark(s->bev, EV_WRITE, SMTPC_OUT_LOW, 0);
			smtpc_send_dot(s);
		} else
			smtpc_pump(s);
	}
	smtpc_leave(s);
}

/*
 * The handshake finished: record what it achieved and hold it to the
 * policy. -1: the session was failed (4.7.5).
 */
static int smtpc_tls_established(struct smtpc *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	const char *verified = "no";
	char why[300] = "";

	s->tls_done = 1;
	s->st.tls = 1;
	if (ssl != NULL)
		snprintf(s->st.tls_version, sizeof(s->st.tls_version), "%s",
		    SSL_get_version(ssl));
	if (s->pol != NULL && ssl != NULL &&
	    tlspolicy_check(s->pol, ssl, s->peer, &verified, why,
	    sizeof(why)) < 0) {
		snprintf(s->st.verified, sizeof(s->st.verified), "failed");
		s->st.tls_result = "failed";
		smtpc_goodbye(s);
		smtpc_fail(s, 451, "451 4.7.5 %s", why);
		return -1;
	}
	if (why[0] != '\0')
		log_info("smtpc %s: %s (not enforced)", s->peer ? s->peer : "-",
		    why);
	snprintf(s->st.verified, sizeof(s->st.verified), "%s", verified);
	s->st.tls_result = strcmp(verified, "no") == 0 ? "encrypted" : "verified";
	return 0;
}

void smtpc_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc *s = arg;

	(void)bev;
	s->busy++;
	if (what & BEV_EVENT_CONNECTED) {
		if (s->state == S_HANDSHAKE) {
			if (smtpc_tls_established(s) < 0) {
				smtpc_leave(s);
				return;
			}
			if (s->flags & SMTPC_COMMANDS) {
				if (smtpc_cmd_tls_done(s) < 0) {
					smtpc_leave(s);
					return;
				}
			} else
				smtpc_ehlo(s);
			/* Replies may already be waiting. */
			smtpc_readcb(s->bev, s);
		}
	} else if (what & BEV_EVENT_TIMEOUT) {
		smtpc_fail(s, 451, "timeout during %s with %s",
		    smtpc_state_names[s->state], s->peer ? s->peer : "server");
	} else if (s->state == S_HANDSHAKE) {
		unsigned long e = bufferevent_get_openssl_error(s->bev);
		char buf[128] = "handshake failed";

		if (e != 0)
			ERR_error_string_n(e, buf, sizeof(buf));
		s->st.tls_result = "failed";
		if ((s->flags & SMTPC_COMMANDS) &&
		    bufferevent_openssl_get_ssl(s->bev) != NULL &&
		    SSL_get_verify_result(bufferevent_openssl_get_ssl(s->bev)) !=
		    X509_V_OK)
			smtpc_fail(s, 451, "certificate verification failed: %s",
			    X509_verify_cert_error_string(SSL_get_verify_result(
			    bufferevent_openssl_get_ssl(s->bev))));
		else if (smtpc_tls_required(s))
			smtpc_fail(s, 451, "451 4.7.5 TLS failed with %s: %s",
			    s->peer ? s->peer : "server", buf);
		else
			smtpc_fail(s, 451, "TLS failed with %s: %s",
			    s->peer ? s->peer : "server", buf);
	} else if ((s->flags & SMTPC_COMMANDS) && s->cmd_hold &&
	    evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		/* Replies read ahead come first; smtpc_expect fails then. */
		s->cmd_eof = 1;
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		if (s->cmd_rd != NULL)
			event_del(s->cmd_rd);
	} else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		/* Replies that arrived before the close still count. */
		if (!s->dead && s->state != S_BODY)
			smtpc_readcb(s->bev, s);
		if (!s->dead)
			smtpc_fail(s, 451, "connection lost with %s during %s",
			    s->peer ? s->peer : "server", smtpc_state_names[s->state]);
	}
	smtpc_leave(s);
}

void smtpc_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *s = arg;

	(void)fd;
	(void)what;
	s->busy++;
	if (!s->dead && s->state != S_DONE)
		smtpc_fail(s, 451, "timeout during %s with %s",
		    smtpc_state_names[s->state], s->peer ? s->peer : "server");
	smtpc_leave(s);
}

/* ---- public ---- */

struct smtpc *smtpc_start(struct event_base *base, struct bufferevent *bev,
    const struct smtpc_params *p, const struct smtpc_source *src, void *arg)
{
	struct smtpc *s = xcalloc(1, sizeof(*s));

	s->base = base;
	s->bev = bev;
	s->src = *src;
	s->arg = arg;
	s->helo = xstrdup(p->helo != NULL ? p->helo : "localhost");
	s->peer = p->peer != NULL ? xstrdup(p->peer) : NULL;
	s->flags = p->flags;
	s->tls = (p->flags & (SMTPC_REVERSED | SMTPC_LMTP)) ? NULL : p->tls;
	if (p->policy != NULL) {
		s->pol = xmalloc(sizeof(*s->pol));
		*s->pol = *p->policy;
		if (s->pol->mode == TLSPOLICY_NONE)
			s->tls = NULL;
	}
	if (p->timeouts != NULL)
		s->to = *p->timeouts;
	else
		smtpc_timeouts_default(&s->to);
	s->state = S_GREETING;
	s->reply.done = 1;	/* the next line starts a reply */
	s->started = smtpc_now_ms();
	s->deadline = evtimer_new(base, smtpc_deadline_cb, s);
	snprintf(s->st.reason, sizeof(s->st.reason), "running");
	smtpc_setup_bev(s);
	smtpc_set_timeout(s, s->to.greeting);
	/* A greeting already buffered (ODMR hand-over) is read on the next
	 * loop pass: nothing is called back before we return. */
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS |
		    BEV_TRIG_DEFER_CALLBACKS);
	return s;
}

void smtpc_free(struct smtpc **sp)
{
	struct smtpc *s = *sp;

	if (s == NULL)
		return;
	*sp = NULL;
	s->silent = 1;
	if (s->busy > 0) {
		/* Inside one of our callbacks: free on the way out. */
		s->state = S_DONE;
		s->dead = 1;
		if (s->bev != NULL)
			bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		return;
	}
	smtpc_destroy(s);
}

void smtpc_wake(struct smtpc *s)
{
	if (s == NULL || s->state != S_IDLE || s->dead)
		return;
	s->busy++;
	smtpc_next_tx(s);
	smtpc_leave(s);
}

int smtpc_draining(const struct smtpc *s)
{
	return s->draining;
}

int smtpc_peer_has_dsn(const struct smtpc *s)
{
	return s != NULL && s->esmtp && s->cap_dsn;
}
