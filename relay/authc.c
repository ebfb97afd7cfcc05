/*
 * authc - session-side client of the auth process; see authc.h.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "authc.h"
#include "authchan.h"
#include "authd.h"
#include "authproto.h"
#include "log.h"
#include "sasl.h"
#include "xmalloc.h"

struct authc_req {
	struct authc *a;
	uint32_t id;
	authc_cb *cb;
	void *cbarg;
	int waiting;		/* a reply is due (else the client's turn) */
	int lost;		/* its auth process died: authc_step fails */
	char *deferred;		/* a ticket's 334, for the next loop turn */
	char *claim_ip;		/* a ticket's: sent with the first line */
	unsigned claim_flags;
	unsigned gen;		/* the channel it was started on */
	LIST_ENTRY(authc_req) link;	/* a->reqs */
};

/* CRAM-MD5 exchanges the auth process started ahead (AUTHPROTO_TICKETS):
 * AUTH CRAM-MD5 then answers 334 at once. */
#define AUTHC_POOL		16
#define AUTHC_POOL_LOW		6

struct authc_ticket {
	uint32_t id;
	char *text;		/* the 334 line */
};

struct authc {
	struct event_base *base;
	struct authchan *ch;		/* NULL or closed: down */
	struct authd *local;		/* authc_new_local */
	uint32_t next_id;
	unsigned gen;			/* channels lost so far */
	LIST_HEAD(, authc_req) reqs;
	struct event *ev_lost;		/* ends exchanges from the loop */
	struct event *ev_defer;		/* delivers tickets' 334 */
	struct authc_ticket pool[AUTHC_POOL];
	size_t npool;
	uint32_t pend_lo;		/* ticket ids asked for, not come */
	unsigned pend_n, pend_left;
};

static void authc_pool_clear(struct authc *a)
{
	while (a->npool > 0)
		free(a->pool[--a->npool].text);
	a->pend_n = a->pend_left = 0;
}

struct authc *authc_new(struct event_base *base)
{
	struct authc *a = xcalloc(1, sizeof(*a));

	a->base = base;
	return a;
}

int authc_up(const struct authc *a)
{
	return a != NULL && authchan_is_open(a->ch);
}

/* A request in flight, listed so a lost auth process can end it. */
static struct authc_req *authc_req_new(struct authc *a, uint32_t id,
    authc_cb *cb, void *cbarg)
{
	struct authc_req *r = xcalloc(1, sizeof(*r));

	r->a = a;
	r->id = id;
	r->cb = cb;
	r->cbarg = cbarg;
	r->gen = a->gen;
	LIST_INSERT_HEAD(&a->reqs, r, link);
	return r;
}

/* Off the list, and gone. */
static void authc_req_free(struct authc_req *r)
{
	LIST_REMOVE(r, link);
	free(r->deferred);
	free(r->claim_ip);
	free(r);
}

/* Finish r with a reply of our own (the auth process went away). */
static void authc_finish(struct authc_req *r, int rc, const char *reply,
    const char *user, const char *domains)
{
	authc_cb *cb = r->cb;
	void *cbarg = r->cbarg;

	authc_req_free(r);
	cb(cbarg, rc, reply, user, domains);
}

/* Every exchange in flight ends with 454: its state died with the auth
 * process. Run from the loop, one at a time, since each callback may
 * start new work. */
static void authc_lost_all(evutil_socket_t fd, short what, void *arg)
{
	struct authc *a = arg;
	struct authc_req *r;

	(void)fd;
	(void)what;
	/* An exchange waiting for the client's line is answered when that
	 * line comes (authc_step fails): a reply now would be out of turn.
	 * Only exchanges of a lost channel: one started on a new channel
	 * before this ran is fine. */
	LIST_FOREACH(r, &a->reqs, link)
		if (!r->waiting && r->gen != a->gen)
			r->lost = 1;
	for (;;) {
		for (r = LIST_FIRST(&a->reqs); r != NULL &&
		    (!r->waiting || r->gen == a->gen); r = LIST_NEXT(r, link))
			;
		if (r == NULL)
			break;
		authc_finish(r, AUTHPROTO_UNAVAILABLE, AUTHC_DOWN_REPLY, NULL,
		    NULL);
	}
}

static void authc_closed(void *arg)
{
	struct authc *a = arg;

	authc_pool_clear(a);
	a->gen++;
	log_warn("auth: the auth process is gone; AUTH answers 454 until "
	    "it is back");
	if (!LIST_EMPTY(&a->reqs))
		event_active(a->ev_lost, EV_TIMEOUT, 0);
}

