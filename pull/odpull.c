/*
 * odpull - the customer side of ODMR (RFC 2645) and ETRN (RFC 1985).
 *
 * ATRN mode: connect to the provider, STARTTLS (verified), AUTH, ATRN, then
 * act as the SMTP server of the reversed session while relaying every
 * command straight through to the local MTA: the provider is answered only
 * with what the local MTA answered, so odpull never holds mail and never
 * acknowledges what the local MTA has not accepted.
 *
 * odpull is a short-lived command-line client: it uses blocking sockets
 * with poll() timeouts on every read and write, one peer at a time.
 *
 * --watch (push delivery) runs until SIGTERM: log in, XWAIT, pull, wait
 * again; one child process per provider when there are several. SIGTERM
 * is blocked except inside the waits that may be cut short (waiting for
 * mail, sleeping, between messages), so it never lands inside a message.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "sasl.h"
#include "smtp_parse.h"
#include "tls.h"
#include "tlspolicy.h"
#include "util.h"
#include "xmalloc.h"

#define LINE_MAX_IN	4096		/* a reply or command line */
#define REPLY_MAX_LINES	100		/* lines in one reply */
#define REPLY_MAX_BYTES	(64 * 1024)	/* octets in one reply */
#define DATA_BLOCK	(64 * 1024)	/* message text due per --timeout */


struct opts {
	char *server;		/* the provider being talked to now */
	struct strlist servers;	/* --server, repeated */
	int servers_cli;	/* a --server on the command line replaces the file's */
	int watch;
	long interval;		/* --interval: polling without XWAIT [5m] */
	char *user;
	char *password_file;
	char *password;
	struct strlist domains;
	char *deliver;
	int lmtp;
	int tls;		/* enum tlspolicy_mode: none, may, encrypt,
				 * verify, fingerprint */
	int tls_set;
	char *tls_fingerprint;	/* pins for tls = fingerprint */
	int deliver_tls;	/* the same for the local MTA [none] */
	char *deliver_fingerprint;
	char *ca_file;
	int timeout;
	int max_time;		/* --max-time: seconds per pull, 0 = none */
	int etrn;
	int verbose;
	char *hostname;
};

struct conn {
	int fd;
	SSL *ssl;
	const char *name;	/* "provider" / "local" for -v and errors */
	int timeout;
	char buf[16384];
	size_t off, len;
	int verbose;
	int dead;
	int interruptible;	/* SIGTERM may end a wait on this connection */
	/* Deadlines (monotonic ms, 0 = none): the reply, command line or
	 * text block being read, and the whole pull; a peer trickling one
	 * byte every few seconds cannot stretch either. */
	long long until;
	long long pull_end;
};

/* --watch: set by the SIGTERM handler (which runs only inside ppoll). */
static volatile sig_atomic_t stop_requested;
static sigset_t sig_open;	/* the mask inside interruptible waits */


static struct opts opt;

/* A SIGTERM may be pending while the provider keeps us busy without a
 * wait (its next command already read): look, between messages. */
static int stop_pending(void)
{
	sigset_t pend;

	if (!stop_requested && opt.watch && sigpending(&pend) == 0 &&
	    (sigismember(&pend, SIGTERM) == 1 || sigismember(&pend, SIGINT) == 1))
		stop_requested = 1;
	return stop_requested;
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void print_usage(FILE *out)
{
	fprintf(out, "usage: odpull --server HOST[:PORT] --user NAME "
	    "(--password-file FILE | env ODPULL_PASSWORD)\n"
	    "              [--domain D]... [--deliver HOST[:PORT]] [--lmtp]\n"
	    "              [--tls none|may|encrypt|verify|fingerprint] "
	    "[--tls-fingerprint PINS] [--ca-file FILE]\n"
	    "              [--deliver-tls MODE] [--deliver-fingerprint PINS] "
	    "[--timeout SECONDS] [--max-time SECONDS] [-c FILE] [-v]\n"
	    "              [--watch [--interval SECONDS]]  (--server may be repeated)\n"
	    "       odpull --etrn --server HOST[:PORT] --domain D...\n"
	    "       odpull --help | --version\n"
	    "See odpull(1).\n");
}

static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "odpull: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	print_usage(stderr);
	exit(2);
}

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "odpull: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- connection layer ---- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What is read next must arrive whole within --timeout. */
static void conn_deadline(struct conn *c)
{
	c->until = now_ms() + (long long)c->timeout * 1000;
}

static int conn_wait(struct conn *c, short events)
{
	struct pollfd p = { c->fd, events, 0 };
	struct timespec ts = { c->timeout, 0 };
	long long end = 0, left;
	int rc;

	if (c->until > 0)
		end = c->until;
	if (c->pull_end > 0 && (end == 0 || c->pull_end < end))
		end = c->pull_end;
	if (end > 0) {
		left = end - now_ms();
		if (left <= 0) {
			if (end == c->pull_end)
				msg("%s: pull time limit (--max-time) reached",
				    c->name);
			else
				msg("%s: timed out after %d s", c->name, c->timeout);
			return -1;
		}
		if (left < (long long)c->timeout * 1000) {
			ts.tv_sec = (time_t)(left / 1000);
			ts.tv_nsec = (long)(left % 1000) * 1000000;
		}
	}

	for (;;) {
		rc = ppoll(&p, 1, &ts, c->interruptible ? &sig_open : NULL);
		if (rc >= 0 || errno != EINTR)
			break;
		if (stop_requested && c->interruptible) {
			c->dead = 1;
			return -1;
		}
	}
	if (rc == 0) {
		if (c->pull_end > 0 && now_ms() >= c->pull_end)
			msg("%s: pull time limit (--max-time) reached", c->name);
		else
			msg("%s: timed out after %d s", c->name, c->timeout);
		return -1;
	}
	return rc < 0 ? -1 : 0;
}

static int conn_connect(struct conn *c, const char *hostport, int defport)
{
	char host[256], portstr[16];
	struct addrinfo hints, *res, *ai;
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
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		socklen_t elen = sizeof(err);

		c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (c->fd < 0)
			continue;
		fcntl(c->fd, F_SETFL, O_NONBLOCK);
		/* Replies go out a line per write: without this, Nagle and the
		 * peer's delayed ACK add ~40 ms to each multi-line reply. */
		(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 },
		    sizeof(int));
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
		    (errno == EINPROGRESS && conn_wait(c, POLLOUT) == 0 &&
		    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 &&
		    err == 0))
			break;
		if (err == 0)
			err = errno;
		close(c->fd);
		c->fd = -1;
	}
	freeaddrinfo(res);
	if (c->fd < 0) {
		msg("%s: cannot connect to %s: %s", c->name, hostport,
		    strerror(err ? err : ECONNREFUSED));
		return -1;
	}
	c->off = c->len = 0;
	c->dead = 0;
	return 0;
}

static void conn_close(struct conn *c)
{
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->dead = 1;
}

