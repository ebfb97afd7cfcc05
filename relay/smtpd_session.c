/*
 * smtpd_session - one inbound SMTP session: replies, deadlines, the
 * transaction object, the command table (common/cmdtable: a row per verb
 * with its states and needs) and its handlers (HELO/EHLO, MAIL, RCPT,
 * DATA, ETRN, STARTTLS, AUTH, ...), and the input loop on the
 * bufferevent (lines through common/lineio).
 *
 * Trust: every byte comes from the network. Commands are taken one
 * complete line at a time (SMTPD_LINE_MAX; an overlong line is discarded
 * and answered 500); message text goes to smtpd_data.c.
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
#include "cmdtable.h"
#include "config.h"
#include "dnsbl.h"
#include "fdbudget.h"
#include "milter.h"
#include "lineio.h"
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
#include "turnwatch.h"

const char *const smtpd_state_names[] = {
	"greeted", "helo", "mail", "data", "commit", "closing"
};

static void smtpd_eventcb(struct bufferevent *bev, short what, void *arg);
static int smtpd_dnsbl_refused(struct smtpd_session *ss, const char *rcpt);
static void smtpd_rcpt_store(struct smtpd_session *ss,
    const struct queue_rcpt *nr);
static void smtpd_milter_rcpt(void *arg, const struct milter_verdict *v);

/*
 * The bufferevent's read timeout restarts on every byte, so a client
 * sending one byte every few seconds would hold its session for ever.
 * This deadline moves only when a whole command line (or a DATA block)
 * has arrived.
 */
void
smtpd_deadline_arm(struct smtpd_session *ss)
{
	server_conn_arm(ss->conn, ss->cfg->smtp_timeout > 0 ?
	    ss->cfg->smtp_timeout : 300);
}

void
smtpd_deadline_cb(void *arg)
{
	struct smtpd_session *ss = arg;

	/* Waiting on us (commit, backpressure, AUTH delay) is not the
	 * client's fault. */
	if (ss->state == SMTPD_ST_COMMIT || ss->paused || ss->milter_wait ||
	    ss->state == SMTPD_ST_CLOSING || ss->bev == NULL) {
		if (ss->state != SMTPD_ST_CLOSING)
			smtpd_deadline_arm(ss);
		return;
	}
	smtpd_eventcb(ss->bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING, ss);
}

/* ---- replies ---- */

void
smtpd_reply(struct smtpd_session *ss, const char *fmt, ...)
{
	va_list ap;
	struct evbuffer *out;

	if (ss->bev == NULL)
		return;
	out = bufferevent_get_output(ss->bev);
	va_start(ap, fmt);
	lineio_vputf(out, fmt, ap);
	va_end(ap);
}

/* The last reply: the transaction is dropped and the session closes once
 * the reply is written. */
static void __attribute__((format(printf, 2, 3)))
smtpd_reply_close(struct smtpd_session *ss, const char *fmt, ...)
{
	va_list ap;

	if (ss->bev != NULL) {
		va_start(ap, fmt);
		lineio_vputf(bufferevent_get_output(ss->bev), fmt, ap);
		va_end(ap);
	}
	smtpd_tx_reset(ss);
	smtpd_session_close(ss);
}

void
smtpd_enter_state(struct smtpd_session *ss, enum smtpd_state st)
{
	if (ss->state != st)
		log_debug("smtpd: sid=%llx, state %s -> %s",
		    (unsigned long long)ss->sid, smtpd_state_names[ss->state],
		    smtpd_state_names[st]);
	ss->state = st;
}

/* Reply already queued; close once the output is flushed. */
void
smtpd_session_close(struct smtpd_session *ss)
{
	smtpd_enter_state(ss, SMTPD_ST_CLOSING);
	if (ss->bev != NULL)
		bufferevent_disable(ss->bev, EV_READ);
}

/* Free now if closing with nothing left to write. Returns 1 if freed. */
int
smtpd_session_reap(struct smtpd_session *ss)
{
	if (ss->in_input)
		return 0;
	if (ss->state == SMTPD_ST_CLOSING && (ss->bev == NULL ||
	    evbuffer_get_length(bufferevent_get_output(ss->bev)) == 0)) {
		smtpd_session_free(ss);
		return 1;
	}
	if (ss->bev == NULL && ss->state != SMTPD_ST_COMMIT) {
		smtpd_session_free(ss);
		return 1;
	}
	return 0;
}

/* Count a protocol error; the limit is enforced before the next command. */
static int
smtpd_error(struct smtpd_session *ss)
{
	ss->errors++;
	return 0;
}

/* Too many errors: the next command gets 421 (as Postfix's hard limit). */
static int
smtpd_error_limit(struct smtpd_session *ss)
{
	if (ss->cfg->max_errors == 0 || ss->errors < ss->cfg->max_errors)
		return 0;
	smtpd_reply(ss, "421 4.7.0 %s Too many errors, closing",
	    ss->cfg->hostname);
	log_info("smtpd: sid=%llx, client=[%s], too many errors",
	    (unsigned long long)ss->sid, ss->ip);
	smtpd_session_close(ss);
	return 1;
}

/*
 * The per-command deadline bounds each command, not their number: a
 * client sending NOOP just in time would keep its slot for ever. After
 * smtp_session_limit the next command gets 421 (nothing acknowledged is
 * affected: a message is either queued or not yet answered).
 */
