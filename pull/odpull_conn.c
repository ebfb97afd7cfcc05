/*
 * odpull_conn - odpull's connections on one libevent loop and the provider
 * side of a pull: EHLO, STARTTLS (verified per --tls), AUTH.
 *
 * Both client sides (the provider before ATRN, the local MTA) are smtpc
 * sessions in command mode: smtpc reads every reply (smtp_parse's reader,
 * bounded lines and line counts) and does the STARTTLS switch-over. After
 * ATRN the provider's connection is taken back from smtpc and odpull reads
 * its commands itself (conn_read_line, conn_read_some). odpull's flow stays
 * one step at a time: each wait runs the loop until what it waits for has
 * come, its deadline has passed, or (where a wait may be cut short) SIGTERM
 * has come; no read or write ever blocks.
 */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h"
#include "lineio.h"
#include "sasl.h"
#include "smtp_parse.h"
#include "smtpc.h"
#include "tls.h"
#include "tlspolicy.h"
#include "util.h"
#include "xmalloc.h"
#include "odpull_private.h"

#define OUT_HIGH	(1024 * 1024)	/* unsent octets before a write waits */
#define OUT_LOW		(256 * 1024)	/* ... until this is left */
#define IN_HIGH		(256 * 1024)	/* provider's input read ahead */

static struct event_base *loop_base;
static struct event *loop_timer;

/* The timer only ends a pass of the loop. */
static void odpull_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* The loop (created on first use: after any fork). */
struct event_base *odpull_base(void)
{
	if (loop_base == NULL) {
		loop_base = event_base_new();
		if (loop_base == NULL) {
			msg("cannot create the event loop");
			exit(1);
		}
		loop_timer = evtimer_new(loop_base, odpull_timer_cb, NULL);
		if (loop_timer == NULL) {
			msg("cannot create a timer");
			exit(1);
		}
	}
	return loop_base;
}

long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What is read next must arrive whole within --timeout. */
void conn_deadline(struct conn *c)
{
	c->until = now_ms() + (long long)c->timeout * 1000;
}

/* One pass of the loop, returning by ms at the latest. */
void odpull_run(long long ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(loop_timer, &tv);
	event_base_loop(odpull_base(), EVLOOP_ONCE);
	evtimer_del(loop_timer);
}

/*
 * Run the loop until ready(c): 0. -1 when the connection failed, the
 * reply's (or block's) deadline or the pull's (--max-time) has passed,
 * or SIGTERM came in an interruptible wait. Without a deadline a wait
 * lasts --timeout at most.
 */
static int conn_wait(struct conn *c, int (*ready)(const struct conn *))
{
	long long end = c->until, left;

	if (end == 0)
		end = now_ms() + (long long)c->timeout * 1000;
	if (c->pull_end > 0 && c->pull_end < end)
		end = c->pull_end;
	for (;;) {
		if (ready(c))
			return 0;
		if (c->dead)
			return -1;
		if (stop_requested && c->interruptible) {
			c->dead = 1;
			return -1;
		}
		left = end - now_ms();
		if (left <= 0) {
			if (c->pull_end > 0 && end == c->pull_end)
				msg("%s: pull time limit (--max-time) reached",
				    c->name);
			else
				msg("%s: timed out after %d s", c->name, c->timeout);
			return -1;
		}
		odpull_run(left);
	}
}

/* ---- smtpc's callbacks (command mode) ---- */

static void conn_on_reply(void *arg, const struct smtp_reply *r)
{
	struct conn *c = arg;

	/* The text only as far as it goes (a reply per command). */
	if (c->want != NULL)
		memcpy(c->want, r, offsetof(struct smtp_reply, text) +
		    r->textlen);
	c->got_reply = 1;
}

static void conn_on_tls(void *arg, const char *version, const char *verified)
{
	struct conn *c = arg;

	util_strlcpy(c->tls_version, version, sizeof(c->tls_version));
	util_strlcpy(c->tls_verified, verified, sizeof(c->tls_verified));
	c->tls = 1;
}