/* Run one SSL call to completion, waiting as OpenSSL asks. */
static int conn_ssl_io(struct conn *c, int rc)
{
	switch (SSL_get_error(c->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return conn_wait(c, POLLIN) < 0 ? -1 : 1;
	case SSL_ERROR_WANT_WRITE:
		return conn_wait(c, POLLOUT) < 0 ? -1 : 1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		return -1;
	}
}

static ssize_t conn_read_some(struct conn *c, char *buf, size_t len)
{
	ssize_t n;

	for (;;) {
		if (c->ssl != NULL) {
			int rc = SSL_read(c->ssl, buf, (int)len);

			if (rc > 0)
				return rc;
			rc = conn_ssl_io(c, rc);
			if (rc <= 0)
				return rc;
			continue;
		}
		n = read(c->fd, buf, len);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || conn_wait(c, POLLIN) < 0)
			return -1;
	}
}

static int conn_write(struct conn *c, const char *data, size_t len)
{
	while (len > 0 && !c->dead) {
		ssize_t n;

		if (c->ssl != NULL) {
			int rc = SSL_write(c->ssl, data, (int)len);

			if (rc <= 0) {
				if (conn_ssl_io(c, rc) <= 0)
					goto fail;
				continue;
			}
			n = rc;
		} else {
			n = write(c->fd, data, len);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN || conn_wait(c, POLLOUT) < 0)
					goto fail;
				continue;
			}
		}
		data += n;
		len -= (size_t)n;
	}
	return c->dead ? -1 : 0;
fail:
	msg("%s: write failed", c->name);
	c->dead = 1;
	return -1;
}

static int conn_printf(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int conn_printf(struct conn *c, const char *fmt, ...)
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
	memcpy(line + n, "\r\n", 2);
	return conn_write(c, line, (size_t)n + 2);
}

/*
 * Read one line ending in LF into out (CRLF or LF removed; *crlf_r tells
 * whether it was a proper CRLF). Lines longer than max are an error.
 * Returns the length, or -1 on error/EOF.
 */
static ssize_t conn_read_line(struct conn *c, char *out, size_t max, int *crlf_r)
{
	size_t n = 0;

	for (;;) {
		while (c->off < c->len) {
			char ch = c->buf[c->off++];

			if (ch == '\n') {
				int crlf = n > 0 && out[n - 1] == '\r';

				if (crlf)
					n--;
				if (crlf_r != NULL)
					*crlf_r = crlf;
				out[n] = '\0';
				return (ssize_t)n;
			}
			if (n + 1 >= max) {
				msg("%s: line too long", c->name);
				c->dead = 1;
				return -1;
			}
			out[n++] = ch;
		}
		{
			ssize_t r = conn_read_some(c, c->buf, sizeof(c->buf));

			if (r <= 0) {
				if (!c->dead)
					msg("%s: connection closed", c->name);
				c->dead = 1;
				return -1;
			}
			c->off = 0;
			c->len = (size_t)r;
		}
	}
}

/*
 * Read a whole reply: within --timeout, at most REPLY_MAX_LINES lines and
 * REPLY_MAX_BYTES octets (a peer must not keep us reading an endless
 * reply). Returns the code, or -1.
 */
static int conn_reply(struct conn *c, struct smtp_reply *r)
{
	char line[LINE_MAX_IN];
	size_t total = 0;
	ssize_t n;
	int rc;

	smtp_reply_init(r);
	conn_deadline(c);
	do {
		n = conn_read_line(c, line, sizeof(line), NULL);
		if (n < 0) {
			c->until = 0;
			return -1;
		}
		if (c->verbose)
			fprintf(stderr, "%s >>> %s\n", c->name, line);
		total += (size_t)n + 2;
		if (r->nlines >= REPLY_MAX_LINES || total > REPLY_MAX_BYTES) {
			msg("%s: reply of more than %d lines or %d octets",
			    c->name, REPLY_MAX_LINES, REPLY_MAX_BYTES);
			c->dead = 1;
			c->until = 0;
			return -1;
		}
		rc = smtp_reply_feed(r, line, (size_t)n);
		if (rc < 0) {
			msg("%s: malformed reply: %.100s", c->name, line);
			c->dead = 1;
			c->until = 0;
			return -1;
		}
	} while (rc == 0);
	c->until = 0;
	return r->code;
}

/* First line of a reply's text, for messages. */
static const char *reply_text(const struct smtp_reply *r, char *buf, size_t size)
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

/* 1 if the EHLO reply lists keyword (case-insensitive, as a whole word). */
static int reply_has(const struct smtp_reply *r, const char *kw, char *arg_r,
    size_t argsize)
{
	size_t klen = strlen(kw);

	for (size_t i = 1; i < r->nlines; i++) {
		size_t len;
		const char *t = smtp_reply_line(r, i, &len);

		if (t == NULL || len < klen || strncasecmp(t, kw, klen) != 0 ||
		    (len > klen && t[klen] != ' ' && t[klen] != '='))
			continue;
		if (arg_r != NULL) {
			size_t alen = len > klen ? len - klen - 1 : 0;

			if (alen >= argsize)
				alen = argsize - 1;
			memcpy(arg_r, t + klen + (len > klen), alen);
			arg_r[alen] = '\0';
		}
		return 1;
	}
	return 0;
}

/* --tls: odrelay.conf(5) names; required and opportunistic are the old
 * names of verify and may. DANE and MTA-STS are for MX delivery only. */
static int odpull_tls_mode(const char *v)
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

static int conn_starttls(struct conn *c, SSL_CTX *ctx, const char *host, int verify)
{
	int rc;

	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || tls_client_set_host(c->ssl, host, verify) < 0)
		return -1;
	SSL_set_fd(c->ssl, c->fd);
	while ((rc = SSL_connect(c->ssl)) != 1) {
		if (conn_ssl_io(c, rc) <= 0) {
			long v = SSL_get_verify_result(c->ssl);

			if (v != X509_V_OK)
				msg("%s: certificate verification failed: %s", c->name,
				    X509_verify_cert_error_string(v));
			else
				msg("%s: TLS handshake failed", c->name);
			return -1;
		}
	}
	return 0;
}

/* ---- provider side: EHLO, STARTTLS, AUTH ---- */

static int ehlo(struct conn *c, struct smtp_reply *r)
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

