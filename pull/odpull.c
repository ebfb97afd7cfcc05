/*
 * odpull - the customer side of ODMR (RFC 2645) and ETRN (RFC 1985): main,
 * options, configuration and the modes. The connection layer and the
 * provider side are in odpull_conn.c, the reversed session in
 * odpull_relay.c, --watch in odpull_watch.c.
 *
 * ATRN mode: connect to the provider, STARTTLS (verified), AUTH, ATRN, then
 * act as the SMTP server of the reversed session while relaying every
 * command straight through to the local MTA: the provider is answered only
 * with what the local MTA answered, so odpull never holds mail and never
 * acknowledges what the local MTA has not accepted.
 *
 * odpull is a short-lived command-line client on one libevent loop: its
 * client sides are smtpc sessions (command mode), its steps are taken one
 * at a time, each wait running the loop until its reply, line or deadline
 * (odpull_conn.c).
 *
 * --watch (push delivery) runs until SIGTERM: log in, XWAIT, pull, wait
 * again; one child process per provider when there are several. SIGTERM
 * comes through the loop and ends only the waits that may be cut short
 * (waiting for mail, sleeping, between messages), so it never lands
 * inside a message.
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

#include <event2/event.h>
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

/* --watch: SIGTERM came (the loop's handler in a watcher, watch_all's in the
 * parent of several). */
volatile sig_atomic_t stop_requested;
sigset_t sig_open;	/* watch_all: the mask while waiting for children */

struct opts opt;

/* A SIGTERM may be pending while the provider keeps us busy without a
 * wait (its next command already read): look, between messages. */
int stop_pending(void)
{
	if (!stop_requested && opt.watch)
		event_base_loop(odpull_base(), EVLOOP_NONBLOCK);
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

static void __attribute__((format(printf, 1, 0)))
vmsg(const char *fmt, va_list ap)
{
	fprintf(stderr, "odpull: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void die_usage(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	print_usage(stderr);
	exit(2);
}

void msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
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
	int rc = 1;

	memset(&t, 0, sizeof(t));
	if (opt.tls != TLSPOLICY_NONE) {
		ctx = side_ctx(opt.tls, err, sizeof(err));
		if (ctx == NULL) {
			msg("TLS: %s", err);
			return 1;
		}
	}
	if (provider_hello(&p, 366, &caps, host, sizeof(host), "provider") < 0)
		goto out;
	if (!smtp_reply_keyword(&caps, "ATRN", NULL, 0)) {
		msg("provider: does not offer ATRN");
		goto out;
	}
	if (provider_tls(&p, &caps, ctx, host) < 0)
		goto out;
	if (authenticate(&p, &caps, p.tls) < 0)
		goto out;
	if (atrn_domains(domains, sizeof(domains)) < 0)
		goto out;
	/* RFC 2645 5.2.1: the provider may take up to 10 minutes. */
	p.timeout = opt.timeout > 600 ? opt.timeout : 600;
	if (conn_printf(&p, domains[0] ? "ATRN %s" : "ATRN%s", domains) < 0 ||
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
	int rc = 1;

	if (opt.tls != TLSPOLICY_NONE) {
		ctx = side_ctx(opt.tls, err, sizeof(err));
		if (ctx == NULL) {
			msg("TLS: %s", err);
			return 1;
		}
	}
	if (provider_hello(&p, 25, &caps, host, sizeof(host), "provider") < 0 ||
	    provider_tls(&p, &caps, ctx, host) < 0)
		goto out;
	if (!smtp_reply_keyword(&caps, "ETRN", NULL, 0))
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

/* ---- configuration ---- */

/* HOST[:PORT] / [IPv6][:PORT] that conn_connect will take: a malformed
 * one is a usage error (exit 2), not a failed pull. */
static int odpull_hostport_ok(const char *val)
{
	char host[256];
	int port;

	return util_split_hostport(val, host, sizeof(host), &port, 1) == 0 &&
	    host[0] != '\0';
}

/* A domain (one trailing dot allowed), or ETRN's @domain and #queue. */
static int odpull_domain_ok(const char *tok)
{
	if (tok[0] == '#')
		return tok[1] != '\0';
	return util_domain_valid_dot(tok + (tok[0] == '@'));
}

static int set_option(const char *key, const char *val)
{
	if ((strcmp(key, "server") == 0 || strcmp(key, "deliver") == 0) &&
	    !odpull_hostport_ok(val))
		return -1;
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
		    tok = strtok_r(NULL, " ,\t", &save)) {
			if (!odpull_domain_ok(tok)) {
				free(copy);
				return -1;
			}
			/* "example.org." is example.org; ATRN takes no final dot
			 * (RFC 2645), ETRN either. */
			if (tok[0] != '#' && strlen(tok) > 1 &&
			    tok[strlen(tok) - 1] == '.')
				tok[strlen(tok) - 1] = '\0';
			strlist_add(&opt.domains, tok);
		}
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
	/* spec: 127.0.0.1:25 whether it speaks SMTP or LMTP there. */
	if (opt.deliver == NULL)
		opt.deliver = xstrdup("127.0.0.1:25");
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