static struct authc_req *authc_find(struct authc *a, uint32_t id)
{
	struct authc_req *r;

	LIST_FOREACH(r, &a->reqs, link)
		if (r->id == id)
			return r;
	return NULL;
}

static int authc_recv(void *arg, const unsigned char *rec, size_t len)
{
	struct authc *a = arg;
	struct authproto_reply p;
	struct authc_req *r;
	char *text, *user = NULL, *doms = NULL;

	if (authproto_decode_reply(rec, len, &p) < 0) {
		log_error("auth: malformed record from the auth process");
		return 0;
	}
	if ((r = authc_find(a, p.id)) == NULL) {
		if (a->pend_left > 0 && p.id - a->pend_lo < a->pend_n) {
			a->pend_left--;
			if (p.rc == SASL_CONTINUE && a->npool < AUTHC_POOL) {
				a->pool[a->npool].id = p.id;
				a->pool[a->npool++].text = xstrndup(p.text,
				    p.textlen);
			}
		}
		return 0;	/* else cancelled meanwhile */
	}
	text = xstrndup(p.text, p.textlen);
	if (p.rc == SASL_CONTINUE) {
		r->waiting = 0;
		r->cb(r->cbarg, p.rc, text, NULL, NULL);
		free(text);
		return 0;
	}
	if (p.rc == SASL_OK) {
		if (p.userlen == 0) {
			free(text);
			authc_finish(r, AUTHPROTO_UNAVAILABLE, AUTHC_DOWN_REPLY,
			    NULL, NULL);
			return 0;
		}
		user = xstrndup(p.user, p.userlen);
		doms = xstrndup(p.domains, p.domainslen);
	}
	authc_finish(r, p.rc, text, user, doms);
	free(text);
	free(user);
	free(doms);
	return 0;
}

static void authc_refill(struct authc *a);

/* Tickets taken by authc_start: their 334 goes out from the loop, never
 * from inside authc_start. */
static void authc_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct authc *a = arg;
	struct authc_req *r;
	char *text;

	(void)fd;
	(void)what;
	for (;;) {
		for (r = LIST_FIRST(&a->reqs); r != NULL && r->deferred == NULL;
		    r = LIST_NEXT(r, link))
			;
		if (r == NULL)
			break;
		text = r->deferred;
		r->deferred = NULL;
		r->cb(r->cbarg, SASL_CONTINUE, text, NULL, NULL);
		free(text);
	}
}

void authc_set_fd(struct authc *a, int fd)
{
	if (a->ev_lost == NULL) {
		a->ev_lost = event_new(a->base, -1, 0, authc_lost_all, a);
		a->ev_defer = event_new(a->base, -1, 0, authc_deferred, a);
	}
	authchan_free(&a->ch);
	authc_pool_clear(a);
	a->gen++;
	/* Replies for these can never come now. */
	if (!LIST_EMPTY(&a->reqs))
		event_active(a->ev_lost, EV_TIMEOUT, 0);
	if (fd >= 0) {
		a->ch = authchan_new(a->base, fd, authc_recv, authc_closed, a);
		authc_refill(a);
	}
}

static int authc_send(struct authc *a, unsigned type, uint32_t id,
    unsigned flags, const char *ip, const char *data)
{
	unsigned char buf[AUTHPROTO_MAX];
	struct authproto_req q;
	int n, rc;

	memset(&q, 0, sizeof(q));
	q.type = type;
	q.id = id;
	q.flags = flags;
	q.ip = ip != NULL ? ip : "";
	q.iplen = strlen(q.ip);
	q.data = data != NULL ? data : "";
	q.datalen = strlen(q.data);
	n = authproto_encode_req(buf, sizeof(buf), &q);
	rc = n < 0 ? -1 : authchan_send(a->ch, buf, (size_t)n);
	/* The record may hold a password (PLAIN, LOGIN). */
	OPENSSL_cleanse(buf, n > 0 ? (size_t)n : 0);
	return rc;
}

static uint32_t authc_new_id(struct authc *a)
{
	uint32_t id;

	do
		id = ++a->next_id;
	while (id == 0 || authc_find(a, id) != NULL);
	return id;
}

static void authc_refill(struct authc *a)
{
	unsigned n = AUTHC_POOL - (unsigned)a->npool;
	uint32_t lo;

	if (a->pend_left > 0 || a->npool >= AUTHC_POOL_LOW || !authc_up(a))
		return;
	/* A run of fresh ids (none in use: authc_new_id checks). */
	lo = a->next_id + 1;
	if (lo == 0 || lo + n < lo)
		lo = a->next_id = 1;
	a->next_id = lo + n - 1;
	if (authc_send(a, AUTHPROTO_TICKETS, lo, n, NULL, NULL) == 0) {
		a->pend_lo = lo;
		a->pend_n = a->pend_left = n;
	}
}

