/*
 * odmr_cmd - the ODMR session's commands (RFC 2645): EHLO, STARTTLS, AUTH
 * (through the auth process), ATRN (the held mail of the user's domains,
 * then the connection goes to relay/deliver in reversed mode), XWAIT (wait
 * for mail, local extension), the command table (common/cmdtable) and
 * the input loop (lines through common/lineio). The session life is in
 * odmr.c, listeners and limits in the session core (common/server).
 *
 * Trust: every line comes from the network, bounded by ODMR_LINE_MAX
 * (ODMR_AUTH_LINE_MAX for SASL responses); domains are checked before use.
 */
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "authc.h"
#include "authd.h"
#include "authproto.h"
#include "cmdtable.h"
#include "config.h"
#include "deliver.h"
#include "fdbudget.h"
#include "lineio.h"
#include "log.h"
#include "metrics.h"
#include "odmr.h"
#include "domstate.h"
#include "queue.h"
#include "server.h"
#include "sasl.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"
#include "xwait.h"
#include "odmr_private.h"
#include "turnwatch.h"

/* ---- EHLO / STARTTLS ---- */

static int odmr_cmd_ehlo(void *arg_s, char *arg, size_t arglen)
{
	struct odmr_session *s = arg_s;

	(void)arg;
	(void)arglen;
	s->helo_seen = 1;
	odmr_reply(s, "250-%s", s->cfg->hostname);
	odmr_reply(s, "250-ENHANCEDSTATUSCODES");
	if (s->o->tls != NULL && !s->tls_active && s->state == ODMR_INITIAL)
		odmr_reply(s, "250-STARTTLS");
	if (s->state == ODMR_INITIAL)
		odmr_reply(s, "250-AUTH %s", sasl_mechs_offered(s->tls_active,
		    s->cfg->auth_requires_tls));
	odmr_reply(s, "250-XWAIT");
	odmr_reply(s, "250 ATRN");
	return 0;
}

