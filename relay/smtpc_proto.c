/*
 * smtpc_proto - the SMTP/LMTP client dialogue (see smtpc.h): EHLO/LHLO and
 * its extensions, STARTTLS per the TLS policy, AUTH, the transactions
 * (MAIL, RCPT..., DATA or BDAT, pipelined when offered), dot-stuffing of
 * the message text, and the reply parser (multi-line replies read whole
 * before acting).
 *
 * Trust: server replies are untrusted: lines are bounded (SMTPC_IN_MAX)
 * and parsed strictly.
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

#include "log.h"
#include "xmalloc.h"
#include "smtp_parse.h"
#include "smtpc.h"
#include "tlspolicy.h"
#include "smtpc_private.h"

/* ---- EHLO ---- */

/* What the EHLO reply offers (smtp_parse's keyword reader). */
static void smtpc_ehlo_caps(struct smtpc *s)
{
	const struct smtp_reply *r = &s->reply;
	char size[32];
	const char *p = size;

	s->cap_pipelining = smtp_reply_keyword(r, "PIPELINING", NULL, 0);
	s->cap_8bit = smtp_reply_keyword(r, "8BITMIME", NULL, 0);
	s->cap_utf8 = smtp_reply_keyword(r, "SMTPUTF8", NULL, 0);
	s->cap_dsn = smtp_reply_keyword(r, "DSN", NULL, 0);
	s->cap_starttls = smtp_reply_keyword(r, "STARTTLS", NULL, 0);
	s->cap_size = smtp_reply_keyword(r, "SIZE", size, sizeof(size));
	while (s->cap_size && (*p == ' ' || *p == '='))
		p++;
	s->size_max = s->cap_size && isdigit((unsigned char)*p) ?
	    strtoull(p, NULL, 10) : 0;
}

static void smtpc_caps_clear(struct smtpc *s)
{
	s->esmtp = 0;
	s->cap_pipelining = s->cap_8bit = s->cap_utf8 = s->cap_dsn = 0;
	s->cap_starttls = s->cap_size = 0;
	s->size_max = 0;
}

void smtpc_ehlo(struct smtpc *s)
{
	smtpc_caps_clear(s);
	smtpc_send(s, "%s %s", (s->flags & SMTPC_LMTP) ? "LHLO" : "EHLO", s->helo);
	s->state = S_EHLO;
	smtpc_set_timeout(s, s->to.ehlo);
}

