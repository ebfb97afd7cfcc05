/*
 * check_smtpc - the SMTP client: reply parsing, code mapping, backoff, and
 * whole sessions against a scripted fake server on a socketpair inside one
 * event_base (no network).
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "queue.h"
#include "xmalloc.h"
#include "deliver.h"
#include "log.h"
#include "smtp_parse.h"
#include "smtpc.h"
#include "tlspolicy.h"

/* ---- pure helpers ---- */

START_TEST(test_code_class)
{
	char buf[32];

	ck_assert_int_eq(smtpc_code_class(250), SMTPC_CLASS_OK);
	ck_assert_int_eq(smtpc_code_class(251), SMTPC_CLASS_OK);
	ck_assert_int_eq(smtpc_code_class(421), SMTPC_CLASS_TEMP);
	ck_assert_int_eq(smtpc_code_class(452), SMTPC_CLASS_TEMP);
	ck_assert_int_eq(smtpc_code_class(550), SMTPC_CLASS_PERM);
	ck_assert_int_eq(smtpc_code_class(554), SMTPC_CLASS_PERM);
	ck_assert_str_eq(smtpc_status(550, "550 5.1.1 no such user", buf, sizeof(buf)), "5.1.1");
	ck_assert_str_eq(smtpc_status(452, "452 4.5.3 too many", buf, sizeof(buf)), "4.5.3");
	ck_assert_str_eq(smtpc_status(550, "550 no such user", buf, sizeof(buf)), "5.0.0");
	/* Class disagrees with the code: derived from the code. */
	ck_assert_str_eq(smtpc_status(550, "550 2.1.5 odd", buf, sizeof(buf)), "5.0.0");
	ck_assert_str_eq(smtpc_status(451, "4.7.1 greylisted", buf, sizeof(buf)), "4.7.1");
	ck_assert_str_eq(smtpc_status(554, NULL, buf, sizeof(buf)), "5.0.0");
}
END_TEST

START_TEST(test_backoff)
{
	struct config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.retry_min = 300;
	cfg.retry_max = 4000;
	ck_assert_int_eq(deliver_backoff(&cfg, 1), 300);
	ck_assert_int_eq(deliver_backoff(&cfg, 2), 600);
	ck_assert_int_eq(deliver_backoff(&cfg, 3), 1200);
	ck_assert_int_eq(deliver_backoff(&cfg, 4), 2400);
	ck_assert_int_eq(deliver_backoff(&cfg, 5), 4000);
	ck_assert_int_eq(deliver_backoff(&cfg, 1000), 4000);
	ck_assert_int_eq(deliver_backoff(&cfg, 0), 300);
	cfg.retry_max = 100;	/* max below min: min wins */
	ck_assert_int_eq(deliver_backoff(&cfg, 3), 300);
}
END_TEST

/* ---- the fake server ---- */

#define MAXMSG 8
#define MAXRES 32

struct fake {
	struct bufferevent *bev;
	const char *greeting;	/* NULL: 220 */
	const char *ehlo;	/* full EHLO reply, or NULL: 502 */
	const char *helo;	/* HELO reply, NULL: 250 */
	int max_rcpt;		/* per transaction, then 452 (0 = no limit) */
	const char *reject;	/* this rcpt gets 550 */
	const char *tempfail;	/* this rcpt gets 452 */
	int drop_after;		/* close after this many data lines (0 = never) */
	int no_dot_reply;	/* close right after the final dot */
	int lmtp;
	SSL_CTX *tls;		/* offer STARTTLS with this server context */
	int tls_garbage;	/* answer 220 to STARTTLS, then no TLS */
	int tls_on;
	int in_data;
	int rcpts;		/* accepted in this transaction */
	int data_lines;
	int pipelined;		/* DATA was already buffered when MAIL was read */
	char cmds[8192];	/* every command line, '\n'-separated */
	struct evbuffer *cur;
	char *msgs[MAXMSG];	/* raw DATA bytes (stuffed, with final dot) */
	int nmsgs;
};

static void fake_cmd(struct fake *f, const char *line)
{
	size_t used = strlen(f->cmds);

	snprintf(f->cmds + used, sizeof(f->cmds) - used, "%s\n", line);
}

static void fake_reply(struct fake *f, const char *s)
{
	bufferevent_write(f->bev, s, strlen(s));
}

static void fake_readcb(struct bufferevent *bev, void *arg);
static void fake_eventcb(struct bufferevent *bev, short what, void *arg);

static const char *EHLO_TLS =
    "250-fake.test hello\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

