/*
 * fuzz_smtpc - libFuzzer target for relay/smtpc, the one SMTP client, with
 * the input as the byte stream a server sends: the reply reader
 * (smtp_parse's, with smtpc's limits), EHLO keywords, the result texts and
 * the delivery state machine (pipelined groups, 452 retries, LMTP's replies
 * after DATA, end of data), and the command mode odpull uses.
 *
 * Input: one selector byte, then the server's bytes.
 *	bit 0	command mode (else a delivery of two messages)
 *	bit 1	LMTP (delivery)
 *	bit 2	no pipelining (delivery); detach instead of free (command)
 *	bit 3	probe mode (delivery)
 * The server end of a socketpair writes the input, drops what the client
 * sends and shuts its write side once all is written, so every session
 * ends (on the replies or on EOF). Checked: every recipient gets exactly
 * one result with a code of 200-599, msg_done once per message, done
 * once; in command mode every reply is whole and within the limits, and
 * at most one error comes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "log.h"
#include "smtp_parse.h"
#include "smtpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define NRCPTS 3
#define NMSGS 2

static struct event_base *fz_base;

struct fz_run {
	struct bufferevent *srv;
	int finished;
	/* delivery */
	int msgs_given, msg_done, done;
	int results[NMSGS][NRCPTS];
	int cur;
	int body_pos;
	/* command mode */
	int replies, errors, want_more;
};

/* ---- the server's end ---- */

static void fz_srv_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_drain(bufferevent_get_input(bev), (size_t)-1);
}

/* All of the input written: EOF for the client. */
static void fz_srv_write(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		shutdown(bufferevent_getfd(bev), SHUT_WR);
}

static void fz_srv_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	(void)arg;
}

/* ---- the message source ---- */

static const struct smtpc_rcpt fz_rcpts[NRCPTS] = {
	{ "a@example.org", NULL, 0 },
	{ "b@example.org", "rfc822;b@example.org", SMTPC_NOTIFY_FAILURE },
	{ "c@example.org", NULL, 0 },
};

static int fz_next(void *arg, struct smtpc_msg *m)
{
	struct fz_run *r = arg;

	if (r->msgs_given >= NMSGS)
		return 0;
	r->cur = r->msgs_given++;
	memset(m, 0, sizeof(*m));
	m->sender = r->cur == 0 ? "s@example.net" : "";
	m->envid = r->cur == 0 ? "id1" : NULL;
	m->flags = r->cur == 1 ? SMTPC_F_8BITMIME : 0;
	m->size = 40;
	m->rcpts = fz_rcpts;
	m->nrcpts = NRCPTS;
	return 1;
}

static int fz_body_open(void *arg)
{
	struct fz_run *r = arg;

	r->body_pos = 0;
	return 0;
}

static int fz_body_read(void *arg, const unsigned char **d, size_t *len)
{
	static const char *const parts[] = {
		"Subject: x\r\n\r\n", ".dot\r\n", "end\r\n"
	};
	struct fz_run *r = arg;

	if (r->body_pos >= 3)
		return 0;
	*d = (const unsigned char *)parts[r->body_pos];
	*len = strlen(parts[r->body_pos++]);
	return 1;
}

static void fz_result(void *arg, size_t i, int code, const char *text)
{
	struct fz_run *r = arg;

	CHECK(i < NRCPTS && r->cur < NMSGS);
	CHECK(code >= 200 && code <= 599);
	CHECK(text != NULL && strlen(text) < SMTPC_MAX_TEXT);
	r->results[r->cur][i]++;
}

static void fz_msg_done(void *arg)
{
	struct fz_run *r = arg;

	for (size_t i = 0; i < NRCPTS; i++)
		CHECK(r->results[r->cur][i] == 1);
	r->msg_done++;
}

static void fz_done(void *arg, const struct smtpc_stats *st)
{
	struct fz_run *r = arg;

	(void)st;
	r->done++;
	r->finished = 1;
}