void smtpc_setup_bev(struct smtpc *s)
{
	bufferevent_setcb(s->bev, smtpc_readcb, smtpc_writecb, smtpc_eventcb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTPC_IN_MAX);
	bufferevent_setwatermark(s->bev, EV_WRITE, SMTPC_OUT_LOW, 0);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

void smtpc_starttls(struct smtpc *s)
{
	SSL *ssl = SSL_new(s->tls);
	struct bufferevent *tb;

	if (ssl == NULL) {
		smtpc_fail(s, 451, "cannot create TLS session");
		return;
	}
	if (s->pol != NULL) {
		char err[200];

		if (tlspolicy_prepare(s->pol, ssl, s->peer, err, sizeof(err)) < 0) {
			SSL_free(ssl);
			s->st.tls_result = "failed";
			smtpc_goodbye(s);
			smtpc_fail(s, 451, "451 4.7.5 TLS with %s: %s",
			    s->peer ? s->peer : "server", err);
			return;
		}
	} else if (s->peer != NULL && s->peer[0] != '\0' && s->peer[0] != '[')
		SSL_set_tlsext_host_name(ssl, s->peer);
	bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
	/*
	 * Deferred callbacks: without them libevent 2.1 reports a
	 * close_notify (EOF) before it has committed the bytes read with it,
	 * so a final 250 followed at once by a close would be lost and the
	 * message sent again.
	 */
	tb = bufferevent_openssl_filter_new(s->base, s->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tb == NULL) {
		SSL_free(ssl);
		smtpc_setup_bev(s);
		smtpc_fail(s, 451, "cannot start TLS");
		return;
	}
	/* Peers often close after QUIT without close_notify. */
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	s->bev = tb;
	s->state = S_HANDSHAKE;
	smtpc_setup_bev(s);
	smtpc_set_timeout(s, s->to.ehlo);
}

/* The policy demands TLS and this session has none yet. */
int smtpc_tls_required(const struct smtpc *s)
{
	return s->pol != NULL && !s->tls_done && tlspolicy_required(s->pol) &&
	    !(s->flags & (SMTPC_REVERSED | SMTPC_LMTP));
}

/* Required TLS is not to be had: defer, never go on in clear. */
static void smtpc_tls_missing(struct smtpc *s, const char *what)
{
	s->st.tls_result = "missing";
	smtpc_goodbye(s);
	smtpc_fail(s, 451, "451 4.7.4 TLS required (tls = %s) but %s %s",
	    tlspolicy_mode_name(s->pol->mode), s->peer ? s->peer : "server",
	    what);
}

/* After EHLO/HELO succeeded: STARTTLS or mail. */
static void smtpc_ready(struct smtpc *s)
{
	if (smtpc_tls_required(s) && (!s->esmtp || !s->cap_starttls ||
	    s->tls == NULL)) {
		smtpc_tls_missing(s, s->tls == NULL ? "no TLS context" :
		    "did not offer STARTTLS");
		return;
	}
	if (s->esmtp && s->cap_starttls && s->tls != NULL && !s->tls_done &&
	    !(s->flags & (SMTPC_REVERSED | SMTPC_LMTP))) {
		smtpc_send(s, "STARTTLS");
		s->state = S_STARTTLS;
		smtpc_set_timeout(s, s->to.ehlo);
		return;
	}
	if (!s->tls_done)
		s->st.tls_result = "clear";
	smtpc_next_tx(s);
}

/* ---- transactions ---- */

static const char *smtpc_notify_str(unsigned n, char *buf, size_t size)
{
	buf[0] = '\0';
	if (n & SMTPC_NOTIFY_NEVER) {
		snprintf(buf, size, "NEVER");
		return buf;
	}
	if (n & SMTPC_NOTIFY_SUCCESS)
		strncat(buf, "SUCCESS,", size - strlen(buf) - 1);
	if (n & SMTPC_NOTIFY_FAILURE)
		strncat(buf, "FAILURE,", size - strlen(buf) - 1);
	if (n & SMTPC_NOTIFY_DELAY)
		strncat(buf, "DELAY,", size - strlen(buf) - 1);
	if (buf[0] != '\0')
		buf[strlen(buf) - 1] = '\0';
	return buf;
}

static void smtpc_send_mail(struct smtpc *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	const struct smtpc_msg *m = &s->msg;

	evbuffer_add_printf(out, "MAIL FROM:<%s>", m->sender);
	if (s->cap_size)
		evbuffer_add_printf(out, " SIZE=%" PRIu64, m->size);
	if ((m->flags & SMTPC_F_8BITMIME) && s->cap_8bit)
		evbuffer_add_printf(out, " BODY=8BITMIME");
	if ((m->flags & SMTPC_F_SMTPUTF8) && s->cap_utf8)
		evbuffer_add_printf(out, " SMTPUTF8");
	if (s->cap_dsn && m->ret == SMTPC_RET_FULL)
		evbuffer_add_printf(out, " RET=FULL");
	else if (s->cap_dsn && m->ret == SMTPC_RET_HDRS)
		evbuffer_add_printf(out, " RET=HDRS");
	if (s->cap_dsn && m->envid != NULL && m->envid[0] != '\0')
		evbuffer_add_printf(out, " ENVID=%s", m->envid);
	evbuffer_add(out, "\r\n", 2);
}

static void smtpc_send_rcpt(struct smtpc *s, size_t i)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	const struct smtpc_rcpt *r = &s->msg.rcpts[i];
	char nb[64];

	evbuffer_add_printf(out, "RCPT TO:<%s>", r->addr);
	if (s->cap_dsn && r->notify != 0)
		evbuffer_add_printf(out, " NOTIFY=%s",
		    smtpc_notify_str(r->notify, nb, sizeof(nb)));
	if (s->cap_dsn && r->orcpt != NULL && r->orcpt[0] != '\0')
		evbuffer_add_printf(out, " ORCPT=%s", r->orcpt);
	evbuffer_add(out, "\r\n", 2);
}