static void conn_on_error(void *arg, const char *why)
{
	struct conn *c = arg;

	if (!c->dead)
		msg("%s: %s", c->name, why);
	c->dead = 1;
	c->failed = 1;
}

static const struct smtpc_cmd_cbs conn_cbs = {
	conn_on_reply, conn_on_tls, conn_on_error
};

/* ---- the connection after ATRN (odpull serves the provider) ---- */

static void conn_readcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	(void)arg;	/* the wait looks at the buffer */
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		c->eof = 1;
		if (what & BEV_EVENT_ERROR)
			c->failed = 1;
	}
}

/* The provider's connection back from smtpc: its commands are ours to
 * read from now on. */
void conn_serve(struct conn *c)
{
	if (c->sc == NULL || c->bev != NULL)
		return;
	c->bev = smtpc_detach(&c->sc);
	bufferevent_setcb(c->bev, conn_readcb, NULL, conn_eventcb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, IN_HIGH);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- connecting ---- */

static void conn_connect_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		c->connecting = 1;
	else {
		c->connect_err = EVUTIL_SOCKET_ERROR();
		c->connecting = -1;
	}
}

static int conn_connect_done(const struct conn *c)
{
	return c->connecting != 0;
}

int conn_connect(struct conn *c, const char *hostport, int defport)
{
	char host[256], portstr[16];
	struct addrinfo hints, *res, *ai;
	struct bufferevent *bev = NULL;
	int port, rc, err = 0;

	if (util_split_hostport(hostport, host, sizeof(host), &port, defport) < 0) {
		msg("%s: bad address %s", c->name, hostport);
		return -1;
	}
	snprintf(portstr, sizeof(portstr), "%d", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		msg("%s: %s: %s", c->name, host, gai_strerror(rc));
		return -1;
	}
	c->dead = c->failed = c->eof = 0;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		bev = bufferevent_socket_new(odpull_base(), -1,
		    BEV_OPT_CLOSE_ON_FREE);
		if (bev == NULL)
			continue;
		c->connecting = 0;
		c->connect_err = 0;
		bufferevent_setcb(bev, NULL, NULL, conn_connect_cb, c);
		if (bufferevent_socket_connect(bev, ai->ai_addr,
		    (int)ai->ai_addrlen) == 0 &&
		    conn_wait(c, conn_connect_done) == 0 && c->connecting == 1)
			break;
		err = c->connect_err ? c->connect_err : errno;
		bufferevent_free(bev);
		bev = NULL;
		if (c->dead)
			break;
	}
	freeaddrinfo(res);
	if (bev == NULL) {
		if (!c->dead)
			msg("%s: cannot connect to %s: %s", c->name, hostport,
			    strerror(err ? err : ECONNREFUSED));
		c->dead = 1;
		return -1;
	}
	c->fd = bufferevent_getfd(bev);
	/* Replies go out a line per write: without this, Nagle and the
	 * peer's delayed ACK add ~40 ms to each multi-line reply. */
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 },
	    sizeof(int));
	c->tls = 0;
	c->sc = smtpc_open(odpull_base(), bev, host, &conn_cbs, c);
	return 0;
}

static size_t conn_unsent(const struct conn *c)
{
	if (c->sc != NULL)
		return smtpc_unsent(c->sc);
	if (c->bev != NULL)
		return evbuffer_get_length(bufferevent_get_output(c->bev));
	return 0;
}

/* Nothing more can go out. */
static int conn_stuck(const struct conn *c)
{
	return c->failed || c->eof || (c->sc != NULL && smtpc_closed(c->sc));
}

static int conn_drained(const struct conn *c)
{
	return conn_unsent(c) == 0 || conn_stuck(c);
}