static void fake_starttls(struct fake *f)
{
	SSL *ssl;
	struct bufferevent *tb;

	fake_reply(f, "220 2.0.0 go ahead\r\n");
	if (f->tls_garbage) {
		fake_reply(f, "this is not TLS\r\n");
		return;
	}
	ssl = SSL_new(f->tls);
	bufferevent_setcb(f->bev, NULL, NULL, NULL, NULL);
	tb = bufferevent_openssl_filter_new(bufferevent_get_base(f->bev), f->bev, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(tb);
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	f->bev = tb;
	f->tls_on = 1;
	bufferevent_setcb(tb, fake_readcb, NULL, fake_eventcb, f);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
}

static void fake_readcb(struct bufferevent *bev, void *arg)
{
	struct fake *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t n;

	while (f->bev != NULL &&
	    (line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
		if (f->in_data) {
			evbuffer_add(f->cur, line, n);
			evbuffer_add(f->cur, "\r\n", 2);
			if (strcmp(line, ".") == 0) {
				size_t len = evbuffer_get_length(f->cur);
				char *m = malloc(len + 1);
				int k;

				evbuffer_remove(f->cur, m, len);
				m[len] = '\0';
				if (f->nmsgs < MAXMSG)
					f->msgs[f->nmsgs++] = m;
				else
					free(m);
				f->in_data = 0;
				if (f->no_dot_reply) {
					free(line);
					bufferevent_free(f->bev);
					f->bev = NULL;
					return;
				}
				if (f->lmtp)
					for (k = 0; k < f->rcpts; k++)
						fake_reply(f, "250 2.1.5 delivered\r\n");
				else
					fake_reply(f, "250 2.0.0 queued\r\n");
			} else if (f->drop_after > 0 && ++f->data_lines >= f->drop_after) {
				free(line);
				bufferevent_free(f->bev);
				f->bev = NULL;
				return;
			}
			free(line);
			continue;
		}
		fake_cmd(f, line);
		if (strcasecmp(line, "STARTTLS") == 0 && f->tls != NULL && !f->tls_on) {
			free(line);
			fake_starttls(f);
			return;
		}
		if (strncasecmp(line, "EHLO", 4) == 0 || strncasecmp(line, "LHLO", 4) == 0) {
			if (f->tls != NULL && !f->tls_on)
				fake_reply(f, EHLO_TLS);
			else
				fake_reply(f, f->ehlo != NULL ? f->ehlo : "502 5.5.1 no EHLO here\r\n");
		} else if (strncasecmp(line, "HELO", 4) == 0) {
			fake_reply(f, f->helo != NULL ? f->helo : "250 fake\r\n");
		} else if (strncasecmp(line, "MAIL", 4) == 0) {
			if (evbuffer_search(in, "DATA\r\n", 6, NULL).pos >= 0)
				f->pipelined = 1;
			f->rcpts = 0;
			fake_reply(f, "250 2.1.0 ok\r\n");
		} else if (strncasecmp(line, "RCPT", 4) == 0) {
			if (f->reject != NULL && strstr(line, f->reject) != NULL)
				fake_reply(f, "550 5.1.1 no such user\r\n");
			else if (f->tempfail != NULL && strstr(line, f->tempfail) != NULL)
				fake_reply(f, "452 4.5.3 too many recipients\r\n");
			else if (f->max_rcpt > 0 && f->rcpts >= f->max_rcpt)
				fake_reply(f, "452 4.5.3 too many recipients\r\n");
			else {
				f->rcpts++;
				fake_reply(f, "250 2.1.5 ok\r\n");
			}
		} else if (strcasecmp(line, "DATA") == 0) {
			if (f->rcpts == 0)
				fake_reply(f, "554 5.5.1 no valid recipients\r\n");
			else {
				f->in_data = 1;
				f->data_lines = 0;
				fake_reply(f, "354 go ahead\r\n");
			}
		} else if (strcasecmp(line, "RSET") == 0) {
			f->rcpts = 0;
			fake_reply(f, "250 2.0.0 ok\r\n");
		} else if (strcasecmp(line, "QUIT") == 0) {
			fake_reply(f, "221 2.0.0 bye\r\n");
		} else
			fake_reply(f, "500 5.5.2 what?\r\n");
		free(line);
	}
}

static void fake_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct fake *f = arg;

	if (what & BEV_EVENT_CONNECTED)
		return;		/* TLS handshake done */
	if (f->bev == bev) {
		bufferevent_free(bev);
		f->bev = NULL;
	}
}

/* ---- the message source ---- */

struct tmsg {
	const char *sender;
	const char *body;
	size_t chunk;		/* body_read piece size (0 = whole) */
	unsigned flags;
	uint64_t size;
	const char *envid;
	int ret;
	unsigned notify;	/* for every rcpt */
	const char *orcpt;	/* for every rcpt */
	const char *rcpts[8];
	size_t nrcpts;
};

struct run {
	struct event_base *base;
	struct fake f;
	struct tmsg *msgs;
	size_t nmsgs, next;
	struct tmsg *cur;
	size_t body_off;
	struct smtpc_rcpt rc[8];
	SSL_CTX *client_tls;
	int prebuffer;		/* greeting already read before smtpc_start */
	int wait_close;		/* after done: run until smtpc closes (2 s) */
	int quit_at_done;		/* the server had read QUIT by then */
	/* results: "addr code" lines */
	char results[4096];
	int msg_done;
	int done;
	struct smtpc_stats st;
};

static int src_next(void *arg, struct smtpc_msg *m)
{
	struct run *r = arg;
	size_t i;

	if (r->next >= r->nmsgs)
		return 0;
	r->cur = &r->msgs[r->next++];
	m->sender = r->cur->sender;
	m->envid = r->cur->envid;
	m->ret = r->cur->ret;
	m->flags = r->cur->flags;
	m->size = r->cur->size ? r->cur->size : strlen(r->cur->body);
	for (i = 0; i < r->cur->nrcpts; i++) {
		r->rc[i].addr = r->cur->rcpts[i];
		r->rc[i].orcpt = r->cur->orcpt;
		r->rc[i].notify = r->cur->notify;
	}
	m->rcpts = r->rc;
	m->nrcpts = r->cur->nrcpts;
	return 1;
}

static int src_body_open(void *arg)
{
	struct run *r = arg;

	r->body_off = 0;
	return 0;
}

static int src_body_read(void *arg, const unsigned char **data, size_t *len)
{
	struct run *r = arg;
	size_t total = strlen(r->cur->body), n;

	if (r->body_off >= total)
		return 0;
	n = total - r->body_off;
	if (r->cur->chunk > 0 && n > r->cur->chunk)
		n = r->cur->chunk;
	*data = (const unsigned char *)r->cur->body + r->body_off;
	*len = n;
	r->body_off += n;
	return 1;
}

static void src_result(void *arg, size_t i, int code, const char *text)
{
	struct run *r = arg;
	size_t used = strlen(r->results);

	(void)text;
	snprintf(r->results + used, sizeof(r->results) - used, "%s %d\n",
	    r->cur->rcpts[i], code);
}

static void src_msg_done(void *arg)
{
	struct run *r = arg;

	r->msg_done++;
}

static void src_done(void *arg, const struct smtpc_stats *st)
{
	struct run *r = arg;

	r->done++;
	r->st = *st;
	r->quit_at_done = strstr(r->f.cmds, "QUIT") != NULL;
	event_base_loopexit(r->base, NULL);
}

static const struct smtpc_source test_src = {
	.next = src_next,
	.body_open = src_body_open,
	.body_read = src_body_read,
	.body_close = NULL,
	.rcpt_result = src_result,
	.msg_done = src_msg_done,
	.done = src_done,
};

static const char *EHLO_FULL =
    "250-fake.test hello\r\n250-PIPELINING\r\n250-SIZE 100000\r\n"
    "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n";

/* Run one session: r->msgs and r->f set up by the caller. */
/* A fake server on one end of a socketpair; returns the client end. */
static struct bufferevent *fake_open(struct event_base *base, struct fake *f)
{
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	f->bev = bufferevent_socket_new(base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	f->cur = evbuffer_new();
	bufferevent_setcb(f->bev, fake_readcb, NULL, fake_eventcb, f);
	bufferevent_enable(f->bev, EV_READ | EV_WRITE);
	fake_reply(f, f->greeting != NULL ? f->greeting : f->lmtp ?
	    "220 fake LMTP\r\n" : "220 fake ESMTP\r\n");
	return bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
}

static void fake_close(struct fake *f)
{
	int i;

	if (f->bev != NULL)
		bufferevent_free(f->bev);
	f->bev = NULL;
	evbuffer_free(f->cur);
	for (i = 0; i < f->nmsgs; i++)
		free(f->msgs[i]);
	f->nmsgs = 0;
}

static void run_session(struct run *r, unsigned flags)
{
	struct bufferevent *cb;
	struct smtpc_params p;
	struct smtpc_timeouts to = { 2000, 2000, 2000, 2000, 2000, 2000, 2000, 0, 0 };
	struct timeval guard = { 10, 0 };
	size_t i;

	r->base = event_base_new();
	ck_assert_ptr_nonnull(r->base);
	cb = fake_open(r->base, &r->f);
	if (r->prebuffer) {
		/* As after ATRN: the greeting sits in the input already. */
		bufferevent_enable(cb, EV_READ);
		while (evbuffer_get_length(bufferevent_get_input(cb)) < 10)
			event_base_loop(r->base, EVLOOP_ONCE);
	}
	memset(&p, 0, sizeof(p));
	p.tls = r->client_tls;
	p.helo = "relay.test";
	p.peer = "fake.test";
	p.flags = flags;
	p.timeouts = &to;
	ck_assert_ptr_nonnull(smtpc_start(r->base, cb, &p, &test_src, r));
	event_base_loopexit(r->base, &guard);
	event_base_dispatch(r->base);
	ck_assert_int_eq(r->done, 1);
	if (r->wait_close) {
		/* A session saying goodbye ends on its own: the fake sees
		 * the close (its bev goes) well before SMTPC_CLOSE_WAIT. */
		struct timeval g2 = { 2, 0 };

		event_base_loopexit(r->base, &g2);
		do	/* got_exit is still set from the first run here */
			event_base_loop(r->base, EVLOOP_ONCE);
		while (r->f.bev != NULL && !event_base_got_exit(r->base));
		ck_assert_msg(r->f.bev == NULL, "still open; the server read: %s",
		    r->f.cmds);
	}
	smtpc_close_all(r->base);
	if (r->f.bev != NULL)
		bufferevent_free(r->f.bev);
	r->f.bev = NULL;
	evbuffer_free(r->f.cur);
	event_base_free(r->base);
	(void)i;
}

static void run_free(struct run *r)
{
	int i;

	for (i = 0; i < r->f.nmsgs; i++)
		free(r->f.msgs[i]);
}

START_TEST(test_ehlo_pipelining)
{
	struct tmsg m[2] = {
		{ .sender = "a@x.test", .body = "Subject: one\r\n\r\nhello\r\n",
		  .rcpts = { "b@y.test", "c@y.test" }, .nrcpts = 2 },
		{ .sender = "", .body = "Subject: two\r\n\r\nbye\r\n",
		  .rcpts = { "d@y.test" }, .nrcpts = 1, .flags = SMTPC_F_8BITMIME },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 2;
	r.f.ehlo = EHLO_FULL;
	run_session(&r, 0);
	ck_assert_str_eq(r.results, "b@y.test 250\nc@y.test 250\nd@y.test 250\n");
	ck_assert_int_eq(r.msg_done, 2);
	ck_assert_int_eq(r.f.pipelined, 1);
	ck_assert_int_eq(r.f.nmsgs, 2);
	ck_assert_str_eq(r.f.msgs[0], "Subject: one\r\n\r\nhello\r\n.\r\n");
	ck_assert_str_eq(r.f.cmds,
	    "EHLO relay.test\n"
	    "MAIL FROM:<a@x.test> SIZE=23\n"
	    "RCPT TO:<b@y.test>\nRCPT TO:<c@y.test>\nDATA\n"
	    "MAIL FROM:<> SIZE=21 BODY=8BITMIME\n"
	    "RCPT TO:<d@y.test>\nDATA\n"
	    "QUIT\n");
	ck_assert_int_eq(r.st.ok, 1);
	ck_assert_int_eq(r.st.messages, 2);
	ck_assert_int_eq(r.st.rcpts_ok, 3);
	run_free(&r);
}
END_TEST

START_TEST(test_helo_fallback)
{
	struct tmsg m[2] = {
		{ .sender = "a@x.test", .body = "x\r\n", .rcpts = { "b@y.test" }, .nrcpts = 1 },
		/* 8-bit message, server without 8BITMIME: returned 5.6.3. */
		{ .sender = "a@x.test", .body = "\xc3\xa9\r\n", .rcpts = { "c@y.test" },
		  .nrcpts = 1, .flags = SMTPC_F_8BITMIME },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 2;
	r.f.ehlo = NULL;	/* 502 to EHLO */
	run_session(&r, 0);
	ck_assert_str_eq(r.results, "b@y.test 250\nc@y.test 554\n");
	ck_assert_str_eq(r.f.cmds,
	    "EHLO relay.test\nHELO relay.test\n"
	    "MAIL FROM:<a@x.test>\nRCPT TO:<b@y.test>\nDATA\nQUIT\n");
	ck_assert_int_eq(r.f.pipelined, 0);
	run_free(&r);
}
END_TEST

/*
 * A refusal (greeting 554 or 421, EHLO, HELO) is answered with QUIT, and the QUIT
 * reaches the server before the close (it used to be freed unsent): the
 * mail stays queued (451), the session is not "ok", and the result comes
 * at once, before the QUIT has even been written.
 */
START_TEST(test_refusal_quit)
{
	static const struct {
		const char *greeting, *ehlo, *helo, *cmds, *why;
	} t[] = {
		{ "554 5.7.1 go away\r\n", NULL, NULL, "QUIT\n",
		  "greeting refused: 554 5.7.1 go away" },
		{ "421 4.3.2 not ready\r\n", NULL, NULL, "QUIT\n",
		  "greeting refused: 421 4.3.2 not ready" },
		{ NULL, "450 4.3.2 not now\r\n", NULL, "EHLO relay.test\nQUIT\n",
		  "EHLO refused: 450 4.3.2 not now" },
		{ NULL, NULL, "550 5.7.1 nor that\r\n",
		  "EHLO relay.test\nHELO relay.test\nQUIT\n",
		  "HELO refused: 550 5.7.1 nor that" },
	};
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n", .rcpts = { "b@y.test" },
		  .nrcpts = 1 },
	};
	static struct run r;
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(&r, 0, sizeof(r));
		r.msgs = m;
		r.nmsgs = 1;
		r.f.greeting = t[i].greeting;
		r.f.ehlo = t[i].ehlo;
		r.f.helo = t[i].helo;
		r.wait_close = 1;
		run_session(&r, 0);
		ck_assert_str_eq(r.results, "b@y.test 451\n");
		ck_assert_int_eq(r.st.ok, 0);
		ck_assert_str_eq(r.st.reason, t[i].why);
		ck_assert_int_eq(r.quit_at_done, 0);
		ck_assert_str_eq(r.f.cmds, t[i].cmds);
		run_free(&r);
	}
}
END_TEST

START_TEST(test_452_retry)
{
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n",
		  .rcpts = { "r1@y.test", "r2@y.test", "r3@y.test", "r4@y.test", "r5@y.test" },
		  .nrcpts = 5 },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = EHLO_FULL;
	r.f.max_rcpt = 2;
	run_session(&r, 0);
	/* Three transactions: 2 + 2 + 1 recipients, every one sent. */
	ck_assert_int_eq(r.f.nmsgs, 3);
	ck_assert_str_eq(r.results,
	    "r1@y.test 250\nr2@y.test 250\nr3@y.test 250\nr4@y.test 250\nr5@y.test 250\n");
	ck_assert_int_eq(r.msg_done, 1);
	ck_assert_int_eq(r.st.messages, 1);
	run_free(&r);
}
END_TEST