/* Write command number k of the transaction (0 MAIL, 1..ntx RCPT, DATA). */
static void smtpc_send_cmd(struct smtpc *s, size_t k)
{
	if (k == 0)
		smtpc_send_mail(s);
	else if (k <= s->ntx)
		smtpc_send_rcpt(s, s->tx[k - 1]);
	else
		smtpc_send(s, "DATA");
	s->tx_sent = k + 1;
}

/* Local checks before any command: what this server cannot take. */
static int smtpc_precheck(struct smtpc *s)
{
	const struct smtpc_msg *m = &s->msg;
	char text[SMTPC_MAX_TEXT];
	size_t i;

	if (!smtpc_safe(m->sender) || !smtpc_safe(m->envid)) {
		smtpc_msg_all(s, 554, "554 5.6.0 invalid envelope (control characters)");
		return -1;
	}
	if ((m->flags & SMTPC_F_SMTPUTF8) && !s->cap_utf8) {
		/* RFC 6531 3.4: no downgrade here; return it. */
		smtpc_msg_all(s, 554, "554 5.6.7 the receiving server does not support SMTPUTF8");
		return -1;
	}
	if ((m->flags & SMTPC_F_8BITMIME) && !s->cap_8bit) {
		/* RFC 6152 3: bounce or convert; we bounce. */
		smtpc_msg_all(s, 554, "554 5.6.3 the receiving server does not support 8BITMIME");
		return -1;
	}
	if (s->cap_size && s->size_max > 0 && m->size > s->size_max) {
		snprintf(text, sizeof(text),
		    "552 5.3.4 message size %" PRIu64 " exceeds the receiving server's limit %" PRIu64,
		    m->size, s->size_max);
		smtpc_msg_all(s, 552, text);
		return -1;
	}
	for (i = 0; i < m->nrcpts; i++)
		if (!smtpc_safe(m->rcpts[i].addr) || !smtpc_safe(m->rcpts[i].orcpt))
			smtpc_result(s, i, 553, "553 5.1.3 invalid recipient (control characters)");
	return 0;
}

/*
 * The connection has been open for the session limit: the messages left
 * wait for the next attempt (or pull), so one slow peer cannot keep a
 * delivery slot, nor the leases on its messages, for ever.
 */
static void smtpc_session_over(struct smtpc *s)
{
	char text[SMTPC_MAX_TEXT];

	snprintf(text, sizeof(text), "451 4.4.2 session time limit (%us) "
	    "reached with %s; the rest will be sent later", s->to.session / 1000,
	    s->peer ? s->peer : "server");
	log_info("smtpc %s: session time limit reached, QUIT",
	    s->peer ? s->peer : "-");
	s->draining = 1;
	while (smtpc_load_msg(s)) {
		smtpc_msg_all(s, 451, text);
		smtpc_msg_end(s);
	}
	smtpc_quit(s);
}

static int smtpc_can_pipeline(const struct smtpc *s)
{
	return s->esmtp && s->cap_pipelining &&
	    !(s->flags & (SMTPC_ONE_LINE_WRITES | SMTPC_NO_PIPELINING));
}

