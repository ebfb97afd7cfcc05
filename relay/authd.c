/*
 * authd - the auth server on one authproto channel; see authd.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "authchan.h"
#include "authd.h"
#include "authproto.h"
#include "config.h"
#include "log.h"
#include "passwd.h"
#include "sasl.h"
#include "util.h"
#include "xmalloc.h"

/* Exchanges at once; a session process asking for more gets 454. */
#define AUTHD_EXCHANGES_MAX	8192

struct authd_x {
	struct authd *d;
	uint32_t id;
	struct sasl_server *s;		/* NULL once finished */
	char ip[AUTHPROTO_IP_MAX + 1];
	char *tried;			/* the user the gate saw last */
	int ticket;			/* started ahead, not claimed yet */
	int refused;			/* claimed from a blocked address */
	struct event *delay;		/* a failure's reply held back */
	unsigned char *held;
	size_t heldlen;
	LIST_ENTRY(authd_x) link;	/* d->xs */
};

struct authd {
	struct event_base *base;
	char *cfg_path;
	struct config *cfg;
	struct passwd_db *pw;
	struct sasl_throttle *t;
	struct authchan *ch;
	LIST_HEAD(, authd_x) xs;
	size_t nx;
	void (*gone)(void *arg);
	void *gone_arg;
};

static struct authd_x *authd_x_new(struct authd *d, uint32_t id);

static struct passwd_db *authd_load(const char *path,
    void (*errfn)(void *arg, const char *msg), void *arg, int quiet)
{
	struct stat st;

	if (stat(path, &st) < 0 && errno == ENOENT) {
		if (!quiet)
			log_warn("auth: password file %s does not exist: no "
			    "user can log in until it is created", path);
		return passwd_new_empty();
	}
	return passwd_load(path, errfn, arg);
}

int authd_check_passwd(const struct config *cfg,
    void (*errfn)(void *arg, const char *msg), void *arg, int quiet)
{
	struct passwd_db *pw = authd_load(cfg->passwd_file, errfn, arg, quiet);

	if (pw == NULL)
		return -1;
	passwd_free(&pw);
	return 0;
}

static void authd_x_free(struct authd_x *x)
{
	struct authd *d = x->d;

	LIST_REMOVE(x, link);
	d->nx--;
	sasl_server_free(&x->s);
	if (x->delay != NULL)
		event_free(x->delay);
	free(x->held);
	free(x->tried);
	free(x);
}

static struct authd_x *authd_x_find(struct authd *d, uint32_t id)
{
	struct authd_x *x;

	LIST_FOREACH(x, &d->xs, link)
		if (x->id == id)
			return x;
	return NULL;
}

static void authd_send(struct authd *d, uint32_t id, int rc,
    const char *text, const char *user, const char *domains)
{
	unsigned char buf[AUTHPROTO_MAX];
	struct authproto_reply r;
	int n;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.rc = rc;
	r.text = text;
	r.textlen = strlen(text);
	r.user = user != NULL ? user : "";
	r.userlen = strlen(r.user);
	r.domains = domains != NULL ? domains : "";
	r.domainslen = strlen(r.domains);
	n = authproto_encode_reply(buf, sizeof(buf), &r);
	if (n < 0) {
		/* Too many domains to send: fail safe. */
		log_error("auth: reply for id %u does not fit a record", id);
		r.rc = AUTHPROTO_UNAVAILABLE;
		r.text = "454 4.7.0 Temporary authentication failure";
		r.textlen = strlen(r.text);
		r.user = r.domains = "";
		r.userlen = r.domainslen = 0;
		n = authproto_encode_reply(buf, sizeof(buf), &r);
	}
	if (n > 0 && authchan_send(d->ch, buf, (size_t)n) < 0)
		log_warn("auth: cannot send a reply to the session process");
}

static void authd_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct authd_x *x = arg;

	(void)fd;
	(void)what;
	if (x->held != NULL && authchan_send(x->d->ch, x->held,
	    x->heldlen) < 0)
		log_warn("auth: cannot send a reply to the session process");
	authd_x_free(x);
}