START_TEST(test_452_no_progress)
{
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n",
		  .rcpts = { "r1@y.test", "r2@y.test" }, .nrcpts = 2 },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = EHLO_FULL;
	r.f.tempfail = "r2@";
	r.f.reject = "r1@";
	run_session(&r, 0);
	/* r1 refused, r2 got 452 with nothing accepted: deferred, no loop. */
	ck_assert_str_eq(r.results, "r1@y.test 550\nr2@y.test 452\n");
	ck_assert_int_eq(r.f.nmsgs, 0);
	run_free(&r);
}
END_TEST

START_TEST(test_550_one_rcpt)
{
	struct tmsg m[2] = {
		{ .sender = "a@x.test", .body = "y\r\n",
		  .rcpts = { "bad@y.test" }, .nrcpts = 1 },
		{ .sender = "a@x.test", .body = "x\r\n",
		  .rcpts = { "good@y.test", "bad@y.test", "good2@y.test" }, .nrcpts = 3 },
	};
	unsigned variants[2] = { 0, SMTPC_NO_PIPELINING };
	int v;

	for (v = 0; v < 2; v++) {
		static struct run r;

		memset(&r, 0, sizeof(r));
		r.msgs = m;
		r.nmsgs = 2;
		r.f.ehlo = EHLO_FULL;
		r.f.reject = "bad@";
		run_session(&r, variants[v]);
		ck_assert_str_eq(r.results,
		    "bad@y.test 550\nbad@y.test 550\ngood@y.test 250\ngood2@y.test 250\n");
		ck_assert_int_eq(r.f.nmsgs, 1);
		ck_assert_int_eq(r.msg_done, 2);
		/* The failed transaction is reset before the next one. */
		ck_assert_ptr_nonnull(strstr(r.f.cmds, "RSET\nMAIL FROM:<a@x.test>"));
		ck_assert_int_eq(r.st.rcpts_perm, 2);
		run_free(&r);
	}
}
END_TEST

