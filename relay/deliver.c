/*
 * deliver - queued messages through one smtpc session, results written
 * back to the queue (see deliver.h).
 *
 * Each message is committed as soon as smtpc has a result for every one
 * of its recipients, in one queue_update with its DSN; the lease is only
 * released when that update has committed, so no other delivery can read
 * a stale "queued" state and send a recipient twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/bufferevent.h>

#include "bounce.h"
#include "config.h"
#include "deliver.h"
#include "tlspolicy.h"
#include "metrics.h"
#include "log.h"
#include "queue.h"
#include "recip.h"
#include "smtpc.h"
#include "xmalloc.h"

#define DELIVER_BOUNCE_RETURN	(256 * 1024)	/* original text in a DSN */

struct deliver_msg {
	char id[QUEUE_ID_LEN + 1];
	struct queue_envelope *env;
	size_t *idx;			/* selected env->rcpts indices */
	struct smtpc_rcpt *rcpts;	/* the same, for smtpc */
	int *code;			/* result per selected rcpt, 0 = none */
	unsigned char *dsn_passed;	/* the server took NOTIFY/ORCPT */
	char **text;
	size_t n;
	int leased;
	int committed;
};

struct deliver {
	struct event_base *base;
	struct config *cfg;
	struct queue *q;
	char *owner;
	char *relay;		/* the peer in log lines (relay=...) */
	char *mta;		/* its name in DSNs (Remote-MTA); NULL: relay */
	int connected;		/* deliver_start ran: a remote MTA answered */
	struct deliver_msg *msgs;
	size_t nmsgs, alloc;
	size_t next;			/* next message for smtpc */
	struct deliver_msg *cur;
	struct queue_body *body;
	struct smtpc *sc;
	deliver_done_fn *done;
	void *done_arg;
	struct deliver_summary sum;
	int match;		/* DELIVER_MATCH_*: how a recipient matches domains */
	char *section;		/* exact/tree: only recipients accepted for it */
	size_t (*more)(void *arg, struct deliver *d);	/* next piece */
	void *more_arg;
	void (*more_release)(void *arg);
	int more_end;		/* more() found nothing left */
	struct tlspolicy *tlspol;	/* NULL: may */
};

/* Lease release once the update is durable. */
struct deliver_unlease {
	struct queue *q;
	char id[QUEUE_ID_LEN + 1];
};

long deliver_backoff(const struct config *cfg, unsigned attempts)
{
	long min = cfg->retry_min > 0 ? cfg->retry_min : 60;
	long max = cfg->retry_max >= min ? cfg->retry_max : min;
	long d = min;
	unsigned i;

	/* retry_min after the first failure, doubling, at most retry_max. */
	for (i = 1; i < attempts && d < max; i++)
		d = d > max / 2 ? max : d * 2;
	return d > max ? max : d;
}

struct deliver *deliver_new(struct event_base *base, struct config *cfg,
    struct queue *q, const char *owner, const char *relay_name)
{
	struct deliver *d = xcalloc(1, sizeof(*d));

	d->base = base;
	d->cfg = config_ref(cfg);
	d->q = q;
	d->owner = xstrdup(owner != NULL ? owner : "deliver");
	d->relay = xstrdup(relay_name != NULL ? relay_name : "-");
	return d;
}

void deliver_set_relay(struct deliver *d, const char *relay_name,
    const char *mta_name)
{
	free(d->relay);
	free(d->mta);
	d->relay = xstrdup(relay_name != NULL ? relay_name : "-");
	d->mta = mta_name != NULL ? xstrdup(mta_name) : NULL;
}

/* RFC 3464 2.3.5: Remote-MTA names the MTA that answered; a failure
 * with no connection (DNS, null MX, a route back to us) has none. */
static const char *deliver_remote_mta(const struct deliver *d)
{
	if (!d->connected)
		return NULL;
	return d->mta != NULL ? d->mta : d->relay;
}