struct authc_req *authc_start(struct authc *a, const char *ip,
    unsigned flags, const char *arg, authc_cb *cb, void *cbarg)
{
	struct authc_req *r;
	const char *m = arg;
	uint32_t id;
	char *ticket = NULL;

	if (!authc_up(a))
		return NULL;
	while (*m == ' ')
		m++;
	if (strcasecmp(m, "CRAM-MD5") == 0 && a->npool > 0 &&
	    authc_find(a, a->pool[a->npool - 1].id) == NULL) {
		id = a->pool[--a->npool].id;
		ticket = a->pool[a->npool].text;
		authc_refill(a);
	} else {
		id = authc_new_id(a);
		if (authc_send(a, AUTHPROTO_START, id, flags, ip, arg) < 0)
			return NULL;
	}
	r = authc_req_new(a, id, cb, cbarg);
	r->waiting = ticket == NULL;
	r->deferred = ticket;
	if (ticket != NULL) {
		r->claim_ip = xstrdup(ip);
		r->claim_flags = flags;
	}
	if (ticket != NULL)
		event_active(a->ev_defer, EV_TIMEOUT, 0);
	return r;
}

int authc_step(struct authc_req *r, const char *line)
{
	struct authc *a = r->a;
	int rc;

	rc = r->lost || r->gen != a->gen || !authc_up(a) ? -1 :
	    r->claim_ip != NULL ?
	    authc_send(a, AUTHPROTO_CLAIM, r->id, r->claim_flags, r->claim_ip,
	    line) : authc_send(a, AUTHPROTO_STEP, r->id, 0, NULL, line);
	free(r->claim_ip);
	r->claim_ip = NULL;
	if (rc < 0) {
		authc_req_free(r);
		return -1;
	}
	r->waiting = 1;
	return 0;
}

void authc_cancel(struct authc_req **rp)
{
	struct authc_req *r = *rp;

	if (r == NULL)
		return;
	if (authc_up(r->a))
		(void)authc_send(r->a, AUTHPROTO_CANCEL, r->id, 0, NULL, NULL);
	authc_req_free(r);
	*rp = NULL;
}

struct authc_req *authc_check(struct authc *a, const char *user,
    authc_cb *cb, void *cbarg)
{
	struct authc_req *r;
	uint32_t id;

	if (!authc_up(a) || user == NULL || *user == '\0')
		return NULL;
	id = authc_new_id(a);
	if (authc_send(a, AUTHPROTO_CHECK, id, 0, NULL, user) < 0)
		return NULL;
	r = authc_req_new(a, id, cb, cbarg);
	r->waiting = 1;
	return r;
}

void authc_reload(struct authc *a)
{
	if (a->local != NULL) {
		authd_reload(a->local);
		return;
	}
	if (!authc_up(a) || authc_send(a, AUTHPROTO_RELOAD, 0, 0, NULL,
	    NULL) < 0)
		log_error("reload: the auth process is not there; the "
		    "password file is read when it restarts");
}

void authc_free(struct authc **ap)
{
	struct authc *a = *ap;
	struct authc_req *r;

	if (a == NULL)
		return;
	while ((r = LIST_FIRST(&a->reqs)) != NULL) {
		authc_req_free(r);
	}
	authc_pool_clear(a);
	authchan_free(&a->ch);
	authd_free(&a->local);
	if (a->ev_lost != NULL)
		event_free(a->ev_lost);
	if (a->ev_defer != NULL)
		event_free(a->ev_defer);
	free(a);
	*ap = NULL;
}

struct authc *authc_new_local(struct event_base *base, struct config *cfg,
    char *err, size_t errlen)
{
	struct authc *a;
	struct authd *d;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return NULL;
	}
	d = authd_new(base, NULL, cfg, sv[1], NULL, NULL, err, errlen);
	if (d == NULL) {
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	a = authc_new(base);
	a->local = d;
	authc_set_fd(a, sv[0]);
	return a;
}

int authc_domains_has(const char *list, const char *domain)
{
	size_t len = strlen(domain);
	const char *p = list, *e;

	while (p != NULL && *p != '\0') {
		e = strchr(p, ',');
		if ((size_t)((e != NULL ? e : p + strlen(p)) - p) == len &&
		    strncasecmp(p, domain, len) == 0)
			return 1;
		p = e != NULL ? e + 1 : NULL;
	}
	return 0;
}