/* A client context for a side's mode (verifying only for verify). */
static SSL_CTX *side_ctx(int mode, char *err, size_t errlen)
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
static int side_starttls(struct conn *c, struct smtp_reply *caps, SSL_CTX *ctx,
    const char *host, int mode, const char *pins, const char *opt_name)
{
	struct smtp_reply r;
	struct tlspolicy pol;
	const char *verified;
	char why[300];
	int required;

	if (mode == TLSPOLICY_NONE || ctx == NULL)
		return 0;
	if (tlspolicy_init(&pol, mode, opt.ca_file, pins, why, sizeof(why)) < 0) {
		msg("%s: %s", c->name, why);
		return -1;
	}
	required = tlspolicy_required(&pol);
	if (!reply_has(caps, "STARTTLS", NULL, 0)) {
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
	/* Bytes read ahead of the handshake would be plaintext injection. */
	if (c->off != c->len) {
		msg("%s: data after STARTTLS reply, refusing", c->name);
		return -1;
	}
	if (conn_starttls(c, ctx, host, mode == TLSPOLICY_VERIFY) < 0)
		return -1;
	if (tlspolicy_check(&pol, c->ssl, host, &verified, why,
	    sizeof(why)) < 0) {
		msg("%s: %s", c->name, why);
		return -1;
	}
	if (opt.verbose)
		msg("%s: tls=%s, verified=%s", c->name, SSL_get_version(c->ssl),
		    mode == TLSPOLICY_VERIFY ? "ca" : verified);
	return 1;
}

static int provider_tls(struct conn *p, struct smtp_reply *caps, SSL_CTX *ctx,
    const char *host)
{
	int rc = side_starttls(p, caps, ctx, host, opt.tls, opt.tls_fingerprint,
	    "--tls");

	if (rc <= 0)
		return rc;
	return ehlo(p, caps);
}

static int authenticate(struct conn *p, const struct smtp_reply *caps, int tls_on)
{
	char mechs[1024], line[LINE_MAX_IN], t[256];
	const char *mech;
	struct sasl_client *sc;
	struct smtp_reply r;
	unsigned char in[LINE_MAX_IN], out[SASL_OUT_MAX];
	size_t outlen = 0;
	int n, rc;

	if (!reply_has(caps, "AUTH", mechs, sizeof(mechs))) {
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

/* ---- the reversed session: provider -> odpull -> local MTA ---- */

struct tally {
	unsigned messages, rcpts, refused, deferred, failed_msgs;
	unsigned long long bytes;
};

/* Send a reply received from the local MTA on to the provider, unchanged. */
static int relay_reply(struct conn *p, const struct smtp_reply *r)
{
	for (size_t i = 0; i < r->nlines || i == 0; i++) {
		size_t len = 0;
		const char *t = smtp_reply_line(r, i, &len);
		int last = i + 1 >= r->nlines;

		if (conn_printf(p, "%03d%c%.*s", r->code, last ? ' ' : '-',
		    (int)len, t ? t : "") < 0)
			return -1;
		if (last)
			break;
	}
	return 0;
}

/* --deliver-tls: STARTTLS to the local MTA, then EHLO/LHLO again. */
static int local_tls(struct conn *l, struct smtp_reply *caps)
{
	static SSL_CTX *ctx;
	char host[256], err[256];
	int port, rc;

	if (opt.deliver_tls == TLSPOLICY_NONE)
		return 0;
	if (ctx == NULL && (ctx = side_ctx(opt.deliver_tls, err,
	    sizeof(err))) == NULL) {
		msg("local: TLS: %s", err);
		return -1;
	}
	util_split_hostport(opt.deliver, host, sizeof(host), &port, 25);
	rc = side_starttls(l, caps, ctx, host, opt.deliver_tls,
	    opt.deliver_fingerprint, "--deliver-tls");
	if (rc <= 0)
		return rc;
	if (conn_printf(l, "%s %s", opt.lmtp ? "LHLO" : "EHLO", opt.hostname) < 0 ||
	    conn_reply(l, caps) < 0)
		return -1;
	if (caps->code != 250) {
		msg("local: %s refused after STARTTLS (%d)", opt.lmtp ? "LHLO" :
		    "EHLO", caps->code);
		return -1;
	}
	return 0;
}

static int local_open(struct conn *l, struct smtp_reply *caps)
{
	struct smtp_reply r;

	if (conn_connect(l, opt.deliver, opt.lmtp ? 24 : 25) < 0)
		return -1;
	if (conn_reply(l, &r) < 0 || r.code != 220) {
		msg("local: no greeting (%d)", r.code);
		return -1;
	}
	if (conn_printf(l, "%s %s", opt.lmtp ? "LHLO" : "EHLO", opt.hostname) < 0 ||
	    conn_reply(l, caps) < 0)
		return -1;
	if (caps->code != 250 && !opt.lmtp) {
		if (conn_printf(l, "HELO %s", opt.hostname) < 0 || conn_reply(l, caps) < 0)
			return -1;
	}
	if (caps->code != 250) {
		msg("local: %s refused (%d)", opt.lmtp ? "LHLO" : "EHLO", caps->code);
		return -1;
	}
	return local_tls(l, caps);
}

/*
 * Copy the message text from provider to local up to the final dot, as a
 * byte stream: it is already dot-stuffed and goes through unchanged, so a
 * line of any length passes (spec: long lines are kept). Line endings are
 * strict, as on odrelayd's own listener (RFC 5321 2.3.8, SMTP smuggling):
 * a bare CR, a bare LF or a NUL is never passed on. From that octet on
 * nothing more is forwarded and the local connection is dropped without
 * an end of data, so the local MTA keeps nothing; the rest is read up to
 * CRLF "." CRLF (a bare LF never starts a line). Each DATA_BLOCK octets
 * must arrive within --timeout.
 * Returns 0 (local has it all but the reply), 1 (refused: bad line
 * ending, local closed) or -1 (provider gone).
 */
static int relay_data(struct conn *p, struct conn *l, unsigned long long *bytes_r)
{
	enum { BOL, DOT, DOTCR, MID, CR } st = BOL;
	size_t block = 0;
	int bad = 0;

	*bytes_r = 0;
	conn_deadline(p);
	for (;;) {
		size_t start, i;

		if (p->off == p->len) {
			ssize_t r = conn_read_some(p, p->buf, sizeof(p->buf));

			if (r <= 0) {
				p->dead = 1;
				p->until = 0;
				return -1;	/* provider gone: the mail stays there */
			}
			p->off = 0;
			p->len = (size_t)r;
			if ((block += (size_t)r) >= DATA_BLOCK) {
				block = 0;
				conn_deadline(p);
			}
		}
		start = p->off;
		for (i = p->off; i < p->len; i++) {
			char c = p->buf[i];
			int ok = 1;

			if (c == '\0')
				ok = 0;
			else if (st == DOTCR)
				ok = c == '\n';
			else if (st == CR)
				ok = c == '\n';
			else if (c == '\n')
				ok = 0;
			if (!ok) {
				/* Pass on what came before, then stop. */
				if (!bad && !l->dead && i > start)
					conn_write(l, p->buf + start, i - start);
				if (!bad)
					conn_close(l);
				bad = 1;
				st = c == '\r' ? CR : MID;
				continue;
			}
			if (st == DOTCR) {
				/* Forward the final ".\r\n" too. */
				if (!bad && !l->dead)
					conn_write(l, p->buf + start, i + 1 - start);
				*bytes_r += i + 1 - start;
				*bytes_r = *bytes_r >= 3 ? *bytes_r - 3 : 0;
				p->off = i + 1;
				p->until = 0;
				return bad;
			}
			if (st == CR)
				st = BOL;
			else if (st == BOL && c == '.')
				st = DOT;
			else if (st == DOT && c == '\r')
				st = DOTCR;
			else if (c == '\r')
				st = CR;
			else
				st = MID;
		}
		if (!bad && !l->dead)
			conn_write(l, p->buf + start, p->len - start);
		*bytes_r += p->len - start;
		p->off = p->len;
	}
}

/*
 * A recipient the provider may send us: in a domain this pull asked for,
 * or one of its subdomains (a provider's domain may include them). No
 * --domain: the account's domains are unknown here, so only the address
 * tricks are refused.
 */
static int rcpt_asked(const char *arg, size_t len)
{
	struct smtp_path path;
	struct smtp_rcpt_params params;
	size_t dl;

	/* '%', '!' or a quoted '@' in the local part could route the mail
	 * elsewhere at a local MTA that still honours them. */
	if (smtp_parse_rcpt(arg, len, 1, &path, &params) != 0 ||
	    path.no_domain || path.literal || path.local_routing)
		return 0;
	if (opt.domains.n == 0)
		return 1;
	dl = strlen(path.domain);
	for (size_t i = 0; i < opt.domains.n; i++) {
		const char *d = opt.domains.v[i];
		size_t n = strlen(d);

		if (n > 0 && d[n - 1] == '.')
			n--;
		if ((dl == n && strncasecmp(path.domain, d, n) == 0) ||
		    (dl > n && path.domain[dl - n - 1] == '.' &&
		    strncasecmp(path.domain + dl - n, d, n) == 0))
			return 1;
	}
	return 0;
}

static int reversed_session(struct conn *p, struct tally *t)
{
	struct conn local = { .fd = -1, .name = "local", .timeout = opt.timeout,
	    .verbose = opt.verbose };
	struct smtp_reply caps, r;
	char line[LINE_MAX_IN], verb[SMTP_VERB_MAX + 1], sizearg[64];
	unsigned tx_rcpts = 0;
	int in_tx = 0, status = 0, local_in_data = 0, reopen = 0, rc;

	if (local_open(&local, &caps) < 0) {
		/* The provider keeps the mail (RFC 2645 5.3: refusing greeting). */
		conn_printf(p, "421 4.3.0 %s local mail server unavailable, try later",
		    opt.hostname);
		conn_close(&local);
		return -1;
	}
	if (conn_printf(p, "220 %s ESMTP odpull", opt.hostname) < 0)
		goto out;
	for (;;) {
		const char *arg;
		size_t arglen;
		ssize_t n;

		/* --watch: SIGTERM ends the session between messages only; the
		 * provider keeps what was not confirmed. */
		p->interruptible = opt.watch && !in_tx;
		if (!in_tx && stop_pending())
			break;
		conn_deadline(p);
		n = conn_read_line(p, line, sizeof(line), NULL);
		p->interruptible = 0;
		p->until = 0;

		if (n < 0) {
			if (in_tx) {
				msg("provider: connection lost during a transaction");
				status = -1;
			} else if (!stop_requested) {
				/* RFC 5321 4.1.1.10: the session ends with QUIT;
				 * a provider gone without it may have more. */
				msg("provider: connection closed without QUIT");
				status = -1;
			}
			break;
		}
		if (p->verbose)
			fprintf(stderr, "provider >>> %s\n", line);
		if (smtp_parse_command(line, (size_t)n, verb, sizeof(verb), &arg,
		    &arglen) != 0) {
			conn_printf(p, "500 5.5.2 Syntax error");
			continue;
		}
		if (strcmp(verb, "EHLO") == 0 || strcmp(verb, "HELO") == 0) {
			int ehlo_cmd = verb[0] == 'E';

			conn_printf(p, "250%s%s", ehlo_cmd ? "-" : " ", opt.hostname);
			if (!ehlo_cmd)
				continue;
			if (reply_has(&caps, "SIZE", sizearg, sizeof(sizearg)))
				conn_printf(p, "250-SIZE %s", sizearg);
			if (reply_has(&caps, "8BITMIME", NULL, 0))
				conn_printf(p, "250-8BITMIME");
			if (reply_has(&caps, "SMTPUTF8", NULL, 0))
				conn_printf(p, "250-SMTPUTF8");
			if (reply_has(&caps, "DSN", NULL, 0))
				conn_printf(p, "250-DSN");
			conn_printf(p, "250 ENHANCEDSTATUSCODES");
		} else if (strcmp(verb, "MAIL") == 0 || strcmp(verb, "RCPT") == 0) {
			int is_rcpt = verb[0] == 'R';

			if (is_rcpt && !rcpt_asked(arg, arglen)) {
				/* Never pass on mail of domains not asked for:
				 * the local MTA might relay it on. */
				conn_printf(p, "550 5.7.1 Recipient not accepted by "
				    "this pull (not in the domains asked for, or a "
				    "routing address)");
				t->refused++;
				continue;
			}
			if (is_rcpt && opt.lmtp && tx_rcpts >= 1) {
				/* One recipient per LMTP transaction: its answer
				 * after DATA is then that transaction's answer. */
				conn_printf(p, "452 4.5.3 One recipient per transaction, send the others again");
				continue;
			}
			if (local.dead && reopen && !is_rcpt) {
				/* Dropped on purpose after a refused message. */
				reopen = 0;
				if (local_open(&local, &caps) < 0) {
					conn_printf(p, "421 4.3.0 %s local mail server "
					    "unavailable, try later", opt.hostname);
					status = -1;
					break;
				}
			}
			if (local.dead) {
				conn_printf(p, "421 4.3.0 %s local mail server connection lost", opt.hostname);
				status = -1;
				break;
			}
			if (conn_printf(&local, "%.*s", (int)n, line) < 0 ||
			    conn_reply(&local, &r) < 0) {
				conn_printf(p, "421 4.3.0 %s local mail server connection lost", opt.hostname);
				status = -1;
				break;
			}
			relay_reply(p, &r);
			if (!is_rcpt) {
				in_tx = r.code / 100 == 2;
				tx_rcpts = 0;
			} else if (r.code / 100 == 2) {
				tx_rcpts++;
			} else if (r.code / 100 == 5) {
				t->refused++;
			} else {
				t->deferred++;
			}
		} else if (strcmp(verb, "DATA") == 0) {
			unsigned long long bytes = 0;

			if (!in_tx || tx_rcpts == 0) {
				conn_printf(p, "554 5.5.1 No valid recipients");
				continue;
			}
			if (conn_printf(&local, "DATA") < 0 || conn_reply(&local, &r) < 0) {
				conn_printf(p, "421 4.3.0 %s local mail server connection lost", opt.hostname);
				status = -1;
				break;
			}
			relay_reply(p, &r);
			if (r.code != 354)
				continue;
			local_in_data = 1;
			rc = relay_data(p, &local, &bytes);
			if (rc < 0) {
				msg("provider: connection lost during DATA; the message stays at the provider");
				status = -1;
				break;
			}
			in_tx = 0;
			local_in_data = 0;
			if (rc == 1) {
				/* As odrelayd's listener answers (SMTP smuggling). */
				conn_printf(p, "554 5.6.0 Message rejected: bare CR, "
				    "bare LF or NUL in message text");
				msg("provider: message with a bare CR, bare LF or NUL "
				    "refused");
				t->refused += tx_rcpts;
				tx_rcpts = 0;
				reopen = 1;
				continue;
			}
			if (local.dead || conn_reply(&local, &r) < 0) {
				/* Never acknowledge what the local MTA did not. */
				conn_printf(p, "451 4.3.0 local mail server connection lost");
				t->deferred += tx_rcpts;
				status = -1;
				continue;
			}
			relay_reply(p, &r);
			if (r.code / 100 == 2) {
				t->messages++;
				t->rcpts += tx_rcpts;
				t->bytes += bytes;
			} else if (r.code / 100 == 4) {
				t->deferred += tx_rcpts;
			} else {
				t->refused += tx_rcpts;
			}
			tx_rcpts = 0;
		} else if (strcmp(verb, "RSET") == 0) {
			in_tx = 0;
			tx_rcpts = 0;
			if (!local.dead && conn_printf(&local, "RSET") == 0)
				(void)conn_reply(&local, &r);
			conn_printf(p, "250 2.0.0 OK");
		} else if (strcmp(verb, "NOOP") == 0) {
			conn_printf(p, "250 2.0.0 OK");
		} else if (strcmp(verb, "QUIT") == 0) {
			conn_printf(p, "221 2.0.0 %s closing", opt.hostname);
			break;
		} else if (strcmp(verb, "STARTTLS") == 0 || strcmp(verb, "BDAT") == 0) {
			conn_printf(p, "502 5.5.1 Not available in the reversed session");
		} else {
			conn_printf(p, "502 5.5.1 Command not implemented");
		}
	}
out:
	/* Inside DATA a QUIT would only become message text: just close, so
	 * the local MTA never sees an end of data and keeps nothing. */
	if (!local.dead && !local_in_data && conn_printf(&local, "QUIT") == 0)
		(void)conn_reply(&local, &r);
	conn_close(&local);
	if (t->deferred > 0)
		status = -1;
	return status;
}

/* ---- modes ---- */

static int atrn_mode(void)
{
	struct conn p = { .fd = -1, .name = "provider", .timeout = opt.timeout,
	    .verbose = opt.verbose };
	struct smtp_reply caps, r;
	struct tally t;
	char host[256], domains[LINE_MAX_IN], txt[256], err[256];
	SSL_CTX *ctx = NULL;
	size_t off = 0;
	int port, rc = 1;

	memset(&t, 0, sizeof(t));
	util_split_hostport(opt.server, host, sizeof(host), &port, 366);
	if (opt.tls != TLSPOLICY_NONE) {
		ctx = side_ctx(opt.tls, err, sizeof(err));
		if (ctx == NULL) {
			msg("TLS: %s", err);
			return 1;
		}
	}
	if (conn_connect(&p, opt.server, 366) < 0)
		goto out;
	if (conn_reply(&p, &r) < 0 || r.code != 220) {
		msg("provider: no greeting");
		goto out;
	}
	if (ehlo(&p, &caps) < 0)
		goto out;
	if (!reply_has(&caps, "ATRN", NULL, 0)) {
		msg("provider: does not offer ATRN");
		goto out;
	}
	if (provider_tls(&p, &caps, ctx, host) < 0)
		goto out;
	if (authenticate(&p, &caps, p.ssl != NULL) < 0)
		goto out;
	domains[0] = '\0';
	for (size_t i = 0; i < opt.domains.n; i++)
		off += (size_t)snprintf(domains + off, off < sizeof(domains) ?
		    sizeof(domains) - off : 0, "%s%s", i ? "," : "", opt.domains.v[i]);
	if (off >= sizeof(domains)) {
		msg("too many domains for one ATRN line");
		goto out;
	}
	/* RFC 2645 5.2.1: the provider may take up to 10 minutes. */
	p.timeout = opt.timeout > 600 ? opt.timeout : 600;
	if (conn_printf(&p, off ? "ATRN %s" : "ATRN%s", domains) < 0 ||
	    conn_reply(&p, &r) < 0)
		goto out;
	p.timeout = opt.timeout;
	reply_text(&r, txt, sizeof(txt));
	if (r.code == 453) {
		printf("odpull: no mail waiting at %s\n", opt.server);
		conn_printf(&p, "QUIT");
		rc = 0;
		goto out;
	}
	if (r.code != 250) {
		msg("provider: ATRN refused: %d %s", r.code, txt);
		conn_printf(&p, "QUIT");
		goto out;
	}
	/* The whole reversed session is bounded too (--max-time). */
	p.pull_end = opt.max_time ? now_ms() + opt.max_time * 1000LL : 0;
	rc = reversed_session(&p, &t) < 0 ? 1 : 0;
	p.pull_end = 0;
	printf("odpull: %u message%s (%u recipient%s, %llu bytes) delivered to %s%s",
	    t.messages, t.messages == 1 ? "" : "s", t.rcpts, t.rcpts == 1 ? "" : "s",
	    t.bytes, opt.deliver, opt.lmtp ? " (LMTP)" : "");
	if (t.refused)
		printf("; %u recipient%s refused (returned to sender by the provider)",
		    t.refused, t.refused == 1 ? "" : "s");
	if (t.deferred)
		printf("; %u recipient%s left queued at the provider", t.deferred,
		    t.deferred == 1 ? "" : "s");
	printf("\n");
out:
	conn_close(&p);
	if (ctx != NULL)
		SSL_CTX_free(ctx);
	return rc;
}

static int etrn_mode(void)
{
	struct conn p = { .fd = -1, .name = "provider", .timeout = opt.timeout,
	    .verbose = opt.verbose };
	struct smtp_reply caps, r;
	char host[256], txt[512], err[256];
	SSL_CTX *ctx = NULL;
	int port, rc = 1;

	util_split_hostport(opt.server, host, sizeof(host), &port, 25);
	if (opt.tls != TLSPOLICY_NONE) {
		ctx = side_ctx(opt.tls, err, sizeof(err));
		if (ctx == NULL) {
			msg("TLS: %s", err);
			return 1;
		}
	}
	if (conn_connect(&p, opt.server, 25) < 0)
		goto out;
	if (conn_reply(&p, &r) < 0 || r.code != 220) {
		msg("provider: no greeting");
		goto out;
	}
	if (ehlo(&p, &caps) < 0 || provider_tls(&p, &caps, ctx, host) < 0)
		goto out;
	if (!reply_has(&caps, "ETRN", NULL, 0))
		msg("provider: does not advertise ETRN; trying anyway");
	rc = 0;
	for (size_t i = 0; i < opt.domains.n; i++) {
		if (conn_printf(&p, "ETRN %s", opt.domains.v[i]) < 0 ||
		    conn_reply(&p, &r) < 0) {
			rc = 1;
			break;
		}
		printf("%s: %d %s\n", opt.domains.v[i], r.code,
		    reply_text(&r, txt, sizeof(txt)));
		if (r.code != 250 && r.code != 251 && r.code != 252 && r.code != 253)
			rc = 1;
	}
	conn_printf(&p, "QUIT");
out:
	conn_close(&p);
	if (ctx != NULL)
		SSL_CTX_free(ctx);
	return rc;
}

/* ---- --watch: push delivery ---- */

enum watch_result {
	WATCH_AGAIN,	/* pulled: log in and wait again at once */
	WATCH_POLL,	/* provider without XWAIT: wait --interval */
	WATCH_FAIL,	/* back off, then try again */
	WATCH_STOP	/* SIGTERM */
};

#define WATCH_BACKOFF_MAX	300	/* seconds */
#define WATCH_WAIT_MAX		3600	/* no XWAIT answer for this long: reconnect */

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* Only to make sigsuspend return when a watcher child ends. */
static void on_child(int sig)
{
	(void)sig;
}

/* Sleep up to ms, cut short by SIGTERM. */
static void watch_sleep(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (!stop_requested)
		(void)ppoll(NULL, 0, &ts, &sig_open);
}

static void watch_keepalive(int fd)
{
	int on = 1, idle = 60, intvl = 20, cnt = 3;

	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
#ifdef TCP_KEEPIDLE
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
#else
	(void)idle;
	(void)intvl;
	(void)cnt;
#endif
}

/* ATRN on a logged-in connection and the reversed session after a 250.
 * 453 (nothing after all) gives *nomail_r = 1. */
static enum watch_result watch_atrn(struct conn *p, const char *domains,
    int *nomail_r)
{
	struct smtp_reply r;
	struct tally t;
	char txt[256];
	int rc;

	*nomail_r = 0;
	memset(&t, 0, sizeof(t));
	p->timeout = opt.timeout > 600 ? opt.timeout : 600;
	if (conn_printf(p, domains[0] ? "ATRN %s" : "ATRN%s", domains) < 0 ||
	    conn_reply(p, &r) < 0)
		return WATCH_FAIL;
	p->timeout = opt.timeout;
	if (r.code == 453) {
		*nomail_r = 1;
		return WATCH_POLL;
	}
	if (r.code != 250) {
		msg("%s: ATRN refused: %d %s", opt.server, r.code,
		    reply_text(&r, txt, sizeof(txt)));
		return WATCH_FAIL;
	}
	p->pull_end = opt.max_time ? now_ms() + opt.max_time * 1000LL : 0;
	rc = reversed_session(p, &t);
	p->pull_end = 0;
	if (t.messages > 0 || t.deferred > 0 || t.refused > 0)
		printf("odpull: %s: %u message%s (%llu bytes) delivered to %s%s%s\n",
		    opt.server, t.messages, t.messages == 1 ? "" : "s", t.bytes,
		    opt.deliver, t.deferred ? ", some recipients left at the "
		    "provider" : "", t.refused ? ", some refused" : "");
	fflush(stdout);
	if (stop_requested)
		return WATCH_STOP;
	/* Deferred mail would wake us again at once: back off instead.
	 * So does a provider that says mail waits and then sends none
	 * (connecting again at once would be a busy loop). */
	if (rc >= 0 && t.messages == 0) {
		msg("%s: ATRN delivered nothing", opt.server);
		return WATCH_FAIL;
	}
	return rc < 0 ? WATCH_FAIL : WATCH_AGAIN;
}

/* One connection to opt.server: log in, then XWAIT/ATRN until the
 * provider ends the session, or a single ATRN without XWAIT. */
static enum watch_result watch_session(SSL_CTX *ctx, int *logged_in_r)
{
	struct conn p = { .fd = -1, .name = "provider", .timeout = opt.timeout,
	    .verbose = opt.verbose };
	struct smtp_reply caps, r;
	char host[256], domains[LINE_MAX_IN], txt[256];
	enum watch_result res = WATCH_FAIL;
	size_t off = 0;
	int port, nomail, empty = 0;

	*logged_in_r = 0;
	domains[0] = '\0';
	for (size_t i = 0; i < opt.domains.n; i++)
		off += (size_t)snprintf(domains + off, off < sizeof(domains) ?
		    sizeof(domains) - off : 0, "%s%s", i ? "," : "", opt.domains.v[i]);
	if (off >= sizeof(domains)) {
		msg("too many domains for one ATRN line");
		return WATCH_FAIL;
	}
	util_split_hostport(opt.server, host, sizeof(host), &port, 366);
	if (conn_connect(&p, opt.server, 366) < 0)
		goto out;
	watch_keepalive(p.fd);
	if (conn_reply(&p, &r) < 0 || r.code != 220) {
		msg("%s: no greeting", opt.server);
		goto out;
	}
	if (ehlo(&p, &caps) < 0)
		goto out;
	if (!reply_has(&caps, "ATRN", NULL, 0)) {
		msg("%s: does not offer ATRN", opt.server);
		goto out;
	}
	if (provider_tls(&p, &caps, ctx, host) < 0 ||
	    authenticate(&p, &caps, p.ssl != NULL) < 0)
		goto out;
	*logged_in_r = 1;
	if (!reply_has(&caps, "XWAIT", NULL, 0)) {
		/* RFC 2645 only: one ATRN now, the next after --interval. */
		res = watch_atrn(&p, domains, &nomail);
		if (nomail)
			conn_printf(&p, "QUIT");
		if (res == WATCH_AGAIN)
			res = WATCH_POLL;
		goto out;
	}
	for (;;) {
		if (conn_printf(&p, domains[0] ? "XWAIT %s" : "XWAIT%s",
		    domains) < 0)
			goto out;
		/* The wait itself: no smtp timeout, SIGTERM ends it. */
		p.timeout = WATCH_WAIT_MAX;
		p.interruptible = 1;
		if (conn_reply(&p, &r) < 0) {
			if (stop_requested) {
				res = WATCH_STOP;
				/* Ends the wait (453), then 221. */
				p.interruptible = 0;
				p.dead = 0;
				p.timeout = 5;
				if (conn_printf(&p, "QUIT") == 0)
					(void)conn_reply(&p, &r);
			}
			goto out;
		}
		p.interruptible = 0;
		p.timeout = opt.timeout;
		if (r.code == 453)
			continue;	/* the provider's wait ended: again */
		if (r.code != 250) {
			msg("%s: XWAIT refused: %d %s", opt.server, r.code,
			    reply_text(&r, txt, sizeof(txt)));
			goto out;
		}
		res = watch_atrn(&p, domains, &nomail);
		if (!nomail)
			goto out;	/* the reversed session ended the connection */
		/* "Mail is waiting" but ATRN found none to send: should not
		 * happen; never let it become a busy loop. */
		if (++empty > 1) {
			watch_sleep(empty > 7 ? 60000L : 1000L << (empty - 2));
			if (stop_requested) {
				res = WATCH_STOP;
				goto out;
			}
		}
	}
out:
	if (res == WATCH_FAIL && stop_requested)
		res = WATCH_STOP;
	conn_close(&p);
	return res;
}

/* Watch opt.server until SIGTERM. Exit status 0 when stopped. */
static int watch_one(void)
{
	SSL_CTX *ctx = NULL;
	char err[256];
	long backoff = 1;

	if (opt.tls != TLSPOLICY_NONE) {
		ctx = side_ctx(opt.tls, err, sizeof(err));
		if (ctx == NULL) {
			msg("TLS: %s", err);
			return 2;
		}
	}
	srandom((unsigned)time(NULL) ^ (unsigned)getpid() << 8);
	msg("watching %s", opt.server);
	while (!stop_requested) {
		int logged_in;
		enum watch_result res = watch_session(ctx, &logged_in);

		if (res == WATCH_STOP)
			break;
		if (res == WATCH_AGAIN) {
			backoff = 1;
			continue;
		}
		if (res == WATCH_POLL) {
			backoff = 1;
			watch_sleep(opt.interval * 1000);
			continue;
		}
		/* Exponential backoff with jitter (+-25 %), 1 s to 5 min, so
		 * many offices do not come back at the same instant. */
		{
			long ms = backoff * 1000;

			ms += (long)(random() % (ms / 2 + 1)) - ms / 4;
			if (ms < 1000)
				ms = 1000;
			if (ms > WATCH_BACKOFF_MAX * 1000L)
				ms = WATCH_BACKOFF_MAX * 1000L;
			msg("%s: trying again in %.1f s", opt.server, ms / 1000.0);
			watch_sleep(ms);
		}
		backoff = backoff * 2 > WATCH_BACKOFF_MAX ? WATCH_BACKOFF_MAX :
		    backoff * 2;
	}
	msg("%s: stopped", opt.server);
	if (ctx != NULL)
		SSL_CTX_free(ctx);
	return 0;
}

/* Several providers: one child each; SIGTERM is passed on to all. */
static int watch_all(void)
{
	pid_t *pids = xcalloc(opt.servers.n, sizeof(pid_t));
	size_t i, alive = 0;
	int status;

	for (i = 0; i < opt.servers.n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			msg("fork: %s", strerror(errno));
			stop_requested = 1;
			break;
		}
		if (pids[i] == 0) {
			opt.server = opt.servers.v[i];
			_exit(watch_one());
		}
		alive++;
	}
	while (alive > 0) {
		pid_t pid;

		if (!stop_requested) {
			sigset_t wait_mask = sig_open;

			sigdelset(&wait_mask, SIGCHLD);
			sigsuspend(&wait_mask);
		}
		if (stop_requested)
			for (i = 0; i < opt.servers.n; i++)
				if (pids[i] > 0)
					kill(pids[i], SIGTERM);
		while ((pid = waitpid(-1, &status, stop_requested ? 0 : WNOHANG)) > 0) {
			for (i = 0; i < opt.servers.n; i++) {
				if (pids[i] != pid)
					continue;
				pids[i] = 0;
				alive--;
				if (!stop_requested && WIFEXITED(status) &&
				    WEXITSTATUS(status) != 2) {
					/* Should not happen: watch again. */
					msg("%s: watcher ended (status %d), restarting",
					    opt.servers.v[i], WEXITSTATUS(status));
					sleep(1);
					pids[i] = fork();
					if (pids[i] == 0) {
						opt.server = opt.servers.v[i];
						_exit(watch_one());
					}
					if (pids[i] > 0)
						alive++;
				}
			}
			if (alive == 0)
				break;
		}
	}
	free(pids);
	return 0;
}

static int watch_mode(void)
{
	struct sigaction sa;
	sigset_t block;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	/* Blocked everywhere but in the interruptible waits (sig_open). */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &sig_open);
	sigdelset(&sig_open, SIGTERM);
	sigdelset(&sig_open, SIGINT);
	sigaddset(&sig_open, SIGCHLD);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (opt.servers.n == 1) {
		opt.server = opt.servers.v[0];
		return watch_one();
	}
	return watch_all();
}

/* ---- configuration ---- */

static int set_option(const char *key, const char *val)
{
	if (strcmp(key, "server") == 0) {
		/* Repeatable; the command line's replace the file's. */
		if (opt.servers_cli == 1) {
			strlist_free(&opt.servers);
			opt.servers_cli = 2;
		}
		strlist_add(&opt.servers, val);
	} else if (strcmp(key, "watch") == 0) {
		if (config_parse_bool(val, &opt.watch) < 0)
			return -1;
	} else if (strcmp(key, "interval") == 0) {
		long sec;

		if (config_parse_duration(val, &sec) < 0 || sec <= 0 ||
		    sec > 7 * 86400)
			return -1;
		opt.interval = sec;
	} else if (strcmp(key, "user") == 0) {
		free(opt.user);
		opt.user = xstrdup(val);
	} else if (strcmp(key, "password-file") == 0 || strcmp(key, "password_file") == 0) {
		free(opt.password_file);
		opt.password_file = xstrdup(val);
	} else if (strcmp(key, "domain") == 0) {
		char *copy = xstrdup(val), *tok, *save = NULL;

		for (tok = strtok_r(copy, " ,\t", &save); tok != NULL;
		    tok = strtok_r(NULL, " ,\t", &save))
			strlist_add(&opt.domains, tok);
		free(copy);
	} else if (strcmp(key, "deliver") == 0) {
		free(opt.deliver);
		opt.deliver = xstrdup(val);
	} else if (strcmp(key, "lmtp") == 0) {
		if (config_parse_bool(val, &opt.lmtp) < 0)
			return -1;
	} else if (strcmp(key, "tls") == 0) {
		if ((opt.tls = odpull_tls_mode(val)) < 0)
			return -1;
		opt.tls_set = 1;
	} else if (strcmp(key, "deliver-tls") == 0 ||
	    strcmp(key, "deliver_tls") == 0) {
		if ((opt.deliver_tls = odpull_tls_mode(val)) < 0)
			return -1;
	} else if (strcmp(key, "tls-fingerprint") == 0 ||
	    strcmp(key, "tls_fingerprint") == 0 ||
	    strcmp(key, "deliver-fingerprint") == 0 ||
	    strcmp(key, "deliver_fingerprint") == 0) {
		struct tlspolicy_fp fp[TLSPOLICY_MAX_FP];
		char err[200];
		size_t n;

		if (tlspolicy_fp_parse(val, fp, TLSPOLICY_MAX_FP, &n, err,
		    sizeof(err)) < 0 || n == 0)
			return -1;
		if (key[0] == 't') {
			free(opt.tls_fingerprint);
			opt.tls_fingerprint = xstrdup(val);
		} else {
			free(opt.deliver_fingerprint);
			opt.deliver_fingerprint = xstrdup(val);
		}
	} else if (strcmp(key, "ca-file") == 0 || strcmp(key, "ca_file") == 0) {
		free(opt.ca_file);
		opt.ca_file = xstrdup(val);
	} else if (strcmp(key, "timeout") == 0) {
		long sec;

		if (config_parse_duration(val, &sec) < 0 || sec <= 0 || sec > 86400)
			return -1;
		opt.timeout = (int)sec;
	} else if (strcmp(key, "max-time") == 0 || strcmp(key, "max_time") == 0) {
		long sec;

		if (strcmp(val, "0") == 0)
			sec = 0;
		else if (config_parse_duration(val, &sec) < 0 || sec <= 0 ||
		    sec > 7 * 86400)
			return -1;
		opt.max_time = (int)sec;
	} else if (strcmp(key, "hostname") == 0) {
		free(opt.hostname);
		opt.hostname = xstrdup(val);
	} else {
		return -2;
	}
	return 0;
}

/* odpull's file: the same "key = value" syntax as odrelay.conf. */
static void load_config(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[2048];
	int lineno = 0, bad = 0;

	if (f == NULL) {
		fprintf(stderr, "odpull: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *eq, *key, *val, *end;
		int rc;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			fprintf(stderr, "%s:%d: line too long\n", path, lineno);
			bad = 1;
			break;
		}
		if ((end = strchr(p, '#')) != NULL)
			*end = '\0';
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '\0')
			continue;
		if ((eq = strchr(p, '=')) == NULL) {
			fprintf(stderr, "%s:%d: expected key = value\n", path, lineno);
			bad = 1;
			continue;
		}
		*eq = '\0';
		key = p;
		val = eq + 1;
		for (end = eq; end > key && isspace((unsigned char)end[-1]); end--)
			end[-1] = '\0';
		while (isspace((unsigned char)*val))
			val++;
		for (end = val + strlen(val); end > val && isspace((unsigned char)end[-1]); end--)
			end[-1] = '\0';
		rc = set_option(key, val);
		if (rc == -2) {
			fprintf(stderr, "%s:%d: unknown key '%s'\n", path, lineno, key);
			bad = 1;
		} else if (rc < 0) {
			fprintf(stderr, "%s:%d: bad value for %s: '%s'\n", path, lineno, key, val);
			bad = 1;
		}
	}
	fclose(f);
	if (bad)
		exit(2);
}