/* Called by sasl.c before a password of user is checked. */
static int authd_gate(void *arg, const char *user)
{
	struct authd_x *x = arg;

	char safe[300];

	free(x->tried);
	x->tried = xstrdup(user);
	if (sasl_throttle_user_blocked(x->d->t, x->ip, user)) {
		log_info("auth: client=[%s], user=%s, blocked (too many "
		    "failures), password not checked", x->ip,
		    log_sanitize(safe, sizeof(safe), user, 100));
		return 0;
	}
	return 1;
}

/* The user's domains, comma-separated (caller frees). */
static char *authd_domains(struct authd *d, const char *user)
{
	const struct passwd_user *u = passwd_find(d->pw, user);
	size_t i, n = u != NULL ? passwd_user_ndomains(u) : 0, len = 1;
	char *out, *p;

	for (i = 0; i < n; i++)
		len += strlen(passwd_user_domain(u, i)) + 1;
	out = p = xmalloc(len);
	*p = '\0';
	for (i = 0; i < n; i++)
		p += sprintf(p, "%s%s", i ? "," : "", passwd_user_domain(u, i));
	return out;
}

/* Act on what sasl_auth_begin/next returned for x. */
static void authd_result(struct authd_x *x, int rc, const char *reply)
{
	struct authd *d = x->d;
	struct timeval tv = { 0, 0 };
	unsigned char buf[AUTHPROTO_MAX];
	struct authproto_reply r;
	char *doms, safe[300];
	int n;

	switch (rc) {
	case SASL_CONTINUE:
		authd_send(d, x->id, rc, reply, NULL, NULL);
		return;
	case SASL_OK:
		sasl_throttle_success(d->t, x->ip, sasl_server_user(x->s));
		doms = authd_domains(d, sasl_server_user(x->s));
		authd_send(d, x->id, rc, reply, sasl_server_user(x->s), doms);
		free(doms);
		authd_x_free(x);
		return;
	case SASL_FAIL:
		break;
	default:
		authd_send(d, x->id, rc, reply, NULL, NULL);
		authd_x_free(x);
		return;
	}
	/* The delay is ours: a session process cannot skip it. */
	/* Names that do not exist are kept apart: they could crowd out a
	 * real user's count (sasl.h). */
	tv.tv_sec = sasl_throttle_failure_name(d->t, x->ip, x->tried,
	    x->tried != NULL && passwd_find(d->pw, x->tried) != NULL);
	if (tv.tv_sec > d->cfg->auth_delay_max)
		tv.tv_sec = d->cfg->auth_delay_max;
	log_info("auth: client=[%s], user=%s, auth=failed, delay=%lds", x->ip,
	    x->tried != NULL ? log_sanitize(safe, sizeof(safe), x->tried, 100) :
	    "-", (long)tv.tv_sec);
	memset(&r, 0, sizeof(r));
	r.id = x->id;
	r.rc = SASL_FAIL;
	r.text = reply;
	r.textlen = strlen(reply);
	r.user = r.domains = "";
	n = authproto_encode_reply(buf, sizeof(buf), &r);
	if (n < 0) {
		authd_x_free(x);
		return;
	}
	x->held = xmalloc((size_t)n);
	memcpy(x->held, buf, (size_t)n);
	x->heldlen = (size_t)n;
	x->delay = evtimer_new(d->base, authd_delay_cb, x);
	evtimer_add(x->delay, &tv);
}

static void authd_start(struct authd *d, const struct authproto_req *q)
{
	char reply[AUTHPROTO_REPLY_MAX];
	char *arg;
	struct authd_x *x;
	int rc;

	if ((x = authd_x_new(d, q->id)) == NULL) {
		authd_send(d, q->id, AUTHPROTO_UNAVAILABLE,
		    "454 4.7.0 Too many authentications in progress, try later",
		    NULL, NULL);
		return;
	}
	memcpy(x->ip, q->ip, q->iplen);
	x->ip[q->iplen] = '\0';
	if (sasl_throttle_blocked(d->t, x->ip)) {
		log_info("auth: client=[%s], auth=refused, too many failures",
		    x->ip);
		authd_send(d, q->id, AUTHPROTO_UNAVAILABLE,
		    "454 4.7.0 Too many failed attempts, try later", NULL, NULL);
		authd_x_free(x);
		return;
	}
	arg = xstrndup(q->data, q->datalen);
	rc = sasl_auth_begin_gated(arg, d->pw, d->cfg->hostname,
	    (q->flags & AUTHPROTO_TLS) != 0,
	    (q->flags & AUTHPROTO_REQUIRE_TLS) != 0, authd_gate, x, &x->s,
	    reply, sizeof(reply));
	free(arg);
	authd_result(x, rc, reply);
}

