/*
 * smtpd_data - the message text of an inbound session: our Received
 * header, the DATA scanner (dot-unstuffing; only CRLF.CRLF ends the text,
 * bare CR/LF and NUL refuse the message, RFC 5321 4.1.1.4 and the SMTP
 * smuggling class), streaming to queue_put_write with backpressure, the
 * milters' end of message, and the commit whose callback sends the 250.
 *
 * Trust: every byte comes from the network; memory stays bounded
 * (SMTPD_DATA_CHUNK) whatever the length of a line or message.
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

/* ---- Received header ---- */

void
smtpd_received(struct smtpd_session *ss, char *buf, size_t size)
{
	struct smtpd_tx *tx = ss->tx;
	char date[64], forbuf[SMTP_PATH_MAX + 16];
	const char *proto;
	time_t now = time(NULL);
	struct tm tm;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	/* RFC 3848 protocol names. */
	if (tx->mp.smtputf8)
		proto = ss->user[0] ? "UTF8SMTPSA" : ss->tls_on ? "UTF8SMTPS" :
		    "UTF8SMTP";
	else if (ss->esmtp)
		proto = ss->user[0] ? "ESMTPSA" : ss->tls_on ? "ESMTPS" : "ESMTP";
	else
		proto = ss->tls_on ? "SMTPS" : "SMTP";
	/* One "for" at most, and only for a single recipient: listing
	 * several would disclose Bcc recipients (RFC 5321 7.2). */
	if (tx->nrcpts == 1)
		snprintf(forbuf, sizeof(forbuf), "\r\n\tfor <%s>",
		    tx->rcpts[0].addr);
	else
		forbuf[0] = '\0';
	snprintf(buf, size, "Received: from %s ([%s%s])\r\n"
	    "\tby %s (odrelay) with %s id %s%s;\r\n\t%s\r\n",
	    ss->helo, ss->v6 ? "IPv6:" : "", ss->ip, ss->cfg->hostname, proto,
	    tx->id, forbuf, date);
}

/* ---- DATA ---- */

void
smtpd_resume(void *arg)
{
	struct smtpd_session *ss = arg;

	if (!ss->paused)
		return;
	ss->paused = 0;
	if (ss->bev == NULL)
		return;
	bufferevent_enable(ss->bev, EV_READ);
	smtpd_session_input(ss);
	smtpd_session_reap(ss);
}

/* Hand out[0..len) to the queue. Returns 1 when reading must pause. */
static int
smtpd_data_write(struct smtpd_session *ss, const char *out, size_t len)
{
	struct smtpd_tx *tx = ss->tx;
	int r;

	if (len == 0 || tx->bad != 0 || tx->put == NULL)
		return 0;
	if (milter_sess_filtering(ss->milter))
		return milter_sess_write(ss->milter, out, len);
	r = queue_put_write(tx->put, out, len);
	if (r < 0) {
		tx->bad |= SMTPD_BAD_QUEUE;
		tx->qerr = r;
		return 0;
	}
	return r == 1;
}

/* End of a text line (CRLF seen): header accounting. */
static void
smtpd_data_eol(struct smtpd_session *ss)
{
	struct smtpd_tx *tx = ss->tx;

	if (tx->in_headers) {
		if (tx->line_len == 0)
			tx->in_headers = 0;
		else if (tx->line_len >= 9 &&
		    strncasecmp(tx->hdr, "received:", 9) == 0)
			tx->nreceived++;
	}
	tx->line_len = 0;
}

static void
smtpd_data_octet(struct smtpd_tx *tx, char *out, size_t *olen, char c)
{
	if (tx->line_len < sizeof(tx->hdr) - 1)
		tx->hdr[tx->line_len] = c;
	tx->line_len++;
	out[(*olen)++] = c;
}

/* Bytes from p[0] on that are none of CR, LF and NUL, eight at a time:
 * most of a message is such runs, and a byte switch per octet was the
 * scanner's cost. */
static size_t
smtpd_data_plain(const unsigned char *p, size_t n)
{
	const uint64_t ones = 0x0101010101010101ULL;
	const uint64_t highs = 0x8080808080808080ULL;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w, cr, lf;

		memcpy(&w, p + i, 8);
		cr = w ^ (ones * '\r');
		lf = w ^ (ones * '\n');
		/* a zero byte in w, cr or lf (the classic haszero test) */
		if ((((w - ones) & ~w) | ((cr - ones) & ~cr) |
		    ((lf - ones) & ~lf)) & highs)
			break;
	}
	for (; i < n; i++)
		if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
			break;
	return i;
}

