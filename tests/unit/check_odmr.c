/*
 * check_odmr - the ODMR listener's state machine (RFC 2645): sessions are
 * handed a socketpair with odmr_adopt and driven from the other end in the
 * same thread, pumping the event loop until each reply is complete.
 * Real password file, real queue (asynchronous writes), no network.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "odmr.h"
#include "authc.h"
#include "passwd.h"
#include "queue.h"
#include "sasl.h"
#include "tls.h"
#include "util.h"
#include "xmalloc.h"

#define REPLY_WAIT_MS	2000
#define DELAY_WAIT_MS	5000	/* failed AUTH: 1 s throttle delay first */

/* ---- fixture: temp dir, password file, config, queue, odmr ---- */

static char tdir[64];
static struct config *cfg;
static struct event_base *base;
static struct queue *q;
static struct odmr *o;
static struct authc *authcl;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void write_passwd(const char *path)
{
	const char *cust_doms[] = { "cust.example" };
	const char *other_doms[] = { "other.example" };
	char err[256], *l1, *l2;
	FILE *f;

	l1 = passwd_make_entry("cust", "secret", cust_doms, 1, err, sizeof(err));
	ck_assert_msg(l1 != NULL, "passwd_make_entry: %s", err);
	l2 = passwd_make_entry("other", "othersecret", other_doms, 1, err,
	    sizeof(err));
	ck_assert_msg(l2 != NULL, "passwd_make_entry: %s", err);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fchmod(fileno(f), 0600), 0);
	fprintf(f, "# test users\n%s\n%s\n", l1, l2);
	ck_assert_int_eq(fclose(f), 0);
	free(l1);
	free(l2);
}