static int conn_below_low(const struct conn *c)
{
	return conn_unsent(c) <= OUT_LOW || conn_stuck(c);
}

void conn_close(struct conn *c)
{
	/* What was written goes out first (a 421, a QUIT), within the
	 * wait's limits. */
	if (!c->dead && (c->sc != NULL || c->bev != NULL) &&
	    conn_unsent(c) > 0) {
		c->until = 0;
		c->interruptible = 0;
		(void)conn_wait(c, conn_drained);
	}
	if (c->sc != NULL)
		smtpc_free(&c->sc);
	if (c->bev != NULL) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	c->fd = -1;
	c->tls = 0;
	c->dead = 1;
}

/* Close at once, nothing more sent (a refused message's text). */
void conn_drop(struct conn *c)
{
	c->dead = 1;
	conn_close(c);
}

/* ---- reading what the provider sends after ATRN ---- */

static int conn_input_grew(const struct conn *c)
{
	return evbuffer_get_length(bufferevent_get_input(c->bev)) > c->seen ||
	    c->eof;
}

/*
 * Wait for more input than the c->seen octets already looked at. On a
 * plain connection the provider's next command or text is mostly there
 * already: one read(2) first spares a pass of the loop (and libevent
 * reads at most 4 KiB a time).
 */
static int conn_more(struct conn *c)
{
	if (c->bev == NULL)
		return -1;
	if (!c->tls && !c->eof && c->fd >= 0) {
		char buf[16384];
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n > 0) {
			struct evbuffer *in = bufferevent_get_input(c->bev);

			/* A bufferevent's input takes octets only from its
			 * own reads unless unfrozen. */
			evbuffer_unfreeze(in, 0);
			evbuffer_add(in, buf, (size_t)n);
			evbuffer_freeze(in, 0);
			return 0;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR)) {
			c->eof = 1;
			c->failed = n < 0;
			return 0;
		}
	}
	if (conn_wait(c, conn_input_grew) < 0)
		return -1;
	return 0;
}

/* Copy out up to len octets of input without taking them (conn_consume
 * does), waiting for some first. 0 at EOF, -1 on error. */
ssize_t conn_peek(struct conn *c, char *buf, size_t len)
{
	struct evbuffer *in;

	if (c->bev == NULL)
		return -1;
	in = bufferevent_get_input(c->bev);
	c->seen = 0;
	if (evbuffer_get_length(in) == 0 && (c->eof || conn_more(c) < 0))
		return c->eof && !c->failed ? 0 : -1;
	return evbuffer_copyout(in, buf, len);
}

void conn_consume(struct conn *c, size_t len)
{
	if (c->bev != NULL)
		evbuffer_drain(bufferevent_get_input(c->bev), len);
}

int conn_write(struct conn *c, const char *data, size_t len)
{
	if (c->dead || c->failed || (c->sc == NULL && c->bev == NULL)) {
		c->dead = 1;
		return -1;
	}
	if (c->sc != NULL)
		smtpc_write(c->sc, data, len);
	else {
		struct evbuffer *out = bufferevent_get_output(c->bev);

		/* At once when nothing is queued (as smtpc does). */
		if (!c->tls && c->fd >= 0 && evbuffer_get_length(out) == 0) {
			ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

			if (n > 0) {
				data += n;
				len -= (size_t)n;
			}
		}
		if (len > 0)
			evbuffer_add(out, data, len);
	}
	/* A slow reader holds us here, not our memory. */
	if (conn_unsent(c) > OUT_HIGH) {
		long long until = c->until;

		conn_deadline(c);
		if (conn_wait(c, conn_below_low) < 0 || c->failed) {
			c->until = until;
			if (!c->dead)
				msg("%s: write failed", c->name);
			c->dead = 1;
			return -1;
		}
		c->until = until;
	}
	return 0;
}