static int
smtpd_session_limit(struct smtpd_session *ss)
{
	if (ss->cfg->smtp_session_limit <= 0 ||
	    server_conn_age(ss->conn) < ss->cfg->smtp_session_limit)
		return 0;
	log_info("smtpd: sid=%llx, client=[%s], session time limit",
	    (unsigned long long)ss->sid, ss->ip);
	smtpd_reply_close(ss, "421 4.4.2 %s Session time limit reached, closing",
	    ss->cfg->hostname);
	return 1;
}

/* ---- transaction ---- */

void
smtpd_tx_free(struct smtpd_tx **txp)
{
	struct smtpd_tx *tx = *txp;
	size_t i;

	if (tx == NULL)
		return;
	if (tx->put != NULL)
		queue_put_abandon(&tx->put);
	recip_cancel(&tx->rcpt_wait);
	free(tx->pend.addr);
	free(tx->pend.orcpt);
	for (i = 0; i < tx->nrcpts; i++) {
		free(tx->rcpts[i].addr);
		free(tx->rcpts[i].domain);
		free(tx->rcpts[i].orcpt);
	}
	free(tx->rcpts);
	free(tx->sender);
	free(tx);
	*txp = NULL;
}

void
smtpd_tx_reset(struct smtpd_session *ss)
{
	milter_sess_end_tx(ss->milter);
	smtpd_tx_free(&ss->tx);
	if (ss->state == SMTPD_ST_MAIL || ss->state == SMTPD_ST_DATA)
		smtpd_enter_state(ss, SMTPD_ST_HELO);
}

/* ---- commands ---- */

static int
smtpd_helo_valid(const char *arg, size_t len)
{
	size_t i;

	if (len == 0 || len > SMTPD_HELO_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = arg[i];
		if (c <= 32 || c >= 127)
			return 0;
	}
	return 1;
}

static int
smtpd_hello(struct smtpd_session *ss, const char *arg, size_t len, int esmtp)
{
	struct config *cfg = ss->cfg;

	if (!smtpd_helo_valid(arg, len)) {
		smtpd_reply(ss, "501 5.5.4 Syntax: %s hostname",
		    esmtp ? "EHLO" : "HELO");
		return smtpd_error(ss);
	}
	milter_sess_end_tx(ss->milter);
	smtpd_tx_free(&ss->tx);
	memcpy(ss->helo, arg, len);
	ss->helo[len] = '\0';
	milter_sess_helo(ss->milter, ss->helo);
	ss->esmtp = esmtp;
	smtpd_enter_state(ss, SMTPD_ST_HELO);
	if (!esmtp) {
		smtpd_reply(ss, "250 %s", cfg->hostname);
		return 0;
	}
	smtpd_reply(ss, "250-%s", cfg->hostname);
	smtpd_reply(ss, "250-PIPELINING");
	smtpd_reply(ss, "250-SIZE %llu",
	    (unsigned long long)cfg->max_message_size);
	smtpd_reply(ss, "250-8BITMIME");
	smtpd_reply(ss, "250-SMTPUTF8");
	smtpd_reply(ss, "250-ENHANCEDSTATUSCODES");
	smtpd_reply(ss, "250-DSN");
	smtpd_reply(ss, "250-ETRN");
	/* spec.md: AUTH after TLS only, never for relaying. */
	if (ss->tls_on && ss->s->auth != NULL)
		smtpd_reply(ss, "250-AUTH %s", sasl_mechs_offered(1,
		    ss->cfg->auth_requires_tls));
	if (ss->tls != NULL && !ss->tls_on)
		smtpd_reply(ss, "250-STARTTLS");
	smtpd_reply(ss, "250 HELP");
	return 0;
}

static int
smtpd_cmd_ehlo(void *ss, char *arg, size_t len)
{
	return smtpd_hello(ss, arg, len, 1);
}

static int
smtpd_cmd_helo(void *ss, char *arg, size_t len)
{
	return smtpd_hello(ss, arg, len, 0);
}

static int
smtpd_cmd_mail(void *arg_ss, char *arg, size_t len)
{
	struct smtpd_session *ss = arg_ss;
	struct smtp_path path;
	struct smtpd_tx *tx;
	int r;

	/* A reload takes effect in open sessions from their next
	 * transaction (the domain list above all); nothing of the old
	 * configuration is held outside a transaction but the milter
	 * session, which keeps its own reference. */
	if (ss->cfg != ss->s->cfg) {
		config_unref(&ss->cfg);
		ss->cfg = config_ref(ss->s->cfg);
	}
	tx = xcalloc(1, sizeof(*tx));
	r = smtp_parse_mail(arg, len, &path, &tx->mp);
	if (r != 0) {
		free(tx);
		smtpd_reply(ss, "%s", smtp_parse_strerror(r, 0));
		return smtpd_error(ss);
	}
	if (tx->mp.has_size && ss->cfg->max_message_size > 0 &&
	    tx->mp.size > ss->cfg->max_message_size) {
		free(tx);
		metrics_inc(METRIC_REJECTED, "size");
		smtpd_reply(ss, "552 5.3.4 Message size exceeds fixed limit");
		return 0;
	}
	{
		/* The map or disk cannot take it: say so before the DATA. */
		char reply[300];
		const char *why;

		if (room_check(ss->s->q, NULL, tx->mp.size, reply, sizeof(reply),
		    &why)) {
			free(tx);
			metrics_inc(METRIC_REJECTED, why);
			smtpd_reply(ss, "%s", reply);
			return 0;
		}
	}
	tx->sender = xstrdup(path.null_path ? "" : path.addr);
	ss->tx = tx;
	milter_sess_mail(ss->milter, tx->sender);
	smtpd_enter_state(ss, SMTPD_ST_MAIL);
	smtpd_reply(ss, "250 2.1.0 Ok");
	return 0;
}