static void setup(void)
{
	char err[256];

	strcpy(tdir, "/tmp/check_odmr.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
	cfg = config_defaults();
	ck_assert_ptr_nonnull(cfg);
	free(cfg->hostname);
	cfg->hostname = xstrdup("relay.test");
	free(cfg->passwd_file);
	cfg->passwd_file = xasprintf("%s/passwd", tdir);
	free(cfg->queue_dir);
	cfg->queue_dir = xasprintf("%s/queue", tdir);
	cfg->auth_requires_tls = 1;
	cfg->max_errors = 20;
	cfg->smtp_timeout = 30;
	cfg->domains = xcalloc(2, sizeof(*cfg->domains));
	cfg->ndomains = 2;
	cfg->domains[0].name = xstrdup("cust.example");
	cfg->domains[0].hold = 1;
	cfg->domains[0].route_port = 25;
	cfg->domains[0].queue_lifetime = cfg->queue_lifetime;
	cfg->domains[1].name = xstrdup("other.example");
	cfg->domains[1].hold = 1;
	cfg->domains[1].route_port = 25;
	cfg->domains[1].queue_lifetime = cfg->queue_lifetime;
	write_passwd(cfg->passwd_file);
	ck_assert_int_eq(mkdir(cfg->queue_dir, 0700), 0);

	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	q = queue_open(cfg->queue_dir, base, 64 << 20, err, sizeof(err));
	ck_assert_msg(q != NULL, "queue_open: %s", err);
	err[0] = '\0';
	o = odmr_new(base, cfg, q, NULL, err, sizeof(err));
	ck_assert_msg(o != NULL, "odmr_new: %s", err);
	/* The auth server in this process (odrelayd runs it apart). */
	authcl = authc_new_local(base, cfg, err, sizeof(err));
	ck_assert_msg(authcl != NULL, "authc_new_local: %s", err);
	odmr_set_auth(o, authcl);
}

static void teardown(void)
{
	char cmd[128];

	odmr_free(&o);
	authc_free(&authcl);
	queue_close(&q);
	/* Closes odmr_free left lingering over unsent output. */
	tls_linger_free_all();
	event_base_free(base);
	base = NULL;
	config_free(&cfg);
	sasl_test_set_nonces(NULL, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tdir);
}

/* ---- the client end ---- */

struct client {
	int fd;
	char buf[32768];
	size_t len;
	int eof;
};

static void client_open(struct client *c)
{
	struct sockaddr_in sin;
	int fds[2];

	memset(c, 0, sizeof(*c));
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(40000);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(odmr_adopt(o, fds[0], (struct sockaddr *)&sin, 0), 0);
	c->fd = fds[1];
}

static void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* One round: run what is ready, then wait up to ms for our side. */
static void pump(struct client *c, int ms)
{
	struct pollfd pfd;
	ssize_t n;

	event_base_loop(base, EVLOOP_NONBLOCK);
	if (c == NULL || c->fd < 0 || c->eof) {
		if (ms > 0)
			poll(NULL, 0, ms);
		return;
	}
	pfd.fd = c->fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (poll(&pfd, 1, ms) <= 0)
		return;
	if (c->len >= sizeof(c->buf) - 1)
		return;
	n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		c->eof = 1;
	else if (n > 0)
		c->len += (size_t)n;
	c->buf[c->len] = '\0';
}

/* Length of a complete reply (all its lines) at the start of buf, or 0. */
static size_t reply_complete(const struct client *c)
{
	size_t off = 0;

	while (off < c->len) {
		const char *eol = memchr(c->buf + off, '\n', c->len - off);
		size_t linelen;

		if (eol == NULL)
			return 0;
		linelen = (size_t)(eol - (c->buf + off)) + 1;
		if (linelen < 5 || c->buf[off + 3] != '-')
			return off + linelen;
		off += linelen;
	}
	return 0;
}

/*
 * Wait (bounded) for one complete reply; returns its code (0 on timeout
 * or EOF) and copies the text (CRLFs kept) into out.
 */
static int client_reply_wait(struct client *c, char *out, size_t outsize,
    int wait_ms)
{
	double end = now_ms() + wait_ms;
	size_t n;

	out[0] = '\0';
	while ((n = reply_complete(c)) == 0) {
		if (c->eof || now_ms() > end)
			return 0;
		pump(c, 10);
	}
	snprintf(out, outsize, "%.*s", (int)n, c->buf);
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
	c->buf[c->len] = '\0';
	return atoi(out);
}

static int client_reply(struct client *c, char *out, size_t outsize)
{
	return client_reply_wait(c, out, outsize, REPLY_WAIT_MS);
}

static void client_send(struct client *c, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(c->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_int_gt(n, 0);
		p += n;
		len -= (size_t)n;
	}
}

static void client_sends(struct client *c, const char *s)
{
	client_send(c, s, strlen(s));
}

/* Send a command line (CRLF added); returns the reply code. */
static int cmd(struct client *c, const char *line, char *out, size_t outsize)
{
	client_sends(c, line);
	client_sends(c, "\r\n");
	return client_reply(c, out, outsize);
}

/* Wait (bounded) until the server closed its end; 1 if it did. */
static int client_wait_eof(struct client *c, int wait_ms)
{
	double end = now_ms() + wait_ms;

	while (!c->eof && now_ms() < end)
		pump(c, 10);
	return c->eof;
}

static void client_greeting(struct client *c)
{
	char r[512];

	ck_assert_int_eq(client_reply(c, r, sizeof(r)), 220);
}

/* Answer a CRAM-MD5 challenge (334 base64) for user/password. */
static void cram_response(const char *reply334, const char *user,
    const char *password, char *out, size_t outsize)
{
	unsigned char chal[512], digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	char resp[600], hex[2 * EVP_MAX_MD_SIZE + 1];
	const char *b64 = reply334 + 4;
	size_t b64len = strcspn(b64, "\r\n");
	int n, i;

	ck_assert_int_eq(strncmp(reply334, "334 ", 4), 0);
	n = util_base64_decode(b64, b64len, chal, sizeof(chal));
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_nonnull(HMAC(EVP_md5(), password, (int)strlen(password),
	    chal, (size_t)n, digest, &dlen));
	ck_assert_uint_eq(dlen, 16);
	for (i = 0; i < (int)dlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	snprintf(resp, sizeof(resp), "%s %s", user, hex);
	ck_assert_int_gt(util_base64_encode((const unsigned char *)resp,
	    strlen(resp), out, outsize), 0);
}

static void client_auth(struct client *c)
{
	char r[1024], resp[1024];

	ck_assert_int_eq(cmd(c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	cram_response(r, "cust", "secret", resp, sizeof(resp));
	ck_assert_int_eq(cmd(c, resp, r, sizeof(r)), 235);
}

static void put_done(void *arg, int result)
{
	*(int *)arg = result;
}

/* One message for rcpt, committed (the loop runs until it is). */
static void put_message(const char *rcpt, char *id_r)
{
	static const char body[] = "Subject: held\r\n\r\nhello\r\n";
	struct queue_envelope env;
	struct queue_rcpt r;
	struct queue_put *p = queue_put_begin(q);
	double end = now_ms() + REPLY_WAIT_MS;
	int result = 1;

	ck_assert_ptr_nonnull(p);
	memset(&env, 0, sizeof(env));
	memset(&r, 0, sizeof(r));
	r.addr = (char *)rcpt;
	r.domain = strchr(rcpt, '@') + 1;
	r.next_attempt = 0;
	env.sender = (char *)"sender@example.net";
	env.arrival = time(NULL);
	env.rcpts = &r;
	env.nrcpts = 1;
	strcpy(id_r, queue_put_id(p));
	ck_assert_int_eq(queue_put_write(p, body, sizeof(body) - 1), 0);
	queue_put_commit(p, &env, put_done, &result);
	while (result == 1 && now_ms() < end)
		pump(NULL, 5);
	ck_assert_int_eq(result, QUEUE_OK);
}

struct find_id {
	const char *id;
	int found;
};

static int find_id_cb(void *arg, const char *id)
{
	struct find_id *f = arg;

	if (strcmp(f->id, id) == 0)
		f->found++;
	return 0;
}

static int queued_for(const char *domain, const char *id)
{
	struct find_id f = { id, 0 };

	ck_assert_int_eq(queue_foreach_domain(q, domain, find_id_cb, &f),
	    QUEUE_OK);
	return f.found;
}

/* ---- tests ---- */

START_TEST(test_greeting)
{
	struct client c;
	char r[512];

	client_open(&c);
	ck_assert_uint_eq(odmr_session_count(o), 1);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 220);
	ck_assert_ptr_nonnull(strstr(r, "relay.test"));
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&c, "RSET", r, sizeof(r)), 250);
	client_close(&c);
}
END_TEST

START_TEST(test_ehlo)
{
	struct client c;
	char r[1024], *auth;

	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "EHLO", r, sizeof(r)), 501);
	ck_assert_int_eq(cmd(&c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_int_eq(strncmp(r, "250-relay.test\r\n", 16), 0);
	auth = strstr(r, "250-AUTH ");
	ck_assert_ptr_nonnull(auth);
	*strchr(auth, '\r') = '\0';
	ck_assert_ptr_nonnull(strstr(auth, "CRAM-MD5"));
	ck_assert_ptr_nonnull(strstr(auth, "SCRAM-SHA-256"));
	/* No TLS and auth_requires_tls: no plaintext mechanisms. */
	ck_assert_ptr_null(strstr(auth, "PLAIN"));
	ck_assert_ptr_null(strstr(auth, "LOGIN"));
	ck_assert_ptr_nonnull(strstr(auth + strlen(auth) + 1, "250 ATRN\r\n"));
	/* No TLS context: STARTTLS neither offered nor accepted. */
	ck_assert_int_eq(cmd(&c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_ptr_null(strstr(r, "STARTTLS"));
	ck_assert_int_eq(cmd(&c, "STARTTLS", r, sizeof(r)), 502);
	ck_assert_int_eq(cmd(&c, "HELO cust.test", r, sizeof(r)), 502);
	client_close(&c);
}
END_TEST

START_TEST(test_ehlo_plain_allowed)
{
	struct client c;
	char r[1024];

	cfg->auth_requires_tls = 0;
	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_ptr_nonnull(strstr(r, "PLAIN"));
	ck_assert_ptr_nonnull(strstr(r, "LOGIN"));
	client_close(&c);
}
END_TEST

START_TEST(test_atrn_needs_auth)
{
	struct client c;
	char r[512];

	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "ATRN", r, sizeof(r)), 530);
	ck_assert_int_eq(cmd(&c, "ATRN cust.example", r, sizeof(r)), 530);
	ck_assert_int_eq(cmd(&c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&c, "atrn cust.example", r, sizeof(r)), 530);
	client_close(&c);
}
END_TEST

START_TEST(test_smtp_commands_refused)
{
	static const char *const cmds[] = {
		"MAIL FROM:<a@b.example>", "RCPT TO:<c@cust.example>", "DATA",
		"ETRN cust.example", "TURN", "VRFY cust", "BDAT 10 LAST"
	};
	struct client c;
	char r[512];
	size_t i;

	client_open(&c);
	client_greeting(&c);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		ck_assert_msg(cmd(&c, cmds[i], r, sizeof(r)) == 502,
		    "%s: %s", cmds[i], r);
	/* Same after AUTH. */
	client_auth(&c);
	for (i = 0; i < 5; i++)
		ck_assert_msg(cmd(&c, cmds[i], r, sizeof(r)) == 502,
		    "%s: %s", cmds[i], r);
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	client_close(&c);
}
END_TEST

START_TEST(test_max_errors)
{
	struct client c;
	char r[512];

	cfg->max_errors = 3;
	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "MAIL FROM:<>", r, sizeof(r)), 502);
	ck_assert_int_eq(cmd(&c, "DATA", r, sizeof(r)), 502);
	ck_assert_int_eq(cmd(&c, "TURN", r, sizeof(r)), 421);
	ck_assert_int_eq(client_wait_eof(&c, REPLY_WAIT_MS), 1);
	ck_assert_uint_eq(odmr_session_count(o), 0);
	client_close(&c);
}
END_TEST

