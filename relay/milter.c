/*
 * milter - milter client sessions (see milter.h): filter connections,
 * their packet I/O and replies. The commands up to RCPT and the session
 * API are in milter_sess.c, the message text and the end of message in
 * milter_msg.c.
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

static struct mlink *ml_closing;	/* QUITs draining */

static void ml_readcb(evutil_socket_t fd, short what, void *arg);
static void ml_idlecb(evutil_socket_t fd, short what, void *arg);

struct mlink *ml_new(struct event_base *base, int fd)
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

void ml_free(struct mlink *ml)
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

void ml_unlink(struct mlink **head, struct mlink *ml)
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

void ml_quit_done(struct mlink *ml)
{
	ml_unlink(&ml_closing, ml);
	ml_free(ml);
}

/* Drop every link still draining its QUIT (at exit). */
void ml_quit_all(void)
{
	while (ml_closing != NULL)
		ml_quit_done(ml_closing);
}


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

void ml_writecb(evutil_socket_t fd, short what, void *arg)
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

void mc_timer_cb(evutil_socket_t fd, short what, void *arg)
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
void mc_fail(struct mconn *c, const char *why)
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