static void smtpd_rcpt_add(struct smtpd_session *ss,
    const struct config_domain *dom, const char *addr, const char *orcpt,
    unsigned notify);
static void smtpd_rcpt_add_to(struct smtpd_session *ss, const char *domain,
    int hold, int filter, const char *addr, const char *orcpt,
    unsigned notify);
static void smtpd_rcpt_postmaster(struct smtpd_session *ss, const char *orcpt,
    unsigned notify);

/* The deferred RCPT verdict (a probe answered): reply, then read on. */
static void
smtpd_rcpt_answer(void *arg, int verdict, const char *reply)
{
	struct smtpd_session *ss = arg;
	struct smtpd_tx *tx = ss->tx;

	tx->rcpt_wait = NULL;
	if (verdict == RECIP_ACCEPT) {
		smtpd_rcpt_add(ss, tx->pend_dom, tx->pend.addr, tx->pend.orcpt,
		    tx->pend.notify);
	} else {
		metrics_inc(METRIC_REJECTED, "unknown-recipient");
		smtpd_reply(ss, "%s", reply);
		if (reply[0] == '5')
			smtpd_error(ss);
	}
	free(tx->pend.addr);
	free(tx->pend.orcpt);
	tx->pend.addr = tx->pend.orcpt = NULL;
	smtpd_resume(ss);
}

static int
smtpd_cmd_rcpt(void *arg_ss, char *arg, size_t len)
{
	struct smtpd_session *ss = arg_ss;
	struct smtp_path path;
	struct smtp_rcpt_params rp;
	struct smtpd_tx *tx = ss->tx;
	const struct config_domain *dom;
	char sbuf[300], reply[RECIP_REPLY_MAX];
	int r;

	r = smtp_parse_rcpt(arg, len, tx->mp.smtputf8, &path, &rp);
	if (r != 0) {
		smtpd_reply(ss, "%s", smtp_parse_strerror(r, 1));
		return smtpd_error(ss);
	}
	if (tx->nrcpts >= ss->cfg->max_recipients) {
		metrics_inc(METRIC_REJECTED, "too-many-recipients");
		smtpd_reply(ss, "452 4.5.3 Too many recipients");
		return 0;
	}
	/* The relay decision uses the final domain only (source route and
	 * local-part tricks already stripped by the parser); literals and
	 * unconfigured names are never ours. */
	if (path.no_domain) {
		smtpd_rcpt_postmaster(ss, rp.orcpt[0] != '\0' ? rp.orcpt : NULL,
		    rp.notify);
		return 0;
	}
	dom = NULL;
	if (!path.literal)
		dom = config_find_domain(ss->cfg, path.domain);
	if (dom == NULL || path.local_routing) {
		log_info("NOQUEUE: reject: RCPT from [%s]: 550 5.7.1 <%s>: "
		    "Relay access denied", ss->ip,
		    log_sanitize(sbuf, sizeof(sbuf), path.addr, 256));
		metrics_inc(METRIC_REJECTED, "relay");
		smtpd_reply(ss, "550 5.7.1 Relay access denied");
		return smtpd_error(ss);
	}
	/* Blocklisted clients cost no probe. */
	if (smtpd_dnsbl_refused(ss, path.addr))
		return 0;
	{
		/* The domain's quota (or the map) cannot take it. */
		const char *why;

		if (room_check(ss->s->q, dom->name, tx->mp.size, reply,
		    sizeof(reply), &why)) {
			metrics_inc(METRIC_REJECTED, why);
			smtpd_reply(ss, "%s", reply);
			return 0;
		}
	}
	r = recip_check(ss->s->recip, dom, path.addr, reply, sizeof(reply),
	    smtpd_rcpt_answer, ss, &tx->rcpt_wait);
	if (r == RECIP_PENDING) {
		/* Later commands wait for the verdict (pipelining order). */
		tx->pend.addr = xstrdup(path.addr);
		tx->pend.orcpt = rp.orcpt[0] != '\0' ? xstrdup(rp.orcpt) : NULL;
		tx->pend.notify = rp.notify;
		tx->pend_dom = dom;
		ss->paused = 1;
		bufferevent_disable(ss->bev, EV_READ);
		return 0;
	}
	if (r == RECIP_REFUSE) {
		metrics_inc(METRIC_REJECTED, "unknown-recipient");
		smtpd_reply(ss, "%s", reply);
		if (reply[0] == '5')
			smtpd_error(ss);
		return 0;
	}
	smtpd_rcpt_add(ss, dom, path.addr, rp.orcpt[0] != '\0' ? rp.orcpt :
	    NULL, rp.notify);
	return 0;
}

static void
smtpd_rcpt_add(struct smtpd_session *ss, const struct config_domain *dom,
    const char *addr, const char *orcpt, unsigned notify)
{
	smtpd_rcpt_add_to(ss, dom->name, dom->hold, !dom->milters_none, addr,
	    orcpt, notify);
}

/*
 * RFC 5321 4.5.1: "RCPT TO:<Postmaster>" (no domain) MUST be accepted.
 * It goes to the postmaster key's address (postmaster@hostname by
 * default), held or relayed as its domain's section says, or delivered by
 * MX like a delivery status notification when no section names it.
 */