/* Start the next transaction, message, or QUIT. */
void smtpc_next_tx(struct smtpc *s)
{
	size_t i, k;

	for (;;) {
		if (s->state == S_DONE)
			return;
		if (!s->have_msg && s->to.session > 0 &&
		    smtpc_now_ms() - s->started >= s->to.session) {
			smtpc_session_over(s);
			return;
		}
		if (!s->have_msg) {
			if (!smtpc_load_msg(s)) {
				if (s->idle_wanted && s->need_rset) {
					/* Leave the server clean while we wait. */
					smtpc_send(s, "RSET");
					s->state = S_RSET;
					smtpc_set_timeout(s, s->to.ehlo);
					return;
				}
				if (s->idle_wanted) {
					s->state = S_IDLE;
					smtpc_set_timeout(s, 0);
					return;
				}
				smtpc_quit(s);
				return;
			}
			if (smtpc_precheck(s) < 0) {
				smtpc_msg_end(s);
				continue;
			}
		}
		s->ntx = 0;
		for (i = 0; i < s->msg.nrcpts && s->ntx < SMTPC_MAX_RCPTS; i++)
			if (s->rst[i] == R_PENDING)
				s->tx[s->ntx++] = i;
		if (s->ntx == 0) {
			smtpc_msg_end(s);
			continue;
		}
		break;
	}
	if (s->need_rset) {
		smtpc_send(s, "RSET");
		s->state = S_RSET;
		smtpc_set_timeout(s, s->to.ehlo);
		return;
	}
	for (k = 0; k < s->ntx; k++)
		s->rst[s->tx[k]] = R_TX;
	s->tx_sent = s->tx_replied = 0;
	s->nacc = s->lmtp_next = 0;
	s->mail_ok = 0;
	s->progress = 0;
	s->retry_text[0] = '\0';
	s->pipelined = smtpc_can_pipeline(s);
	s->state = S_TX;
	if (s->pipelined) {
		/* A probe stops before DATA. */
		for (k = 0; k < s->ntx + ((s->flags & SMTPC_PROBE) ? 1 : 2); k++)
			smtpc_send_cmd(s, k);
	} else
		smtpc_send_cmd(s, 0);
	smtpc_set_timeout(s, s->to.mail);
}

/* The transaction is over (whatever happened): decide the 452 ones. */
static void smtpc_end_tx(struct smtpc *s)
{
	size_t k;

	for (k = 0; k < s->ntx; k++) {
		size_t i = s->tx[k];

		switch (s->rst[i]) {
		case R_RETRY:
			/* A further transaction only if this one moved on (a
			 * recipient was taken, whatever its end-of-data
			 * answer: an LMTP mailbox over quota must not block
			 * the others); otherwise the server will not take
			 * them now. Each round settles at least one. */
			if (s->progress || s->nacc > 0)
				s->rst[i] = R_PENDING;
			else
				smtpc_result(s, i, 452, s->retry_text[0] ? s->retry_text :
				    "452 4.5.3 too many recipients");
			break;
		case R_TX:
		case R_ACCEPTED:
			/* Not reached (no reply): try again later in the session. */
			s->rst[i] = R_PENDING;
			break;
		default:
			break;
		}
	}
	s->ntx = 0;
	smtpc_next_tx(s);
}

/* ---- message text ---- */

static void smtpc_body_put(struct smtpc *s, struct evbuffer *out,
    const unsigned char *p, size_t n)
{
	size_t i, run = 0;

	for (i = 0; i < n; i++) {
		if (s->bol && p[i] == '.') {
			/* RFC 5321 4.5.2: double a leading dot. */
			if (i > run)
				evbuffer_add(out, p + run, i - run);
			evbuffer_add(out, ".", 1);
			s->st.bytes++;
			run = i;
		}
		s->bol = p[i] == '\n';
	}
	if (n > run)
		evbuffer_add(out, p + run, n - run);
	s->st.bytes += n;
	s->body_len += n;
	if (n >= 2) {
		s->last[0] = p[n - 2];
		s->last[1] = p[n - 1];
	} else if (n == 1) {
		s->last[0] = s->last[1];
		s->last[1] = p[0];
	}
}