/* A run of ordinary octets inside a line (smtpd_data_plain). */
static void
smtpd_data_run(struct smtpd_tx *tx, char *out, size_t *olen,
    const unsigned char *p, size_t n)
{
	if (tx->line_len < sizeof(tx->hdr) - 1) {
		size_t k = sizeof(tx->hdr) - 1 - tx->line_len;

		memcpy(tx->hdr + tx->line_len, p, k < n ? k : n);
	}
	tx->line_len += n;
	memcpy(out + *olen, p, n);
	*olen += n;
}

static void smtpd_data_end(struct smtpd_session *ss);

/*
 * Scan message text. Only CRLF "." CRLF ends it; a bare CR, a bare LF or a
 * NUL marks the message bad (RFC 5321 2.3.8 / 4.1.1.4; SMTP smuggling), and
 * a bare LF does not start a new line, so "\n.\r\n" can never end the data.
 * Returns 1 when input processing must stop (paused or message ended).
 */
int
smtpd_data_scan(struct smtpd_session *ss)
{
	struct evbuffer *in = bufferevent_get_input(ss->bev);
	struct smtpd_tx *tx = ss->tx;
	char out[SMTPD_DATA_CHUNK + 2];
	size_t avail, n, i, olen;
	unsigned char *p;
	uint64_t max = ss->cfg->max_message_size;
	int pause = 0;

	while ((avail = evbuffer_get_length(in)) > 0) {
		n = avail < SMTPD_DATA_CHUNK ? avail : SMTPD_DATA_CHUNK;
		p = evbuffer_pullup(in, (ssize_t)n);
		/* A trickle cannot hold DATA open: each block must arrive
		 * within smtp_timeout. */
		if ((ss->data_bytes += n) >= SMTPD_DATA_CHUNK) {
			ss->data_bytes = 0;
			smtpd_deadline_arm(ss);
		}
		olen = 0;
		for (i = 0; i < n; i++) {
			char c;

			if (tx->ds == SMTPD_DS_MID) {
				size_t k = smtpd_data_plain(p + i, n - i);

				smtpd_data_run(tx, out, &olen, p + i, k);
				if ((i += k) == n)
					break;
			}
			c = (char)p[i];
			switch (tx->ds) {
			case SMTPD_DS_DOT:
				if (c == '\r') {
					tx->ds = SMTPD_DS_DOTCR;
					continue;
				}
				/* leading dot removed (dot-unstuffing) */
				tx->ds = SMTPD_DS_MID;
				break;
			case SMTPD_DS_DOTCR:
				if (c == '\n') {
					evbuffer_drain(in, i + 1);
					tx->size += olen;
					if (tx->size > max && max > 0)
						tx->bad |= SMTPD_BAD_SIZE;
					smtpd_data_write(ss, out, olen);
					smtpd_data_end(ss);
					return 1;
				}
				/* ".\r" + not LF: bare CR */
				tx->bad |= SMTPD_BAD_LINE;
				tx->ds = SMTPD_DS_MID;
				break;
			case SMTPD_DS_CR:
				if (c == '\n') {
					out[olen++] = '\r';
					out[olen++] = '\n';
					smtpd_data_eol(ss);
					tx->ds = SMTPD_DS_BOL;
					continue;
				}
				tx->bad |= SMTPD_BAD_LINE;
				tx->ds = SMTPD_DS_MID;
				break;
			case SMTPD_DS_BOL:
				if (c == '.') {
					tx->ds = SMTPD_DS_DOT;
					continue;
				}
				tx->ds = SMTPD_DS_MID;
				break;
			case SMTPD_DS_MID:
				break;
			}
			/* an ordinary octet inside a line */
			if (c == '\r') {
				tx->ds = SMTPD_DS_CR;
				continue;
			}
			if (c == '\n' || c == '\0')
				tx->bad |= SMTPD_BAD_LINE;
			smtpd_data_octet(tx, out, &olen, c);
		}
		evbuffer_drain(in, n);
		tx->size += olen;
		if (tx->size > max && max > 0)
			tx->bad |= SMTPD_BAD_SIZE;
		if (smtpd_data_write(ss, out, olen))
			pause = 1;
		if (pause) {
			ss->paused = 1;
			bufferevent_disable(ss->bev, EV_READ);
			return 1;
		}
	}
	return 0;
}

static void smtpd_tx_over(struct smtpd_session *ss);
static void smtpd_data_commit(struct smtpd_session *ss, unsigned flags);