static void
smtpd_rcpt_postmaster(struct smtpd_session *ss, const char *orcpt,
    unsigned notify)
{
	char *addr = ss->cfg->postmaster != NULL ?
	    xstrdup(ss->cfg->postmaster) :
	    xasprintf("postmaster@%s", ss->cfg->hostname);
	const char *domain = strrchr(addr, '@') + 1;
	const struct config_domain *dom = config_find_domain(ss->cfg, domain);

	if (dom != NULL)
		smtpd_rcpt_add(ss, dom, addr, orcpt, notify);
	else
		smtpd_rcpt_add_to(ss, domain, 0, 1, addr, orcpt, notify);
	free(addr);
}

static void
smtpd_rcpt_add_to(struct smtpd_session *ss, const char *domain, int hold,
    int filter, const char *addr, const char *orcpt, unsigned notify)
{
	struct smtpd_tx *tx = ss->tx;
	struct queue_rcpt nr;
	size_t i;

	for (i = 0; i < tx->nrcpts; i++)
		/* The local part is case-sensitive (RFC 5321 2.4); the
		 * domain is already lower case. */
		if (strcmp(tx->rcpts[i].addr, addr) == 0) {
			/* duplicate: one delivery is enough */
			smtpd_reply(ss, "250 2.1.5 Ok");
			return;
		}
	memset(&nr, 0, sizeof(nr));
	nr.addr = xstrdup(addr);
	nr.domain = xstrdup(domain);
	nr.orcpt = orcpt != NULL ? xstrdup(orcpt) : NULL;
	nr.notify = notify;
	nr.state = QUEUE_RCPT_QUEUED;
	/* held: on demand (0); otherwise due now (set at commit) */
	nr.next_attempt = hold ? 0 : 1;
	if (milter_sess_rcpt(ss->milter, addr, filter,
	    smtpd_milter_rcpt, ss)) {
		/* the milters decide; input waits (smtpd_milter_rcpt) */
		ss->mrcpt = nr;
		ss->milter_wait = 1;
		return;
	}
	smtpd_rcpt_store(ss, &nr);
	smtpd_reply(ss, "250 2.1.5 Ok");
}

/* Take over *nr's strings into the transaction. */
static void
smtpd_rcpt_store(struct smtpd_session *ss, const struct queue_rcpt *nr)
{
	struct smtpd_tx *tx = ss->tx;

	if (tx->nrcpts == tx->rcap) {
		tx->rcap = tx->rcap ? tx->rcap * 2 : 4;
		tx->rcpts = xreallocarray(tx->rcpts, tx->rcap,
		    sizeof(*tx->rcpts));
	}
	tx->rcpts[tx->nrcpts++] = *nr;
}

void
smtpd_mrcpt_clear(struct smtpd_session *ss)
{
	free(ss->mrcpt.addr);
	free(ss->mrcpt.domain);
	free(ss->mrcpt.orcpt);
	memset(&ss->mrcpt, 0, sizeof(ss->mrcpt));
}

/* The milters' verdict on a RCPT. */
static void
smtpd_milter_rcpt(void *arg, const struct milter_verdict *v)
{
	struct smtpd_session *ss = arg;
	char sbuf[300], rbuf[400];

	ss->milter_wait = 0;
	if (ss->tx == NULL) {
		smtpd_mrcpt_clear(ss);
	} else if (v->action == MILTER_REJECT ||
	    v->action == MILTER_TEMPFAIL) {
		log_info("NOQUEUE: milter-reject: RCPT from [%s]: %s; to=<%s>, "
		    "milter=%s", ss->ip, smtpd_reply_line1(rbuf, sizeof(rbuf),
		    v->reply), log_sanitize(sbuf, sizeof(sbuf),
		    ss->mrcpt.addr, 256), v->milter);
		metrics_inc(METRIC_REJECTED, "milter");
		smtpd_reply(ss, "%s", v->reply);
		smtpd_mrcpt_clear(ss);
	} else {
		smtpd_rcpt_store(ss, &ss->mrcpt);
		memset(&ss->mrcpt, 0, sizeof(ss->mrcpt));
		smtpd_reply(ss, "250 2.1.5 Ok");
	}
	smtpd_session_input(ss);
	smtpd_session_reap(ss);
}

/*
 * DNSBL verdict at RCPT (the lookup started at connect; input waits in
 * smtpd_session_input until it is done). 1 if the recipient was refused.
 */
static int
smtpd_dnsbl_refused(struct smtpd_session *ss, const char *rcpt)
{
	const char *list = dnsbl_check_listed(ss->dnsbl);
	char sbuf[300];
	int temp = ss->cfg->dnsbl_action == DNSBL_TEMPFAIL;

	if (list == NULL)
		return 0;
	log_sanitize(sbuf, sizeof(sbuf), rcpt, 256);
	if (ss->cfg->dnsbl_action == DNSBL_LOG) {
		log_info("NOQUEUE: dnsbl: RCPT from [%s]: listed by %s, to=<%s>, "
		    "action=log", ss->ip, list, sbuf);
		return 0;
	}
	log_info("NOQUEUE: reject: RCPT from [%s]: %s Client host [%s] "
	    "blocked using %s; to=<%s>", ss->ip, temp ? "450 4.7.1" :
	    "554 5.7.1", ss->ip, list, sbuf);
	metrics_inc(METRIC_REJECTED, "dnsbl");
	smtpd_reply(ss, "%s Service unavailable; Client host [%s] blocked "
	    "using %s", temp ? "450 4.7.1" : "554 5.7.1", ss->ip, list);
	return 1;
}