static int odmr_cmd_starttls(void *arg_s, char *arg, size_t arglen)
{
	struct odmr_session *s = arg_s;

	(void)arg;
	(void)arglen;
	switch (server_starttls(s->conn, &s->bev, s->o->tls,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)) {
	case SERVER_TLS_UNAVAILABLE:
		return 0;
	case SERVER_TLS_FAILED:
		odmr_close_when_flushed(s);
		return 1;
	case SERVER_TLS_OK:
		break;
	}
	s->tls_active = 1;
	s->helo_seen = 0;
	bufferevent_setcb(s->bev, odmr_read_cb, odmr_write_cb, odmr_event_cb, s);
	odmr_set_timeout(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return 1;
}

/* ---- AUTH ---- */

/* The auth process's answer (failures after their delay). */
static void odmr_auth_done(void *arg, int rc, const char *reply,
    const char *user, const char *domains)
{
	struct odmr_session *s = arg;

	if (rc != SASL_CONTINUE)
		s->sasl = NULL;
	switch (rc) {
	case SASL_CONTINUE:
		s->state = ODMR_AUTH_EXCHANGE;
		break;
	case SASL_OK:
		free(s->user);
		s->user = xstrdup(user);
		free(s->domains);
		s->domains = xstrdup(domains);
		/* Split once: ATRN checks and lists from here. */
		s->ndomv = 0;
		for (char *p = s->domains, *c; p != NULL && *p != '\0' &&
		    s->ndomv < ODMR_MAX_DOMAINS; p = c) {
			if ((c = strchr(p, ',')) != NULL)
				*c++ = '\0';
			s->domv[s->ndomv++] = p;
		}
		s->state = ODMR_AUTHED;
		odmr_set_timeout(s);
		log_info("odmr: client=[%s], user=%s, auth=ok", s->ip, s->user);
		metrics_inc(METRIC_AUTH, "ok");
		break;
	case SASL_FAIL:
		log_info("odmr: client=[%s], auth=failed", s->ip);
		metrics_inc(METRIC_AUTH, "failed");
		s->state = ODMR_INITIAL;
		break;
	default:
		/* 454 (too many failures, auth process away) or a syntax,
		 * cancel or mechanism error: counted apart from failures. */
		metrics_inc(METRIC_AUTH, rc == AUTHPROTO_UNAVAILABLE ?
		    "refused" : "invalid");
		s->state = ODMR_INITIAL;
		break;
	}
	odmr_reply(s, "%s", reply);
	/* A reload came during the exchange: the answer may be the old
	 * password file's. The auth process confirms the user first. */
	if (rc == SASL_OK && s->auth_gen != s->o->reload_gen) {
		odmr_recheck_queue(s);
		return;
	}
	bufferevent_enable(s->bev, EV_READ);
	/* Lines that arrived meanwhile. */
	odmr_read_cb(s->bev, s);
}

/* Wait for the auth process; reading stops meanwhile. */
static void odmr_auth_wait(struct odmr_session *s)
{
	if (s->sasl == NULL) {
		log_info("odmr: client=[%s], auth=unavailable", s->ip);
		s->state = ODMR_INITIAL;
		odmr_reply(s, "%s", AUTHC_DOWN_REPLY);
		return;
	}
	s->state = ODMR_DELAYED;
	bufferevent_disable(s->bev, EV_READ);
}

static int odmr_cmd_auth(void *arg_s, char *arg, size_t arglen)
{
	struct odmr_session *s = arg_s;

	(void)arglen;
	s->auth_gen = s->o->reload_gen;
	s->sasl = authc_start(s->o->auth, s->ip,
	    (s->tls_active ? AUTHPROTO_TLS : 0) |
	    (s->cfg->auth_requires_tls ? AUTHPROTO_REQUIRE_TLS : 0), arg,
	    odmr_auth_done, s);
	odmr_auth_wait(s);
	return 0;
}

static void odmr_auth_line(struct odmr_session *s, const char *line)
{
	if (authc_step(s->sasl, line) < 0)
		s->sasl = NULL;
	odmr_auth_wait(s);
}

/* ---- ATRN ---- */

/* RFC 2645 5.2.1 domain: two or more LDH labels, no trailing dot. */
static int odmr_domain_ok(const char *d)
{
	int labels = 0;
	size_t len;

	if (strlen(d) > 255)	/* RFC 1035 2.3.4 */
		return 0;
	while (*d != '\0') {
		const char *dot = strchr(d, '.');

		len = dot ? (size_t)(dot - d) : strlen(d);
		if (len == 0 || len > 63 || !isalnum((unsigned char)d[0]) ||
		    !isalnum((unsigned char)d[len - 1]))
			return 0;
		for (size_t i = 0; i < len; i++)
			if (!isalnum((unsigned char)d[i]) && d[i] != '-')
				return 0;
		labels++;
		if (dot == NULL)
			break;
		d = dot + 1;
		if (*d == '\0')
			return 0;	/* trailing dot */
	}
	return labels >= 2;
}

static int odmr_rate_ok(struct odmr *o, const char *user)
{
	return util_rate_take(o->rate, ODMR_RATE_SLOTS, user, o->cfg->atrn_rate);
}

struct odmr_gather {
	struct deliver *d;
	const char *const *domains;
	size_t ndomains;
	unsigned added, busy;
};

/*
 * The mail of an ATRN is read from the domain index a piece at a time
 * (ODMR_PIECE messages), as the reversed session takes it: a domain that
 * holds half a million messages neither stalls the event loop nor fills
 * memory before the first one goes out.
 */
#define ODMR_PIECE	256

struct odmr_more {
	struct queue *q;
	char *domains[ODMR_MAX_DOMAINS];	/* copies */
	size_t ndomains, cur;		/* domain being read */
	char after[QUEUE_ID_LEN + 1];	/* last id read there */
};

/* Add up to `want` messages; counts in g. Returns 0 when all is read. */
static int odmr_more_fill(struct odmr_more *m, struct odmr_gather *g,
    unsigned want)
{
	char ids[ODMR_PIECE][QUEUE_ID_LEN + 1];

	while (m->cur < m->ndomains && g->added < want) {
		int n = queue_domain_ids(m->q, m->domains[m->cur], m->after, ids,
		    ODMR_PIECE);

		if (n <= 0) {
			m->cur++;
			m->after[0] = '\0';
			continue;
		}
		for (int k = 0; k < n; k++) {
			int rc = deliver_add(g->d, ids[k],
			    (const char *const *)m->domains, m->ndomains);

			if (rc == 1)
				g->added++;
			else if (rc == QUEUE_EBUSY)
				g->busy++;
		}
		memcpy(m->after, ids[n - 1], sizeof(m->after));
	}
	return m->cur < m->ndomains;
}

static size_t odmr_more_cb(void *arg, struct deliver *d)
{
	struct odmr_more *m = arg;
	struct odmr_gather g;

	memset(&g, 0, sizeof(g));
	g.d = d;
	(void)odmr_more_fill(m, &g, ODMR_PIECE);
	return g.added;
}

static void odmr_more_free(void *arg)
{
	struct odmr_more *m = arg;

	for (size_t i = 0; i < m->ndomains; i++)
		free(m->domains[i]);
	free(m);
}

struct odmr_atrn_log {
	struct odmr *o;
	struct deliver *d;	/* until its done callback */
	char ip[64];
	char *user;
	char domains[512];	/* for the log: may end in "..." */
	char *pulled;		/* every domain, comma-separated */
	int budget_held;	/* the reversed connection's slot */
	struct odmr_atrn_log *prev, *next;
};

static void odmr_reversed_unlink(struct odmr_atrn_log *lg)
{
	if (lg->prev != NULL)
		lg->prev->next = lg->next;
	else
		lg->o->reversed = lg->next;
	if (lg->next != NULL)
		lg->next->prev = lg->prev;
}

/* Shutdown: abort reversed sessions; unconfirmed mail stays queued. */
void odmr_reversed_abort_all(struct odmr *o)
{
	while (o->reversed != NULL) {
		struct odmr_atrn_log *lg = o->reversed;

		odmr_reversed_unlink(lg);
		log_info("atrn: client=[%s], user=%s, domains=%s, result=aborted "
		    "(shutdown)", lg->ip, lg->user, lg->domains);
		if (lg->budget_held)
			fdbudget_put(server_budget(o->srv));
		deliver_free(&lg->d);
		free(lg->user);
		free(lg->pulled);
		free(lg);
	}
}

/* A successful pull (all taken, or nothing to take): note each domain of
 * the comma-separated list for the operator. The whole list, never the
 * log's (cut at 512 octets: a customer's later domains looked unpulled). */
static void odmr_note_pulled(const char *list)
{
	char *buf = xstrdup(list), *p, *comma;

	for (p = buf; p != NULL && *p != '\0'; p = comma) {
		if ((comma = strchr(p, ',')) != NULL)
			*comma++ = '\0';
		domstate_note_now(p, DOMSTATE_ATRN);
	}
	free(buf);
}

/* domains joined by commas (caller frees). */
static char *odmr_join(char *const *domains, size_t n)
{
	size_t i, len = 1;
	char *out, *p;

	for (i = 0; i < n; i++)
		len += strlen(domains[i]) + 1;
	out = p = xmalloc(len);
	*p = '\0';
	for (i = 0; i < n; i++)
		p += sprintf(p, "%s%s", i ? "," : "", domains[i]);
	return out;
}

static void odmr_atrn_done(void *arg, const struct deliver_summary *sum)
{
	struct odmr_atrn_log *lg = arg;

	odmr_reversed_unlink(lg);
	if (lg->budget_held)
		fdbudget_put(server_budget(lg->o->srv));
	log_info("atrn: client=[%s], user=%s, domains=%s, messages=%u, sent=%u, "
	    "deferred=%u, bounced=%u, bytes=%llu, result=%s (%s)", lg->ip,
	    lg->user, lg->domains, sum->messages, sum->rcpts_sent,
	    sum->rcpts_deferred, sum->rcpts_bounced,
	    (unsigned long long)sum->bytes, sum->ok ? "ok" : "incomplete",
	    sum->reason);
	metrics_inc(METRIC_ATRN, sum->ok ? "ok" : "incomplete");
	if (sum->ok)
		odmr_note_pulled(lg->pulled);
	free(lg->user);
	free(lg->pulled);
	free(lg);
}

/*
 * The domains of an ATRN or XWAIT argument (cmd names it): comma-separated,
 * no spaces (RFC 2645 5.2.1), pointers into arg; none = the user's. Returns
 * how many, or 0 after replying 501/450.
 */
static size_t odmr_domains(struct odmr_session *s, const char *cmd, char *arg,
    char **domains)
{
	size_t ndomains = 0, i, j;
	char *p, *comma;
	const char *lc = strcmp(cmd, "ATRN") == 0 ? "atrn" : "xwait";

	if (*arg != '\0') {
		for (p = arg; p != NULL; p = comma) {
			comma = strchr(p, ',');
			if (comma != NULL)
				*comma++ = '\0';
			util_lowercase(p);
			if (!odmr_domain_ok(p) || ndomains == ODMR_MAX_DOMAINS) {
				odmr_reply(s, "501 5.5.4 Syntax: %s [domain[,domain...]]", cmd);
				return 0;
			}
			for (j = 0; j < ndomains; j++)
				if (strcmp(domains[j], p) == 0)
					break;
			if (j == ndomains)
				domains[ndomains++] = p;
		}
		for (i = 0; i < ndomains; i++) {
			for (j = 0; j < s->ndomv; j++)
				if (strcasecmp(s->domv[j], domains[i]) == 0)
					break;
			if (j == s->ndomv)
				break;
		}
		if (i < ndomains) {
			log_info("%s: client=[%s], user=%s, result=refused (domain %.100s not allowed)",
			    lc, s->ip, s->user, domains[i]);
			metrics_inc(lc[0] == 'a' ? METRIC_ATRN : METRIC_XWAIT, "refused");
			odmr_reply(s, "450 4.7.1 %s request refused", cmd);
			return 0;
		}
	} else {
		for (i = 0; i < s->ndomv && ndomains < ODMR_MAX_DOMAINS; i++)
			domains[ndomains++] = s->domv[i];
		if (ndomains == 0) {
			log_info("%s: client=[%s], user=%s, result=refused (no domains)",
			    lc, s->ip, s->user);
			metrics_inc(lc[0] == 'a' ? METRIC_ATRN : METRIC_XWAIT, "refused");
			odmr_reply(s, "450 4.7.1 %s request refused", cmd);
			return 0;
		}
	}
	return ndomains;
}

static int odmr_cmd_atrn(void *arg_s, char *arg, size_t arglen)
{
	struct odmr_session *s = arg_s;
	char *domains[ODMR_MAX_DOMAINS];
	size_t ndomains = 0, i;
	struct odmr_gather g;
	struct odmr_more *more;
	struct odmr_atrn_log *lg;
	char list[512];
	size_t off = 0;
	int woken = s->woken;

	(void)arglen;
	s->woken = 0;
	if ((ndomains = odmr_domains(s, "ATRN", arg, domains)) == 0)
		return 0;
	/* An ATRN right after an XWAIT woken by an arrival (or answered at
	 * once for new mail) is paid for by that mail: push delivery is not a
	 * poll to rate-limit. */
	if (!woken && !odmr_rate_ok(s->o, s->user)) {
		log_info("atrn: client=[%s], user=%s, result=rate-limited", s->ip, s->user);
		metrics_inc(METRIC_ATRN, "rate-limited");
		odmr_reply(s, "450 4.7.0 Too many ATRN requests, try later");
		return 0;
	}
	/* For the log: whole names only, never a cut
	 * one (64 names of 255 octets do not fit); "..." ends a long list. */
	list[0] = '\0';
	for (i = 0; i < ndomains; i++) {
		size_t dl = strlen(domains[i]) + (i ? 1 : 0);

		if (off + dl + 4 >= sizeof(list)) {
			util_strlcpy(list + off, i ? ",..." : "...",
			    sizeof(list) - off);
			break;
		}
		snprintf(list + off, sizeof(list) - off, "%s%s", i ? "," : "",
		    domains[i]);
		off += dl;
	}

	memset(&g, 0, sizeof(g));
	{
		char *owner = xasprintf("atrn:%s", s->user);

		g.d = deliver_new(s->o->base, s->cfg, s->o->q, owner, s->ip);
		free(owner);
	}
	g.domains = (const char *const *)domains;
	g.ndomains = ndomains;
	more = xcalloc(1, sizeof(*more));
	more->q = s->o->q;
	for (i = 0; i < ndomains; i++)
		more->domains[i] = xstrdup(domains[i]);
	more->ndomains = ndomains;
	/* The first piece now (the reply depends on it), the rest later. */
	if (odmr_more_fill(more, &g, ODMR_PIECE))
		deliver_set_more(g.d, odmr_more_cb, more, odmr_more_free);
	else
		odmr_more_free(more);
	if (g.added == 0) {
		deliver_free(&g.d);
		if (g.busy > 0) {
			log_info("atrn: client=[%s], user=%s, domains=%s, result=busy",
			    s->ip, s->user, list);
			metrics_inc(METRIC_ATRN, "busy");
			odmr_reply(s, "451 4.3.0 Mail for these domains is being delivered now, try later");
		} else {
			log_info("atrn: client=[%s], user=%s, domains=%s, result=no-mail",
			    s->ip, s->user, list);
			metrics_inc(METRIC_ATRN, "no-mail");
			{
				char *all = odmr_join(domains, ndomains);

				odmr_note_pulled(all);
				free(all);
			}
			odmr_reply(s, "453 4.3.0 You have no mail");
		}
		return 0;
	}
	/* "256+": the first piece; the rest is read as it goes out. */
	log_info("atrn: client=[%s], user=%s, domains=%s, messages=%u%s, "
	    "result=reversing", s->ip, s->user, list, g.added,
	    g.added >= ODMR_PIECE ? "+" : "");
	metrics_inc(METRIC_ATRN, "started");
	odmr_reply(s, "250 2.0.0 OK now reversing the connection");
	lg = xcalloc(1, sizeof(*lg));
	lg->o = s->o;
	lg->d = g.d;
	lg->next = s->o->reversed;
	if (s->o->reversed != NULL)
		s->o->reversed->prev = lg;
	s->o->reversed = lg;
	util_strlcpy(lg->ip, s->ip, sizeof(lg->ip));
	lg->user = xstrdup(s->user);
	util_strlcpy(lg->domains, list, sizeof(lg->domains));
	lg->pulled = odmr_join(domains, ndomains);
	/* The descriptor stays open until the delivery is done: so does
	 * its slot of the connection budget. */
	lg->budget_held = server_conn_give_slot(s->conn);
	/* The connection now belongs to deliver; our session ends here. */
	{
		struct bufferevent *bev = s->bev;

		s->bev = NULL;
		bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
		bufferevent_set_timeouts(bev, NULL, NULL);
		deliver_start(g.d, bev, DELIVER_REVERSED |
		    (s->implicit_tls ? DELIVER_ONE_LINE_WRITES : 0), NULL, s->user,
		    odmr_atrn_done, lg);
	}
	/* Freed by odmr_read_cb once the command loop is done with it. */
	s->state = ODMR_CLOSING;
	return 1;
}

/* ---- XWAIT: wait for mail (local extension, odrelayd(8)) ---- */

/*
 * A waiting session reads on: QUIT ends the wait (453, then 221); any
 * other line closes the session with 421, since its reply would come
 * before the XWAIT answer the client is waiting for. Waiting sessions have
 * no smtp_timeout (odmr_wait_timeout instead), TCP keepalive to find dead
 * peers, and count against max_waiting instead of the connection limits.
 */

void odmr_wait_end(struct odmr_session *s)
{
	xwait_cancel(&s->wait);
	if (s->wait_ev != NULL)
		evtimer_del(s->wait_ev);
	if (s->state == ODMR_WAITING) {
		s->state = ODMR_AUTHED;
		server_conn_set_exempt(s->conn, 0);
	}
}

static void odmr_wait_woken(void *arg)
{
	struct odmr_session *s = arg;

	s->wait = NULL;		/* xwait removed it before calling */
	odmr_wait_end(s);
	s->woken = 1;
	metrics_inc(METRIC_XWAIT, "woken");
	log_info("xwait: client=[%s], user=%s, result=woken", s->ip, s->user);
	odmr_set_timeout(s);
	odmr_reply(s, "250 2.0.0 Mail has arrived, send ATRN");
}

static void odmr_wait_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct odmr_session *s = arg;

	(void)fd;
	(void)what;
	odmr_wait_end(s);
	metrics_inc(METRIC_XWAIT, "timeout");
	log_debug("xwait: client=[%s], user=%s, result=timeout", s->ip, s->user);
	odmr_set_timeout(s);
	odmr_reply(s, "453 4.3.0 No mail has arrived, XWAIT again");
}