void smtpc_send_dot(struct smtpc *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);

	smtpc_body_close(s);
	evbuffer_add(out, ".\r\n", 3);
	s->state = S_DOT;
	smtpc_set_timeout(s, s->to.dot);
	/* A reply that came while we were sending the text (an early 5xx)
	 * was not read then: read it now, from the loop. */
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
		bufferevent_trigger(s->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Feed the body into the output buffer up to the high watermark. */
void smtpc_pump(struct smtpc *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);

	while (s->state == S_BODY && !s->body_eof &&
	    evbuffer_get_length(out) < SMTPC_OUT_HIGH) {
		if (s->chunk_off >= s->chunk_len) {
			int rc = s->src.body_read(s->arg, &s->chunk, &s->chunk_len);

			s->chunk_off = 0;
			if (rc < 0) {
				/*
				 * Our store failed mid-message. The server
				 * must not get a truncated message: drop the
				 * connection (deferred) rather than send ".".
				 */
				smtpc_fail(s, 451, "451 4.3.0 local error reading the message");
				return;
			}
			if (rc == 0) {
				s->chunk_len = 0;
				s->body_eof = 1;
				break;
			}
			continue;
		}
		{
			size_t n = s->chunk_len - s->chunk_off;

			if (n > SMTPC_SLICE)
				n = SMTPC_SLICE;
			smtpc_body_put(s, out, s->chunk + s->chunk_off, n);
			s->chunk_off += n;
		}
	}
	if (s->state != S_BODY || !s->body_eof)
		return;
	if (s->body_len > 0 && !(s->last[0] == '\r' && s->last[1] == '\n')) {
		/* RFC 5321 4.1.1.4: the text must end with CRLF. */
		evbuffer_add(out, "\r\n", 2);
		s->last[0] = '\r';
		s->last[1] = '\n';
		s->st.bytes += 2;
	}
	if ((s->flags & SMTPC_ONE_LINE_WRITES) && evbuffer_get_length(out) > 0) {
		/* The final dot goes in its own write (fetchmail's pump). */
		bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
		return;
	}
	smtpc_send_dot(s);
}

static void smtpc_body_start(struct smtpc *s)
{
	s->bol = 1;
	s->body_eof = 0;
	s->body_len = 0;
	s->last[0] = s->last[1] = 0;
	s->chunk = NULL;
	s->chunk_len = s->chunk_off = 0;
	if (s->src.body_open != NULL && s->src.body_open(s->arg) < 0) {
		smtpc_fail(s, 451, "451 4.3.0 local error opening the message");
		return;
	}
	s->body_is_open = 1;
	s->state = S_BODY;
	smtpc_set_timeout(s, 0);
	/* A server that reads a byte now and then keeps each write alive:
	 * the whole text must go at the minimum rate. */
	if (s->to.min_rate > 0)
		smtpc_deadline(s, s->to.block + (s->msg.size + s->msg.size / 8 +
		    4096) * 1000 / s->to.min_rate);
	bufferevent_setwatermark(s->bev, EV_WRITE, SMTPC_OUT_LOW, 0);
	smtpc_pump(s);
}

/* ---- replies ---- */

static void smtpc_tx_reply(struct smtpc *s, int code, const char *text)
{
	size_t k = s->tx_replied++;
	int cls = smtpc_code_class(code);

	if (k == 0) {			/* MAIL */
		if (cls == SMTPC_CLASS_OK) {
			s->mail_ok = 1;
		} else {
			/* Every recipient left of this message shares the
			 * sender's fate (RFC 5321 4.2.5). */
			smtpc_msg_all(s, code, text);
			s->need_rset = 1;
		}
		if (!s->pipelined) {
			if (!s->mail_ok) {
				smtpc_end_tx(s);
				return;
			}
			smtpc_send_cmd(s, 1);
			smtpc_set_timeout(s, s->to.rcpt);
			return;
		}
		smtpc_set_timeout(s, s->to.rcpt);
		return;
	}
	if (k <= s->ntx && (s->flags & SMTPC_PROBE)) {
		size_t i = s->tx[k - 1];

		/* The RCPT reply is the answer; no DATA, RSET before more. */
		if (s->mail_ok && s->rst[i] == R_TX) {
			if (s->src.rcpt_reply != NULL && !s->silent)
				s->src.rcpt_reply(s->arg, i, code, text);
			smtpc_result(s, i, code, text);
		}
		if (k == s->ntx) {
			s->need_rset = 1;
			smtpc_end_tx(s);
		} else if (!s->pipelined)
			smtpc_send_cmd(s, k + 1);
		return;
	}
	if (k <= s->ntx) {		/* RCPT */
		size_t i = s->tx[k - 1];

		if (s->mail_ok && s->rst[i] == R_TX) {
			if (s->src.rcpt_reply != NULL && !s->silent)
				s->src.rcpt_reply(s->arg, i, code, text);
			if (cls == SMTPC_CLASS_OK) {
				s->rst[i] = R_ACCEPTED;
				s->acc[s->nacc++] = i;
			} else if (code == 452 || code == 552) {
				/* Too many recipients (RFC 5321 4.5.3.1.10:
				 * 552 here is the old form, temporary). */
				s->rst[i] = R_RETRY;
				snprintf(s->retry_text, sizeof(s->retry_text),
				    "%s", code == 452 ? text : "452 4.5.3 too many recipients");
			} else
				smtpc_result(s, i, code, text);
		}
		if (s->pipelined) {
			if (k == s->ntx)
				smtpc_set_timeout(s, s->to.data);
			return;
		}
		if (k < s->ntx) {
			smtpc_send_cmd(s, k + 1);
			return;
		}
		if (s->nacc == 0) {
			s->need_rset = 1;
			smtpc_end_tx(s);
			return;
		}
		smtpc_send_cmd(s, k + 1);
		smtpc_set_timeout(s, s->to.data);
		return;
	}
	/* DATA */
	if (code == 354) {
		if (s->mail_ok && s->nacc > 0) {
			smtpc_body_start(s);
			return;
		}
		/* RFC 2920 3.1: 354 although nothing was accepted. */
		smtpc_send(s, ".");
		s->state = S_DOT_DISCARD;
		smtpc_set_timeout(s, s->to.dot);
		return;
	}
	if (s->mail_ok) {
		size_t j;
		char buf[SMTPC_MAX_TEXT];

		if (cls == SMTPC_CLASS_OK) {
			/* Not 354 but "success": nothing was sent. */
			snprintf(buf, sizeof(buf), "451 4.5.0 unexpected reply to DATA: %.400s", text);
			code = 451;
			text = buf;
		}
		for (j = 0; j < s->nacc; j++)
			smtpc_result(s, s->acc[j], code, text);
	}
	s->need_rset = 1;
	smtpc_end_tx(s);
}

