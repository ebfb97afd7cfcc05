/*
 * milter - milter client sessions (see milter.h): filter connections,
 * their packet I/O and replies, the commands up to RCPT, and the session
 * API. The message text and the end of message are in milter_msg.c.
 *
 * Each filter connection (struct mconn) has a FIFO of command packets.
 * One packet is on the wire at a time when it expects an answer (as
 * Postfix does): the next is written only after the reply, so a reject
 * or accept is never overtaken by data the filter would not expect.
 * Packets that expect no answer (macros, commands the filter negotiated
 * away with SMFIP_NR_*) go out back to back.
 *
 * The session waits for the filters at two points only: the answer to a
 * RCPT and the end of the message. Replies to HELO, MAIL, DATA, headers
 * and body chunks are folded into the transaction's state as they come
 * and act at the next of those points.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "milter.h"
#include "milter_proto.h"
#include "queue.h"
#include "util.h"
#include "xmalloc.h"
#include "milter_private.h"

static void mc_fail(struct mconn *c, const char *why);
static int mc_busy(const struct mconn *c);

/* ---- helpers ---- */

const char *ms_default_reply(const struct config *cfg,
    enum milter_action *a)
{
	switch (cfg->milter_default_action) {
	case CONFIG_MILTER_ACCEPT:
		*a = MILTER_CONTINUE;
		return "";
	case CONFIG_MILTER_REJECT:
		*a = MILTER_REJECT;
		return "550 5.7.1 Command rejected";
	default:
		*a = MILTER_TEMPFAIL;
		return "451 4.7.1 Service unavailable - try again later";
	}
}

static void ms_metric(struct mconn *c, const char *what)
{
	char label[192];

	snprintf(label, sizeof(label), "%s/%s", c->spec, what);
	metrics_inc(METRIC_MILTER_ACTIONS, label);
}

const char *ms_qid(const struct milter_sess *ms)
{
	return ms->id[0] != '\0' ? ms->id : "NOQUEUE";
}

/* A packet's bookkeeping goes back to the connection's spares: a
 * message is a dozen packets or more, each otherwise an allocation. */
static void mcmd_free(struct mconn *c, struct mcmd *m)
{
	if (m->want)
		c->nwant--;
	m->next = c->spare;
	c->spare = m;
}

static void mc_clear_fifo(struct mconn *c)
{
	struct mcmd *m;

	while ((m = c->head) != NULL) {
		c->head = m->next;
		mcmd_free(c, m);
	}
	c->tail = NULL;
	c->queued = 0;
	c->awaiting = 0;
	if (c->pend != NULL)
		evbuffer_drain(c->pend, evbuffer_get_length(c->pend));
}

void mc_clear_mods(struct mconn *c)
{
	struct mmod *m;

	while ((m = c->mods) != NULL) {
		c->mods = m->next;
		free(m->pkt);
		free(m);
	}
	c->mods_tail = NULL;
	c->nmods = 0;
	c->modbytes = 0;
}

/* Bytes waiting to go to the filters: the pause decision. */
size_t ms_backlog(const struct milter_sess *ms)
{
	size_t i, n = 0;

	for (i = 0; i < ms->nc; i++) {
		const struct mconn *c = &ms->c[i];

		n += c->queued;
		if (c->ml != NULL)
			n += evbuffer_get_length(c->ml->out);
	}
	return n;
}

/* The resume callback runs from the kick timer, never from inside our
 * own I/O callbacks (it may free the session). */
static void ms_maybe_resume(struct milter_sess *ms)
{
	if (ms->paused && ms_backlog(ms) < MS_LOWAT)
		ms_kick(ms);
}

/* Is this filter still part of the current transaction? */
int mc_active(const struct mconn *c)
{
	return c->st == MC_OPEN && !c->conn_done &&
	    c->conn_action == MILTER_CONTINUE && !c->tx_done &&
	    c->tx_action == MILTER_CONTINUE && c->mail_sent;
}

/* Queue a packet; it goes out when everything before it was answered. */
struct evbuffer *mc_push(struct mconn *c, enum mc_stage stage,
    int want)
{
	struct mcmd *m = c->spare;

	if (m != NULL) {
		c->spare = m->next;
		memset(m, 0, sizeof(*m));
	} else
		m = xcalloc(1, sizeof(*m));
	m->stage = stage;
	m->want = want;
	m->tx = stage >= ST_MAIL && stage <= ST_EOM;
	if (want)
		c->nwant++;
	m->start = evbuffer_get_length(c->pend);
	if (c->tail != NULL)
		c->tail->next = m;
	else
		c->head = m;
	c->tail = m;
	return c->pend;
}

/* After mc_push filled the packet: account for it. */
void mc_pushed(struct mconn *c)
{
	c->tail->len = evbuffer_get_length(c->pend) - c->tail->start;
	c->queued += c->tail->len;
}

/* ---- filter sockets (struct mlink) ---- */

#define ML_IN_MIN	2048	/* reply buffer to start with */

static void ml_readcb(evutil_socket_t fd, short what, void *arg);
static void ml_writecb(evutil_socket_t fd, short what, void *arg);
static void ml_idlecb(evutil_socket_t fd, short what, void *arg);
static void ml_free(struct mlink *ml);

static struct mlink *ml_closing;	/* QUITs draining */

