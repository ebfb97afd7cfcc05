/*
 * odpull_watch - --watch (push delivery): log in, XWAIT, pull, wait again,
 * with back-off; one child process per provider when there are several.
 * SIGTERM is only taken inside the waits that may be cut short.
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

/* SIGTERM / SIGINT on the loop (watch_one): the waits that may be cut
 * short look at stop_requested; the others finish first. */
static void watch_on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	stop_requested = 1;
}

/* Sleep up to ms, cut short by SIGTERM. */
static void watch_sleep(long ms)
{
	long long end = now_ms() + ms;

	while (!stop_requested && now_ms() < end)
		odpull_run(end - now_ms());
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
	int nomail, empty = 0;

	*logged_in_r = 0;
	if (atrn_domains(domains, sizeof(domains)) < 0)
		return WATCH_FAIL;
	if (provider_hello(&p, 366, &caps, host, sizeof(host), opt.server) < 0)
		goto out;
	util_tcp_keepalive(p.fd);
	if (!smtp_reply_keyword(&caps, "ATRN", NULL, 0)) {
		msg("%s: does not offer ATRN", opt.server);
		goto out;
	}
	if (provider_tls(&p, &caps, ctx, host) < 0 ||
	    authenticate(&p, &caps, p.tls) < 0)
		goto out;
	*logged_in_r = 1;
	if (!smtp_reply_keyword(&caps, "XWAIT", NULL, 0)) {
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
	struct event *sigterm, *sigint;
	sigset_t open;
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
	/* The signals come through the loop from here on (blocked until
	 * libevent's handlers are in place). */
	sigterm = evsignal_new(odpull_base(), SIGTERM, watch_on_signal, NULL);
	sigint = evsignal_new(odpull_base(), SIGINT, watch_on_signal, NULL);
	if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) < 0 ||
	    evsignal_add(sigint, NULL) < 0) {
		msg("cannot watch for signals");
		return 2;
	}
	sigemptyset(&open);
	sigaddset(&open, SIGTERM);
	sigaddset(&open, SIGINT);
	sigprocmask(SIG_UNBLOCK, &open, NULL);
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
	event_free(sigterm);
	event_free(sigint);
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

int watch_mode(void)
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