START_TEST(test_auth_mechanisms)
{
	struct client c;
	char r[512];

	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&c, "AUTH FOO", r, sizeof(r)), 504);
	ck_assert_int_eq(cmd(&c, "AUTH", r, sizeof(r)), 501);
	/* "cust\0cust\0secret" would be right: refused before it is looked at. */
	ck_assert_int_eq(cmd(&c, "AUTH PLAIN AGN1c3QAc2VjcmV0", r, sizeof(r)),
	    538);
	ck_assert_int_eq(cmd(&c, "AUTH PLAIN", r, sizeof(r)), 538);
	ck_assert_int_eq(cmd(&c, "AUTH LOGIN", r, sizeof(r)), 538);
	/* Still not authenticated. */
	ck_assert_int_eq(cmd(&c, "ATRN", r, sizeof(r)), 530);
	client_close(&c);
}
END_TEST

START_TEST(test_auth_cram_ok)
{
	struct client c;
	char r[1024];

	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 503);
	/* After AUTH, EHLO no longer offers AUTH; ATRN still. */
	ck_assert_int_eq(cmd(&c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_ptr_null(strstr(r, "AUTH"));
	ck_assert_ptr_nonnull(strstr(r, "250 ATRN\r\n"));
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	client_close(&c);
}
END_TEST

START_TEST(test_auth_cram_fixed_challenge)
{
	struct client c;
	char r[1024], resp[1024];

	sasl_test_set_nonces(NULL, NULL, "<1896.697170952@relay.test>");
	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	ck_assert_str_eq(r, "334 PDE4OTYuNjk3MTcwOTUyQHJlbGF5LnRlc3Q+\r\n");
	cram_response(r, "cust", "secret", resp, sizeof(resp));
	ck_assert_int_eq(cmd(&c, resp, r, sizeof(r)), 235);
	client_close(&c);
}
END_TEST

START_TEST(test_auth_cram_wrong)
{
	struct client c;
	char r[1024], resp[1024];
	double t0;

	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	cram_response(r, "cust", "wrong", resp, sizeof(resp));
	t0 = now_ms();
	client_sends(&c, resp);
	client_sends(&c, "\r\n");
	/* A command pipelined during the delay is answered after it. */
	client_sends(&c, "NOOP\r\n");
	ck_assert_int_eq(client_reply_wait(&c, r, sizeof(r), DELAY_WAIT_MS), 535);
	ck_assert_msg(now_ms() - t0 >= 900, "535 after %.0f ms", now_ms() - t0);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 250);
	/* Not authenticated; a right answer still works afterwards. */
	ck_assert_int_eq(cmd(&c, "ATRN", r, sizeof(r)), 530);
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	cram_response(r, "cust", "secret", resp, sizeof(resp));
	ck_assert_int_eq(cmd(&c, resp, r, sizeof(r)), 235);
	client_close(&c);
}
END_TEST