static struct mlink *ml_new(struct event_base *base, int fd)
{
	struct mlink *ml = xcalloc(1, sizeof(*ml));

	ml->fd = fd;
	ml->rev = event_new(base, fd, EV_READ | EV_PERSIST, ml_readcb, ml);
	ml->wev = event_new(base, fd, EV_WRITE, ml_writecb, ml);
	ml->idle = evtimer_new(base, ml_idlecb, ml);
	ml->out = evbuffer_new();
	if (ml->rev == NULL || ml->wev == NULL || ml->idle == NULL ||
	    ml->out == NULL || event_add(ml->rev, NULL) < 0) {
		ml->fd = -1;	/* the caller closes it */
		ml_free(ml);
		return NULL;
	}
	return ml;
}

static void ml_free(struct mlink *ml)
{
	if (ml->rev != NULL)
		event_free(ml->rev);
	if (ml->wev != NULL)
		event_free(ml->wev);
	if (ml->idle != NULL)
		event_free(ml->idle);
	if (ml->out != NULL)
		evbuffer_free(ml->out);
	free(ml->in);
	if (ml->fd >= 0)
		close(ml->fd);
	free(ml);
}

/* Write what the socket takes now; the rest when it is writable.
 * -1 with errno on a broken socket. */
static int ml_write(struct mlink *ml)
{
	if (ml->connecting || evbuffer_get_length(ml->out) == 0)
		return 0;
	if (evbuffer_write(ml->out, ml->fd) < 0 && errno != EAGAIN &&
	    errno != EWOULDBLOCK && errno != EINTR)
		return -1;
	if (evbuffer_get_length(ml->out) > 0)
		event_add(ml->wev, NULL);
	return 0;
}

static void ml_unlink(struct mlink **head, struct mlink *ml)
{
	struct mlink **p;

	for (p = head; *p != NULL; p = &(*p)->next)
		if (*p == ml) {
			*p = ml->next;
			return;
		}
}

/* A QUIT is in out: close once it is written (or after 2 s). */
void ml_quit(struct mlink *ml)
{
	struct timeval tv = { 2, 0 };

	ml->c = NULL;
	ml->closing = 1;
	if (ml_write(ml) < 0 || (!ml->connecting &&
	    evbuffer_get_length(ml->out) == 0)) {
		ml_free(ml);
		return;
	}
	ml->next = ml_closing;
	ml_closing = ml;
	evtimer_add(ml->idle, &tv);
}

static void ml_quit_done(struct mlink *ml)
{
	ml_unlink(&ml_closing, ml);
	ml_free(ml);
}

static void mp_drop(struct mlink *ml);

static void ml_idlecb(evutil_socket_t fd, short what, void *arg)
{
	struct mlink *ml = arg;

	(void)fd;
	(void)what;
	if (ml->closing)
		ml_quit_done(ml);
	else
		mp_drop(ml);
}

static void ml_writecb(evutil_socket_t fd, short what, void *arg)
{
	struct mlink *ml = arg;
	struct mconn *c = ml->c;
	int err = 0;
	socklen_t len = sizeof(err);

	(void)what;
	if (ml->connecting) {
		ml->connecting = 0;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
	}
	if (err == 0 && ml_write(ml) < 0)
		err = errno;
	if (c != NULL) {
		if (err != 0)
			mc_fail(c, strerror(err));
		else
			ms_maybe_resume(c->ms);
	} else if (ml->closing && (err != 0 ||
	    evbuffer_get_length(ml->out) == 0))
		ml_quit_done(ml);
	else if (err != 0)
		mp_drop(ml);
}

/* ---- timers and I/O ---- */

static void mc_arm(struct mconn *c, enum mc_stage stage)
{
	const struct config *cfg = c->ms->cfg;
	long t = cfg->milter_command_timeout;
	struct timeval tv;

	if (stage == ST_OPTNEG && !c->negotiated)
		t = cfg->milter_connect_timeout;
	else if (stage == ST_BODY || stage == ST_EOM || stage == ST_HEADER ||
	    stage == ST_EOH)
		t = cfg->milter_content_timeout;
	tv.tv_sec = t > 0 ? t : 30;
	tv.tv_usec = 0;
	evtimer_add(c->timer, &tv);
}

static void mc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mconn *c = arg;

	(void)fd;
	(void)what;
	mc_fail(c, "timeout");
}

/* Write what can go now: up to and including the next packet that wants
 * an answer. */
void mc_pump(struct mconn *c)
{
	struct mcmd *m;
	int moved = 0;

	/* Packets that expect no answer are held until one that does (the
	 * end of message at the latest) or until MC_CORK bytes: a filter
	 * that answers nothing before the end of the message (SMFIP_NR_*)
	 * then gets it in one write, and wakes up once instead of at each
	 * SMTP command. */
	if (c->nwant == 0 && c->queued < MC_CORK && !c->flush)
		return;
	while (c->st == MC_OPEN && !c->awaiting && (m = c->head) != NULL) {
		moved = 1;
		c->queued -= m->len;
		if (evbuffer_remove_buffer(c->pend, c->ml->out, m->len) !=
		    (int)m->len) {
			mc_fail(c, "write failed");
			return;
		}
		m->len = 0;
		if (m->want) {
			c->awaiting = 1;
			c->sent_at = util_now();
			mc_arm(c, m->stage);
			break;
		}
		c->head = m->next;
		if (c->head == NULL)
			c->tail = NULL;
		mcmd_free(c, m);
	}
	if (moved && c->st == MC_OPEN && ml_write(c->ml) < 0)
		mc_fail(c, strerror(errno));
}

