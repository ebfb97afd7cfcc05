/*
 * odpull_relay - the reversed session after ATRN: odpull is the SMTP
 * server of the provider and relays every command to the local MTA,
 * answering the provider only with the local MTA's reply, so nothing is
 * acknowledged that the local MTA has not accepted.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
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

/* ---- the reversed session: provider -> odpull -> local MTA ---- */

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

	if (conn_connect(l, opt.deliver, 25) < 0)
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
	char buf[16384];
	size_t block = 0;
	int bad = 0;

	*bytes_r = 0;
	conn_deadline(p);
	for (;;) {
		size_t start = 0, i, len;
		ssize_t r = conn_peek(p, buf, sizeof(buf));

		if (r <= 0) {
			p->dead = 1;
			p->until = 0;
			return -1;	/* provider gone: the mail stays there */
		}
		len = (size_t)r;
		if ((block += len) >= DATA_BLOCK) {
			block = 0;
			conn_deadline(p);
		}
		for (i = 0; i < len; i++) {
			char c = buf[i];
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
					conn_write(l, buf + start, i - start);
				if (!bad)
					conn_drop(l);
				bad = 1;
				st = c == '\r' ? CR : MID;
				continue;
			}
			if (st == DOTCR) {
				/* Forward the final ".\r\n" too. */
				if (!bad && !l->dead)
					conn_write(l, buf + start, i + 1 - start);
				*bytes_r += i + 1 - start;
				*bytes_r = *bytes_r >= 3 ? *bytes_r - 3 : 0;
				conn_consume(p, i + 1);
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
			conn_write(l, buf + start, len - start);
		*bytes_r += len - start;
		conn_consume(p, len);
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

int reversed_session(struct conn *p, struct tally *t)
{
	struct conn local = { .fd = -1, .name = "local", .timeout = opt.timeout,
	    .verbose = opt.verbose };
	struct smtp_reply caps, r;
	char line[LINE_MAX_IN], verb[SMTP_VERB_MAX + 1], sizearg[64];
	unsigned tx_rcpts = 0;
	int in_tx = 0, status = 0, local_in_data = 0, reopen = 0, rc;

	/* The roles reverse: the provider's commands are ours to read. */
	conn_serve(p);
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
			if (smtp_reply_keyword(&caps, "SIZE", sizearg, sizeof(sizearg)))
				conn_printf(p, "250-SIZE %s", sizearg);
			if (smtp_reply_keyword(&caps, "8BITMIME", NULL, 0))
				conn_printf(p, "250-8BITMIME");
			if (smtp_reply_keyword(&caps, "SMTPUTF8", NULL, 0))
				conn_printf(p, "250-SMTPUTF8");
			if (smtp_reply_keyword(&caps, "DSN", NULL, 0))
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