void
smtpd_dnsbl_done(void *arg)
{
	struct smtpd_session *ss = arg;

	if (ss->bev == NULL || ss->state != SMTPD_ST_MAIL)
		return;
	smtpd_session_input(ss);
	smtpd_session_reap(ss);
}

/* DATA's own precondition (before the pipelining check). */
static int
smtpd_data_check(void *arg_ss, char *arg, size_t arglen)
{
	struct smtpd_session *ss = arg_ss;

	(void)arg;
	(void)arglen;
	if (ss->tx->nrcpts == 0) {
		smtpd_reply(ss, "554 5.5.1 No valid recipients");
		return 1;
	}
	return 0;
}

/*
 * A command that must end a pipelined group (DATA, RFC 2920 3.1) had more
 * input behind it: text sent before our 354 is a synchronisation error,
 * never message content.
 */
static int
smtpd_desync(void *arg_ss)
{
	struct smtpd_session *ss = arg_ss;

	log_info("smtpd: sid=%llx, client=[%s], input before 354, "
	    "closing", (unsigned long long)ss->sid, ss->ip);
	metrics_inc(METRIC_REJECTED, "pipelining");
	smtpd_reply_close(ss, "554 5.5.0 Protocol synchronization error");
	return 1;
}

/* Returns 1 when input processing must stop. */
static int
smtpd_cmd_data(void *arg_ss, char *arg, size_t arglen)
{
	struct smtpd_session *ss = arg_ss;
	struct smtpd_tx *tx = ss->tx;
	char rcv[1024];
	int r;

	(void)arg;
	(void)arglen;
	tx->put = queue_put_begin(ss->s->q);
	if (tx->put == NULL) {
		smtpd_reply(ss, "451 4.3.0 Local error in processing");
		return 0;
	}
	snprintf(tx->id, sizeof(tx->id), "%s", queue_put_id(tx->put));
	queue_put_set_resume(tx->put, smtpd_resume, ss);
	tx->ds = SMTPD_DS_BOL;
	tx->in_headers = 1;
	smtpd_received(ss, rcv, sizeof(rcv));
	tx->received_len = strlen(rcv);
	if (milter_sess_filtering(ss->milter)) {
		/* the milters see the text first; they write it at the end */
		milter_sess_data(ss->milter, tx->id);
		milter_sess_set_resume(ss->milter, smtpd_resume, ss);
		r = milter_sess_write(ss->milter, rcv, strlen(rcv));
	} else
		r = queue_put_write(tx->put, rcv, strlen(rcv));
	if (r < 0) {
		tx->bad |= SMTPD_BAD_QUEUE;
		tx->qerr = r;
	}
	smtpd_enter_state(ss, SMTPD_ST_DATA);
	smtpd_reply(ss, "354 End data with <CR><LF>.<CR><LF>");
	if (r == 1) {
		ss->paused = 1;
		bufferevent_disable(ss->bev, EV_READ);
		return 1;
	}
	return 0;
}

static int
smtpd_cmd_etrn(void *arg_ss, char *arg, size_t len)
{
	struct smtpd_session *ss = arg_ss;
	char node[SMTP_DOMAIN_MAX + 1], text[SMTP_DOMAIN_MAX + 2];
	char reply[512];
	int kind;

	if (len == 0 || memchr(arg, ' ', len) != NULL ||
	    memchr(arg, '\t', len) != NULL ||
	    smtp_parse_etrn(arg, len, &kind, node, sizeof(node)) != 0) {
		smtpd_reply(ss, "501 5.5.4 Syntax error in ETRN parameters");
		return smtpd_error(ss);
	}
	/* Hand on the parsed form (kind + node, at most 1 + 255 octets),
	 * never the raw argument: "@" + 255 octets + "." did not fit. */
	if (kind != 0)
		snprintf(text, sizeof(text), "%c%s", kind, node);
	else
		snprintf(text, sizeof(text), "%s", node);
	if (ss->s->etrn_fn == NULL) {
		smtpd_reply(ss, "458 4.3.0 Unable to queue messages for node %s",
		    node);
		return 0;
	}
	reply[0] = '\0';
	ss->s->etrn_fn(ss->s->etrn_arg, ss->ip, text, reply, sizeof(reply));
	/* the handler's line must look like a reply, single line */
	if (strlen(reply) < 4 || reply[0] < '2' || reply[0] > '5' ||
	    reply[3] != ' ' || strpbrk(reply, "\r\n") != NULL)
		smtpd_reply(ss, "458 4.3.0 Unable to queue messages for node %s",
		    node);
	else
		smtpd_reply(ss, "%s", reply);
	return 0;
}

/* Returns 1 when input processing must stop (the bev changed). */
static int
smtpd_cmd_starttls(void *arg_ss, char *arg, size_t arglen)
{
	struct smtpd_session *ss = arg_ss;

	(void)arg;
	(void)arglen;
	switch (server_starttls(ss->conn, &ss->bev, ss->tls,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)) {
	case SERVER_TLS_UNAVAILABLE:
		return 0;
	case SERVER_TLS_FAILED:
		smtpd_session_close(ss);
		return 1;
	case SERVER_TLS_OK:
		break;
	}
	ss->tls_on = 1;
	/* RFC 3207 4.2: forget everything learnt before TLS */
	smtpd_tx_free(&ss->tx);
	ss->helo[0] = '\0';
	ss->esmtp = 0;
	smtpd_enter_state(ss, SMTPD_ST_GREETED);
	smtpd_session_setup_bev(ss);
	return 1;
}