/* Write everything held back (end of session). */
void mc_flush(struct mconn *c)
{
	c->flush = 1;
	mc_pump(c);
	c->flush = 0;
}

/*
 * Drop queued packets of the transaction (filter accepted or refused,
 * or the transaction ended); with all, every queued packet (accepted or
 * refused at CONNECT/HELO). Packets of the session (UNKNOWN, QUIT_NC,
 * CONNECT, HELO) queued behind an answer or held back stay.
 */
static void mc_drop_packets(struct mconn *c, int all)
{
	struct mcmd *m, **mp, *prev = NULL;
	struct evbuffer *keep = NULL;

	/* the one on the wire stays: its answer is still to come */
	mp = c->awaiting && c->head != NULL ? &c->head->next : &c->head;
	if (c->awaiting && c->head != NULL)
		prev = c->head;
	while ((m = *mp) != NULL) {
		/* unwritten packets are the front of pend, in order */
		if (!all && !m->tx) {
			if (keep == NULL)
				keep = evbuffer_new();
			evbuffer_remove_buffer(c->pend, keep, m->len);
			prev = m;
			mp = &m->next;
			continue;
		}
		c->queued -= m->len;
		evbuffer_drain(c->pend, m->len);
		*mp = m->next;
		mcmd_free(c, m);
	}
	c->tail = prev;
	if (keep != NULL) {
		evbuffer_add_buffer(c->pend, keep);
		evbuffer_free(keep);
	}
}

void mc_drop_tx_packets(struct mconn *c)
{
	mc_drop_packets(c, 0);
}

void mc_close(struct mconn *c)
{
	if (c->ml != NULL) {
		ml_free(c->ml);
		c->ml = NULL;
	}
	evtimer_del(c->timer);
	mc_clear_fifo(c);
}

/* A broken filter: its default action applies to this message only. */
static void mc_fail(struct mconn *c, const char *why)
{
	struct milter_sess *ms = c->ms;

	if (c->st == MC_BROKEN)
		return;
	log_warn("%s: milter %s: %s; milter_default_action applies",
	    ms_qid(ms), c->spec, why);
	util_strlcpy(c->fail_why, why, sizeof(c->fail_why));
	metrics_inc(METRIC_MILTER_FAILURES, c->spec);
	mc_close(c);
	c->st = MC_BROKEN;
	c->failed_tx = 1;
	c->negotiated = 0;
	ms_kick(ms);
	ms_maybe_resume(ms);
}

/* ---- replies ---- */

static void mc_set_reply(char *dst, size_t size, const struct milter_reply *r,
    const char *dflt)
{
	if (r->type == MILTER_R_REPLYCODE)
		util_strlcpy(dst, r->text, size);
	else
		util_strlcpy(dst, dflt, size);
}

/* Map reject/tempfail/replycode to an action and reply text. */
static enum milter_action mc_refusal(const struct milter_reply *r,
    char *reply, size_t size, int rcpt)
{
	if (r->type == MILTER_R_TEMPFAIL ||
	    (r->type == MILTER_R_REPLYCODE && r->text[0] == '4')) {
		mc_set_reply(reply, size, r, "451 4.7.1 Service unavailable - "
		    "try again later");
		return MILTER_TEMPFAIL;
	}
	mc_set_reply(reply, size, r, rcpt ? "550 5.7.1 Command rejected" :
	    "554 5.7.1 Message rejected");
	return MILTER_REJECT;
}

static int mc_is_refusal(const struct milter_reply *r)
{
	return r->type == MILTER_R_REJECT || r->type == MILTER_R_TEMPFAIL ||
	    r->type == MILTER_R_REPLYCODE;
}

static void mc_optneg(struct mconn *c, const struct milter_reply *r)
{
	if (r->version < 2 || r->version > MILTER_PROTO_VERSION) {
		mc_fail(c, "unsupported protocol version");
		return;
	}
	/* what we did not offer cannot be asked for */
	c->actions = r->actions & SMFIF_ALL;
	c->proto = r->protocol & MILTER_PROTO_OFFER;
	c->negotiated = 1;
}

static void mc_add_mod(struct mconn *c, const struct milter_reply *r,
    unsigned char *pkt, size_t len)
{
	struct mmod *m;

	/* what a filter may make us hold is bounded too */
	if (c->nmods >= MS_HDRS_MAX || c->modbytes + len > MS_MODS_MAX) {
		free(pkt);
		mc_fail(c, "too many modifications");
		return;
	}
	c->modbytes += len;
	m = xcalloc(1, sizeof(*m));
	m->r = *r;
	m->pkt = pkt;
	if (c->mods_tail != NULL)
		c->mods_tail->next = m;
	else
		c->mods = m;
	c->mods_tail = m;
	c->nmods++;
}