int conn_printf(struct conn *c, const char *fmt, ...)
{
	char line[LINE_MAX_IN + 3];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		return -1;
	if (c->verbose)
		fprintf(stderr, "%s <<< %s\n", c->name, line);
	if (c->sc != NULL && !c->dead && !c->failed) {
		smtpc_command(c->sc, line, (size_t)n);
		return 0;
	}
	memcpy(line + n, "\r\n", 2);
	return conn_write(c, line, (size_t)n + 2);
}

/*
 * Read one line ending in LF into out (CRLF or LF removed; *crlf_r tells
 * whether it was a proper CRLF). Lines longer than max are an error.
 * Returns the length, or -1 on error/EOF.
 */
ssize_t conn_read_line(struct conn *c, char *out, size_t max, int *crlf_r)
{
	struct evbuffer *in;
	struct lineio li = { 0 };
	enum lineio_result r;
	size_t len, n;

	if (c->bev == NULL || max < 2)
		return -1;
	in = bufferevent_get_input(c->bev);
	c->seen = 0;
	/* the servers' bounded reader; out keeps the line and its NUL */
	while ((r = lineio_peek(&li, in, max - 1, &len)) == LINEIO_MORE &&
	    !li.discarding) {
		c->seen = evbuffer_get_length(in);
		if (c->eof || conn_more(c) < 0) {
			if (!c->dead)
				msg("%s: connection closed", c->name);
			c->dead = 1;
			return -1;
		}
	}
	if (r != LINEIO_LINE) {
		msg("%s: line too long", c->name);
		c->dead = 1;
		return -1;
	}
	n = lineio_take(in, len, out, max - 1);
	if (crlf_r != NULL)
		*crlf_r = len - n == 2;	/* CR LF removed, not LF alone */
	return (ssize_t)n;
}

/* ---- replies (through smtpc) ---- */

static int conn_got_reply(const struct conn *c)
{
	return c->got_reply;
}

/*
 * Read a whole reply within --timeout (smtpc bounds its lines and line
 * count). Returns the code, or -1.
 */
int conn_reply(struct conn *c, struct smtp_reply *r)
{
	int rc;

	smtp_reply_init(r);
	if (c->sc == NULL || c->failed) {
		c->dead = 1;
		return -1;
	}
	c->want = r;
	c->got_reply = 0;
	conn_deadline(c);
	smtpc_expect(c->sc);
	rc = conn_wait(c, conn_got_reply);
	c->until = 0;
	c->want = NULL;
	if (rc < 0 || !c->got_reply) {
		c->dead = 1;
		return -1;
	}
	if (c->verbose)
		for (size_t i = 0; i < r->nlines; i++) {
			size_t len = 0;
			const char *t = smtp_reply_line(r, i, &len);

			fprintf(stderr, "%s >>> %03d%c%.*s\n", c->name, r->code,
			    i + 1 < r->nlines ? '-' : ' ', (int)len, t ? t : "");
		}
	return r->code;
}

/* First line of a reply's text, for messages. */
const char *reply_text(const struct smtp_reply *r, char *buf, size_t size)
{
	size_t len = 0;
	const char *t = smtp_reply_line(r, 0, &len);

	if (t == NULL)
		len = 0;
	if (len >= size)
		len = size - 1;
	memcpy(buf, t ? t : "", len);
	buf[len] = '\0';
	return buf;
}

/* --tls: odrelay.conf(5) names; required and opportunistic are the old
 * names of verify and may. DANE and MTA-STS are for MX delivery only. */
int odpull_tls_mode(const char *v)
{
	int m;

	if (strcmp(v, "required") == 0)
		return TLSPOLICY_VERIFY;
	if (strcmp(v, "opportunistic") == 0)
		return TLSPOLICY_MAY;
	m = tlspolicy_mode_parse(v);
	if (m == TLSPOLICY_DANE || m == TLSPOLICY_DANE_ONLY || m == TLSPOLICY_STS)
		return -1;
	return m;
}

