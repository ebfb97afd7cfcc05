/*
 * odpull_conn - odpull's blocking connections (poll() timeouts on every
 * read and write, deadlines per reply and per pull, TLS) and the provider
 * side of a pull: EHLO, STARTTLS (verified per --tls), AUTH.
 *
 * Trust: the provider's and the local MTA's replies are bounded
 * (LINE_MAX_IN per line, REPLY_MAX_LINES and REPLY_MAX_BYTES per reply).
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
#include "odpull_private.h"

/* ---- connection layer ---- */

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

int conn_connect(struct conn *c, const char *hostport, int defport)
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

void conn_close(struct conn *c)
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

ssize_t conn_read_some(struct conn *c, char *buf, size_t len)
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

int conn_write(struct conn *c, const char *data, size_t len)
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
int conn_reply(struct conn *c, struct smtp_reply *r)
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

/* 1 if the EHLO reply lists keyword (case-insensitive, as a whole word). */
int reply_has(const struct smtp_reply *r, const char *kw, char *arg_r,
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