/* A final answer to the packet on the wire. */
static void mc_answer(struct mconn *c, const struct milter_reply *r)
{
	struct milter_sess *ms = c->ms;
	struct mcmd *m = c->head;
	enum mc_stage stage = m->stage;
	double ms_lat = (util_now() - c->sent_at) * 1000.0;

	metrics_add(METRIC_MILTER_LATENCY_MS, c->spec,
	    (uint64_t)(ms_lat > 0 ? ms_lat : 0));
	metrics_inc(METRIC_MILTER_REPLIES, c->spec);
	evtimer_del(c->timer);
	c->awaiting = 0;
	c->head = m->next;
	if (c->head == NULL)
		c->tail = NULL;
	mcmd_free(c, m);

	switch (stage) {
	case ST_OPTNEG:
		if (r->type != MILTER_R_OPTNEG) {
			mc_fail(c, "no option negotiation");
			return;
		}
		mc_optneg(c, r);
		break;
	case ST_CONNECT:
	case ST_HELO:
		if (r->type == MILTER_R_ACCEPT) {
			c->conn_done = 1;
			mc_drop_packets(c, 1);
		} else if (mc_is_refusal(r)) {
			c->conn_action = mc_refusal(r, c->conn_reply,
			    sizeof(c->conn_reply), 1);
			ms_metric(c, c->conn_action == MILTER_REJECT ?
			    "reject" : "tempfail");
			mc_drop_packets(c, 1);
		}
		break;
	case ST_RCPT:
		c->rcpt_pending = 0;
		if (mc_is_refusal(r)) {
			c->rcpt_action = mc_refusal(r, c->rcpt_reply,
			    sizeof(c->rcpt_reply), 1);
			ms_metric(c, c->rcpt_action == MILTER_REJECT ?
			    "reject" : "tempfail");
			break;
		}
		/* FALLTHROUGH */
	case ST_MAIL:
	case ST_DATA:
	case ST_HEADER:
	case ST_EOH:
	case ST_BODY:
		if (r->type == MILTER_R_ACCEPT) {
			c->tx_done = 1;
			ms_metric(c, "accept");
			mc_drop_tx_packets(c);
		} else if (r->type == MILTER_R_DISCARD) {
			c->tx_action = MILTER_DISCARD;
			ms_metric(c, "discard");
			mc_drop_tx_packets(c);
		} else if (r->type == MILTER_R_SKIP && stage == ST_BODY) {
			c->skip_body = 1;
			mc_drop_tx_packets(c);
		} else if (mc_is_refusal(r)) {
			c->tx_action = mc_refusal(r, c->tx_reply,
			    sizeof(c->tx_reply), stage != ST_BODY &&
			    stage != ST_HEADER && stage != ST_EOH &&
			    stage != ST_DATA);
			ms_metric(c, c->tx_action == MILTER_REJECT ?
			    "reject" : "tempfail");
			mc_drop_tx_packets(c);
		}
		break;
	case ST_EOM:
		c->eom_done = 1;
		if (r->type == MILTER_R_DISCARD) {
			c->tx_action = MILTER_DISCARD;
			ms_metric(c, "discard");
		} else if (mc_is_refusal(r)) {
			c->tx_action = mc_refusal(r, c->tx_reply,
			    sizeof(c->tx_reply), 0);
			ms_metric(c, c->tx_action == MILTER_REJECT ?
			    "reject" : "tempfail");
		} else
			ms_metric(c, "accept");
		break;
	case ST_NONE:
		break;
	}
	mc_pump(c);
	/* a turn of the loop only when the wait may be over: not while the
	 * session streams the message text (no wait), nor while this filter
	 * still owes an answer (ms_kick_cb would find it busy) */
	if ((ms->wait != W_NONE && !mc_busy(c)) || c->negotiated == 1 ||
	    c->st != MC_OPEN)
		ms_kick(ms);
	ms_maybe_resume(ms);
}

/* One reply packet; pkt is the link's input buffer, valid during the
 * call only. */
static void mc_reply(struct mconn *c, unsigned char *pkt, size_t len)
{
	struct milter_reply r;
	enum mc_stage stage;
	unsigned char *copy;

	if (milter_reply_parse(pkt, len, &r) < 0) {
		mc_fail(c, "malformed reply");
		return;
	}
	if (!c->awaiting || c->head == NULL) {
		mc_fail(c, "reply without a command");
		return;
	}
	stage = c->head->stage;
	switch (r.type) {
	case MILTER_R_PROGRESS:
		mc_arm(c, stage);
		return;
	case MILTER_R_ADDHEADER:
	case MILTER_R_INSHEADER:
	case MILTER_R_CHGHEADER:
	case MILTER_R_DELRCPT:
	case MILTER_R_ADDRCPT:
	case MILTER_R_CHGFROM:
	case MILTER_R_REPLBODY:
	case MILTER_R_QUARANTINE:
		if (stage != ST_EOM) {
			mc_fail(c, "modification before end of message");
			return;
		}
		/* kept to the end: r's strings must point into a copy */
		copy = xmalloc(len);
		memcpy(copy, pkt, len);
		(void)milter_reply_parse(copy, len, &r);
		mc_add_mod(c, &r, copy, len);
		return;
	case MILTER_R_SETSYMLIST:
		return;
	case MILTER_R_SHUTDOWN:
	case MILTER_R_CONNFAIL:
		mc_fail(c, "filter shut down");
		return;
	case MILTER_R_OPTNEG:
		if (stage != ST_OPTNEG) {
			mc_fail(c, "unexpected negotiation");
			return;
		}
		break;
	default:
		if (stage == ST_OPTNEG) {
			mc_fail(c, "no option negotiation");
			return;
		}
		break;
	}
	mc_answer(c, &r);
}