struct odmr_held {
	struct queue *q;
	const char *domain;
	int found;		/* mail ATRN could take now */
	int fresh;		/* ... of which some never tried (new mail) */
	unsigned scanned;
};

#define ODMR_HELD_SCAN	100	/* envelopes read to tell new mail */

static int odmr_held_cb(void *arg, const char *id)
{
	struct odmr_held *h = arg;
	struct queue_envelope *env = NULL;

	/* Mail another delivery holds now is no reason to wake. */
	if (queue_is_leased(h->q, id))
		return 0;
	h->found = 1;
	if (h->scanned++ >= ODMR_HELD_SCAN)
		return 1;
	if (queue_get(h->q, id, &env) == 1) {
		for (size_t i = 0; i < env->nrcpts && !h->fresh; i++)
			if (env->rcpts[i].state == QUEUE_RCPT_QUEUED &&
			    env->rcpts[i].attempts == 0 &&
			    strcasecmp(env->rcpts[i].domain, h->domain) == 0)
				h->fresh = 1;
		queue_envelope_free(&env);
	}
	return h->fresh;
}

/*
 * Whether mail that ATRN could take now waits for one of domains: 0 none,
 * 1 only mail tried before (deferred), 2 new mail. New mail makes the next
 * ATRN exempt from atrn_rate like a wake-up: it is paid for by arriving
 * mail, not a poll; retrying deferred mail stays rate-limited.
 */