START_TEST(test_auth_unknown_user)
{
	struct client c;
	char r[1024], resp[1024];

	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	cram_response(r, "nobody", "secret", resp, sizeof(resp));
	client_sends(&c, resp);
	client_sends(&c, "\r\n");
	ck_assert_int_eq(client_reply_wait(&c, r, sizeof(r), DELAY_WAIT_MS), 535);
	client_close(&c);
}
END_TEST

START_TEST(test_auth_cancel)
{
	struct client c;
	char r[1024];

	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	ck_assert_int_eq(cmd(&c, "*", r, sizeof(r)), 501);
	/* Back to the command state, not authenticated. */
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&c, "ATRN", r, sizeof(r)), 530);
	/* Garbage instead of base64 ends the exchange too. */
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	ck_assert_int_eq(cmd(&c, "!!!not base64!!!", r, sizeof(r)), 501);
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	client_close(&c);
}
END_TEST

START_TEST(test_atrn_syntax)
{
	static const char *const bad[] = {
		"ATRN a.org, b.org", "ATRN ,a.org", "ATRN a.org,", "ATRN @a.org",
		"ATRN localhost", "ATRN a.org.", "ATRN -a.org", "ATRN a..org",
		"ATRN a.org,,b.org", "ATRN [127.0.0.1]", "ATRN cust.example b.org"
	};
	struct client c;
	char r[512];
	size_t i;

	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(cmd(&c, bad[i], r, sizeof(r)) == 501, "%s: %s",
		    bad[i], r);
	/* Syntax errors are not counted as ATRN attempts: still usable. */
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	client_close(&c);
}
END_TEST

START_TEST(test_atrn_other_domain)
{
	struct client c;
	char r[512], id[QUEUE_ID_LEN + 1];

	put_message("x@other.example", id);
	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	ck_assert_int_eq(cmd(&c, "ATRN other.example", r, sizeof(r)), 450);
	ck_assert_int_eq(strncmp(r, "450 ", 4), 0);
	ck_assert_ptr_null(strcasestr(r, "other"));
	ck_assert_ptr_null(strcasestr(r, "example"));
	/* One bad domain refuses the whole list. */
	ck_assert_int_eq(cmd(&c, "ATRN cust.example,other.example", r,
	    sizeof(r)), 450);
	ck_assert_ptr_null(strcasestr(r, "example"));
	ck_assert_int_eq(cmd(&c, "ATRN nowhere.example", r, sizeof(r)), 450);
	/* Case does not matter for the user's own domain. */
	ck_assert_int_eq(cmd(&c, "ATRN CUST.Example", r, sizeof(r)), 453);
	/* Without a list: only the user's domains, so no mail here. */
	ck_assert_int_eq(cmd(&c, "ATRN", r, sizeof(r)), 453);
	ck_assert_int_eq(queued_for("other.example", id), 1);
	client_close(&c);
}
END_TEST

START_TEST(test_atrn_no_mail)
{
	struct client c;
	char r[512];

	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	ck_assert_int_eq(cmd(&c, "ATRN cust.example", r, sizeof(r)), 453);
	/* Single line (fetchmail reads one), the text of RFC 2645. */
	ck_assert_int_eq(strncmp(r, "453 ", 4), 0);
	ck_assert_ptr_nonnull(strstr(r, "You have no mail"));
	ck_assert_int_eq(cmd(&c, "ATRN", r, sizeof(r)), 453);
	/* The session goes on. */
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	ck_assert_uint_eq(odmr_session_count(o), 1);
	client_close(&c);
}
END_TEST

/* ---- XWAIT (push delivery) ---- */

static void arrival_to_odmr(void *arg, const char *domain)
{
	odmr_arrived(arg, domain);
}