/* Replies: one read, then every whole packet in it, in place. */
static void mc_read(struct mconn *c, struct mlink *ml)
{
	size_t off = 0;
	ssize_t got;
	uint32_t n;

	if (ml->inlen == ml->incap) {
		/* only while a packet longer than the buffer is coming:
		 * bounded by MILTER_REPLY_MAX (milter_frame) */
		ml->incap = ml->incap ? ml->incap * 2 : ML_IN_MIN;
		if (ml->incap > MILTER_REPLY_MAX + 4)
			ml->incap = MILTER_REPLY_MAX + 4;
		ml->in = xreallocarray(ml->in, ml->incap, 1);
	}
	got = read(ml->fd, ml->in + ml->inlen, ml->incap - ml->inlen);
	if (got < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			mc_fail(c, strerror(errno));
		return;
	}
	if (got == 0) {
		mc_fail(c, "connection closed by the filter");
		return;
	}
	ml->inlen += (size_t)got;
	while (ml->inlen - off >= 4) {
		if (milter_frame(ml->in + off, 4, &n) < 0) {
			mc_fail(c, "bad packet length");
			return;
		}
		if (ml->inlen - off < 4 + (size_t)n) {
			if (ml->incap < 4 + (size_t)n) {
				/* room for the whole packet */
				memmove(ml->in, ml->in + off, ml->inlen - off);
				ml->inlen -= off;
				off = 0;
				ml->incap = 4 + (size_t)n;
				ml->in = xreallocarray(ml->in, ml->incap, 1);
			}
			break;
		}
		mc_reply(c, ml->in + off + 4, n);
		/* a failure closed the link (and freed its buffer) */
		if (c->ml != ml || c->st != MC_OPEN)
			return;
		off += 4 + (size_t)n;
	}
	if (off > 0) {
		memmove(ml->in, ml->in + off, ml->inlen - off);
		ml->inlen -= off;
	}
	if (ml->incap > 64 * 1024 && ml->inlen <= ML_IN_MIN) {
		/* a long reply went by: give its room back */
		ml->incap = ML_IN_MIN;
		ml->in = xreallocarray(ml->in, ml->incap, 1);
	}
}

static void ml_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct mlink *ml = arg;
	unsigned char junk[512];
	ssize_t got;

	(void)fd;
	(void)what;
	if (ml->c != NULL) {
		mc_read(ml->c, ml);
		return;
	}
	if (!ml->closing) {
		/* anything from an idle filter (data, EOF, error): drop */
		mp_drop(ml);
		return;
	}
	/* after QUIT: what the filter says no longer matters */
	got = read(ml->fd, junk, sizeof(junk));
	if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
		ml_quit_done(ml);
}

/* ---- commands ---- */

void mc_macros(struct mconn *c, char stage, const char *const *names,
    const char *const *values, size_t n)
{
	milter_put_macros(mc_push(c, ST_NONE, 0), stage, names, values, n);
	c->tail->tx = stage != SMFIC_CONNECT && stage != SMFIC_HELO;
	mc_pushed(c);
}

static void mc_send_helo(struct mconn *c)
{
	struct milter_sess *ms = c->ms;
	const char *names[] = { "{tls_version}", "{cipher}" };
	const char *values[] = { ms->tls_version[0] ? ms->tls_version : NULL,
	    ms->cipher[0] ? ms->cipher : NULL };
	const char *v[] = { ms->helo };

	if (ms->helo[0] == '\0' || (c->proto & SMFIP_NOHELO))
		return;
	mc_macros(c, SMFIC_HELO, names, values, 2);
	milter_put_strings(mc_push(c, ST_HELO, !(c->proto & SMFIP_NR_HELO)),
	    SMFIC_HELO, v, 1);
	mc_pushed(c);
}

/* ---- idle filter connections (milter_reuse) ----
 *
 * A negotiated connection whose SMTP session ended cleanly waits here
 * for the next session to the same filter, so the connect, the filter's
 * thread start and the negotiation are paid once. The next session
 * sends UNKNOWN then QUIT_NC before CONNECT: libmilter accepts QUIT_NC
 * only after an UNKNOWN or an end of message answered with continue,
 * and ignores it (and then the CONNECT) otherwise.
 */

#define MP_MAX		CONFIG_MILTER_POOL_MAX	/* in fdbudget's reserve */
#define MP_IDLE		60	/* seconds before an idle one is closed */

static struct mlink *mp_head;	/* idle links, their spec/actions/proto set */
static size_t mp_n;

static void mp_drop(struct mlink *ml)
{
	ml_unlink(&mp_head, ml);
	mp_n--;
	ml_free(ml);
}

/* Keep c's connection for the next session; 0 if it cannot be kept. */
int mp_put(struct mconn *c)
{
	struct timeval idle = { MP_IDLE, 0 };
	struct mlink *ml = c->ml;

	/* SMFIP_HDR_LEADSPC: OpenDKIM forgets it at QUIT_NC (its connection
	 * context goes) and would sign header values with our leading
	 * space; such a filter gets a new connection each time. */
	if (!c->ms->cfg->milter_reuse || mp_n >= MP_MAX ||
	    c->st != MC_OPEN || ml == NULL || c->negotiated != 2 ||
	    c->awaiting || c->head != NULL || ml->inlen > 0 ||
	    (c->proto & SMFIP_HDR_LEADSPC))
		return 0;
	util_strlcpy(ml->spec, c->spec, sizeof(ml->spec));
	ml->actions = c->actions;
	ml->proto = c->proto;
	/* read interest stays: data or EOF from an idle filter drops it */
	ml->c = NULL;
	c->ml = NULL;
	evtimer_add(ml->idle, &idle);
	ml->next = mp_head;
	mp_head = ml;
	mp_n++;
	return 1;
}