static int odmr_has_mail(struct odmr_session *s, char **domains, size_t n)
{
	struct odmr_held h = { s->o->q, NULL, 0, 0, 0 };

	for (size_t i = 0; i < n && !h.fresh; i++) {
		h.domain = domains[i];
		(void)queue_foreach_domain(s->o->q, domains[i], odmr_held_cb, &h);
	}
	return h.fresh ? 2 : h.found;
}

/*
 * Waiting sessions are exempt from the per-address limits, and each holds
 * a descriptor of the budget shared with the SMTP listener: one customer
 * must not take max_waiting (and the descriptors) for itself.
 */
static unsigned odmr_user_waiting(const struct odmr *o, const char *user)
{
	const struct server_conn *c;
	const struct odmr_session *s;
	unsigned n = 0;

	for (c = server_first(o->srv); c != NULL; c = server_conn_next(c)) {
		s = server_conn_owner(c);
		if (s->state == ODMR_WAITING && s->user != NULL &&
		    strcmp(s->user, user) == 0)
			n++;
	}
	return n;
}

static int odmr_cmd_xwait(void *arg_s, char *arg, size_t arglen)
{
	struct odmr_session *s = arg_s;
	char *domains[ODMR_MAX_DOMAINS];
	size_t ndomains;
	int held;
	struct timeval tv = { s->cfg->odmr_wait_timeout, 0 };

	(void)arglen;
	s->woken = 0;
	if ((ndomains = odmr_domains(s, "XWAIT", arg, domains)) == 0)
		return 0;
	if ((held = odmr_has_mail(s, domains, ndomains)) > 0) {
		s->woken = held == 2;
		metrics_inc(METRIC_XWAIT, "immediate");
		log_debug("xwait: client=[%s], user=%s, result=mail-waiting",
		    s->ip, s->user);
		odmr_reply(s, "250 2.0.0 Mail is waiting, send ATRN");
		return 0;
	}
	if (odmr_user_waiting(s->o, s->user) >= s->cfg->max_waiting_per_user) {
		log_info("xwait: client=[%s], user=%s, result=refused "
		    "(max_waiting_per_user)", s->ip, s->user);
		metrics_inc(METRIC_XWAIT, "busy");
		odmr_reply(s, "452 4.3.2 Too many waiting sessions for this "
		    "user, try later");
		return 0;
	}
	if (xwait_count(s->o->waiters) >= s->cfg->max_waiting) {
		log_info("xwait: client=[%s], user=%s, result=refused (max_waiting)",
		    s->ip, s->user);
		metrics_inc(METRIC_XWAIT, "busy");
		odmr_reply(s, "452 4.3.2 Too many waiting sessions, try later");
		return 0;
	}
	s->wait = xwait_add(s->o->waiters, (const char *const *)domains,
	    ndomains, odmr_wait_woken, s);
	if (s->wait_ev == NULL)
		s->wait_ev = evtimer_new(s->o->base, odmr_wait_timeout_cb, s);
	evtimer_add(s->wait_ev, &tv);
	s->state = ODMR_WAITING;
	/* counted against max_waiting, not the connection limits */
	server_conn_set_exempt(s->conn, 1);
	odmr_set_timeout(s);
	util_tcp_keepalive(bufferevent_getfd(s->bev));
	metrics_inc(METRIC_XWAIT, "waiting");
	log_debug("xwait: client=[%s], user=%s, waiting", s->ip, s->user);
	return 0;
}