START_TEST(test_probe_mode)
{
	struct tmsg m[2] = {
		{ .sender = "", .body = "",
		  .rcpts = { "ok@y.test", "bad@y.test" }, .nrcpts = 2 },
		{ .sender = "", .body = "", .rcpts = { "x@y.test" }, .nrcpts = 1 },
	};
	unsigned variants[2] = { 0, SMTPC_NO_PIPELINING };
	int v;

	for (v = 0; v < 2; v++) {
		static struct run r;

		memset(&r, 0, sizeof(r));
		r.msgs = m;
		r.nmsgs = 2;
		r.f.ehlo = EHLO_FULL;
		r.f.reject = "bad@";
		run_session(&r, SMTPC_PROBE | variants[v]);
		/* Each RCPT reply is the answer; no DATA; RSET in between. */
		ck_assert_str_eq(r.results,
		    "ok@y.test 250\nbad@y.test 550\nx@y.test 250\n");
		ck_assert_int_eq(r.f.nmsgs, 0);
		ck_assert_int_eq(r.msg_done, 2);
		ck_assert_str_eq(r.f.cmds,
		    "EHLO relay.test\n"
		    "MAIL FROM:<> SIZE=0\nRCPT TO:<ok@y.test>\nRCPT TO:<bad@y.test>\n"
		    "RSET\n"
		    "MAIL FROM:<> SIZE=0\nRCPT TO:<x@y.test>\n"
		    "QUIT\n");
		ck_assert_int_eq(r.st.ok, 1);
		run_free(&r);
	}
}
END_TEST

START_TEST(test_drop_mid_data)
{
	static char big[20000];
	struct tmsg m[2] = {
		{ .sender = "a@x.test", .body = big, .chunk = 1000,
		  .rcpts = { "b@y.test", "c@y.test" }, .nrcpts = 2 },
		{ .sender = "a@x.test", .body = "x\r\n", .rcpts = { "d@y.test" }, .nrcpts = 1 },
	};
	static struct run r;
	size_t i;

	for (i = 0; i + 10 < sizeof(big); i += 10)
		memcpy(big + i, "line 1234\n", 10);
	for (i = 0; i + 10 < sizeof(big); i += 10)
		big[i + 8] = '\r';
	big[i] = '\0';
	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 2;
	r.f.ehlo = EHLO_FULL;
	r.f.drop_after = 50;
	run_session(&r, 0);
	/* Every unconfirmed recipient deferred, later messages too. */
	ck_assert_str_eq(r.results, "b@y.test 451\nc@y.test 451\nd@y.test 451\n");
	ck_assert_int_eq(r.msg_done, 2);
	ck_assert_int_eq(r.st.ok, 0);
	ck_assert_int_eq(r.st.rcpts_temp, 3);
	run_free(&r);
}
END_TEST

START_TEST(test_drop_after_dot)
{
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n", .rcpts = { "b@y.test" }, .nrcpts = 1 },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = EHLO_FULL;
	r.f.no_dot_reply = 1;
	run_session(&r, 0);
	/* Sent but not confirmed: deferred (a duplicate is allowed). */
	ck_assert_int_eq(r.f.nmsgs, 1);
	ck_assert_str_eq(r.results, "b@y.test 451\n");
	run_free(&r);
}
END_TEST

START_TEST(test_dot_stuffing)
{
	/* Dots at line starts, across chunk boundaries, and a missing
	 * final CRLF; chunk size 1 splits every CRLF and dot. */
	static const char body[] =
	    ".first\r\nmid.dle\r\n.\r\n..two\r\n\r\n.\r\nlast line no crlf";
	static const char want[] =
	    "..first\r\nmid.dle\r\n..\r\n...two\r\n\r\n..\r\nlast line no crlf\r\n.\r\n";
	size_t chunks[4] = { 0, 1, 7, 3 };
	unsigned flags[4] = { 0, 0, 0, SMTPC_ONE_LINE_WRITES };
	int v;

	for (v = 0; v < 4; v++) {
		struct tmsg m[2] = {
			{ .sender = "a@x.test", .body = body, .chunk = chunks[v],
			  .rcpts = { "b@y.test" }, .nrcpts = 1 },
			{ .sender = "a@x.test", .body = "", .rcpts = { "b@y.test" }, .nrcpts = 1 },
		};
		static struct run r;

		memset(&r, 0, sizeof(r));
		r.msgs = m;
		r.nmsgs = 2;
		r.f.ehlo = EHLO_FULL;
		run_session(&r, flags[v]);
		ck_assert_int_eq(r.f.nmsgs, 2);
		ck_assert_int_eq(r.f.pipelined, flags[v] == 0);
		ck_assert_str_eq(r.f.msgs[0], want);
		ck_assert_str_eq(r.f.msgs[1], ".\r\n");	/* empty message */
		ck_assert_str_eq(r.results, "b@y.test 250\nb@y.test 250\n");
		run_free(&r);
	}
}
END_TEST

START_TEST(test_big_body)
{
	/* Larger than the output watermark: streamed in pieces. */
	static char big[300001];
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = big, .chunk = 65536,
		  .rcpts = { "b@y.test" }, .nrcpts = 1 },
	};
	static struct run r;
	size_t i, stuffed = 0;

	for (i = 0; i + 6 <= 300000; i += 6) {
		memcpy(big + i, ".abc\r\n", 6);
		stuffed++;
	}
	big[i] = '\0';
	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = "250-fake\r\n250 PIPELINING\r\n";
	run_session(&r, 0);
	ck_assert_str_eq(r.results, "b@y.test 250\n");
	ck_assert_int_eq(r.f.nmsgs, 1);
	ck_assert_uint_eq(strlen(r.f.msgs[0]), i + stuffed + 3);
	ck_assert_uint_eq(r.st.bytes, i + stuffed);
	run_free(&r);
}
END_TEST

START_TEST(test_size_limit)
{
	struct tmsg m[2] = {
		{ .sender = "a@x.test", .body = "x\r\n", .size = 200000,
		  .rcpts = { "b@y.test" }, .nrcpts = 1 },
		{ .sender = "a@x.test", .body = "x\r\n", .flags = SMTPC_F_SMTPUTF8,
		  .rcpts = { "c@y.test" }, .nrcpts = 1 },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 2;
	r.f.ehlo = EHLO_FULL;	/* SIZE 100000, no SMTPUTF8 */
	run_session(&r, 0);
	ck_assert_str_eq(r.results, "b@y.test 552\nc@y.test 554\n");
	ck_assert_str_eq(r.f.cmds, "EHLO relay.test\nQUIT\n");
	run_free(&r);
}
END_TEST

START_TEST(test_lmtp)
{
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n",
		  .rcpts = { "b@y.test", "bad@y.test", "c@y.test" }, .nrcpts = 3 },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = "250-fake\r\n250 PIPELINING\r\n";
	r.f.lmtp = 1;
	r.f.reject = "bad@";
	run_session(&r, SMTPC_LMTP);
	ck_assert_str_eq(r.results, "bad@y.test 550\nb@y.test 250\nc@y.test 250\n");
	ck_assert_ptr_nonnull(strstr(r.f.cmds, "LHLO relay.test\n"));
	run_free(&r);
}
END_TEST

START_TEST(test_dsn_params)
{
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n", .envid = "QQ+2B1",
		  .ret = SMTPC_RET_HDRS, .notify = SMTPC_NOTIFY_SUCCESS | SMTPC_NOTIFY_FAILURE,
		  .orcpt = "rfc822;b@y.test", .rcpts = { "b@y.test" }, .nrcpts = 1 },
	};
	static struct run r;

	/* Offered: passed along. */
	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = EHLO_FULL;
	run_session(&r, 0);
	ck_assert_ptr_nonnull(strstr(r.f.cmds,
	    "MAIL FROM:<a@x.test> SIZE=3 RET=HDRS ENVID=QQ+2B1\n"
	    "RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test\n"));
	run_free(&r);
	/* Not offered: left out. Pre-buffered greeting (ODMR hand-over). */
	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = "250-fake\r\n250 PIPELINING\r\n";
	r.prebuffer = 1;
	run_session(&r, SMTPC_REVERSED);
	ck_assert_ptr_nonnull(strstr(r.f.cmds, "MAIL FROM:<a@x.test>\nRCPT TO:<b@y.test>\nDATA\n"));
	ck_assert_str_eq(r.results, "b@y.test 250\n");
	run_free(&r);
}
END_TEST