/* An idle connection to c's filter, set up for c; 0 if none. */
static int mp_get(struct mconn *c)
{
	const char *v[] = { "QUIT" };
	struct mlink *ml;

	if (!c->ms->cfg->milter_reuse)
		return 0;
	for (ml = mp_head; ml != NULL; ml = ml->next)
		if (strcmp(ml->spec, c->spec) == 0)
			break;
	if (ml == NULL)
		return 0;
	ml_unlink(&mp_head, ml);
	mp_n--;
	evtimer_del(ml->idle);
	ml->c = c;
	c->ml = ml;
	c->actions = ml->actions;
	c->proto = ml->proto;
	c->st = MC_OPEN;
	c->conn_done = 0;
	c->conn_action = MILTER_CONTINUE;
	/* CONNECT and the rest follow as after a negotiation (ms_kick_cb) */
	c->negotiated = 1;
	milter_put_strings(mc_push(c, ST_NONE, !(c->proto & SMFIP_NR_UNKN)),
	    SMFIC_UNKNOWN, v, 1);
	mc_pushed(c);
	milter_put_cmd(mc_push(c, ST_NONE, 0), SMFIC_QUIT_NC);
	mc_pushed(c);
	mc_pump(c);
	log_debug("milter %s: connection reused", c->spec);
	return 1;
}

void milter_pool_free(void)
{
	while (mp_head != NULL)
		mp_drop(mp_head);
	while (ml_closing != NULL)
		ml_quit_done(ml_closing);
}

/* Connect, negotiate and replay CONNECT and HELO. */
static void mc_open(struct mconn *c)
{
	struct milter_sess *ms = c->ms;
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	const char *spec = c->spec;
	evutil_socket_t fd;
	int one = 1;

	if (mp_get(c))
		return;
	memset(&ss, 0, sizeof(ss));
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;

		sun->sun_family = AF_UNIX;
		util_strlcpy(sun->sun_path, spec + 5, sizeof(sun->sun_path));
		sslen = sizeof(*sun);
	} else if (util_sockaddr_parse(spec + 5, 0, &ss, &sslen) < 0) {
		c->st = MC_OPEN;	/* so that mc_fail records it */
		mc_fail(c, "bad address");
		return;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd >= 0 && ss.ss_family != AF_UNIX)
		/* request/answer ping-pong: Nagle would hold each packet's
		 * tail for a delayed ACK */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
	c->ml = fd < 0 ? NULL : ml_new(ms->base, fd);
	c->st = MC_OPEN;	/* so that mc_fail records a failure */
	if (c->ml == NULL) {
		if (fd >= 0)
			close(fd);
		mc_fail(c, "cannot create a socket");
		return;
	}
	c->ml->c = c;
	c->negotiated = 0;
	c->conn_done = 0;
	c->conn_action = MILTER_CONTINUE;
	if (connect(fd, (struct sockaddr *)&ss, sslen) < 0) {
		if (errno != EINPROGRESS && errno != EINTR) {
			mc_fail(c, strerror(errno));
			return;
		}
		/* the first write waits for the connection (ml_writecb) */
		c->ml->connecting = 1;
		event_add(c->ml->wev, NULL);
	}
	/* CONNECT, HELO, MAIL and RCPT depend on what the filter asks
	 * for: they follow the answer (ms_kick_cb). */
	milter_put_optneg(mc_push(c, ST_OPTNEG, 1), SMFIF_ALL,
	    MILTER_PROTO_OFFER);
	mc_pushed(c);
	mc_pump(c);
}

/* Everything after the negotiation: CONNECT, HELO (replayed). */
static void mc_after_optneg(struct mconn *c)
{
	struct milter_sess *ms = c->ms;
	char host[80], port[16];
	const char *names[] = { "j", "{daemon_name}", "v", "_",
	    "{client_addr}", "{client_name}", "{client_port}" };
	const char *values[7];

	snprintf(host, sizeof(host), "[%s]", ms->ip);
	snprintf(port, sizeof(port), "%u", ms->port);
	values[0] = ms->cfg->hostname;
	values[1] = ms->cfg->hostname;
	values[2] = "odrelay " OD_VERSION;
	values[3] = host;
	values[4] = ms->ip;
	values[5] = "unknown";
	values[6] = port;
	if (!(c->proto & SMFIP_NOCONNECT)) {
		mc_macros(c, SMFIC_CONNECT, names, values, 7);
		milter_put_connect(mc_push(c, ST_CONNECT,
		    !(c->proto & SMFIP_NR_CONN)), host, ms->v6 ? '6' : '4',
		    (uint16_t)ms->port, ms->ip);
		mc_pushed(c);
	}
	mc_send_helo(c);
}