/* A line while waiting (see above). */
static void odmr_waiting_line(struct odmr_session *s, const char *line)
{
	if (strcasecmp(line, "QUIT") == 0) {
		odmr_wait_end(s);
		odmr_reply(s, "453 4.3.0 Wait ended");
		odmr_reply(s, "221 2.0.0 %s closing connection", s->cfg->hostname);
		odmr_close_when_flushed(s);
		return;
	}
	log_info("xwait: client=[%s], user=%s, result=protocol-error (command "
	    "while waiting)", s->ip, s->user);
	metrics_inc(METRIC_XWAIT, "protocol-error");
	odmr_reply(s, "421 4.5.0 %s Only QUIT may follow XWAIT before its "
	    "reply, closing", s->cfg->hostname);
	odmr_close_when_flushed(s);
}

/* ---- command dispatch ---- */

static int odmr_cmd_quit(void *arg_s, char *arg, size_t arglen)
{
	struct odmr_session *s = arg_s;

	(void)arg;
	(void)arglen;
	odmr_reply(s, "221 2.0.0 %s closing connection", s->cfg->hostname);
	odmr_close_when_flushed(s);
	return 1;
}

/* One more protocol error: at max_errors, 421 and close (1). */
static int odmr_count_error(struct odmr_session *s)
{
	if (++s->errors < s->cfg->max_errors)
		return 0;
	odmr_reply(s, "421 4.7.0 %s Too many errors, closing",
	    s->cfg->hostname);
	odmr_close_when_flushed(s);
	return 1;
}