static char *read_password(void)
{
	const char *env = getenv("ODPULL_PASSWORD");
	char buf[1024];
	FILE *f;
	size_t n;

	if (opt.password_file != NULL) {
		f = fopen(opt.password_file, "r");
		if (f == NULL) {
			fprintf(stderr, "odpull: %s: %s\n", opt.password_file, strerror(errno));
			exit(2);
		}
		if (fgets(buf, sizeof(buf), f) == NULL)
			buf[0] = '\0';
		fclose(f);
		n = strcspn(buf, "\r\n");
		buf[n] = '\0';
		return xstrdup(buf);
	}
	if (env != NULL)
		return xstrdup(env);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "user", required_argument, NULL, 'u' },
		{ "password-file", required_argument, NULL, 'p' },
		{ "domain", required_argument, NULL, 'D' },
		{ "deliver", required_argument, NULL, 'l' },
		{ "lmtp", no_argument, NULL, 'L' },
		{ "tls", required_argument, NULL, 'T' },
		{ "ca-file", required_argument, NULL, 'C' },
		{ "tls-fingerprint", required_argument, NULL, 'F' },
		{ "deliver-tls", required_argument, NULL, 'G' },
		{ "deliver-fingerprint", required_argument, NULL, 'H' },
		{ "timeout", required_argument, NULL, 't' },
		{ "max-time", required_argument, NULL, 'M' },
		{ "etrn", no_argument, NULL, 'E' },
		{ "watch", no_argument, NULL, 'W' },
		{ "interval", required_argument, NULL, 'I' },
		{ "config", required_argument, NULL, 'c' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	char host[256];
	int ch, rc;

	opt.tls = TLSPOLICY_VERIFY;
	opt.deliver_tls = TLSPOLICY_NONE;
	opt.timeout = 300;
	opt.max_time = 3600;
	opt.interval = 300;
	/* A -c file first, so the command line overrides it. */
	for (int i = 1; i < argc - 1; i++)
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
			load_config(argv[i + 1]);
	opt.servers_cli = 1;
	while ((ch = getopt_long(argc, argv, "c:vVh", longopts, NULL)) != -1) {
		const char *key = NULL;

		switch (ch) {
		case 's': key = "server"; break;
		case 'u': key = "user"; break;
		case 'p': key = "password-file"; break;
		case 'D': key = "domain"; break;
		case 'l': key = "deliver"; break;
		case 'L': opt.lmtp = 1; break;
		case 'T': key = "tls"; break;
		case 'C': key = "ca-file"; break;
		case 'F': key = "tls-fingerprint"; break;
		case 'G': key = "deliver-tls"; break;
		case 'H': key = "deliver-fingerprint"; break;
		case 't': key = "timeout"; break;
		case 'M': key = "max-time"; break;
		case 'E': opt.etrn = 1; break;
		case 'W': opt.watch = 1; break;
		case 'I': key = "interval"; break;
		case 'c': break;
		case 'v': opt.verbose = 1; break;
		case 'V':
			printf("odpull %s\n", OD_VERSION);
			return 0;
		case 'h':
			print_usage(stdout);
			exit(0);
		default:
			die_usage("bad usage");
		}
		if (key != NULL && set_option(key, optarg) < 0)
			die_usage("bad value for --%s: %s", key, optarg);
	}
	if (optind != argc)
		die_usage("unexpected argument %s", argv[optind]);
	if (opt.servers.n == 0)
		die_usage("--server is required");
	if (opt.tls == TLSPOLICY_FINGERPRINT && opt.tls_fingerprint == NULL)
		die_usage("--tls fingerprint needs --tls-fingerprint");
	if (opt.deliver_tls == TLSPOLICY_FINGERPRINT &&
	    opt.deliver_fingerprint == NULL)
		die_usage("--deliver-tls fingerprint needs --deliver-fingerprint");
	opt.server = opt.servers.v[0];
	if (opt.hostname == NULL) {
		if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
			util_strlcpy(host, "localhost", sizeof(host));
		host[sizeof(host) - 1] = '\0';
		opt.hostname = xstrdup(host);
	}
	signal(SIGPIPE, SIG_IGN);
	if (opt.etrn) {
		if (opt.domains.n == 0)
			die_usage("--etrn needs at least one --domain");
		if (opt.watch)
			die_usage("--watch works with ATRN, not --etrn");
		if (!opt.tls_set)
			opt.tls = TLSPOLICY_MAY;
		rc = 0;
		for (size_t i = 0; i < opt.servers.n; i++) {
			opt.server = opt.servers.v[i];
			if (etrn_mode() != 0)
				rc = 1;
		}
		return rc;
	}
	if (opt.user == NULL)
		die_usage("--user is required");
	opt.password = read_password();
	if (opt.password == NULL)
		die_usage("no password: use --password-file FILE or ODPULL_PASSWORD");
	if (opt.deliver == NULL)
		opt.deliver = xstrdup(opt.lmtp ? "127.0.0.1:24" : "127.0.0.1:25");
	if (opt.watch) {
		rc = watch_mode();
	} else {
		rc = 0;
		for (size_t i = 0; i < opt.servers.n; i++) {
			opt.server = opt.servers.v[i];
			if (atrn_mode() != 0)
				rc = 1;
		}
	}
	explicit_bzero(opt.password, strlen(opt.password));
	return rc;
}