START_TEST(test_xwait)
{
	struct client c;
	char r[512], id[QUEUE_ID_LEN + 1];

	queue_set_arrival_hook(q, arrival_to_odmr, o);
	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_ptr_nonnull(strstr(r, "250-XWAIT\r\n"));
	ck_assert_int_eq(cmd(&c, "XWAIT", r, sizeof(r)), 530);
	client_auth(&c);
	ck_assert_int_eq(cmd(&c, "XWAIT other.example", r, sizeof(r)), 450);
	ck_assert_int_eq(cmd(&c, "XWAIT bad_domain", r, sizeof(r)), 501);
	/* Nothing held: no answer, the session waits. */
	client_sends(&c, "XWAIT cust.example\r\n");
	ck_assert_int_eq(client_reply_wait(&c, r, sizeof(r), 200), 0);
	ck_assert_uint_eq(odmr_waiting_count(o), 1);
	ck_assert_uint_eq(odmr_domain_waiting(o, "cust.example"), 1);
	/* Mail for another domain does not wake it. */
	put_message("x@other.example", id);
	ck_assert_int_eq(client_reply_wait(&c, r, sizeof(r), 100), 0);
	put_message("a@cust.example", id);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 250);
	ck_assert_uint_eq(odmr_waiting_count(o), 0);
	/* Held mail now: 250 at once; the session goes on. */
	ck_assert_int_eq(cmd(&c, "XWAIT", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	client_close(&c);
	queue_set_arrival_hook(q, NULL, NULL);
}
END_TEST

/*
 * A reload: the waiting session of a user still in the file is kept (no
 * reply, still waiting), the session of a removed user gets 421, and a
 * session in the middle of AUTH at the reload is checked once it succeeds.
 */
START_TEST(test_reload_sessions)
{
	const char *doms[] = { "cust.example" };
	struct client a, b, m;
	char r[1024], chal[1024], resp[1024], err[256], *line;
	uint64_t kept0 = metrics_get(METRIC_ODMR_RELOAD, "kept");
	uint64_t ended0 = metrics_get(METRIC_ODMR_RELOAD, "ended");
	FILE *f;

	client_open(&a);
	client_greeting(&a);
	client_auth(&a);
	client_sends(&a, "XWAIT cust.example\r\n");
	ck_assert_int_eq(client_reply_wait(&a, r, sizeof(r), 200), 0);
	client_open(&b);
	client_greeting(&b);
	ck_assert_int_eq(cmd(&b, "EHLO other.test", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&b, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	cram_response(r, "other", "othersecret", resp, sizeof(resp));
	ck_assert_int_eq(cmd(&b, resp, r, sizeof(r)), 235);
	client_open(&m);
	client_greeting(&m);
	ck_assert_int_eq(cmd(&m, "EHLO cust.test", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&m, "AUTH CRAM-MD5", chal, sizeof(chal)), 334);

	/* "other" leaves the password file. */
	line = passwd_make_entry("cust", "secret", doms, 1, err, sizeof(err));
	ck_assert_ptr_nonnull(line);
	f = fopen(cfg->passwd_file, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "%s\n", line);
	fclose(f);
	free(line);
	authc_reload(authcl);
	odmr_reload(o, cfg, NULL);

	ck_assert_int_eq(client_reply(&b, r, sizeof(r)), 421);
	ck_assert_ptr_nonnull(strstr(r, "4.7.0"));
	ck_assert_int_eq(client_reply_wait(&a, r, sizeof(r), 300), 0);
	ck_assert_uint_eq(odmr_waiting_count(o), 1);
	cram_response(chal, "cust", "secret", resp, sizeof(resp));
	ck_assert_int_eq(cmd(&m, resp, r, sizeof(r)), 235);
	ck_assert_int_eq(cmd(&m, "NOOP", r, sizeof(r)), 250);
	ck_assert_uint_eq(metrics_get(METRIC_ODMR_RELOAD, "kept"), kept0 + 2);
	ck_assert_uint_eq(metrics_get(METRIC_ODMR_RELOAD, "ended"), ended0 + 1);
	/* The kept waiter still ends its wait with QUIT as usual. */
	client_sends(&a, "QUIT\r\n");
	ck_assert_int_eq(client_reply(&a, r, sizeof(r)), 453);
	client_close(&a);
	client_close(&b);
	client_close(&m);
}
END_TEST

/*
 * The auth process takes the reload check and never answers (its reply
 * could not be queued): the session must not stay unread for ever; it
 * gets 421 after ODMR_RECHECK_WAIT (10 s).
 */
START_TEST(test_reload_check_unanswered)
{
	struct client a;
	struct authc *mute;
	char r[1024];
	int fds[2];
	double t0;

	client_open(&a);
	client_greeting(&a);
	client_auth(&a);
	client_sends(&a, "XWAIT cust.example\r\n");
	ck_assert_int_eq(client_reply_wait(&a, r, sizeof(r), 200), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds), 0);
	mute = authc_new(base);
	authc_set_fd(mute, fds[0]);
	odmr_set_auth(o, mute);
	t0 = now_ms();
	odmr_reload(o, cfg, NULL);
	ck_assert_int_eq(client_reply_wait(&a, r, sizeof(r), 15000), 421);
	ck_assert_ptr_nonnull(strstr(r, "4.7.0"));
	ck_assert(now_ms() - t0 >= 9000);
	client_close(&a);
	odmr_set_auth(o, authcl);
	pump(NULL, 10);
	authc_free(&mute);
	close(fds[1]);
}
END_TEST

START_TEST(test_xwait_timeout_quit_garbage)
{
	struct client c;
	char r[512];

	cfg->odmr_wait_timeout = 1;
	cfg->smtp_timeout = 1;		/* must not end the wait */
	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	client_sends(&c, "XWAIT\r\n");
	ck_assert_int_eq(client_reply_wait(&c, r, sizeof(r), 500), 0);
	ck_assert_int_eq(client_reply_wait(&c, r, sizeof(r), 3000), 453);
	/* Wait again, then QUIT: 453 for the wait, 221. */
	client_sends(&c, "XWAIT\r\nQUIT\r\n");
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 453);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 221);
	ck_assert_int_eq(client_wait_eof(&c, 1000), 1);
	client_close(&c);
	/* Anything else while waiting: 421, closed. */
	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	client_sends(&c, "XWAIT\r\nATRN\r\n");
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 421);
	ck_assert_int_eq(client_wait_eof(&c, 1000), 1);
	client_close(&c);
	ck_assert_uint_eq(odmr_waiting_count(o), 0);
}
END_TEST