static void deliver_msg_clear(struct deliver_msg *m)
{
	size_t j;

	for (j = 0; j < m->n; j++)
		free(m->text[j]);
	free(m->text);
	free(m->code);
	free(m->dsn_passed);
	free(m->idx);
	free(m->rcpts);
	queue_envelope_free(&m->env);
}

/* Is dom (an address's domain) node itself or, tree, below it? */
static int deliver_dom_under(const char *dom, const char *node, int tree)
{
	size_t dl = strlen(dom), nl = strlen(node);

	if (strcasecmp(dom, node) == 0)
		return 1;
	/* whole labels: sub.example.org is below example.org,
	 * badexample.org is not */
	return tree && dl > nl && dom[dl - nl - 1] == '.' &&
	    strcasecmp(dom + dl - nl, node) == 0;
}

/* Does recipient r belong to one of the domains? */
static int deliver_rcpt_in(const struct queue_rcpt *r,
    const char *const *domains, size_t ndomains, int match,
    const char *section)
{
	char dom[256];
	size_t k;

	if (ndomains == 0)
		return 1;
	/* A node below a section: a recipient of another section (a message
	 * in both indexes) goes that section's way, never this one's. */
	if (match != DELIVER_MATCH_SECTION && section != NULL &&
	    (r->domain == NULL || strcasecmp(r->domain, section) != 0))
		return 0;
	bounce_addr_domain(r->addr, dom, sizeof(dom));
	for (k = 0; k < ndomains; k++) {
		if (domains[k] == NULL)
			continue;
		/* r->domain is the section (subdomains = yes takes in
		 * sub.example.org); exact and tree go by the address */
		if (match == DELIVER_MATCH_SECTION && r->domain != NULL &&
		    strcasecmp(r->domain, domains[k]) == 0)
			return 1;
		if (deliver_dom_under(dom, domains[k],
		    match == DELIVER_MATCH_TREE))
			return 1;
	}
	return 0;
}

void deliver_set_match(struct deliver *d, int match, const char *section)
{
	d->match = match;
	free(d->section);
	d->section = section != NULL ? xstrdup(section) : NULL;
}

int deliver_env_has(const struct queue_envelope *env, const char *domain,
    int match, const char *section)
{
	const char *domains[1] = { domain };

	for (size_t i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED &&
		    deliver_rcpt_in(&env->rcpts[i], domains, 1, match, section))
			return 1;
	return 0;
}

int deliver_add(struct deliver *d, const char *id,
    const char *const *domains, size_t ndomains)
{
	struct queue_envelope *env = NULL;
	struct deliver_msg *m;
	size_t i, n = 0;
	int rc;

	/* Every message here is leased: only a leased one can be here
	 * already, so a big ATRN does not compare each id with all before. */
	if (queue_is_leased(d->q, id)) {
		for (i = 0; i < d->nmsgs; i++)
			if (strcmp(d->msgs[i].id, id) == 0)
				return 0;	/* already here */
		return QUEUE_EBUSY;
	}
	rc = queue_get(d->q, id, &env);
	if (rc != 1) {
		if (rc < 0)
			log_warn("%s: cannot read from the queue: %s", id, queue_strerror(rc));
		return 0;
	}
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED &&
		    deliver_rcpt_in(&env->rcpts[i], domains, ndomains, d->match,
		    d->section))
			n++;
	if (n == 0) {
		queue_envelope_free(&env);
		return 0;
	}
	rc = queue_lease(d->q, id, d->owner);
	if (rc != QUEUE_OK) {
		queue_envelope_free(&env);
		return rc == QUEUE_EBUSY ? QUEUE_EBUSY : 0;
	}
	if (d->nmsgs == d->alloc) {
		d->alloc = d->alloc ? d->alloc * 2 : 8;
		d->msgs = xreallocarray(d->msgs, d->alloc, sizeof(*d->msgs));
	}
	m = &d->msgs[d->nmsgs++];
	memset(m, 0, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "%s", env->id[0] ? env->id : id);
	m->env = env;
	m->leased = 1;
	m->idx = xcalloc(n, sizeof(*m->idx));
	m->rcpts = xcalloc(n, sizeof(*m->rcpts));
	m->code = xcalloc(n, sizeof(*m->code));
	m->dsn_passed = xcalloc(n, 1);
	m->text = xcalloc(n, sizeof(*m->text));
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		if (r->state != QUEUE_RCPT_QUEUED ||
		    !deliver_rcpt_in(r, domains, ndomains, d->match, d->section))
			continue;
		m->idx[m->n] = i;
		m->rcpts[m->n].addr = r->addr;
		m->rcpts[m->n].orcpt = r->orcpt;
		m->rcpts[m->n].notify = r->notify;
		m->n++;
	}
	return 1;
}