static void mc_send_mail(struct mconn *c)
{
	struct milter_sess *ms = c->ms;
	/* TLS again here: a filter without a HELO step (SMFIP_NOHELO)
	 * would never see it otherwise */
	const char *names[] = { "{mail_addr}", "{auth_authen}",
	    "{auth_type}", "{tls_version}", "{cipher}" };
	const char *values[5];
	char path[1100];
	const char *v[1];

	values[0] = ms->sender;
	values[1] = ms->user[0] ? ms->user : NULL;
	values[2] = ms->user[0] ? "PLAIN" : NULL;
	values[3] = ms->tls_version[0] ? ms->tls_version : NULL;
	values[4] = ms->cipher[0] ? ms->cipher : NULL;
	c->mail_sent = 1;
	if (c->proto & SMFIP_NOMAIL)
		return;
	snprintf(path, sizeof(path), "<%s>", ms->sender);
	v[0] = path;
	mc_macros(c, SMFIC_MAIL, names, values, 5);
	milter_put_strings(mc_push(c, ST_MAIL, !(c->proto & SMFIP_NR_MAIL)),
	    SMFIC_MAIL, v, 1);
	mc_pushed(c);
}

/* ---- waiting for the filters ---- */

/* Still something to hear from c before the current wait ends? */
static int mc_busy(const struct mconn *c)
{
	if (c->st != MC_OPEN)
		return 0;
	/* held packets that want no answer do not hold the session up */
	return c->awaiting || c->nwant > 0 || c->negotiated != 2;
}

static void ms_rcpt_verdict(struct milter_sess *ms, struct milter_verdict *v)
{
	size_t i;

	memset(v, 0, sizeof(*v));
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];
		enum milter_action a = MILTER_CONTINUE;
		const char *reply = "";

		if (c->failed_tx) {
			reply = ms_default_reply(ms->cfg, &a);
		} else if (c->conn_action != MILTER_CONTINUE) {
			a = c->conn_action;
			reply = c->conn_reply;
		} else if (c->tx_action == MILTER_REJECT ||
		    c->tx_action == MILTER_TEMPFAIL) {
			a = c->tx_action;
			reply = c->tx_reply;
		} else if (c->rcpt_action != MILTER_CONTINUE) {
			a = c->rcpt_action;
			reply = c->rcpt_reply;
		}
		if (a == MILTER_REJECT || a == MILTER_TEMPFAIL) {
			v->action = a;
			util_strlcpy(v->reply, reply, sizeof(v->reply));
			util_strlcpy(v->milter, c->spec, sizeof(v->milter));
			return;
		}
	}
}

static void mc_send_rcpt(struct mconn *c, const char *rcpt);

static void ms_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct milter_sess *ms = arg;
	struct milter_verdict v;
	size_t i;

	(void)fd;
	(void)what;
	/* negotiation answers shape what follows */
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (c->st == MC_OPEN && c->negotiated == 1) {
			c->negotiated = 2;
			/* the replay was held back until now */
			mc_after_optneg(c);
			if (c->mail_sent && mc_active(c)) {
				c->mail_sent = 0;
				mc_send_mail(c);
			}
			if (c->pending_rcpt != NULL) {
				if (mc_active(c))
					mc_send_rcpt(c, c->pending_rcpt);
				free(c->pending_rcpt);
				c->pending_rcpt = NULL;
			}
			mc_pump(c);
		}
	}
	for (i = 0; i < ms->nc; i++)
		if (mc_busy(&ms->c[i]) && ms->wait != W_NONE)
			return;
	switch (ms->wait) {
	case W_RCPT:
		ms->wait = W_NONE;
		ms_rcpt_verdict(ms, &v);
		for (i = 0; i < ms->nc; i++)
			ms->c[i].rcpt_action = MILTER_CONTINUE;
		if (v.action == MILTER_CONTINUE)
			ms->naccepted++;
		else if (ms->naccepted == 0) {
			/* no filtered recipient after all: the transaction
			 * stays unfiltered (milters = none domains only) */
			milter_verdict_fn *fn = ms->rcpt_fn;
			void *fn_arg = ms->rcpt_arg;

			milter_sess_end_tx(ms);
			fn(fn_arg, &v);
			return;
		}
		/* last: the callback may free the session */
		ms->rcpt_fn(ms->rcpt_arg, &v);
		return;
	case W_EOM:
		ms_eom_finish(ms);	/* may free the session too */
		return;
	case W_NONE:
		break;
	}
	if (ms->paused && ms_backlog(ms) < MS_LOWAT) {
		log_debug("%s: milter: resume", ms_qid(ms));
		ms->paused = 0;
		if (ms->resume_fn != NULL)
			ms->resume_fn(ms->resume_arg);
	}
}

void ms_kick(struct milter_sess *ms)
{
	struct timeval zero = { 0, 0 };

	if (!ms->freeing)
		evtimer_add(ms->kick, &zero);
}

/* ---- session API ---- */

struct milter_sess *milter_sess_new(struct event_base *base,
    struct config *cfg, const char *ip, int v6, unsigned port)
{
	struct milter_sess *ms;
	size_t i;