/* Pump until the reversed session has written its result back. */
static void wait_unleased(struct client *c, const char *id)
{
	double end = now_ms() + REPLY_WAIT_MS;

	while (queue_is_leased(q, id) && now_ms() < end)
		pump(c, 10);
	ck_assert_int_eq(queue_is_leased(q, id), 0);
}

static void atrn_reverse(const char *atrn)
{
	struct client c;
	char r[512], id[QUEUE_ID_LEN + 1];
	struct queue_envelope *env = NULL;
	double end;

	put_message("user@cust.example", id);
	ck_assert_int_eq(queued_for("cust.example", id), 1);
	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	ck_assert_int_eq(cmd(&c, atrn, r, sizeof(r)), 250);
	/* One line only (fetchmail reads one). */
	ck_assert_ptr_eq(strstr(r, "\r\n"), r + strlen(r) - 2);
	/* The session is over; the connection belongs to the delivery. */
	ck_assert_uint_eq(odmr_session_count(o), 0);
	ck_assert_int_eq(queue_is_leased(q, id), 1);
	/* Nothing is said before the customer's 220. */
	end = now_ms() + 300;
	while (now_ms() < end)
		pump(&c, 10);
	ck_assert_uint_eq(c.len, 0);
	ck_assert_int_eq(c.eof, 0);
	client_sends(&c, "220 cust ready\r\n");
	end = now_ms() + REPLY_WAIT_MS;
	while (memchr(c.buf, '\n', c.len) == NULL && !c.eof && now_ms() < end)
		pump(&c, 10);
	ck_assert_msg(strncmp(c.buf, "EHLO relay.test\r\n", 17) == 0,
	    "got: %s", c.buf);
	/* The customer goes away: nothing was confirmed, all stays queued. */
	client_close(&c);
	wait_unleased(NULL, id);
	ck_assert_int_eq(queued_for("cust.example", id), 1);
	ck_assert_int_eq(queue_get(q, id, &env), 1);
	ck_assert_uint_eq(env->nrcpts, 1);
	ck_assert_int_eq(env->rcpts[0].state, QUEUE_RCPT_QUEUED);
	queue_envelope_free(&env);
}

START_TEST(test_atrn_reverse)
{
	atrn_reverse("ATRN cust.example");
}
END_TEST

START_TEST(test_atrn_reverse_default_domains)
{
	atrn_reverse("ATRN");
}
END_TEST

START_TEST(test_overlong_line)
{
	struct client c;
	char r[512], *big;
	size_t n = 5000;

	big = xmalloc(n + 2);
	memset(big, 'A', n);
	memcpy(big + n, "\r\n", 2);
	client_open(&c);
	client_greeting(&c);
	/* In one piece. */
	client_send(&c, big, n + 2);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 500);
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	/* In pieces, the end pipelined with the next command. */
	client_send(&c, big, n);
	pump(&c, 20);
	pump(&c, 20);
	client_send(&c, big, n);
	pump(&c, 20);
	client_sends(&c, "\r\nNOOP\r\n");
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 500);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 250);
	/* A 4000-octet line is not too long (an unknown command). */
	memcpy(big + 4000, "\r\n", 2);
	client_send(&c, big, 4002);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 502);
	/* Still usable: AUTH works after all that. */
	client_auth(&c);
	free(big);
	client_close(&c);
}
END_TEST

START_TEST(test_overlong_sasl_line)
{
	struct client c;
	char r[512], *big;
	size_t n = 13000;

	big = xmalloc(n + 2);
	memset(big, 'A', n);
	memcpy(big + n, "\r\n", 2);
	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "AUTH CRAM-MD5", r, sizeof(r)), 334);
	client_send(&c, big, n + 2);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 500);
	/* The exchange is over: NOOP is a command again. */
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	ck_assert_int_eq(cmd(&c, "ATRN", r, sizeof(r)), 530);
	free(big);
	client_close(&c);
}
END_TEST

START_TEST(test_quit)
{
	struct client c;
	char r[512];

	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(cmd(&c, "QUIT", r, sizeof(r)), 221);
	ck_assert_int_eq(client_wait_eof(&c, REPLY_WAIT_MS), 1);
	ck_assert_uint_eq(odmr_session_count(o), 0);
	client_close(&c);
}
END_TEST

START_TEST(test_quit_after_auth)
{
	struct client c;
	char r[512];

	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	ck_assert_int_eq(cmd(&c, "quit", r, sizeof(r)), 221);
	ck_assert_int_eq(client_wait_eof(&c, REPLY_WAIT_MS), 1);
	ck_assert_uint_eq(odmr_session_count(o), 0);
	client_close(&c);
}
END_TEST