/* A new exchange for id (replacing one with the same id). NULL: full. */
static struct authd_x *authd_x_new(struct authd *d, uint32_t id)
{
	struct authd_x *x;

	if ((x = authd_x_find(d, id)) != NULL)
		authd_x_free(x);
	if (d->nx >= AUTHD_EXCHANGES_MAX)
		return NULL;
	x = xcalloc(1, sizeof(*x));
	x->d = d;
	x->id = id;
	LIST_INSERT_HEAD(&d->xs, x, link);
	d->nx++;
	return x;
}

/* CRAM-MD5 exchanges started ahead: their 334 go out now. */
static void authd_tickets(struct authd *d, const struct authproto_req *q)
{
	char reply[AUTHPROTO_REPLY_MAX];
	struct authd_x *x;
	unsigned i;
	int rc;

	for (i = 0; i < q->flags; i++) {
		if ((x = authd_x_new(d, q->id + i)) == NULL) {
			authd_send(d, q->id + i, AUTHPROTO_UNAVAILABLE,
			    "454 4.7.0 Too many authentications in progress",
			    NULL, NULL);
			continue;
		}
		x->ticket = 1;
		rc = sasl_auth_begin_gated("CRAM-MD5", d->pw, d->cfg->hostname,
		    0, 0, authd_gate, x, &x->s, reply, sizeof(reply));
		if (rc != SASL_CONTINUE) {
			authd_send(d, x->id, AUTHPROTO_UNAVAILABLE,
			    "454 4.7.0 Temporary authentication failure",
			    NULL, NULL);
			authd_x_free(x);
			continue;
		}
		authd_send(d, x->id, rc, reply, NULL, NULL);
	}
}

static void authd_step(struct authd *d, const struct authproto_req *q);

/* The response to a ticket's challenge, with the client's address. */
static void authd_claim(struct authd *d, const struct authproto_req *q)
{
	struct authd_x *x = authd_x_find(d, q->id);

	if (x == NULL || !x->ticket) {
		authd_step(d, q);	/* 454 */
		return;
	}
	x->ticket = 0;
	memcpy(x->ip, q->ip, q->iplen);
	x->ip[q->iplen] = '\0';
	if (sasl_throttle_blocked(d->t, x->ip)) {
		log_info("auth: client=[%s], auth=refused, too many failures",
		    x->ip);
		x->refused = 1;
	}
	authd_step(d, q);
}

static void authd_step(struct authd *d, const struct authproto_req *q)
{
	char reply[AUTHPROTO_REPLY_MAX];
	struct authd_x *x = authd_x_find(d, q->id);
	char *line;
	int rc;

	if (x != NULL && x->refused) {
		authd_send(d, q->id, AUTHPROTO_UNAVAILABLE,
		    "454 4.7.0 Too many failed attempts, try later", NULL, NULL);
		authd_x_free(x);
		return;
	}
	if (x == NULL || x->s == NULL || x->ticket) {
		/* Lost in a restart of this process, or a confused peer. */
		authd_send(d, q->id, AUTHPROTO_UNAVAILABLE,
		    "454 4.7.0 Temporary authentication failure, try again",
		    NULL, NULL);
		return;
	}
	line = xstrndup(q->data, q->datalen);
	rc = sasl_auth_next(&x->s, line, reply, sizeof(reply));
	OPENSSL_cleanse(line, strlen(line));
	free(line);
	authd_result(x, rc, reply);
}

/*
 * Is the user still in the password file, and with which domains? Only
 * what the session process got at AUTH (the name and the domains), never
 * a secret; with no password involved there is nothing to throttle.
 */
static void authd_check(struct authd *d, const struct authproto_req *q)
{
	char *user = xstrndup(q->data, q->datalen), *doms;

	if (passwd_find(d->pw, user) == NULL) {
		authd_send(d, q->id, SASL_FAIL, "550 5.7.1 No such user now",
		    NULL, NULL);
	} else {
		doms = authd_domains(d, user);
		authd_send(d, q->id, SASL_OK, "250 2.7.0 User known", user,
		    doms);
		free(doms);
	}
	free(user);
}