size_t deliver_count(const struct deliver *d)
{
	return d->nmsgs;
}

void deliver_set_more(struct deliver *d,
    size_t (*more)(void *arg, struct deliver *d), void *arg,
    void (*release)(void *arg))
{
	d->more = more;
	d->more_arg = arg;
	d->more_release = release;
	d->more_end = 0;
}

/* Every message was handed out: forget those whose result is recorded. */
static void deliver_compact(struct deliver *d)
{
	size_t i, w = 0;

	for (i = 0; i < d->nmsgs; i++) {
		if (d->msgs[i].committed && !d->msgs[i].leased) {
			deliver_msg_clear(&d->msgs[i]);
			continue;
		}
		if (w != i)
			d->msgs[w] = d->msgs[i];
		w++;
	}
	d->nmsgs = w;
	d->next = w;
	d->cur = NULL;
}

/* ---- writing results ---- */

static void deliver_unlease_cb(void *arg, int result)
{
	struct deliver_unlease *u = arg;

	if (result != QUEUE_OK && result != QUEUE_ENOTFOUND) {
		/* The recipients still look queued: released now, they would
		 * be sent again at once. Kept leased until a restart, when a
		 * second delivery (a duplicate, never a loss) is the price. */
		log_error("%s: cannot record the delivery result: %s; the message "
		    "stays leased until odrelayd restarts", u->id,
		    queue_strerror(result));
		free(u);
		return;
	}
	queue_unlease(u->q, u->id);
	free(u);
}

static int deliver_is_held(const struct deliver *d, const struct queue_rcpt *r)
{
	const struct config_domain *cd = NULL;
	char dom[256];

	if (r->domain != NULL)
		cd = config_domain_by_name(d->cfg, r->domain);
	if (cd == NULL) {
		bounce_addr_domain(r->addr, dom, sizeof(dom));
		cd = config_find_domain(d->cfg, dom);
	}
	return cd != NULL && cd->hold;
}