	if (cfg->milters.n == 0)
		return NULL;
	ms = xcalloc(1, sizeof(*ms));
	ms->base = base;
	ms->cfg = config_ref(cfg);
	util_strlcpy(ms->ip, ip, sizeof(ms->ip));
	ms->v6 = v6;
	ms->port = port;
	ms->spoolfd = -1;
	ms->cur_hdr = -1;
	ms->kick = evtimer_new(base, ms_kick_cb, ms);
	ms->nc = cfg->milters.n;
	ms->c = xcalloc(ms->nc, sizeof(*ms->c));
	for (i = 0; i < ms->nc; i++) {
		ms->c[i].ms = ms;
		ms->c[i].idx = i;
		util_strlcpy(ms->c[i].spec, cfg->milters.v[i],
		    sizeof(ms->c[i].spec));
		ms->c[i].timer = evtimer_new(base, mc_timer_cb, &ms->c[i]);
		ms->c[i].pend = evbuffer_new();
	}
	return ms;
}

void milter_sess_helo(struct milter_sess *ms, const char *helo)
{
	size_t i;

	if (ms == NULL)
		return;
	util_strlcpy(ms->helo, helo, sizeof(ms->helo));
	/* a new HELO on open connections: tell them (Postfix does) */
	for (i = 0; i < ms->nc; i++)
		if (ms->c[i].st == MC_OPEN && ms->c[i].negotiated == 2 &&
		    !ms->c[i].conn_done) {
			mc_send_helo(&ms->c[i]);
			mc_pump(&ms->c[i]);
		}
}

void milter_sess_tls(struct milter_sess *ms, const char *version,
    const char *cipher)
{
	if (ms == NULL)
		return;
	util_strlcpy(ms->tls_version, version, sizeof(ms->tls_version));
	util_strlcpy(ms->cipher, cipher, sizeof(ms->cipher));
}

void milter_sess_auth(struct milter_sess *ms, const char *user)
{
	if (ms != NULL)
		util_strlcpy(ms->user, user, sizeof(ms->user));
}

void milter_sess_mail(struct milter_sess *ms, const char *sender)
{
	if (ms == NULL)
		return;
	milter_sess_end_tx(ms);
	free(ms->sender);
	ms->sender = xstrdup(sender);
}

int milter_sess_filtering(const struct milter_sess *ms)
{
	return ms != NULL && ms->filtering;
}

static void mc_send_rcpt(struct mconn *c, const char *rcpt)
{
	const char *names[] = { "{rcpt_addr}", "{rcpt_mailer}" };
	const char *values[2];
	char path[1100];
	const char *v[1];

	if (c->proto & SMFIP_NORCPT)
		return;
	snprintf(path, sizeof(path), "<%s>", rcpt);
	v[0] = path;
	values[0] = rcpt;
	values[1] = "smtp";
	mc_macros(c, SMFIC_RCPT, names, values, 2);
	milter_put_strings(mc_push(c, ST_RCPT, !(c->proto & SMFIP_NR_RCPT)),
	    SMFIC_RCPT, v, 1);
	mc_pushed(c);
}

int milter_sess_rcpt(struct milter_sess *ms, const char *rcpt, int filtered,
    milter_verdict_fn *fn, void *arg)
{
	size_t i;
	int any = 0;

	if (ms == NULL || (!filtered && !ms->filtering))
		return 0;
	ms->filtering = 1;
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (c->st == MC_BROKEN && !c->failed_tx)
			c->st = MC_OFF;		/* a new transaction: retry */
		if (c->st == MC_OFF)
			mc_open(c);
		if (c->st != MC_OPEN || c->conn_done ||
		    c->conn_action != MILTER_CONTINUE || c->tx_done ||
		    c->tx_action != MILTER_CONTINUE) {
			any |= c->failed_tx || c->conn_action !=
			    MILTER_CONTINUE || c->tx_action == MILTER_REJECT ||
			    c->tx_action == MILTER_TEMPFAIL;
			continue;
		}
		if (c->negotiated != 2) {
			/* MAIL and RCPT follow the replay (ms_kick_cb) */
			c->mail_sent = 1;
			free(c->pending_rcpt);
			c->pending_rcpt = xstrdup(rcpt);
		} else {
			if (!c->mail_sent)
				mc_send_mail(c);
			mc_send_rcpt(c, rcpt);
			mc_pump(c);
		}
		any = 1;
	}
	if (!any)
		return 0;
	ms->wait = W_RCPT;
	ms->rcpt_fn = fn;
	ms->rcpt_arg = arg;
	ms_kick(ms);
	return 1;
}

void milter_sess_data(struct milter_sess *ms, const char *queue_id)
{
	const char *names[] = { "i" };
	const char *values[1];
	size_t i;

	if (ms == NULL || !ms->filtering)
		return;
	util_strlcpy(ms->id, queue_id, sizeof(ms->id));
	values[0] = ms->id;
	ms->in_headers = 1;
	ms->hdrlen = ms->linestart = 0;
	ms->cur_hdr = -1;
	if (ms->hdrbuf == NULL) {
		ms->hdrcap = 16 * 1024;
		ms->hdrbuf = xmalloc(ms->hdrcap);
	}
	if (ms->chunk == NULL)
		ms->chunk = xmalloc(MILTER_CHUNK_MAX);
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (!mc_active(c) || (c->negotiated == 2 &&
		    (c->proto & SMFIP_NODATA)))
			continue;
		mc_macros(c, SMFIC_DATA, names, values, 1);
		milter_put_cmd(mc_push(c, ST_DATA, c->negotiated != 2 ||
		    !(c->proto & SMFIP_NR_DATA)), SMFIC_DATA);
		mc_pushed(c);
		mc_pump(c);
	}
	ms->data_sent = 1;
}