static int conn_tls_done(const struct conn *c)
{
	return c->tls;
}

/* ---- provider side: EHLO, STARTTLS, AUTH ---- */

int ehlo(struct conn *c, struct smtp_reply *r)
{
	if (conn_printf(c, "EHLO %s", opt.hostname) < 0 || conn_reply(c, r) < 0)
		return -1;
	if (r->code != 250) {
		char t[256];

		msg("%s: EHLO refused: %d %s", c->name, r->code, reply_text(r, t, sizeof(t)));
		return -1;
	}
	return 0;
}

/*
 * Connect to opt.server (defport if it names none), read the greeting and
 * say EHLO: *caps is the EHLO reply; host gets the name to check TLS
 * against. who names the provider in messages.
 */
int provider_hello(struct conn *p, int defport, struct smtp_reply *caps,
    char *host, size_t hostsize, const char *who)
{
	struct smtp_reply r;
	int port;

	util_split_hostport(opt.server, host, hostsize, &port, defport);
	if (conn_connect(p, opt.server, defport) < 0)
		return -1;
	if (conn_reply(p, &r) < 0 || r.code != 220) {
		msg("%s: no greeting", who);
		return -1;
	}
	return ehlo(p, caps);
}

/* The ATRN / XWAIT argument: the --domain list, comma-separated. */
int atrn_domains(char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < opt.domains.n; i++)
		off += (size_t)snprintf(buf + off, off < size ? size - off : 0,
		    "%s%s", i ? "," : "", opt.domains.v[i]);
	if (off >= size) {
		msg("too many domains for one ATRN line");
		return -1;
	}
	return 0;
}

/* A client context for a side's mode (verifying only for verify). */
SSL_CTX *side_ctx(int mode, char *err, size_t errlen)
{
	if (mode == TLSPOLICY_NONE) {
		snprintf(err, errlen, "no TLS");
		return NULL;
	}
	return tls_client_ctx(opt.ca_file, mode == TLSPOLICY_VERIFY, err, errlen);
}

/*
 * STARTTLS on one side (provider or local MTA) as its mode demands: the
 * same meaning as odrelay.conf(5) `tls`. A side that requires TLS never
 * goes on in clear. 1 TLS is on, 0 going on in clear, -1 give up.
 */
int side_starttls(struct conn *c, struct smtp_reply *caps, SSL_CTX *ctx,
    const char *host, int mode, const char *pins, const char *opt_name)
{
	struct smtp_reply r;
	struct tlspolicy pol;
	char why[300];
	int required, rc;

	if (mode == TLSPOLICY_NONE || ctx == NULL)
		return 0;
	if (tlspolicy_init(&pol, mode, opt.ca_file, pins, why, sizeof(why)) < 0) {
		msg("%s: %s", c->name, why);
		return -1;
	}
	required = tlspolicy_required(&pol);
	if (!smtp_reply_keyword(caps, "STARTTLS", NULL, 0)) {
		if (required) {
			msg("%s: does not offer STARTTLS (%s %s; use may or none "
			    "to go on without)", c->name, opt_name,
			    tlspolicy_mode_name(mode));
			return -1;
		}
		return 0;
	}
	if (conn_printf(c, "STARTTLS") < 0 || conn_reply(c, &r) < 0)
		return -1;
	if (r.code != 220) {
		if (required) {
			msg("%s: STARTTLS refused (%d)", c->name, r.code);
			return -1;
		}
		return 0;
	}
	/* Bytes read ahead of the handshake would be plaintext injection.
	 * smtpc checks the certificate against pol (host: SNI and names). */
	(void)host;
	if (smtpc_tls(c->sc, ctx, &pol) < 0) {
		msg("%s: data after STARTTLS reply, refusing", c->name);
		return -1;
	}
	conn_deadline(c);
	rc = conn_wait(c, conn_tls_done);
	c->until = 0;
	if (rc < 0)
		return -1;
	if (opt.verbose)
		msg("%s: tls=%s, verified=%s", c->name, c->tls_version,
		    mode == TLSPOLICY_VERIFY ? "ca" : c->tls_verified);
	return 1;
}