/* One message has every result: one queue_update (with its DSN). */
static void deliver_commit(struct deliver *d, struct deliver_msg *m)
{
	const struct queue_envelope *env = m->env;
	struct queue_rcpt_update *ups;
	struct bounce_rcpt *br;
	struct queue_envelope benv;
	struct deliver_unlease *u;
	char *body = NULL;
	char **status;
	size_t j, nb = 0, blen = 0;
	time_t now = time(NULL);
	int have_bounce = 0, any_sent = 0;

	if (m->committed)
		return;
	m->committed = 1;
	ups = xcalloc(m->n, sizeof(*ups));
	br = xcalloc(m->n, sizeof(*br));
	status = xcalloc(m->n, sizeof(*status));
	for (j = 0; j < m->n; j++) {
		const struct queue_rcpt *r = &env->rcpts[m->idx[j]];
		const char *text = m->text[j];
		int code = m->code[j];
		const char *word;
		char buf[600];

		if (code == 0) {
			/* smtpc gives every rcpt a result; be safe anyway. */
			code = 451;
			text = "451 4.3.0 no result from the delivery";
		}
		ups[j].index = m->idx[j];
		ups[j].reply = text;
		switch (smtpc_code_class(code)) {
		case SMTPC_CLASS_OK:
			ups[j].state = QUEUE_RCPT_SENT;
			d->sum.rcpts_sent++;
			metrics_inc(METRIC_DELIVERED,
			    strncmp(d->owner, "atrn", 4) == 0 ? "atrn" : "smtp");
			any_sent = 1;
			word = "sent";
			if ((r->notify & QUEUE_NOTIFY_SUCCESS) && !m->dsn_passed[j]) {
				/* RFC 3461 5.2.2: the next hop cannot report
				 * success, so we say "relayed" now. */
				br[nb].index = m->idx[j];
				br[nb].action = BOUNCE_RELAYED;
				br[nb].status = "2.0.0";
				br[nb].remote_mta = deliver_remote_mta(d);
				br[nb].diagnostic = text;
				nb++;
			}
			break;
		case SMTPC_CLASS_TEMP:
			ups[j].state = QUEUE_RCPT_QUEUED;
			ups[j].next_attempt = deliver_is_held(d, r) ? 0 :
			    now + deliver_backoff(d->cfg, r->attempts + 1);
			ups[j].delay_warned = r->delay_warned;
			d->sum.rcpts_deferred++;
			metrics_inc(METRIC_DEFERRED, NULL);
			word = "deferred";
			break;
		default:
			ups[j].state = QUEUE_RCPT_BOUNCED;
			status[j] = xmalloc(32);
			smtpc_status(code, text, status[j], 32);
			br[nb].index = m->idx[j];
			br[nb].action = BOUNCE_FAILED;
			br[nb].status = status[j];
			br[nb].remote_mta = deliver_remote_mta(d);
			br[nb].diagnostic = text;
			nb++;
			d->sum.rcpts_bounced++;
			metrics_inc(METRIC_BOUNCED, NULL);
			word = "bounced";
			break;
		}
		log_info("%s: to=<%s>, relay=%s, status=%s (%s)", m->id,
		    log_sanitize(buf, sizeof(buf), r->addr, 300),
		    d->connected ? d->relay : "none", word, text);
	}
	if (any_sent)
		d->sum.messages++;
	if (nb > 0)
		have_bounce = bounce_build(d->cfg->hostname, env, br, nb, d->q,
		    DELIVER_BOUNCE_RETURN, now, &benv, &body, &blen) == 0;
	if (have_bounce)
		bounce_route(&benv, d->cfg);
	u = xcalloc(1, sizeof(*u));
	u->q = d->q;
	memcpy(u->id, m->id, sizeof(u->id));
	m->leased = 0;		/* released by deliver_unlease_cb */
	queue_update(d->q, m->id, ups, m->n, have_bounce ? &benv : NULL,
	    body, blen, deliver_unlease_cb, u);
	if (have_bounce)
		bounce_envelope_clear(&benv);
	free(body);
	for (j = 0; j < m->n; j++)
		free(status[j]);
	free(status);
	free(br);
	free(ups);
}

/* ---- the smtpc source ---- */

static int deliver_src_next(void *arg, struct smtpc_msg *sm)
{
	struct deliver *d = arg;
	struct deliver_msg *m;

	/* A run in pieces: the next one when this one is all handed out. */
	while (d->next >= d->nmsgs && d->more != NULL && !d->more_end &&
	    !(d->sc != NULL && smtpc_draining(d->sc))) {
		deliver_compact(d);
		if (d->more(d->more_arg, d) == 0)
			d->more_end = 1;
	}
	while (d->next < d->nmsgs) {
		m = &d->msgs[d->next++];
		if (m->committed)
			continue;
		d->cur = m;
		sm->sender = m->env->sender != NULL ? m->env->sender : "";
		sm->envid = m->env->envid;
		sm->ret = m->env->ret;
		sm->flags = 0;
		if (m->env->flags & QUEUE_F_8BITMIME)
			sm->flags |= SMTPC_F_8BITMIME;
		if (m->env->flags & QUEUE_F_SMTPUTF8)
			sm->flags |= SMTPC_F_SMTPUTF8;
		sm->size = m->env->size;
		sm->rcpts = m->rcpts;
		sm->nrcpts = m->n;
		return 1;
	}
	d->cur = NULL;
	return 0;
}