/* A throw-away self-signed EC certificate for the fake server. */
static SSL_CTX *test_server_ctx(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	ck_assert_ptr_nonnull(key);
	ck_assert_ptr_nonnull(x);
	ck_assert_ptr_nonnull(ctx);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"fake.test", -1, -1, 0);
	X509_set_issuer_name(x, name);
	ck_assert_int_gt(X509_sign(x, key, EVP_sha256()), 0);
	ck_assert_int_eq(SSL_CTX_use_certificate(ctx, x), 1);
	ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
	return ctx;
}

START_TEST(test_starttls)
{
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = ".x\r\n", .rcpts = { "b@y.test" }, .nrcpts = 1 },
	};
	static struct run r;
	SSL_CTX *sctx = test_server_ctx();
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());

	SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.ehlo = "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
	r.f.tls = sctx;
	r.client_tls = cctx;
	run_session(&r, 0);
	ck_assert_msg(r.st.ok, "reason: %s; results: %s", r.st.reason, r.results);
	ck_assert_int_eq(r.f.tls_on, 1);
	ck_assert_int_eq(r.st.tls, 1);
	ck_assert_str_eq(r.f.cmds,
	    "EHLO relay.test\nSTARTTLS\nEHLO relay.test\n"
	    "MAIL FROM:<a@x.test>\nRCPT TO:<b@y.test>\nDATA\nQUIT\n");
	ck_assert_int_eq(r.f.nmsgs, 1);
	ck_assert_str_eq(r.f.msgs[0], "..x\r\n.\r\n");
	ck_assert_str_eq(r.results, "b@y.test 250\n");
	run_free(&r);

	/* Reversed session: never STARTTLS, even when offered. */
	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.tls = sctx;
	r.client_tls = cctx;
	run_session(&r, SMTPC_REVERSED);
	ck_assert_int_eq(r.f.tls_on, 0);
	ck_assert_ptr_null(strstr(r.f.cmds, "STARTTLS"));
	ck_assert_str_eq(r.results, "b@y.test 250\n");
	run_free(&r);

	/* Handshake failure: this connection fails, mail deferred. */
	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.f.tls = sctx;
	r.f.tls_garbage = 1;
	r.client_tls = cctx;
	run_session(&r, 0);
	ck_assert_str_eq(r.results, "b@y.test 451\n");
	ck_assert_ptr_nonnull(strstr(r.st.reason, "TLS"));
	ck_assert_int_eq(r.st.ok, 0);
	run_free(&r);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

static void timeout_readcb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_drain(bufferevent_get_input(bev), (size_t)-1);
}

START_TEST(test_greeting_timeout)
{
	int sv[2];
	struct bufferevent *cb, *sb;
	struct smtpc_params p;
	struct smtpc_timeouts to = { 200, 200, 200, 200, 200, 200, 200, 0, 0 };
	struct timeval guard = { 5, 0 };
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n", .rcpts = { "b@y.test" }, .nrcpts = 1 },
	};
	static struct run r;

	memset(&r, 0, sizeof(r));
	r.msgs = m;
	r.nmsgs = 1;
	r.base = event_base_new();
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	sb = bufferevent_socket_new(r.base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(sb, timeout_readcb, NULL, NULL, NULL);
	bufferevent_enable(sb, EV_READ);
	cb = bufferevent_socket_new(r.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	memset(&p, 0, sizeof(p));
	p.helo = "relay.test";
	p.timeouts = &to;
	smtpc_start(r.base, cb, &p, &test_src, &r);
	event_base_loopexit(r.base, &guard);
	event_base_dispatch(r.base);
	ck_assert_int_eq(r.done, 1);
	ck_assert_str_eq(r.results, "b@y.test 451\n");
	ck_assert_ptr_nonnull(strstr(r.st.reason, "timeout"));
	bufferevent_free(sb);
	smtpc_close_all(r.base);
	event_base_free(r.base);
}
END_TEST

/* A server that trickles one byte of an endless greeting every 40 ms. */
struct trickle {
	struct bufferevent *bev;
	struct event *tick;
	unsigned sent;
};

static void trickle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct trickle *t = arg;
	static const char line[] = "220-relay.test trickling\r\n";

	(void)fd;
	(void)what;
	bufferevent_write(t->bev, line + t->sent % (sizeof(line) - 1), 1);
	t->sent++;
}

/*
 * Issue 17 item 7: libevent's read timeout restarts on every byte, so a
 * peer trickling its greeting held the session for ever. The deadline
 * (here 300 ms) cuts it off although no 200 ms pass without a byte.
 */