/* ---- AUTH (RFC 4954), after STARTTLS only ---- */

/* The auth process's answer (failures after their delay). */
static void
smtpd_auth_done(void *arg, int rc, const char *reply, const char *user,
    const char *domains)
{
	struct smtpd_session *ss = arg;

	(void)domains;
	if (rc != SASL_CONTINUE)
		ss->sasl = NULL;
	ss->paused = 0;
	if (ss->bev == NULL) {
		smtpd_session_reap(ss);
		return;
	}
	switch (rc) {
	case SASL_CONTINUE:
		break;
	case SASL_OK:
		util_strlcpy(ss->user, user, sizeof(ss->user));
		milter_sess_auth(ss->milter, ss->user);
		log_info("smtpd: sid=%llx, client=[%s], user=%s, auth=ok",
		    (unsigned long long)ss->sid, ss->ip, ss->user);
		metrics_inc(METRIC_AUTH, "ok");
		break;
	case SASL_FAIL:
		log_info("smtpd: sid=%llx, client=[%s], auth=failed",
		    (unsigned long long)ss->sid, ss->ip);
		metrics_inc(METRIC_AUTH, "failed");
		smtpd_error(ss);
		break;
	default:
		metrics_inc(METRIC_AUTH, rc == AUTHPROTO_UNAVAILABLE ?
		    "refused" : "invalid");
		smtpd_error(ss);
		break;
	}
	smtpd_reply(ss, "%s", reply);
	bufferevent_enable(ss->bev, EV_READ);
	smtpd_session_input(ss);
	smtpd_session_reap(ss);
}

/* Wait for the auth process (reading stops); 454 when it is away. */
static int
smtpd_auth_wait(struct smtpd_session *ss)
{
	if (ss->sasl == NULL) {
		smtpd_reply(ss, "%s", AUTHC_DOWN_REPLY);
		return smtpd_error(ss);
	}
	ss->paused = 1;
	bufferevent_disable(ss->bev, EV_READ);
	return 1;
}

static int
smtpd_cmd_auth(void *arg_ss, char *arg, size_t arglen)
{
	struct smtpd_session *ss = arg_ss;

	(void)arglen;
	ss->sasl = authc_start(ss->s->auth, ss->ip, AUTHPROTO_TLS |
	    (ss->cfg->auth_requires_tls ? AUTHPROTO_REQUIRE_TLS : 0), arg,
	    smtpd_auth_done, ss);
	return smtpd_auth_wait(ss);
}

static void
smtpd_auth_line(struct smtpd_session *ss, const char *line)
{
	if (authc_step(ss->sasl, line) < 0)
		ss->sasl = NULL;
	(void)smtpd_auth_wait(ss);
}

static int
smtpd_cmd_rset(void *arg_ss, char *arg, size_t arglen)
{
	struct smtpd_session *ss = arg_ss;

	(void)arg;
	(void)arglen;
	smtpd_tx_reset(ss);
	smtpd_reply(ss, "250 2.0.0 Ok");
	return 0;
}

static int
smtpd_cmd_quit(void *arg_ss, char *arg, size_t arglen)
{
	struct smtpd_session *ss = arg_ss;

	(void)arg;
	(void)arglen;
	smtpd_reply_close(ss, "221 2.0.0 Bye");
	return 1;
}

static int
smtpd_cmd_help(void *arg_ss, char *arg, size_t arglen)
{
	struct smtpd_session *ss = arg_ss;

	(void)arg;
	(void)arglen;
	smtpd_reply(ss, "214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA "
	    "RSET NOOP QUIT HELP VRFY ETRN%s",
	    ss->tls != NULL && !ss->tls_on ? " STARTTLS" : "");
	smtpd_reply(ss, "214 2.0.0 See RFC 5321 and RFC 1985");
	return 0;
}

static int
smtpd_cmd_vrfy(void *arg_ss, char *arg, size_t arglen)
{
	(void)arg;
	(void)arglen;
	smtpd_reply(arg_ss, "252 2.5.2 Cannot VRFY user, but will accept "
	    "message and attempt delivery");
	return 0;
}

/* The table's replies: every refusal counts towards max_errors. */
static int
smtpd_answer(void *arg_ss, const char *line, enum cmdtable_why why)
{
	struct smtpd_session *ss = arg_ss;

	smtpd_reply(ss, "%s", line);
	return why == CMDT_WHY_REPLY ? 0 : smtpd_error(ss);
}

#define ST(x)	CMDT_ST(SMTPD_ST_##x)
#define NOTIMPL	"502 5.5.1 Command not implemented"