static int deliver_src_body_open(void *arg)
{
	struct deliver *d = arg;
	int rc;

	queue_body_free(&d->body);
	rc = queue_body_open(d->q, d->cur->id, &d->body);
	if (rc != QUEUE_OK || d->body == NULL) {
		log_error("%s: cannot open the message body: %s", d->cur->id,
		    queue_strerror(rc));
		return -1;
	}
	return 0;
}

static int deliver_src_body_read(void *arg, const unsigned char **data,
    size_t *len)
{
	struct deliver *d = arg;
	int rc = queue_body_read(d->body, data, len);

	if (rc == 1) {
		d->sum.bytes += *len;
		return 1;
	}
	if (rc == 0)
		return 0;
	log_error("%s: cannot read the message body: %s", d->cur->id,
	    queue_strerror(rc));
	return -1;
}

static void deliver_src_body_close(void *arg)
{
	struct deliver *d = arg;

	queue_body_free(&d->body);
}

static void deliver_src_result(void *arg, size_t i, int code, const char *text)
{
	struct deliver *d = arg;
	struct deliver_msg *m = d->cur;

	if (m == NULL || i >= m->n)
		return;
	m->code[i] = code;
	m->dsn_passed[i] = (unsigned char)smtpc_peer_has_dsn(d->sc);
	free(m->text[i]);
	m->text[i] = xstrdup(text != NULL ? text : "");
}

/* Delivery outcomes teach `recipients = learn` domains (recip.h). */
static struct recip *deliver_recip;

void deliver_set_recip(struct recip *r)
{
	deliver_recip = r;
}

static void deliver_src_rcpt_reply(void *arg, size_t i, int code,
    const char *text)
{
	struct deliver *d = arg;
	struct deliver_msg *m = d->cur;
	const struct queue_rcpt *r;

	if (m == NULL || i >= m->n || deliver_recip == NULL)
		return;
	r = &m->env->rcpts[m->idx[i]];
	recip_learn(deliver_recip, r->domain, r->addr, code, text);
}

static void deliver_src_msg_done(void *arg)
{
	struct deliver *d = arg;

	if (d->cur != NULL)
		deliver_commit(d, d->cur);
	d->cur = NULL;
}

static void deliver_destroy(struct deliver *d)
{
	size_t i;

	free(d->tlspol);
	queue_body_free(&d->body);
	for (i = 0; i < d->nmsgs; i++) {
		if (d->msgs[i].leased)
			queue_unlease(d->q, d->msgs[i].id);
		deliver_msg_clear(&d->msgs[i]);
	}
	free(d->msgs);
	if (d->more_release != NULL)
		d->more_release(d->more_arg);
	free(d->owner);
	free(d->relay);
	free(d->mta);
	free(d->section);
	config_free(&d->cfg);
	free(d);
}

static void deliver_finish(struct deliver *d)
{
	deliver_done_fn *done = d->done;
	void *arg = d->done_arg;
	struct deliver_summary sum = d->sum;

	deliver_destroy(d);
	if (done != NULL)
		done(arg, &sum);
}

static void deliver_src_done(void *arg, const struct smtpc_stats *st)
{
	struct deliver *d = arg;
	size_t i;

	d->sc = NULL;		/* smtpc frees itself after this */
	d->sum.ok = st->ok;
	snprintf(d->sum.reason, sizeof(d->sum.reason), "%s", st->reason);
	snprintf(d->sum.tls, sizeof(d->sum.tls), "%s", st->tls_version);
	snprintf(d->sum.verified, sizeof(d->sum.verified), "%s", st->verified);
	d->sum.tls_result = st->tls_result;
	/* Messages smtpc never asked for (it always drains; be safe). */
	for (i = 0; i < d->nmsgs; i++) {
		struct deliver_msg *m = &d->msgs[i];
		size_t j;

		if (m->committed)
			continue;
		for (j = 0; j < m->n; j++)
			if (m->code[j] == 0) {
				m->code[j] = 451;
				free(m->text[j]);
				m->text[j] = xasprintf("451 4.4.2 %s", st->reason);
			}
		deliver_commit(d, m);
	}
	deliver_finish(d);
}