static const struct smtpc_source fz_src = {
	.next = fz_next,
	.body_open = fz_body_open,
	.body_read = fz_body_read,
	.rcpt_result = fz_result,
	.msg_done = fz_msg_done,
	.done = fz_done,
};

/* ---- command mode ---- */

static void fz_reply(void *arg, const struct smtp_reply *rep)
{
	struct fz_run *r = arg;

	CHECK(r->errors == 0);
	CHECK(rep->done && rep->code >= 200 && rep->code <= 599);
	CHECK(rep->nlines >= 1 && rep->nlines <= SMTPC_MAX_LINES);
	CHECK(rep->textlen <= sizeof(rep->text));
	r->replies++;
	r->want_more = 1;
}

static void fz_error(void *arg, const char *why)
{
	struct fz_run *r = arg;

	CHECK(why != NULL);
	r->errors++;
	r->finished = 1;
}

static const struct smtpc_cmd_cbs fz_cmd = { fz_reply, NULL, fz_error };

/* ---- one input ---- */

static struct bufferevent *fz_pair(struct fz_run *r, const uint8_t *data,
    size_t size)
{
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	r->srv = bufferevent_socket_new(fz_base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(r->srv, fz_srv_read, fz_srv_write, fz_srv_event, r);
	bufferevent_enable(r->srv, EV_READ | EV_WRITE);
	if (size > 0)
		bufferevent_write(r->srv, data, size);
	else
		shutdown(sv[1], SHUT_WR);
	return bufferevent_socket_new(fz_base, sv[0], BEV_OPT_CLOSE_ON_FREE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz_run r;
	struct bufferevent *bev;
	unsigned sel;
	int turns = 0;

	if (fz_base == NULL) {
		log_init("fuzz_smtpc", 0, LOG_LEVEL_ERROR);
		fz_base = event_base_new();
		CHECK(fz_base != NULL);
	}
	if (size < 1)
		return 0;
	sel = data[0];
	data++;
	size--;
	memset(&r, 0, sizeof(r));
	bev = fz_pair(&r, data, size);
	if (sel & 1) {
		struct smtpc *s = smtpc_open(fz_base, bev, "mx.example.org",
		    &fz_cmd, &r);

		/* Ask for a reply after each one, as odpull does. */
		while (!r.finished && turns++ < 100000) {
			event_base_loop(fz_base, EVLOOP_ONCE);
			if (r.want_more && !r.finished) {
				r.want_more = 0;
				smtpc_command(s, "NOOP", 4);
				smtpc_expect(s);
			}
		}
		CHECK(r.finished);
		CHECK(r.errors == 1);
		if (sel & 4) {
			struct bufferevent *back = smtpc_detach(&s);

			CHECK(back != NULL && s == NULL);
			bufferevent_free(back);
		} else
			smtpc_free(&s);
	} else {
		struct smtpc_params p;
		struct smtpc_timeouts to;

		smtpc_timeouts_default(&to);
		memset(&p, 0, sizeof(p));
		p.helo = "relay.example.net";
		p.peer = "mx.example.org";
		p.timeouts = &to;
		p.flags = ((sel & 2) ? SMTPC_LMTP : 0) |
		    ((sel & 4) ? SMTPC_NO_PIPELINING : 0) |
		    ((sel & 8) ? SMTPC_PROBE : 0);
		CHECK(smtpc_start(fz_base, bev, &p, &fz_src, &r) != NULL);
		while (!r.finished && turns++ < 100000)
			event_base_loop(fz_base, EVLOOP_ONCE);
		/* The session ends on its own (EOF at the latest). */
		CHECK(r.finished && r.done == 1);
		CHECK(r.msg_done == r.msgs_given);
		/* smtpc frees itself after done; let it. */
		event_base_loop(fz_base, EVLOOP_NONBLOCK);
	}
	bufferevent_free(r.srv);
	/* Deferred callbacks of the freed bufferevents. */
	event_base_loop(fz_base, EVLOOP_NONBLOCK);
	/* A session still saying goodbye (QUIT after a refusal). */
	smtpc_close_all(fz_base);
	return 0;
}