static void smtpc_dot_reply(struct smtpc *s, int code, const char *text)
{
	size_t j;

	if (s->flags & SMTPC_LMTP) {
		/* RFC 2033 4.2: one reply per accepted recipient, in order. */
		if (s->lmtp_next < s->nacc) {
			if (smtpc_code_class(code) == SMTPC_CLASS_OK)
				s->progress = 1;
			smtpc_result(s, s->acc[s->lmtp_next++], code, text);
		}
		if (s->lmtp_next < s->nacc)
			return;
	} else {
		if (smtpc_code_class(code) == SMTPC_CLASS_OK)
			s->progress = 1;
		for (j = 0; j < s->nacc; j++)
			smtpc_result(s, s->acc[j], code, text);
	}
	smtpc_end_tx(s);
}

static void smtpc_reply(struct smtpc *s, int code, const char *text)
{
	int cls = smtpc_code_class(code);

	if (s->state == S_CMD) {
		smtpc_cmd_reply(s);
		return;
	}
	if (s->state == S_CLOSING) {
		/* The QUIT's reply, whatever it says: the goodbye is over. */
		smtpc_fail(s, code, "%s", text);
		return;
	}
	if (code == 421 && s->state != S_QUIT && s->state != S_GREETING) {
		/* The server is closing the channel (RFC 5321 3.8). A 421
		 * greeting is a refusal like 554: QUIT (protocol-notes). */
		smtpc_fail(s, 421, "%s", text);
		return;
	}
	switch (s->state) {
	case S_GREETING:
		if (code != 220) {
			/* Refused: keep the mail, say goodbye politely. */
			smtpc_goodbye(s);
			smtpc_fail(s, 451, "greeting refused: %s", text);
			return;
		}
		smtpc_ehlo(s);
		return;
	case S_EHLO:
		if (cls == SMTPC_CLASS_OK) {
			s->esmtp = 1;
			smtpc_ready(s);
			return;
		}
		if (code >= 500 && !(s->flags & SMTPC_LMTP)) {
			smtpc_caps_clear(s);
			smtpc_send(s, "HELO %s", s->helo);
			s->state = S_HELO;
			smtpc_set_timeout(s, s->to.ehlo);
			return;
		}
		smtpc_goodbye(s);
		smtpc_fail(s, 451, "%s refused: %s",
		    (s->flags & SMTPC_LMTP) ? "LHLO" : "EHLO", text);
		return;
	case S_HELO:
		if (cls != SMTPC_CLASS_OK) {
			smtpc_goodbye(s);
			smtpc_fail(s, 451, "HELO refused: %s", text);
			return;
		}
		smtpc_caps_clear(s);
		if (smtpc_tls_required(s)) {
			smtpc_tls_missing(s, "does not speak ESMTP");
			return;
		}
		s->st.tls_result = "clear";
		smtpc_next_tx(s);
		return;
	case S_STARTTLS:
		if (code == 220) {
			smtpc_starttls(s);
			return;
		}
		if (smtpc_tls_required(s)) {
			smtpc_tls_missing(s, "refused STARTTLS");
			return;
		}
		s->st.tls_result = "clear";
		/* Opportunistic TLS (RFC 7435): go on in clear. */
		s->tls = NULL;
		smtpc_next_tx(s);
		return;
	case S_RSET:
		/* Whatever it said, a failed RSET leaves nothing better. */
		s->need_rset = 0;
		smtpc_next_tx(s);
		return;
	case S_TX:
		smtpc_tx_reply(s, code, text);
		return;
	case S_DOT:
		smtpc_dot_reply(s, code, text);
		return;
	case S_DOT_DISCARD:
		s->need_rset = 1;
		smtpc_end_tx(s);
		return;
	case S_QUIT:
		smtpc_finish(s);
		return;
	case S_HANDSHAKE:
	case S_BODY:
	case S_IDLE:
	case S_CMD:
	case S_CLOSING:
	case S_DONE:
		smtpc_fail(s, 451, "unexpected reply during %s: %s",
		    smtpc_state_names[s->state], text);
		return;
	}
}