START_TEST(test_nul_in_command)
{
	static const char line[] = "NO\0OP\r\n";
	struct client c;
	char r[512];

	client_open(&c);
	client_greeting(&c);
	client_send(&c, line, sizeof(line) - 1);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 500);
	ck_assert_int_eq(cmd(&c, "NOOP", r, sizeof(r)), 250);
	client_close(&c);
}
END_TEST

START_TEST(test_client_drops)
{
	struct client c;
	double end;

	client_open(&c);
	client_greeting(&c);
	client_sends(&c, "EHLO cust.test\r\nAUTH CRAM-MD5\r\n");
	client_close(&c);
	end = now_ms() + REPLY_WAIT_MS;
	while (odmr_session_count(o) > 0 && now_ms() < end)
		pump(NULL, 10);
	ck_assert_uint_eq(odmr_session_count(o), 0);
}
END_TEST

START_TEST(test_idle_timeout)
{
	struct client c;
	char r[512];

	cfg->smtp_timeout = 1;
	client_open(&c);
	client_greeting(&c);
	ck_assert_int_eq(client_reply_wait(&c, r, sizeof(r), 3000), 421);
	ck_assert_int_eq(client_wait_eof(&c, REPLY_WAIT_MS), 1);
	ck_assert_uint_eq(odmr_session_count(o), 0);
	client_close(&c);
}
END_TEST

/* Send lines from chunk without reading, non-blocking, for up to ms or
 * max bytes; returns how many bytes the server took. */
