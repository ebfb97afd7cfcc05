/*
 * milter_sess - the milter session's commands up to RCPT (see milter.h):
 * opening filter connections (or taking an idle one, milter_reuse),
 * CONNECT, HELO, MAIL and RCPT, waiting for the filters' answers, and the
 * session API the SMTP server calls. Connections, packet I/O and replies
 * are in milter.c; the message text and the end of message in
 * milter_msg.c.
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

void mp_drop(struct mlink *ml)
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
	ml_quit_all();
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
int mc_busy(const struct mconn *c)
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