/*
 * delivery_timeout is the deadline for each command's reply; the others
 * keep RFC 5321 4.5.3.2's proportions to it (5 min: 354 in 2, each data
 * block in 3, end of data in 10).
 */
static void deliver_timeouts(const struct config *cfg, int reversed,
    struct smtpc_timeouts *to)
{
	uint64_t t = (uint64_t)(cfg->delivery_timeout > 0 ? cfg->delivery_timeout :
	    300) * 1000, lim = (uint64_t)cfg->delivery_session_limit * 1000;

	/* spec.md: on the ODMR port smtp_timeout applies to every state
	 * but the XWAIT wait, so to the reversed session too. */
	if (reversed && cfg->smtp_timeout > 0 &&
	    (uint64_t)cfg->smtp_timeout * 1000 < t)
		t = (uint64_t)cfg->smtp_timeout * 1000;
	smtpc_timeouts_default(to);
	if (t > 86400ULL * 1000)
		t = 86400ULL * 1000;
	to->greeting = to->ehlo = to->mail = to->rcpt = (unsigned)t;
	to->data = (unsigned)(t * 2 / 5);
	to->block = (unsigned)(t * 3 / 5);
	to->dot = (unsigned)(t * 2);
	to->session = lim > 30ULL * 86400 * 1000 ? 30U * 86400 * 1000 :
	    (unsigned)lim;
}

void deliver_start(struct deliver *d, struct bufferevent *bev, unsigned flags,
    SSL_CTX *tls, const char *peer_host, deliver_done_fn *done, void *arg)
{
	static const struct smtpc_source src = {
		.next = deliver_src_next,
		.body_open = deliver_src_body_open,
		.body_read = deliver_src_body_read,
		.body_close = deliver_src_body_close,
		.rcpt_result = deliver_src_result,
		.rcpt_reply = deliver_src_rcpt_reply,
		.msg_done = deliver_src_msg_done,
		.done = deliver_src_done,
	};
	struct smtpc_params p;
	struct smtpc_timeouts to;

	memset(&p, 0, sizeof(p));
	deliver_timeouts(d->cfg, (flags & DELIVER_REVERSED) != 0, &to);
	p.timeouts = &to;
	p.helo = d->cfg->hostname;
	p.peer = peer_host;
	p.tls = tls;
	p.policy = d->tlspol;
	if (flags & DELIVER_REVERSED)
		p.flags |= SMTPC_REVERSED | SMTPC_QUICKACK;
	if (flags & DELIVER_ONE_LINE_WRITES)
		p.flags |= SMTPC_ONE_LINE_WRITES;
	d->done = done;
	d->done_arg = arg;
	d->connected = 1;
	d->sc = smtpc_start(d->base, bev, &p, &src, d);
}

void deliver_set_tls_policy(struct deliver *d, const struct tlspolicy *p)
{
	free(d->tlspol);
	d->tlspol = NULL;
	if (p != NULL) {
		d->tlspol = xmalloc(sizeof(*d->tlspol));
		*d->tlspol = *p;
	}
}

void deliver_fail(struct deliver *d, int code, const char *status,
    const char *text, deliver_done_fn *done, void *arg)
{
	size_t i, j;

	d->done = done;
	d->done_arg = arg;
	for (i = 0; i < d->nmsgs; i++) {
		struct deliver_msg *m = &d->msgs[i];

		for (j = 0; j < m->n; j++) {
			m->code[j] = code;
			free(m->text[j]);
			m->text[j] = xasprintf("%d %s %s", code,
			    status != NULL ? status : (code >= 500 ? "5.0.0" : "4.0.0"),
			    text != NULL ? text : "delivery failed");
		}
		deliver_commit(d, m);
	}
	d->sum.ok = 0;
	snprintf(d->sum.reason, sizeof(d->sum.reason), "%s",
	    text != NULL ? text : "delivery failed");
	deliver_finish(d);
}

void deliver_free(struct deliver **dp)
{
	struct deliver *d = *dp;

	if (d == NULL)
		return;
	*dp = NULL;
	smtpc_free(&d->sc);
	deliver_destroy(d);
}