static void
smtpd_commit_done(void *arg, int result)
{
	struct smtpd_session *ss = arg;
	struct smtpd_tx *tx = ss->tx;
	char sbuf[300];

	tx->put = NULL;		/* the queue freed it */
	if (result == QUEUE_OK) {
		/* size= is what is stored (with our Received header), as
		 * odrelayctl lists it and quotas count it. */
		log_info("%s: from=<%s>, size=%llu, nrcpt=%zu, client=%s",
		    tx->id, log_sanitize(sbuf, sizeof(sbuf), tx->sender, 256),
		    (unsigned long long)(tx->size + tx->received_len),
		    tx->nrcpts, ss->ip);
		smtpd_reply(ss, "250 2.0.0 Ok: queued as %s", tx->id);
		metrics_inc(METRIC_RECEIVED, NULL);
		metrics_add(METRIC_RECEIVED_BYTES, NULL, tx->size);
		if (ss->s->added_fn != NULL)
			ss->s->added_fn(ss->s->added_arg, tx->id);
	} else {
		log_warn("NOQUEUE: client=%s, commit failed: %s", ss->ip,
		    queue_strerror(result));
		metrics_inc(METRIC_REJECTED, result == QUEUE_EQUOTA ? "quota" :
		    result == QUEUE_EFULL ? "queue-full" : "queue-error");
		if (result == QUEUE_EQUOTA) {
			const char *doms[64];
			size_t nd = 0;

			for (size_t k = 0; k < tx->nrcpts && nd < 64; k++)
				doms[nd++] = tx->rcpts[k].domain;
			room_quota_reply(ss->s->q, doms, nd, tx->size, sbuf,
			    sizeof(sbuf));
			smtpd_reply(ss, "%s", sbuf);
		} else if (result == QUEUE_EFULL)
			smtpd_reply(ss, "452 4.3.1 Insufficient system storage");
		else
			smtpd_reply(ss, "451 4.3.0 Local error in processing");
	}
	smtpd_tx_over(ss);
}

/* The transaction got its final reply: back to reading commands. */
static void
smtpd_tx_over(struct smtpd_session *ss)
{
	milter_sess_end_tx(ss->milter);
	smtpd_tx_free(&ss->tx);
	smtpd_enter_state(ss, SMTPD_ST_HELO);
	if (ss->bev == NULL) {
		smtpd_session_free(ss);
		return;
	}
	if (ss->s->shutting_down) {
		smtpd_reply(ss, "421 4.3.2 %s Service shutting down",
		    ss->cfg->hostname);
		smtpd_session_close(ss);
	} else {
		/* pipelined commands may be waiting */
		bufferevent_enable(ss->bev, EV_READ);
		smtpd_session_input(ss);
	}
	smtpd_session_reap(ss);
}

/* First line of a (milter) reply, for the log. */
const char *
smtpd_reply_line1(char *buf, size_t size, const char *reply)
{
	char line[512];
	size_t n = strcspn(reply, "\r\n");

	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	memcpy(line, reply, n);
	line[n] = '\0';
	return log_sanitize(buf, size, line, 300);
}

/* The milters answered the end of the message (and wrote it). */
static void
smtpd_milter_eom(void *arg, const struct milter_result *r)
{
	struct smtpd_session *ss = arg;
	struct smtpd_tx *tx = ss->tx;
	char sbuf[300], rbuf[400];
	size_t i, j, kept;

	if (r->v.action == MILTER_REJECT || r->v.action == MILTER_TEMPFAIL) {
		log_info("%s: milter-reject: END-OF-MESSAGE from [%s]: %s; "
		    "from=<%s>, milter=%s", tx->id, ss->ip,
		    smtpd_reply_line1(rbuf, sizeof(rbuf), r->v.reply),
		    log_sanitize(sbuf, sizeof(sbuf), tx->sender, 256),
		    r->v.milter);
		metrics_inc(METRIC_REJECTED, "milter");
		smtpd_reply(ss, "%s", r->v.reply);
		smtpd_tx_over(ss);
		return;
	}
	/* recipients a milter deleted */
	for (i = kept = 0; i < tx->nrcpts; i++) {
		for (j = 0; j < r->ndeleted; j++)
			if (strcasecmp(tx->rcpts[i].addr, r->deleted[j]) == 0)
				break;
		if (j < r->ndeleted) {
			free(tx->rcpts[i].addr);
			free(tx->rcpts[i].domain);
			free(tx->rcpts[i].orcpt);
			continue;
		}
		tx->rcpts[kept++] = tx->rcpts[i];
	}
	tx->nrcpts = kept;
	if (r->v.action == MILTER_DISCARD || tx->nrcpts == 0) {
		log_info("%s: milter-discard: END-OF-MESSAGE from [%s]: "
		    "from=<%s>, milter=%s", tx->id, ss->ip,
		    log_sanitize(sbuf, sizeof(sbuf), tx->sender, 256),
		    r->v.milter[0] ? r->v.milter : "(all recipients deleted)");
		metrics_inc(METRIC_REJECTED, "milter-discard");
		smtpd_reply(ss, "250 2.0.0 Ok: queued as %s", tx->id);
		smtpd_tx_over(ss);
		return;
	}
	if (r->sender != NULL) {
		free(tx->sender);
		tx->sender = xstrdup(r->sender);
	}
	if (r->quarantine)
		log_info("%s: quarantined: %s", tx->id,
		    log_sanitize(sbuf, sizeof(sbuf), r->qreason, 200));
	smtpd_data_commit(ss, r->quarantine ? QUEUE_F_QUARANTINE : 0);
}