/* The table's replies; only unknown commands count towards max_errors,
 * and the last one is answered 421 alone. */
static int odmr_answer(void *arg_s, const char *line, enum cmdtable_why why)
{
	struct odmr_session *s = arg_s;

	if (why == CMDT_WHY_UNKNOWN && odmr_count_error(s))
		return 1;
	odmr_reply(s, "%s", line);
	return 0;
}

/* Nothing here ends a pipelined group by force. */
static int odmr_desync(void *arg_s)
{
	(void)arg_s;
	return 0;
}

#define PRE	CMDT_PRE_AUTH
#define OK250	"250 2.0.0 OK"

/* Every session requires AUTH: what is not PRE is refused before it. */
static const struct cmdtable_row odmr_rows[] = {
	{ "EHLO", 0, 0, PRE | CMDT_ARG, "501 5.5.4 EHLO needs a domain or "
	    "address literal", NULL, NULL, NULL, odmr_cmd_ehlo },
	{ "HELO", 0, 0, PRE, NULL, NULL, "502 5.5.1 Use EHLO on the ODMR "
	    "service", NULL, NULL },
	{ "STARTTLS", CMDT_ST(ODMR_INITIAL), CMDT_TLS_OFFER,
	    PRE | CMDT_NOARG | CMDT_NOT_TLS, "501 5.5.4 Syntax: STARTTLS",
	    "503 5.5.1 STARTTLS not allowed now", NULL, NULL,
	    odmr_cmd_starttls },
	{ "AUTH", 0, CMDT_NOT_AUTHED, PRE, NULL, NULL, NULL, NULL,
	    odmr_cmd_auth },
	{ "ATRN", 0, 0, 0, NULL, NULL, NULL, NULL, odmr_cmd_atrn },
	{ "XWAIT", 0, 0, 0, NULL, NULL, NULL, NULL, odmr_cmd_xwait },
	{ "NOOP", 0, 0, PRE, NULL, NULL, OK250, NULL, NULL },
	{ "RSET", 0, 0, PRE, NULL, NULL, OK250, NULL, NULL },
	{ "QUIT", 0, 0, PRE, NULL, NULL, NULL, NULL, odmr_cmd_quit },
};