int provider_tls(struct conn *p, struct smtp_reply *caps, SSL_CTX *ctx,
    const char *host)
{
	int rc = side_starttls(p, caps, ctx, host, opt.tls, opt.tls_fingerprint,
	    "--tls");

	if (rc <= 0)
		return rc;
	return ehlo(p, caps);
}

int authenticate(struct conn *p, const struct smtp_reply *caps, int tls_on)
{
	char mechs[1024], line[LINE_MAX_IN], t[256];
	const char *mech;
	struct sasl_client *sc;
	struct smtp_reply r;
	unsigned char in[LINE_MAX_IN], out[SASL_OUT_MAX];
	size_t outlen = 0;
	int n, rc;

	if (!smtp_reply_keyword(caps, "AUTH", mechs, sizeof(mechs))) {
		msg("provider: does not offer AUTH");
		return -1;
	}
	/*
	 * SCRAM-SHA-256, then CRAM-MD5; PLAIN and LOGIN reveal the password,
	 * so only inside TLS whose certificate was verified (--tls required):
	 * unverified TLS may be a man in the middle.
	 */
	tls_on = tls_on && (opt.tls == TLSPOLICY_VERIFY ||
	    opt.tls == TLSPOLICY_FINGERPRINT);
	mech = sasl_client_choose(mechs, tls_on);
	if (mech == NULL) {
		msg("provider: no usable SASL mechanism in \"%s\"%s", mechs,
		    tls_on ? "" : ": PLAIN and LOGIN would reveal the password "
		    "and are used only over verified TLS (--tls required or verify, or fingerprint)");
		return -1;
	}
	sc = sasl_client_new(mech, opt.user, opt.password);
	if (sc == NULL)
		return -1;
	rc = sasl_client_start(sc, out, sizeof(out), &outlen);
	if (rc == 1) {
		if (outlen == 0)
			util_strlcpy(line, "=", sizeof(line));
		else if (util_base64_encode(out, outlen, line, sizeof(line)) < 0)
			goto fail;
		rc = conn_printf(p, "AUTH %s %s", mech, line);
	} else {
		rc = conn_printf(p, "AUTH %s", mech);
	}
	if (rc < 0)
		goto fail;
	for (;;) {
		if (conn_reply(p, &r) < 0)
			goto fail;
		if (r.code != 334)
			break;
		{
			size_t len;
			const char *ch = smtp_reply_line(&r, 0, &len);

			n = util_base64_decode(ch ? ch : "", ch ? len : 0, in, sizeof(in));
		}
		if (n < 0) {
			msg("provider: bad base64 challenge");
			conn_printf(p, "*");
			goto fail;
		}
		rc = sasl_client_step(sc, in, (size_t)n, out, sizeof(out), &outlen);
		if (rc != SASL_CONTINUE) {
			msg("provider: SASL %s exchange failed (server not verified)", mech);
			conn_printf(p, "*");
			(void)conn_reply(p, &r);
			goto fail;
		}
		if (outlen == 0)
			line[0] = '\0';
		else if (util_base64_encode(out, outlen, line, sizeof(line)) < 0)
			goto fail;
		if (conn_printf(p, "%s", line) < 0)
			goto fail;
	}
	if (r.code != 235) {
		msg("provider: authentication failed: %d %s", r.code,
		    reply_text(&r, t, sizeof(t)));
		goto fail;
	}
	if (sasl_client_done(sc) != 1) {
		msg("provider: server did not prove it knows the password");
		goto fail;
	}
	sasl_client_free(&sc);
	return 0;
fail:
	sasl_client_free(&sc);
	return -1;
}