static int authd_recv(void *arg, const unsigned char *rec, size_t len)
{
	struct authd *d = arg;
	struct authproto_req q;
	struct authd_x *x;

	if (authproto_decode_req(rec, len, &q) < 0) {
		log_warn("auth: malformed record from the session process "
		    "(%zu bytes) ignored", len);
		return 0;
	}
	switch (q.type) {
	case AUTHPROTO_START:
		authd_start(d, &q);
		break;
	case AUTHPROTO_STEP:
		authd_step(d, &q);
		break;
	case AUTHPROTO_CANCEL:
		/* A held failure stays held: its delay is the point. */
		if ((x = authd_x_find(d, q.id)) != NULL && x->delay == NULL)
			authd_x_free(x);
		else if (x != NULL) {
			free(x->held);
			x->held = NULL;
		}
		break;
	case AUTHPROTO_RELOAD:
		authd_reload(d);
		break;
	case AUTHPROTO_TICKETS:
		authd_tickets(d, &q);
		break;
	case AUTHPROTO_CLAIM:
		authd_claim(d, &q);
		break;
	case AUTHPROTO_CHECK:
		authd_check(d, &q);
		break;
	}
	return 0;
}

static void authd_closed(void *arg)
{
	struct authd *d = arg;

	if (d->gone != NULL)
		d->gone(d->gone_arg);
}

struct authd_errctx {
	char *err;
	size_t errlen;
	int n;
};

static void authd_errfn(void *arg, const char *msg)
{
	struct authd_errctx *e = arg;

	if (e != NULL && e->n++ == 0)
		util_strlcpy(e->err, msg, e->errlen);
	log_error("%s", msg);
}

struct authd *authd_new(struct event_base *base, const char *cfg_path,
    struct config *cfg, int fd, void (*gone)(void *arg), void *gone_arg,
    char *err, size_t errlen)
{
	struct authd_errctx ec = { err, errlen, 0 };
	struct authd *d;
	struct passwd_db *pw;

	pw = authd_load(cfg->passwd_file, authd_errfn, &ec, 1);
	if (pw == NULL) {
		if (ec.n == 0)
			snprintf(err, errlen, "%s: cannot be loaded",
			    cfg->passwd_file);
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->base = base;
	d->cfg_path = cfg_path != NULL ? xstrdup(cfg_path) : NULL;
	d->cfg = config_ref(cfg);
	d->pw = pw;
	d->t = sasl_throttle_new();
	d->gone = gone;
	d->gone_arg = gone_arg;
	d->ch = authchan_new(base, fd, authd_recv, authd_closed, d);
	return d;
}

static void authd_reload_err(void *arg, const char *msg)
{
	(void)arg;
	log_error("reload: %s", msg);
}

void authd_reload(struct authd *d)
{
	struct config *ncfg;
	struct passwd_db *pw;
	struct authd_x *x;

	if (d->cfg_path != NULL) {
		ncfg = config_load(d->cfg_path, authd_reload_err, NULL);
		if (ncfg == NULL) {
			log_error("auth: reload: %s has errors, keeping the old "
			    "password file", d->cfg_path);
			return;
		}
		config_unref(&d->cfg);
		d->cfg = ncfg;
	}
	pw = authd_load(d->cfg->passwd_file, authd_reload_err, NULL, 0);
	if (pw == NULL) {
		log_error("reload: password file %s has errors, keeping the "
		    "old one", d->cfg->passwd_file);
		return;
	}
	passwd_free(&d->pw);
	d->pw = pw;
	/* Exchanges that looked nobody up yet (the tickets above all) go on
	 * with the new file; the others keep the one they started with. */
	LIST_FOREACH(x, &d->xs, link)
		if (x->s != NULL)
			(void)sasl_server_set_passwd(x->s, d->pw);
	log_info("auth: password file %s loaded, %zu users",
	    d->cfg->passwd_file, passwd_count(d->pw));
}

void authd_free(struct authd **dp)
{
	struct authd *d = *dp;

	if (d == NULL)
		return;
	while (!LIST_EMPTY(&d->xs))
		authd_x_free(LIST_FIRST(&d->xs));
	authchan_free(&d->ch);
	sasl_throttle_free(&d->t);
	passwd_free(&d->pw);
	config_unref(&d->cfg);
	free(d->cfg_path);
	free(d);
	*dp = NULL;
}