static const struct cmdtable_need odmr_needs[] = {
	{ CMDT_TLS_OFFER, "502 5.5.1 STARTTLS not available" },
	{ CMDT_AUTHED, "530 5.7.0 Authentication required" },
	{ CMDT_NOT_AUTHED, "503 5.5.1 Already authenticated" },
};

static const struct cmdtable odmr_cmds = CMDTABLE(odmr_rows, odmr_needs,
    "502 5.5.1 Command not implemented on the ODMR service", NULL,
    odmr_answer, odmr_desync);

#undef PRE
#undef OK250

static void odmr_command(struct odmr_session *s, char *line, size_t len)
{
	unsigned have = CMDT_AUTH_REQUIRED;

	if (s->tls_active)
		have |= CMDT_TLS;
	if (s->o->tls != NULL)
		have |= CMDT_TLS_OFFER;
	have |= s->state == ODMR_AUTHED ? CMDT_AUTHED : CMDT_NOT_AUTHED;
	(void)cmdtable_dispatch(&odmr_cmds, s, s->state, have, line, len);
}

/*
 * Longest line allowed next, CRLF included: SASL data, and the AUTH
 * command with its initial response, may use 12,288 octets (RFC 4954 4).
 */
static size_t odmr_line_max(const struct odmr_session *s, struct evbuffer *in)
{
	unsigned char head[5];

	if (s->state == ODMR_AUTH_EXCHANGE)
		return ODMR_AUTH_LINE_MAX;
	if (evbuffer_copyout(in, head, sizeof(head)) == (ev_ssize_t)sizeof(head) &&
	    strncasecmp((const char *)head, "AUTH ", sizeof(head)) == 0)
		return ODMR_AUTH_LINE_MAX;
	return ODMR_LINE_MAX;
}