static const struct cmdtable_row smtpd_rows[] = {
	{ "EHLO", 0, 0, 0, NULL, NULL, NULL, NULL, smtpd_cmd_ehlo },
	{ "HELO", 0, 0, 0, NULL, NULL, NULL, NULL, smtpd_cmd_helo },
	{ "MAIL", ST(HELO), CMDT_HELO, 0, NULL,
	    "503 5.5.1 Nested MAIL command", NULL, NULL, smtpd_cmd_mail },
	{ "RCPT", ST(MAIL), 0, 0, NULL, "503 5.5.1 Need MAIL command", NULL,
	    NULL, smtpd_cmd_rcpt },
	{ "DATA", ST(MAIL), 0, CMDT_NOARG | CMDT_GROUP_END,
	    "501 5.5.4 Syntax: DATA", "503 5.5.1 Need MAIL command", NULL,
	    smtpd_data_check, smtpd_cmd_data },
	{ "RSET", 0, 0, CMDT_NOARG, "501 5.5.4 Syntax: RSET", NULL, NULL,
	    NULL, smtpd_cmd_rset },
	{ "NOOP", 0, 0, 0, NULL, NULL, "250 2.0.0 Ok", NULL, NULL },
	{ "QUIT", 0, 0, CMDT_NOARG, "501 5.5.4 Syntax: QUIT", NULL, NULL,
	    NULL, smtpd_cmd_quit },
	{ "HELP", 0, 0, 0, NULL, NULL, NULL, NULL, smtpd_cmd_help },
	{ "VRFY", 0, 0, CMDT_ARG, "501 5.5.4 Syntax: VRFY address", NULL,
	    NULL, NULL, smtpd_cmd_vrfy },
	{ "TURN", 0, 0, 0, NULL, NULL, "502 5.5.1 TURN not supported, use "
	    "ETRN", NULL, NULL },
	{ "ETRN", ST(HELO), CMDT_HELO, 0, NULL, "503 5.5.1 ETRN not allowed "
	    "during a mail transaction", NULL, NULL, smtpd_cmd_etrn },
	{ "STARTTLS", ST(GREETED) | ST(HELO), CMDT_TLS_OFFER, CMDT_NOARG,
	    "501 5.5.4 Syntax: STARTTLS", "503 5.5.1 STARTTLS not allowed "
	    "during a mail transaction", NULL, NULL, smtpd_cmd_starttls },
	{ "AUTH", ST(GREETED) | ST(HELO), CMDT_AUTH_OFFER | CMDT_TLS |
	    CMDT_EHLO | CMDT_NOT_AUTHED, 0, NULL, "503 5.5.1 AUTH not allowed "
	    "during a mail transaction", NULL, NULL, smtpd_cmd_auth },
	{ "EXPN", 0, 0, CMDT_ERROR, NULL, NULL, NOTIMPL, NULL, NULL },
	{ "BDAT", 0, 0, CMDT_ERROR, NULL, NULL, NOTIMPL, NULL, NULL },
};

/* What a row may need, in the order it is checked (and its reply). */
static const struct cmdtable_need smtpd_needs[] = {
	{ CMDT_TLS_OFFER, NOTIMPL },
	{ CMDT_AUTH_OFFER, NOTIMPL },
	{ CMDT_TLS, "530 5.7.0 Must issue a STARTTLS command first" },
	{ CMDT_EHLO, "503 5.5.1 Send EHLO first" },
	{ CMDT_HELO, "503 5.5.1 Send HELO/EHLO first" },
	{ CMDT_NOT_AUTHED, "503 5.5.1 Already authenticated" },
};

static const struct cmdtable smtpd_cmds = CMDTABLE(smtpd_rows, smtpd_needs,
    "500 5.5.2 Syntax error, command unrecognized",
    "501 5.5.2 Invalid character in command", smtpd_answer, smtpd_desync);

#undef ST
#undef NOTIMPL

/* Returns 1 when input processing must stop. */
static int
smtpd_command(struct smtpd_session *ss, char *line, size_t len)
{
	unsigned have = 0;

	if (ss->state != SMTPD_ST_GREETED)
		have |= CMDT_HELO;
	if (ss->esmtp)
		have |= CMDT_EHLO;
	if (ss->tls_on)
		have |= CMDT_TLS;
	else if (ss->tls != NULL)
		have |= CMDT_TLS_OFFER;
	if (ss->s->auth != NULL)
		have |= CMDT_AUTH_OFFER;
	have |= ss->user[0] != '\0' ? CMDT_AUTHED : CMDT_NOT_AUTHED;
	if (evbuffer_get_length(bufferevent_get_input(ss->bev)) > 0)
		have |= CMDT_PENDING;
	if (cmdtable_dispatch(&smtpd_cmds, ss, ss->state, have, line, len))
		return 1;
	return ss->state == SMTPD_ST_CLOSING;
}

/*
 * Take complete command lines from the input buffer. A line ends at LF
 * (a preceding CR is removed; commands with a bare LF are tolerated, as
 * most MTAs do: smuggling is a DATA problem). Lines over SMTPD_LINE_MAX
 * are answered with 500 5.5.2 and dropped up to their end.
 */
/*
 * Longest line allowed next, CRLF included: SASL data, and the AUTH
 * command with its initial response, may use 12,288 octets (RFC 4954 4).
 */
static size_t
smtpd_line_max(const struct smtpd_session *ss, struct evbuffer *in)
{
	unsigned char head[5];

	if (ss->sasl != NULL)
		return SMTPD_AUTH_LINE_MAX;
	if (evbuffer_copyout(in, head, sizeof(head)) ==
	    (ev_ssize_t)sizeof(head) &&
	    strncasecmp((const char *)head, "AUTH ", sizeof(head)) == 0)
		return SMTPD_AUTH_LINE_MAX;
	return SMTPD_LINE_MAX;
}