static void smtpd_data_commit(struct smtpd_session *ss, unsigned flags);
static void smtpd_milter_eom(void *arg, const struct milter_result *r);
static void smtpd_tx_over(struct smtpd_session *ss);

static void
smtpd_data_end(struct smtpd_session *ss)
{
	struct smtpd_tx *tx = ss->tx;
	char sbuf[300];

	if (tx->size > ss->cfg->max_message_size &&
	    ss->cfg->max_message_size > 0)
		tx->bad |= SMTPD_BAD_SIZE;
	if (tx->nreceived > ss->cfg->max_received && ss->cfg->max_received > 0)
		tx->bad |= SMTPD_BAD_LOOP;
	if (tx->bad != 0) {
		const char *why;
		if (tx->bad & SMTPD_BAD_LINE) {
			why = "bare CR/LF or NUL";
			metrics_inc(METRIC_REJECTED, "line-ending");
			smtpd_reply(ss, "554 5.6.0 Message rejected: bare CR, "
			    "bare LF or NUL in message text");
		} else if (tx->bad & SMTPD_BAD_SIZE) {
			why = "message too big";
			metrics_inc(METRIC_REJECTED, "size");
			smtpd_reply(ss, "552 5.3.4 Message size exceeds fixed "
			    "limit");
		} else if (tx->bad & SMTPD_BAD_LOOP) {
			why = "mail loop";
			metrics_inc(METRIC_REJECTED, "loop");
			smtpd_reply(ss, "554 5.4.6 Too many Received headers: "
			    "mail loop");
		} else {
			why = queue_strerror(tx->qerr);
			metrics_inc(METRIC_REJECTED, tx->qerr == QUEUE_EQUOTA ?
			    "quota" : tx->qerr == QUEUE_EFULL ? "queue-full" :
			    "queue-error");
			if (tx->qerr == QUEUE_EFULL ||
			    tx->qerr == QUEUE_EQUOTA)
				smtpd_reply(ss, "452 4.3.1 Insufficient "
				    "system storage");
			else
				smtpd_reply(ss, "451 4.3.0 Local error in "
				    "processing");
		}
		log_info("NOQUEUE: reject: client=%s, from=<%s>, reason=%s",
		    ss->ip, log_sanitize(sbuf, sizeof(sbuf), tx->sender, 256),
		    why);
		smtpd_tx_reset(ss);
		return;
	}
	if (milter_sess_filtering(ss->milter)) {
		/* the milters answer first; they write the message */
		smtpd_enter_state(ss, SMTPD_ST_COMMIT);
		milter_sess_eom(ss->milter, tx->put, smtpd_milter_eom, ss);
		return;
	}
	smtpd_data_commit(ss, 0);
}

/* Hand the written message to the queue; 250 comes from the commit. */
static void
smtpd_data_commit(struct smtpd_session *ss, unsigned flags)
{
	struct smtpd_tx *tx = ss->tx;
	struct queue_envelope env;
	size_t i;

	memset(&env, 0, sizeof(env));
	memcpy(env.id, tx->id, sizeof(env.id));
	env.sender = tx->sender;
	env.envid = tx->mp.envid[0] != '\0' ? tx->mp.envid : NULL;
	env.ret = tx->mp.ret;
	if (tx->mp.body == SMTP_BODY_8BITMIME)
		env.flags |= QUEUE_F_8BITMIME;
	if (tx->mp.smtputf8)
		env.flags |= QUEUE_F_SMTPUTF8;
	env.flags |= flags;
	env.arrival = time(NULL);
	env.size = tx->size;
	env.helo = ss->helo[0] != '\0' ? ss->helo : NULL;
	env.client_addr = ss->ip;
	env.rcpts = tx->rcpts;
	env.nrcpts = tx->nrcpts;
	/* for the held/non-held decision made at RCPT time */
	for (i = 0; i < tx->nrcpts; i++)
		if (tx->rcpts[i].next_attempt != 0)
			tx->rcpts[i].next_attempt = env.arrival;
	smtpd_enter_state(ss, SMTPD_ST_COMMIT);
	{
		struct queue_put *put = tx->put;
		/* the put belongs to the queue from here on */
		queue_put_commit(put, &env, smtpd_commit_done, ss);
	}
}