static size_t flood(struct client *c, const char *line, int ms, size_t max)
{
	char chunk[4096];
	size_t i, len = strlen(line), sent = 0;
	double end = now_ms() + ms;
	int fl;

	for (i = 0; i + len <= sizeof(chunk); i += len)
		memcpy(chunk + i, line, len);
	fl = fcntl(c->fd, F_GETFL);
	ck_assert_int_eq(fcntl(c->fd, F_SETFL, fl | O_NONBLOCK), 0);
	while (now_ms() < end && sent < max) {
		ssize_t n = write(c->fd, chunk, i);

		if (n > 0)
			sent += (size_t)n;
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	return sent;
}

/*
 * A client that pipelines commands and never reads the replies must be
 * stopped (no more reading) once its replies pile up, else it makes the
 * server buffer without bound: EHLO is 8 octets in, ~120 out.
 */
START_TEST(test_output_backpressure)
{
	struct client c;
	size_t sent;

	client_open(&c);
	sent = flood(&c, "EHLO x\r\n", 1500, (size_t)8 << 20);
	ck_assert_msg(sent < (size_t)2 << 20,
	    "server read %zu octets of commands whose replies nobody read", sent);
	client_close(&c);
}
END_TEST

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/*
 * A client that sends commands but never reads its replies: once the
 * socket buffers are full the session must still end at the timeout and
 * not hold its connection slot for ever. The loop runs one wakeup at a
 * time, as in the daemon, so each timer fires on its own.
 */
START_TEST(test_timeout_not_reading)
{
	struct client c;
	struct event *tick;
	struct timeval tv = { 0, 100 * 1000 };
	size_t sent;
	double end;

	cfg->smtp_timeout = 1;
	client_open(&c);
	/* Fill both directions (bounded: a server without backpressure
	 * would take it all). */
	sent = flood(&c, "NOOP\r\n", 300, (size_t)1 << 20);
	/* Now idle, still not reading. */
	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(tick, &tv);
	end = now_ms() + 4000;
	while (odmr_session_count(o) > 0 && now_ms() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(tick);
	ck_assert_msg(odmr_session_count(o) == 0,
	    "session still open 4 s after a 1 s timeout (%zu octets sent)", sent);
	client_close(&c);
}
END_TEST

/*
 * A client that pipelines many commands, reads the replies slowly and
 * trickles a partial line, then stops altogether: the session must
 * still end (421 at the timeout, then closed) and not hold its connection
 * slot for ever. The loop runs one wakeup at a time, as in the daemon.
 */
START_TEST(test_timeout_slow_reader)
{
	struct client c;
	struct event *tick;
	struct timeval tv = { 0, 20 * 1000 };
	char junk[65536];
	size_t sent;
	double end, next_read, next_byte;

	cfg->smtp_timeout = 1;
	client_open(&c);
	sent = flood(&c, "NOOP\r\n", 300, (size_t)8 << 20);
	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(tick, &tv);
	/* Reading keeps the server's writes going (so its write timeout
	 * does not fire) and a byte now and then its read timeout, while
	 * no whole command comes: the line deadline fires alone. */
	end = now_ms() + 1600;
	next_read = next_byte = 0;
	while (odmr_session_count(o) > 0 && now_ms() < end) {
		if (now_ms() >= next_byte) {
			(void)!write(c.fd, "X", 1);
			next_byte = now_ms() + 200;
		}
		if (now_ms() >= next_read) {
			/* Drain the socket: a writer only wakes when most of
			 * the buffer is free again. */
			while (read(c.fd, junk, sizeof(junk)) > 0)
				continue;
			next_read = now_ms() + 50;
		}
		event_base_loop(base, EVLOOP_ONCE);
	}
	/* Then no reading at all. */
	end = now_ms() + 4000;
	while (odmr_session_count(o) > 0 && now_ms() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(tick);
	ck_assert_msg(odmr_session_count(o) == 0,
	    "session still open 5.6 s after a 1 s timeout (%zu octets sent)",
	    sent);
	client_close(&c);
}
END_TEST

static void shutdown_done(void *arg)
{
	*(int *)arg = 1;
}

START_TEST(test_shutdown)
{
	struct client c;
	char r[512];
	int done = 0;

	client_open(&c);
	client_greeting(&c);
	odmr_shutdown(o, shutdown_done, &done);
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 421);
	ck_assert_int_eq(client_wait_eof(&c, REPLY_WAIT_MS), 1);
	ck_assert_uint_eq(odmr_session_count(o), 0);
	ck_assert_int_eq(done, 1);
	client_close(&c);
}
END_TEST

/* The customer's 220 in the same packet as ATRN is not lost. */
START_TEST(test_atrn_pipelined_greeting)
{
	struct client c;
	char r[512], id[QUEUE_ID_LEN + 1];
	double end;

	put_message("user@cust.example", id);
	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	client_sends(&c, "ATRN cust.example\r\n220 cust ready\r\n");
	ck_assert_int_eq(client_reply(&c, r, sizeof(r)), 250);
	end = now_ms() + REPLY_WAIT_MS;
	while (memchr(c.buf, '\n', c.len) == NULL && !c.eof && now_ms() < end)
		pump(&c, 10);
	ck_assert_msg(strncmp(c.buf, "EHLO relay.test\r\n", 17) == 0,
	    "got: %s", c.buf);
	client_close(&c);
	wait_unleased(NULL, id);
	ck_assert_int_eq(queued_for("cust.example", id), 1);
}
END_TEST

/*
 * odmr.h: on shutdown "reversed sessions are aborted (unconfirmed mail
 * stays queued). done runs when none is left."
 */
START_TEST(test_shutdown_reversed)
{
	struct client c;
	char r[512], id[QUEUE_ID_LEN + 1];
	int done = 0, eof;

	put_message("user@cust.example", id);
	client_open(&c);
	client_greeting(&c);
	client_auth(&c);
	ck_assert_int_eq(cmd(&c, "ATRN cust.example", r, sizeof(r)), 250);
	odmr_shutdown(o, shutdown_done, &done);
	eof = client_wait_eof(&c, REPLY_WAIT_MS);
	/* Clean up either way before judging. */
	client_close(&c);
	wait_unleased(NULL, id);
	ck_assert_int_eq(queued_for("cust.example", id), 1);
	ck_assert_msg(eof, "reversed session still open after odmr_shutdown "
	    "(done %s)", done ? "already ran" : "not run");
	ck_assert_int_eq(done, 1);
}
END_TEST

static Suite *odmr_suite(void)
{
	Suite *s = suite_create("odmr");
	TCase *tc = tcase_create("session");

	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_greeting);
	tcase_add_test(tc, test_ehlo);
	tcase_add_test(tc, test_ehlo_plain_allowed);
	tcase_add_test(tc, test_atrn_needs_auth);
	tcase_add_test(tc, test_smtp_commands_refused);
	tcase_add_test(tc, test_max_errors);
	tcase_add_test(tc, test_auth_mechanisms);
	tcase_add_test(tc, test_auth_cram_ok);
	tcase_add_test(tc, test_auth_cram_fixed_challenge);
	tcase_add_test(tc, test_auth_cram_wrong);
	tcase_add_test(tc, test_auth_unknown_user);
	tcase_add_test(tc, test_auth_cancel);
	tcase_add_test(tc, test_atrn_syntax);
	tcase_add_test(tc, test_atrn_other_domain);
	tcase_add_test(tc, test_atrn_no_mail);
	tcase_add_test(tc, test_atrn_reverse);
	tcase_add_test(tc, test_atrn_reverse_default_domains);
	tcase_add_test(tc, test_overlong_line);
	tcase_add_test(tc, test_overlong_sasl_line);
	tcase_add_test(tc, test_quit);
	tcase_add_test(tc, test_quit_after_auth);
	tcase_add_test(tc, test_nul_in_command);
	tcase_add_test(tc, test_client_drops);
	tcase_add_test(tc, test_idle_timeout);
	tcase_add_test(tc, test_timeout_not_reading);
	tcase_add_test(tc, test_shutdown);
	tcase_add_test(tc, test_atrn_pipelined_greeting);
	suite_add_tcase(s, tc);

	/* Hostile or vanishing peers, shutdown. */
	tc = tcase_create("robustness");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_output_backpressure);
	tcase_add_test(tc, test_timeout_slow_reader);
	tcase_add_test(tc, test_shutdown_reversed);
	tcase_add_test(tc, test_xwait);
	tcase_add_test(tc, test_reload_sessions);
	tcase_add_test(tc, test_reload_check_unanswered);
	tcase_add_test(tc, test_xwait_timeout_quit_garbage);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(odmr_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	/* ODMR_DEBUG=1 shows the sessions' log lines. */
	log_init("check_odmr", 1, getenv("ODMR_DEBUG") != NULL ?
	    LOG_LEVEL_DEBUG : LOG_LEVEL_WARNING);

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