void
smtpd_session_input(struct smtpd_session *ss)
{
	struct evbuffer *in;
	char line[SMTPD_AUTH_LINE_MAX + 1];
	size_t len;
	enum lineio_result r;

	if (ss->bev == NULL || ss->in_input)
		return;
	ss->in_input = 1;
	for (;;) {
		in = bufferevent_get_input(ss->bev);
		if (ss->paused || ss->milter_wait ||
		    ss->state == SMTPD_ST_CLOSING ||
		    ss->state == SMTPD_ST_COMMIT)
			break;
		/* RCPT needs the DNSBL verdict: wait (dnsbl_timeout) */
		if (ss->state == SMTPD_ST_MAIL && dnsbl_check_pending(ss->dnsbl))
			break;
		if (ss->state == SMTPD_ST_DATA) {
			if (smtpd_data_scan(ss))
				continue;	/* ended or paused: re-check */
			break;
		}
		/* replies pile up when the client does not read: stop */
		if (server_out_full(ss->bev, SMTPD_OUT_MAX)) {
			bufferevent_disable(ss->bev, EV_READ);
			break;
		}
		r = lineio_peek(&ss->lines, in, smtpd_line_max(ss, in), &len);
		if (r == LINEIO_MORE)
			break;
		if (smtpd_error_limit(ss) || smtpd_session_limit(ss))
			break;
		if (r == LINEIO_LONG) {
			lineio_skip(&ss->lines, in, len);
			/* A whole line came: the next command gets its
			 * full smtp_timeout, as after any other reply. */
			smtpd_deadline_arm(ss);
			smtpd_reply(ss, "500 5.5.2 Line too long");
			authc_cancel(&ss->sasl);
			smtpd_error(ss);
			continue;
		}
		len = lineio_take(in, len, line, sizeof(line) - 1);
		smtpd_deadline_arm(ss);
		if (ss->sasl != NULL) {
			smtpd_auth_line(ss, line);
			continue;
		}
		if (smtpd_command(ss, line, len))
			continue;	/* state changed: loop re-checks */
	}
	ss->in_input = 0;
}

/* ---- bufferevent callbacks ---- */

static void
smtpd_readcb(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *ss = arg;

	(void)bev;
	turnwatch_begin("smtpd");
	smtpd_session_input(ss);
	turnwatch_end();
	smtpd_session_reap(ss);
}

static void
smtpd_writecb(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *ss = arg;

	(void)bev;
	if (smtpd_session_reap(ss))
		return;
	/* output drained: resume reading if we stopped for it */
	if (ss->state != SMTPD_ST_CLOSING && !ss->paused) {
		bufferevent_enable(ss->bev, EV_READ);
		if (evbuffer_get_length(bufferevent_get_input(ss->bev)) > 0) {
			smtpd_session_input(ss);
			smtpd_session_reap(ss);
		}
	}
}

/* The peer is gone (or timed out): drop the bev; keep a committing tx. */
void
smtpd_session_lost(struct smtpd_session *ss)
{
	if (ss->bev != NULL) {
		bufferevent_free(ss->bev);
		ss->bev = NULL;
	}
	if (ss->state != SMTPD_ST_COMMIT)
		smtpd_enter_state(ss, SMTPD_ST_CLOSING);
}

static void
smtpd_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct smtpd_session *ss = arg;
	unsigned long e;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		SSL *ssl = bufferevent_openssl_get_ssl(ss->bev);
		if (ssl != NULL) {
			log_info("smtpd: sid=%llx, client=[%s], tls=%s, "
			    "cipher=%s", (unsigned long long)ss->sid, ss->ip,
			    SSL_get_version(ssl), SSL_get_cipher_name(ssl));
			milter_sess_tls(ss->milter, SSL_get_version(ssl),
			    SSL_get_cipher_name(ssl));
		}
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (ss->state == SMTPD_ST_COMMIT && !(what & BEV_EVENT_WRITING)) {
			/* the wait is ours, not the client's */
			bufferevent_enable(ss->bev, EV_READ);
			return;
		}
		if (ss->state == SMTPD_ST_COMMIT) {
			/* client stopped reading: drop it, keep the commit */
			smtpd_session_lost(ss);
			return;
		}
		log_info("smtpd: sid=%llx, client=[%s], timeout in state %s",
		    (unsigned long long)ss->sid, ss->ip,
		    smtpd_state_names[ss->state]);
		if (ss->state != SMTPD_ST_CLOSING && (what & BEV_EVENT_READING)) {
			smtpd_reply_close(ss, "421 4.4.2 %s Error: timeout exceeded",
			    ss->cfg->hostname);
			/* give the 421 one write timeout to leave */
			bufferevent_enable(ss->bev, EV_WRITE);
			return;
		}
		smtpd_session_lost(ss);
		smtpd_session_reap(ss);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		while ((e = bufferevent_get_openssl_error(ss->bev)) != 0) {
			char buf[256];
			ERR_error_string_n(e, buf, sizeof(buf));
			log_info("smtpd: sid=%llx, client=[%s], tls error: %s",
			    (unsigned long long)ss->sid, ss->ip, buf);
		}
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		log_debug("smtpd: sid=%llx, client=[%s], disconnect in state %s",
		    (unsigned long long)ss->sid, ss->ip,
		    smtpd_state_names[ss->state]);
		smtpd_session_lost(ss);
		smtpd_session_reap(ss);
	}
}

void
smtpd_session_setup_bev(struct smtpd_session *ss)
{
	struct timeval tv = { ss->cfg->smtp_timeout > 0 ?
	    ss->cfg->smtp_timeout : 300, 0 };

	bufferevent_setcb(ss->bev, smtpd_readcb, smtpd_writecb, smtpd_eventcb,
	    ss);
	bufferevent_setwatermark(ss->bev, EV_READ, 0, SMTPD_READ_HIWAT);
	bufferevent_set_timeouts(ss->bev, &tv, &tv);
	bufferevent_enable(ss->bev, EV_READ | EV_WRITE);
}