START_TEST(test_trickle_deadline)
{
	int sv[2];
	struct bufferevent *cb;
	struct smtpc_params p;
	struct smtpc_timeouts to = { 300, 300, 300, 300, 300, 300, 300, 0, 0 };
	struct timeval every = { 0, 40 * 1000 };
	struct tmsg m[1] = {
		{ .sender = "a@x.test", .body = "x\r\n", .rcpts = { "b@y.test" }, .nrcpts = 1 },
	};
	static struct run r;
	struct trickle t;

	memset(&r, 0, sizeof(r));
	memset(&t, 0, sizeof(t));
	r.msgs = m;
	r.nmsgs = 1;
	r.base = event_base_new();
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	t.bev = bufferevent_socket_new(r.base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(t.bev, timeout_readcb, NULL, NULL, NULL);
	bufferevent_enable(t.bev, EV_READ | EV_WRITE);
	t.tick = event_new(r.base, -1, EV_PERSIST, trickle_tick, &t);
	event_add(t.tick, &every);
	cb = bufferevent_socket_new(r.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	memset(&p, 0, sizeof(p));
	p.helo = "relay.test";
	p.timeouts = &to;
	smtpc_start(r.base, cb, &p, &test_src, &r);
	while (!r.done && event_base_loop(r.base, EVLOOP_ONCE) == 0 &&
	    t.sent < 125)	/* 5 s */
		continue;
	ck_assert_msg(r.done == 1, "session still open after %u trickled bytes "
	    "(deadline 300 ms)", t.sent);
	ck_assert_uint_lt(t.sent, 30);
	ck_assert_str_eq(r.results, "b@y.test 451\n");
	ck_assert_ptr_nonnull(strstr(r.st.reason, "timeout"));
	event_free(t.tick);
	bufferevent_free(t.bev);
	smtpc_close_all(r.base);
	event_base_free(r.base);
}
END_TEST

/* ---- deliver: smtpc + the real queue (synchronous writes) ---- */

static char qdir[64];

static void qdir_setup(void)
{
	strcpy(qdir, "/tmp/check_smtpc.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(qdir));
}

static void qdir_teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", qdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", qdir);
}

static struct config *test_cfg(void)
{
	struct config *cfg = config_defaults();

	ck_assert_ptr_nonnull(cfg);
	free(cfg->hostname);
	cfg->hostname = xstrdup("relay.test");
	cfg->retry_min = 600;
	cfg->retry_max = 7200;
	cfg->domains = xcalloc(2, sizeof(*cfg->domains));
	cfg->ndomains = 2;
	cfg->domains[0].name = xstrdup("y.test");
	cfg->domains[0].hold = 1;
	cfg->domains[1].name = xstrdup("z.test");
	cfg->domains[1].hold = 0;
	return cfg;
}

static void put_done(void *arg, int result)
{
	*(int *)arg = result;
}

static void put_message_notify(struct queue *q, const char *sender,
    const char **addrs, size_t n, const char *body, unsigned notify, char *id_r)
{
	struct queue_envelope env;
	struct queue_put *p = queue_put_begin(q);
	int result = 1;
	size_t i;

	memset(&env, 0, sizeof(env));
	env.sender = (char *)sender;
	env.arrival = time(NULL);
	env.rcpts = xcalloc(n, sizeof(*env.rcpts));
	env.nrcpts = n;
	for (i = 0; i < n; i++) {
		env.rcpts[i].addr = (char *)addrs[i];
		env.rcpts[i].domain = strchr(addrs[i], '@') + 1;
		env.rcpts[i].notify = notify;
	}
	strcpy(id_r, queue_put_id(p));
	ck_assert_int_eq(queue_put_write(p, body, strlen(body)), 0);
	queue_put_commit(p, &env, put_done, &result);
	ck_assert_int_eq(result, QUEUE_OK);
	free(env.rcpts);
}

static void put_message(struct queue *q, const char *sender, const char **addrs,
    size_t n, const char *body, char *id_r)
{
	put_message_notify(q, sender, addrs, n, body, 0, id_r);
}

struct dres {
	struct event_base *base;
	int called;
	struct deliver_summary sum;
};

static void dres_done(void *arg, const struct deliver_summary *sum)
{
	struct dres *r = arg;

	r->called++;
	r->sum = *sum;
	if (r->base != NULL)
		event_base_loopexit(r->base, NULL);
}

static int count_cb(void *arg, const struct queue_envelope *env)
{
	int *n = arg;

	if (env->sender[0] == '\0' && env->nrcpts == 1 &&
	    strcmp(env->rcpts[0].addr, "a@x.test") == 0)
		n[1]++;		/* a DSN back to the sender */
	n[0]++;
	return 0;
}

START_TEST(test_deliver_queue)
{
	const char *addrs[5] = { "b@y.test", "bad@y.test", "tmp@y.test", "tmp@z.test",
	    "other@w.test" };
	const char *body = "Subject: t\r\n\r\n.dot line\r\nend\r\n";
	const char *doms[2] = { "y.test", "z.test" };
	char err[256], id[QUEUE_ID_LEN + 1];
	struct config *cfg = test_cfg();
	struct event_base *base = event_base_new();
	struct queue *q = queue_open(qdir, NULL, 64 << 20, err, sizeof(err));
	struct deliver *d, *d2;
	struct fake f;
	struct dres res;
	struct queue_envelope *env = NULL;
	struct timeval guard = { 10, 0 };
	struct bufferevent *cb;
	int counts[2] = { 0, 0 };
	time_t now = time(NULL);

	ck_assert_msg(q != NULL, "queue_open: %s", err);
	put_message(q, "a@x.test", addrs, 5, body, id);

	d = deliver_new(base, cfg, q, "test", "[fake]:25");
	ck_assert_int_eq(deliver_add(d, id, doms, 2), 1);
	ck_assert_int_eq(deliver_count(d), 1);
	ck_assert_int_eq(queue_is_leased(q, id), 1);
	/* A second delivery cannot take it meanwhile. */
	d2 = deliver_new(base, cfg, q, "test2", "x");
	ck_assert_int_eq(deliver_add(d2, id, doms, 2), QUEUE_EBUSY);
	deliver_free(&d2);

	memset(&f, 0, sizeof(f));
	f.ehlo = EHLO_FULL;
	f.reject = "bad@";
	f.tempfail = "tmp@";
	cb = fake_open(base, &f);
	memset(&res, 0, sizeof(res));
	res.base = base;
	deliver_start(d, cb, 0, NULL, "fake.test", dres_done, &res);
	event_base_loopexit(base, &guard);
	event_base_dispatch(base);
	ck_assert_int_eq(res.called, 1);
	ck_assert_int_eq(res.sum.rcpts_sent, 1);
	ck_assert_int_eq(res.sum.rcpts_bounced, 1);
	ck_assert_int_eq(res.sum.rcpts_deferred, 2);
	ck_assert_int_eq(res.sum.messages, 1);
	ck_assert_int_eq(res.sum.ok, 1);
	/* Only the selected domains went out; body intact. */
	ck_assert_ptr_null(strstr(f.cmds, "other@w.test"));
	ck_assert_int_eq(f.nmsgs, 1);
	ck_assert_str_eq(f.msgs[0], "Subject: t\r\n\r\n..dot line\r\nend\r\n.\r\n");

	ck_assert_int_eq(queue_is_leased(q, id), 0);
	ck_assert_int_eq(queue_get(q, id, &env), 1);
	ck_assert_int_eq(env->rcpts[0].state, QUEUE_RCPT_SENT);
	ck_assert_int_eq(env->rcpts[1].state, QUEUE_RCPT_BOUNCED);
	ck_assert_int_eq(env->rcpts[2].state, QUEUE_RCPT_QUEUED);
	ck_assert_int_eq(env->rcpts[3].state, QUEUE_RCPT_QUEUED);
	ck_assert_int_eq(env->rcpts[4].state, QUEUE_RCPT_QUEUED);
	ck_assert_int_eq(env->rcpts[2].attempts, 1);
	ck_assert_int_eq(env->rcpts[4].attempts, 0);
	/* Held domain: on demand; other: retry_min later. */
	ck_assert_int_eq(env->rcpts[2].next_attempt, 0);
	ck_assert_int_ge(env->rcpts[3].next_attempt, now + 600);
	ck_assert_int_le(env->rcpts[3].next_attempt, now + 610);
	ck_assert_ptr_nonnull(env->rcpts[2].last_reply);
	ck_assert_ptr_nonnull(strstr(env->rcpts[2].last_reply, "452"));
	ck_assert_ptr_nonnull(strstr(env->rcpts[1].last_reply, "5.1.1"));
	queue_envelope_free(&env);
	/* The DSN for bad@ was created in the same update. */
	queue_foreach(q, count_cb, counts);
	ck_assert_int_eq(counts[0], 2);
	ck_assert_int_eq(counts[1], 1);
	fake_close(&f);

	/* deliver_fail: no connection, everything deferred, done runs. */
	d = deliver_new(base, cfg, q, "test", "[fake]:25");
	ck_assert_int_eq(deliver_add(d, id, NULL, 0), 1);
	memset(&res, 0, sizeof(res));
	deliver_fail(d, 451, "4.4.1", "connection refused", dres_done, &res);
	ck_assert_int_eq(res.called, 1);
	ck_assert_int_eq(res.sum.rcpts_deferred, 3);
	ck_assert_int_eq(queue_is_leased(q, id), 0);
	ck_assert_int_eq(queue_get(q, id, &env), 1);
	ck_assert_int_eq(env->rcpts[3].attempts, 2);
	ck_assert_int_ge(env->rcpts[3].next_attempt, now + 1200);
	ck_assert_str_eq(env->rcpts[4].last_reply, "451 4.4.1 connection refused");
	queue_envelope_free(&env);

	/* deliver_fail permanent: bounced, the message leaves the queue. */
	d = deliver_new(base, cfg, q, "test", "[fake]:25");
	ck_assert_int_eq(deliver_add(d, id, NULL, 0), 1);
	memset(&res, 0, sizeof(res));
	deliver_fail(d, 550, "5.1.2", "domain not found", dres_done, &res);
	ck_assert_int_eq(res.sum.rcpts_bounced, 3);
	ck_assert_int_eq(queue_get(q, id, &env), 0);
	/* Nothing left to send: deliver_add says 0. */
	d = deliver_new(base, cfg, q, "test", "x");
	ck_assert_int_eq(deliver_add(d, id, NULL, 0), 0);
	deliver_free(&d);

	queue_close(&q);
	smtpc_close_all(base);
	event_base_free(base);
	config_free(&cfg);
}
END_TEST

START_TEST(test_deliver_relayed_dsn)
{
	const char *addrs[1] = { "b@y.test" };
	char err[256], id[QUEUE_ID_LEN + 1];
	struct config *cfg = test_cfg();
	struct event_base *base = event_base_new();
	struct queue *q = queue_open(qdir, NULL, 64 << 20, err, sizeof(err));
	struct deliver *d;
	struct fake f;
	struct dres res;
	struct queue_envelope *env = NULL;
	struct timeval guard = { 10, 0 };
	int counts[2] = { 0, 0 };

	ck_assert_msg(q != NULL, "queue_open: %s", err);
	put_message_notify(q, "a@x.test", addrs, 1, "x\r\n",
	    QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE, id);
	d = deliver_new(base, cfg, q, "test", "x");
	ck_assert_int_eq(deliver_add(d, id, NULL, 0), 1);
	memset(&f, 0, sizeof(f));
	f.ehlo = "250-fake\r\n250 PIPELINING\r\n";	/* no DSN */
	memset(&res, 0, sizeof(res));
	res.base = base;
	deliver_start(d, fake_open(base, &f), 0, NULL, NULL, dres_done, &res);
	event_base_loopexit(base, &guard);
	event_base_dispatch(base);
	ck_assert_int_eq(res.sum.rcpts_sent, 1);
	/* The message is gone; a "relayed" notice went to the sender. */
	ck_assert_int_eq(queue_get(q, id, &env), 0);
	queue_foreach(q, count_cb, counts);
	ck_assert_int_eq(counts[0], 1);
	ck_assert_int_eq(counts[1], 1);
	fake_close(&f);
	queue_close(&q);
	smtpc_close_all(base);
	event_base_free(base);
	config_free(&cfg);
}
END_TEST

START_TEST(test_deliver_free_unleases)
{
	const char *addrs[1] = { "b@y.test" };
	char err[256], id[QUEUE_ID_LEN + 1];
	struct config *cfg = test_cfg();
	struct event_base *base = event_base_new();
	struct queue *q = queue_open(qdir, NULL, 64 << 20, err, sizeof(err));
	struct deliver *d;
	struct fake f;
	struct bufferevent *cb;
	struct dres res;
	struct queue_envelope *env = NULL;

	ck_assert_msg(q != NULL, "queue_open: %s", err);
	put_message(q, "", addrs, 1, "x\r\n", id);
	d = deliver_new(base, cfg, q, "test", "x");
	ck_assert_int_eq(deliver_add(d, id, NULL, 0), 1);
	memset(&f, 0, sizeof(f));
	f.ehlo = EHLO_FULL;
	cb = fake_open(base, &f);
	memset(&res, 0, sizeof(res));
	deliver_start(d, cb, DELIVER_REVERSED, NULL, NULL, dres_done, &res);
	event_base_loop(base, EVLOOP_ONCE);
	/* Abort mid-session: no callback, lease gone, nothing recorded. */
	deliver_free(&d);
	ck_assert_int_eq(res.called, 0);
	ck_assert_int_eq(queue_is_leased(q, id), 0);
	ck_assert_int_eq(queue_get(q, id, &env), 1);
	ck_assert_int_eq(env->rcpts[0].state, QUEUE_RCPT_QUEUED);
	ck_assert_int_eq(env->rcpts[0].attempts, 0);
	queue_envelope_free(&env);
	fake_close(&f);
	queue_close(&q);
	smtpc_close_all(base);
	event_base_free(base);
	config_free(&cfg);
}
END_TEST

/* ---- command mode (odpull's client sides) ---- */

struct cmdrun {
	struct event_base *base;
	struct smtp_reply r;
	int replies, tls, errors;
	char verified[16];
	char why[256];
};

static void cmd_reply(void *arg, const struct smtp_reply *r)
{
	struct cmdrun *c = arg;

	c->r = *r;
	c->replies++;
}

static void cmd_tls(void *arg, const char *version, const char *verified)
{
	struct cmdrun *c = arg;

	(void)version;
	snprintf(c->verified, sizeof(c->verified), "%s", verified);
	c->tls++;
}

static void cmd_error(void *arg, const char *why)
{
	struct cmdrun *c = arg;

	snprintf(c->why, sizeof(c->why), "%s", why);
	c->errors++;
}

static const struct smtpc_cmd_cbs cmd_cbs = { cmd_reply, cmd_tls, cmd_error };

/* Run the loop until the counter reaches want, an error, or 2 s. */
static void cmd_until(struct cmdrun *c, const int *counter, int want)
{
	for (int i = 0; i < 400 && *counter < want && c->errors == 0; i++) {
		struct timeval tv = { 0, 5000 };

		event_base_loopexit(c->base, &tv);
		event_base_dispatch(c->base);
	}
}

/* The server side is a raw socket the test writes to. */
static struct smtpc *cmd_open(struct cmdrun *c, int sv[2])
{
	struct bufferevent *bev;

	memset(c, 0, sizeof(*c));
	c->base = event_base_new();
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	evutil_make_socket_nonblocking(sv[0]);
	bev = bufferevent_socket_new(c->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	return smtpc_open(c->base, bev, "fake.test", &cmd_cbs, c);
}

static void cmd_close(struct cmdrun *c, struct smtpc **s, int fd)
{
	smtpc_free(s);
	if (fd >= 0)
		close(fd);
	event_base_free(c->base);
}

static void srv_say(int fd, const char *s)
{
	ck_assert_int_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

START_TEST(test_command_mode)
{
	struct cmdrun c;
	struct smtpc *s;
	struct bufferevent *bev;
	char buf[256];
	const char *t;
	size_t len;
	ssize_t n;
	int sv[2];

	s = cmd_open(&c, sv);
	/* Greeting, then two replies in one segment: the second is held
	 * until the caller asks for it. */
	srv_say(sv[1], "220 fake ESMTP\r\n");
	cmd_until(&c, &c.replies, 1);
	ck_assert_int_eq(c.r.code, 220);
	smtpc_command(s, "EHLO me", 7);
	smtpc_expect(s);
	srv_say(sv[1], "250-fake.test\r\n250-AUTH CRAM-MD5\r\n250 ATRN\r\n"
	    "334 PDEyMz4=\r\n");
	cmd_until(&c, &c.replies, 2);
	ck_assert_int_eq(c.r.code, 250);
	ck_assert_int_eq(c.r.nlines, 3);
	t = smtp_reply_line(&c.r, 2, &len);
	ck_assert(len == 4 && strncmp(t, "ATRN", 4) == 0);
	for (int i = 0; i < 20; i++)
		event_base_loop(c.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	ck_assert_int_eq(c.replies, 2);		/* held */
	smtpc_expect(s);
	cmd_until(&c, &c.replies, 3);
	ck_assert_int_eq(c.r.code, 334);
	n = read(sv[1], buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "EHLO me\r\n");
	/* Raw octets go as they are, at once on a plain socket. */
	smtpc_write(s, "a\r\n.\r\n", 6);
	ck_assert_uint_eq(smtpc_unsent(s), 0);
	n = read(sv[1], buf, sizeof(buf) - 1);
	ck_assert_int_eq(n, 6);
	ck_assert(memcmp(buf, "a\r\n.\r\n", 6) == 0);
	/* Detach: what the server sent after stays in the connection. */
	smtpc_expect(s);
	srv_say(sv[1], "250 ok\r\nEHLO provider\r\n");
	cmd_until(&c, &c.replies, 4);
	ck_assert_int_eq(c.r.code, 250);
	bev = smtpc_detach(&s);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(bev);
	bufferevent_enable(bev, EV_READ);
	for (int i = 0; i < 100 && evbuffer_get_length(
	    bufferevent_get_input(bev)) < 15; i++)
		event_base_loop(c.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(bev)), 15);
	ck_assert_int_eq(c.replies, 4);
	ck_assert_int_eq(c.errors, 0);
	bufferevent_free(bev);
	close(sv[1]);
	event_base_free(c.base);
}
END_TEST

START_TEST(test_command_mode_errors)
{
	struct cmdrun c;
	struct smtpc *s;
	int sv[2];

	/* A malformed reply fails the session, once. */
	s = cmd_open(&c, sv);
	srv_say(sv[1], "hello there\r\n");
	cmd_until(&c, &c.errors, 1);
	ck_assert_int_eq(c.errors, 1);
	ck_assert_ptr_nonnull(strstr(c.why, "malformed reply"));
	ck_assert_int_eq(c.replies, 0);
	cmd_close(&c, &s, sv[1]);

	/* A reply read ahead of a close still comes, then the error. */
	s = cmd_open(&c, sv);
	srv_say(sv[1], "220 a\r\n221 bye\r\n");
	close(sv[1]);
	cmd_until(&c, &c.replies, 1);
	ck_assert_int_eq(c.r.code, 220);
	for (int i = 0; i < 20; i++)
		event_base_loop(c.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	ck_assert_int_eq(c.errors, 0);
	smtpc_expect(s);
	cmd_until(&c, &c.replies, 2);
	ck_assert_int_eq(c.r.code, 221);
	smtpc_expect(s);
	cmd_until(&c, &c.errors, 1);
	ck_assert_int_eq(c.errors, 1);
	ck_assert_ptr_nonnull(strstr(c.why, "connection lost"));
	cmd_close(&c, &s, -1);

	/* More than SMTPC_MAX_LINES lines. */
	s = cmd_open(&c, sv);
	for (int i = 0; i < SMTPC_MAX_LINES; i++)
		srv_say(sv[1], "250-x\r\n");
	srv_say(sv[1], "250 x\r\n");
	cmd_until(&c, &c.errors, 1);
	ck_assert_int_eq(c.replies, 0);
	ck_assert_ptr_nonnull(strstr(c.why, "more than"));
	cmd_close(&c, &s, sv[1]);

	/* More than SMTPC_MAX_REPLY octets in fewer lines (the loop runs
	 * between the writes, so the socket buffer never fills up). */
	s = cmd_open(&c, sv);
	{
		static char line[4001];

		memset(line, 'x', sizeof(line) - 1);
		memcpy(line, "250-", 4);
		line[sizeof(line) - 3] = '\r';
		line[sizeof(line) - 2] = '\n';
		for (int i = 0; i < 20 && c.errors == 0; i++) {
			ck_assert_int_eq(write(sv[1], line, sizeof(line) - 1),
			    (ssize_t)sizeof(line) - 1);
			for (int k = 0; k < 10; k++)
				event_base_loop(c.base, EVLOOP_ONCE |
				    EVLOOP_NONBLOCK);
		}
	}
	cmd_until(&c, &c.errors, 1);
	ck_assert_int_eq(c.replies, 0);
	ck_assert_ptr_nonnull(strstr(c.why, "octets"));
	cmd_close(&c, &s, sv[1]);

	/* Octets after the 220 to STARTTLS: no handshake. */
	s = cmd_open(&c, sv);
	srv_say(sv[1], "220 go ahead\r\n250 injected\r\n");
	cmd_until(&c, &c.replies, 1);
	for (int i = 0; i < 20; i++)
		event_base_loop(c.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	ck_assert_int_eq(smtpc_tls(s, NULL, NULL), -1);
	cmd_close(&c, &s, sv[1]);
}
END_TEST

START_TEST(test_command_mode_starttls)
{
	static struct fake f;
	struct cmdrun c;
	struct smtpc *s;
	struct tlspolicy pol;
	SSL_CTX *sctx = test_server_ctx();
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	char err[200];

	memset(&c, 0, sizeof(c));
	memset(&f, 0, sizeof(f));
	c.base = event_base_new();
	f.tls = sctx;
	f.ehlo = "250 fake.test\r\n";
	s = smtpc_open(c.base, fake_open(c.base, &f), "fake.test", &cmd_cbs, &c);
	cmd_until(&c, &c.replies, 1);
	smtpc_command(s, "EHLO me", 7);
	smtpc_expect(s);
	cmd_until(&c, &c.replies, 2);
	smtpc_command(s, "STARTTLS", 8);
	smtpc_expect(s);
	cmd_until(&c, &c.replies, 3);
	ck_assert_int_eq(c.r.code, 220);
	/* Encrypt: no certificate check, so the self-signed one passes. */
	ck_assert_int_eq(tlspolicy_init(&pol, TLSPOLICY_ENCRYPT, NULL, NULL,
	    err, sizeof(err)), 0);
	ck_assert_int_eq(smtpc_tls(s, cctx, &pol), 0);
	cmd_until(&c, &c.tls, 1);
	ck_assert_msg(c.tls == 1, "%s", c.why);
	ck_assert_str_eq(c.verified, "no");
	smtpc_command(s, "EHLO me", 7);
	smtpc_expect(s);
	cmd_until(&c, &c.replies, 4);
	ck_assert_int_eq(c.r.code, 250);
	ck_assert_int_eq(f.tls_on, 1);
	smtpc_free(&s);
	fake_close(&f);
	event_base_free(c.base);

	/* A wrong pin: the error, never the tls callback. */
	memset(&c, 0, sizeof(c));
	memset(&f, 0, sizeof(f));
	c.base = event_base_new();
	f.tls = sctx;
	s = smtpc_open(c.base, fake_open(c.base, &f), "fake.test", &cmd_cbs, &c);
	cmd_until(&c, &c.replies, 1);
	smtpc_command(s, "STARTTLS", 8);
	smtpc_expect(s);
	cmd_until(&c, &c.replies, 2);
	ck_assert_int_eq(tlspolicy_init(&pol, TLSPOLICY_FINGERPRINT, NULL,
	    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
	    err, sizeof(err)), 0);
	ck_assert_int_eq(smtpc_tls(s, cctx, &pol), 0);
	cmd_until(&c, &c.errors, 1);
	ck_assert_int_eq(c.tls, 0);
	ck_assert_int_eq(c.errors, 1);
	ck_assert_msg(strncmp(c.why, "451", 3) != 0, "%s", c.why);
	smtpc_free(&s);
	fake_close(&f);
	event_base_free(c.base);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

static Suite *smtpc_suite(void)
{
	Suite *s = suite_create("smtpc");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_code_class);
	tcase_add_test(tc, test_backoff);
	tcase_add_test(tc, test_ehlo_pipelining);
	tcase_add_test(tc, test_helo_fallback);
	tcase_add_test(tc, test_refusal_quit);
	tcase_add_test(tc, test_452_retry);
	tcase_add_test(tc, test_452_no_progress);
	tcase_add_test(tc, test_550_one_rcpt);
	tcase_add_test(tc, test_probe_mode);
	tcase_add_test(tc, test_drop_mid_data);
	tcase_add_test(tc, test_drop_after_dot);
	tcase_add_test(tc, test_dot_stuffing);
	tcase_add_test(tc, test_big_body);
	tcase_add_test(tc, test_size_limit);
	tcase_add_test(tc, test_lmtp);
	tcase_add_test(tc, test_greeting_timeout);
	tcase_add_test(tc, test_trickle_deadline);
	tcase_add_test(tc, test_dsn_params);
	tcase_add_test(tc, test_starttls);
	tcase_add_test(tc, test_command_mode);
	tcase_add_test(tc, test_command_mode_errors);
	tcase_add_test(tc, test_command_mode_starttls);
	suite_add_tcase(s, tc);
	tc = tcase_create("deliver");
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, qdir_setup, qdir_teardown);
	tcase_add_test(tc, test_deliver_queue);
	tcase_add_test(tc, test_deliver_free_unleases);
	tcase_add_test(tc, test_deliver_relayed_dsn);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(smtpc_suite());
	int failed;

	/* A peer that closes mid-write must give EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	log_init("check_smtpc", 1, LOG_LEVEL_WARNING);

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