/* A complete reply: its text for results and logs, one line ("250-first
 * second ..."), control characters from the peer blanked out so they stay
 * out of our logs and DSNs. */
static void smtpc_reply_text(struct smtpc *s)
{
	const struct smtp_reply *r = &s->reply;
	size_t n = 0, len;
	const char *t;

	for (size_t i = 0; i < r->nlines; i++) {
		int w;

		if ((t = smtp_reply_line(r, i, &len)) == NULL)
			break;
		if (i == 0)
			w = len == 0 && r->nlines == 1 ?
			    snprintf(s->rtext, sizeof(s->rtext), "%03d", r->code) :
			    snprintf(s->rtext, sizeof(s->rtext), "%03d%c%.*s",
			    r->code, r->nlines > 1 ? '-' : ' ', (int)len, t);
		else
			w = snprintf(s->rtext + n, sizeof(s->rtext) - n, " %.*s",
			    (int)len, t);
		if (w < 0 || (n += (size_t)w) >= sizeof(s->rtext) - 1) {
			n = sizeof(s->rtext) - 1;
			break;
		}
	}
	s->rtext[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s->rtext[i] < 0x20 || s->rtext[i] == 0x7f)
			s->rtext[i] = ' ';
}

/* One line of a reply (smtp_parse's reply reader); handles the reply when
 * it is complete. */
void smtpc_line(struct smtpc *s, const char *line, size_t len)
{
	int rc;

	if (s->reply.done) {
		smtp_reply_init(&s->reply);
		s->rbytes = 0;
	}
	rc = smtp_reply_feed(&s->reply, line, len);
	if (rc < 0) {
		char buf[128];

		smtpc_fail(s, 451, "malformed reply: %s",
		    log_sanitize(buf, sizeof(buf), line, 80));
		return;
	}
	/* A peer must not keep us reading one endless reply. */
	s->rbytes += len + 2;
	if (s->reply.nlines > SMTPC_MAX_LINES || s->rbytes > SMTPC_MAX_REPLY) {
		smtpc_fail(s, 451, "reply of more than %d lines or %d octets",
		    SMTPC_MAX_LINES, SMTPC_MAX_REPLY);
		return;
	}
	if (rc == 0)
		return;
	if (s->state == S_EHLO && s->reply.code / 100 == 2)
		smtpc_ehlo_caps(s);
	smtpc_reply_text(s);
	smtpc_reply(s, s->reply.code, s->rtext);
}