/*
 * Each line has its deadline, but a client that never logs in must not
 * keep its slot by sending NOOP in time: smtp_session_limit bounds the
 * session until AUTH (after it the customer is known, and XWAIT may wait
 * long on purpose).
 */
static int odmr_session_limit(struct odmr_session *s)
{
	if (s->cfg->smtp_session_limit <= 0 ||
	    (s->state != ODMR_INITIAL && s->state != ODMR_AUTH_EXCHANGE) ||
	    server_conn_age(s->conn) < s->cfg->smtp_session_limit)
		return 0;
	log_info("odmr: client=[%s], session time limit before AUTH", s->ip);
	odmr_reply(s, "421 4.4.2 %s Session time limit reached, closing",
	    s->cfg->hostname);
	authc_cancel(&s->sasl);
	odmr_close_when_flushed(s);
	return 1;
}

/*
 * A line that cannot be a command (overlong, or with a NUL): while waiting
 * it ends the wait like any other; else reply and count the error. The
 * 500 ends a SASL exchange for the client (RFC 4954): its next line is a
 * command, not SASL data.
 */
static void odmr_bad_line(struct odmr_session *s, const char *reply)
{
	int closing;

	if (s->state == ODMR_WAITING) {
		odmr_waiting_line(s, "");
		return;
	}
	odmr_reply(s, "%s", reply);
	closing = odmr_count_error(s);
	if (s->state == ODMR_AUTH_EXCHANGE) {
		authc_cancel(&s->sasl);
		s->state = ODMR_INITIAL;
	}
	/* A whole (bad) line came: the next command gets its full time,
	 * as after any other reply. */
	if (!closing && s->state != ODMR_CLOSING)
		odmr_set_timeout(s);
}

static void odmr_read_cb_work(struct bufferevent *bev, void *arg)
{
	struct odmr_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[ODMR_AUTH_LINE_MAX + 1];
	enum lineio_result r;
	size_t len;

	while (s->state != ODMR_CLOSING && s->state != ODMR_DELAYED &&
	    !odmr_checking(s) && s->bev == bev) {
		if (server_out_full(bev, ODMR_OUT_MAX)) {
			/* The client does not read its replies: neither do we. */
			bufferevent_disable(bev, EV_READ);
			break;
		}
		r = lineio_peek(&s->lines, in, odmr_line_max(s, in), &len);
		if (r == LINEIO_MORE)
			break;
		if (r == LINEIO_LONG) {
			lineio_skip(&s->lines, in, len);
			odmr_bad_line(s, "500 5.5.2 Line too long");
			continue;
		}
		len = lineio_take(in, len, line, sizeof(line) - 1);
		if (memchr(line, '\0', len) != NULL) {
			odmr_bad_line(s, "500 5.5.2 Syntax error");
			continue;
		}
		if (s->bev == bev)
			odmr_set_timeout(s);
		if (odmr_session_limit(s))
			break;
		if (s->state == ODMR_AUTH_EXCHANGE)
			odmr_auth_line(s, line);
		else if (s->state == ODMR_WAITING)
			odmr_waiting_line(s, line);
		else
			odmr_command(s, line, len);
	}
	/* After ATRN the connection belongs to deliver: the session is done. */
	if (s->bev == NULL)
		odmr_session_free(s);
}

/* Watched: turnwatch.h. */
void odmr_read_cb(struct bufferevent *bev, void *arg)
{
	turnwatch_begin("odmr");
	odmr_read_cb_work(bev, arg);
	turnwatch_end();
}
