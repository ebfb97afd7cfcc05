/*
 * check_auth - common/authproto (records), relay/authc + relay/authd (the
 * session side and the auth server, here in one process on one loop).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "authc.h"
#include "authd.h"
#include "authproto.h"
#include "config.h"
#include "passwd.h"
#include "sasl.h"
#include "util.h"
#include "xmalloc.h"

/* ---- authproto ---- */

START_TEST(test_proto_roundtrip)
{
	unsigned char buf[AUTHPROTO_MAX];
	struct authproto_req q = { 0 }, q2;
	struct authproto_reply r = { 0 }, r2;
	int n;

	q.type = AUTHPROTO_START;
	q.id = 0x01020304;
	q.flags = AUTHPROTO_TLS;
	q.ip = "192.0.2.1";
	q.iplen = strlen(q.ip);
	q.data = "PLAIN AGEAYg==";
	q.datalen = strlen(q.data);
	n = authproto_encode_req(buf, sizeof(buf), &q);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n, &q2), 0);
	ck_assert_uint_eq(q2.id, q.id);
	ck_assert_uint_eq(q2.flags, AUTHPROTO_TLS);
	ck_assert_uint_eq(q2.iplen, q.iplen);
	ck_assert(memcmp(q2.data, q.data, q.datalen) == 0);
	/* Truncated, trailing bytes, bad version, unknown flag. */
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n - 1, &q2), -1);
	buf[n] = 'x';
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n + 1, &q2), -1);
	buf[0] = 2;
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n, &q2), -1);
	buf[0] = AUTHPROTO_VERSION;
	buf[6] = 0x80;
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n, &q2), -1);

	r.id = 7;
	r.rc = SASL_OK;
	r.text = "235 2.7.0 Authentication successful";
	r.textlen = strlen(r.text);
	r.user = "alice";
	r.userlen = 5;
	r.domains = "a.example,b.example";
	r.domainslen = strlen(r.domains);
	n = authproto_encode_reply(buf, sizeof(buf), &r);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(authproto_decode_reply(buf, (size_t)n, &r2), 0);
	ck_assert_int_eq(r2.rc, SASL_OK);
	ck_assert_uint_eq(r2.userlen, 5);
	/* A request is not a reply and the other way round. */
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n, &q2), -1);
}
END_TEST

START_TEST(test_proto_limits)
{
	unsigned char buf[AUTHPROTO_MAX];
	struct authproto_reply r = { 0 };
	struct authproto_req q = { 0 };
	char user[AUTHPROTO_USER_MAX + 2];

	memset(user, 'u', sizeof(user));
	r.rc = SASL_OK;
	r.text = "235 ok";
	r.textlen = 6;
	r.user = user;
	r.userlen = AUTHPROTO_USER_MAX + 1;
	r.domains = "";
	ck_assert_int_eq(authproto_encode_reply(buf, sizeof(buf), &r), -1);
	r.userlen = AUTHPROTO_USER_MAX;
	ck_assert_int_gt(authproto_encode_reply(buf, sizeof(buf), &r), 0);
	/* NUL inside a string, no reply code, no room. */
	r.text = "235\0ok";
	ck_assert_int_eq(authproto_encode_reply(buf, sizeof(buf), &r), -1);
	r.text = "ok";
	r.textlen = 2;
	ck_assert_int_eq(authproto_encode_reply(buf, sizeof(buf), &r), -1);
	q.type = AUTHPROTO_START;
	q.ip = "192.0.2.1";
	q.iplen = 9;
	q.data = "CRAM-MD5";
	q.datalen = 8;
	ck_assert_int_eq(authproto_encode_req(buf, 10, &q), -1);
	q.iplen = 0;
	ck_assert_int_eq(authproto_encode_req(buf, sizeof(buf), &q), -1);
}
END_TEST

/* CHECK carries a user name and nothing else. */
START_TEST(test_proto_check)
{
	unsigned char buf[AUTHPROTO_MAX];
	struct authproto_req q = { 0 }, q2;
	char user[AUTHPROTO_USER_MAX + 2];
	int n;

	q.type = AUTHPROTO_CHECK;
	q.id = 42;
	q.data = "alice";
	q.datalen = 5;
	n = authproto_encode_req(buf, sizeof(buf), &q);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n, &q2), 0);
	ck_assert_uint_eq(q2.type, AUTHPROTO_CHECK);
	ck_assert_uint_eq(q2.id, 42);
	ck_assert_uint_eq(q2.datalen, 5);
	ck_assert(memcmp(q2.data, "alice", 5) == 0);
	/* No flags, no trailing bytes. */
	buf[6] = 1;
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n, &q2), -1);
	buf[6] = 0;
	ck_assert_int_eq(authproto_decode_req(buf, (size_t)n - 1, &q2), -1);
	/* An empty name or one over the limit is never encoded. */
	q.datalen = 0;
	ck_assert_int_eq(authproto_encode_req(buf, sizeof(buf), &q), -1);
	memset(user, 'u', sizeof(user));
	q.data = user;
	q.datalen = AUTHPROTO_USER_MAX + 1;
	ck_assert_int_eq(authproto_encode_req(buf, sizeof(buf), &q), -1);
	q.datalen = AUTHPROTO_USER_MAX;
	ck_assert_int_gt(authproto_encode_req(buf, sizeof(buf), &q), 0);
}
END_TEST

/* ---- authc + authd on one loop ---- */

static char tdir[64];
static struct config *cfg;
static struct event_base *base;
static struct authc *a;

struct result {
	int done, rc;
	char reply[600];
	char user[300];
	char domains[300];
};

static void cb(void *arg, int rc, const char *reply, const char *user,
    const char *domains)
{
	struct result *res = arg;

	res->done = 1;
	res->rc = rc;
	util_strlcpy(res->reply, reply, sizeof(res->reply));
	util_strlcpy(res->user, user ? user : "", sizeof(res->user));
	util_strlcpy(res->domains, domains ? domains : "",
	    sizeof(res->domains));
}

static void wait_done(struct result *res)
{
	int i;

	for (i = 0; i < 500 && !res->done; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert(res->done);
}

static void setup(void)
{
	const char *doms[] = { "a.example", "b.example" };
	char err[256], *line;
	FILE *f;

	snprintf(tdir, sizeof(tdir), "/tmp/check_auth.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
	cfg = config_defaults();
	free(cfg->passwd_file);
	cfg->passwd_file = xasprintf("%s/passwd", tdir);
	cfg->auth_delay_max = 0;
	line = passwd_make_entry("alice", "alice-pw", doms, 2, err, sizeof(err));
	ck_assert_ptr_nonnull(line);
	f = fopen(cfg->passwd_file, "w");
	ck_assert_ptr_nonnull(f);
	(void)fchmod(fileno(f), 0600);
	fprintf(f, "%s\n", line);
	fclose(f);
	free(line);
	base = event_base_new();
	a = authc_new_local(base, cfg, err, sizeof(err));
	ck_assert_msg(a != NULL, "authc_new_local: %s", err);
}

static void teardown(void)
{
	char cmd[128];

	authc_free(&a);
	event_base_free(base);
	config_free(&cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	(void)!system(cmd);
}

/* One CRAM-MD5 exchange; returns the final rc. */
static int cram(const char *ip, const char *user, const char *pw,
    struct result *res)
{
	struct authc_req *r;
	unsigned char chal[512], mac[16];
	unsigned int maclen = 16;
	char resp[600], b64[900];
	int n, i, off;

	memset(res, 0, sizeof(*res));
	r = authc_start(a, ip, 0, "CRAM-MD5", cb, res);
	ck_assert_ptr_nonnull(r);
	wait_done(res);
	if (res->rc != SASL_CONTINUE)
		return res->rc;
	n = util_base64_decode(res->reply + 4, strlen(res->reply + 4), chal,
	    sizeof(chal));
	ck_assert_int_gt(n, 0);
	HMAC(EVP_md5(), pw, (int)strlen(pw), chal, (size_t)n, mac, &maclen);
	off = snprintf(resp, sizeof(resp), "%s ", user);
	for (i = 0; i < 16; i++)
		off += snprintf(resp + off, sizeof(resp) - (size_t)off, "%02x",
		    mac[i]);
	ck_assert_int_ge(util_base64_encode((unsigned char *)resp,
	    (size_t)off, b64, sizeof(b64)), 0);
	memset(res, 0, sizeof(*res));
	ck_assert_int_eq(authc_step(r, b64), 0);
	wait_done(res);
	return res->rc;
}

START_TEST(test_local_ok_and_domains)
{
	struct result res;

	ck_assert_int_eq(cram("192.0.2.1", "alice", "alice-pw", &res), SASL_OK);
	ck_assert_str_eq(res.user, "alice");
	ck_assert_str_eq(res.domains, "a.example,b.example");
	ck_assert(authc_domains_has(res.domains, "B.Example"));
	ck_assert(!authc_domains_has(res.domains, "example"));
	ck_assert_int_eq(cram("192.0.2.1", "alice", "wrong", &res), SASL_FAIL);
	ck_assert_str_eq(res.user, "");
}
END_TEST

/* CHECK answers from the password file read last (after a reload). */
START_TEST(test_local_check)
{
	const char *doms[] = { "c.example" };
	struct result res;
	char err[256], *line;
	FILE *f;

	memset(&res, 0, sizeof(res));
	ck_assert_ptr_nonnull(authc_check(a, "alice", cb, &res));
	wait_done(&res);
	ck_assert_int_eq(res.rc, SASL_OK);
	ck_assert_str_eq(res.user, "alice");
	ck_assert_str_eq(res.domains, "a.example,b.example");
	memset(&res, 0, sizeof(res));
	ck_assert_ptr_nonnull(authc_check(a, "nobody", cb, &res));
	wait_done(&res);
	ck_assert_int_eq(res.rc, SASL_FAIL);
	ck_assert_str_eq(res.domains, "");
	ck_assert_ptr_null(authc_check(a, "", cb, &res));

	/* alice goes, bob comes; the answers follow the reload. */
	line = passwd_make_entry("bob", "bob-pw", doms, 1, err, sizeof(err));
	ck_assert_ptr_nonnull(line);
	f = fopen(cfg->passwd_file, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "%s\n", line);
	fclose(f);
	free(line);
	authc_reload(a);
	memset(&res, 0, sizeof(res));
	ck_assert_ptr_nonnull(authc_check(a, "alice", cb, &res));
	wait_done(&res);
	ck_assert_int_eq(res.rc, SASL_FAIL);
	memset(&res, 0, sizeof(res));
	ck_assert_ptr_nonnull(authc_check(a, "bob", cb, &res));
	wait_done(&res);
	ck_assert_int_eq(res.rc, SASL_OK);
	ck_assert_str_eq(res.domains, "c.example");
}
END_TEST

/* The limit per user holds across addresses, and a success of another
 * user in between clears nothing. */
START_TEST(test_local_limits)
{
	struct result res;
	char ip[32];
	int i;

	for (i = 0; i < SASL_THROTTLE_MAX; i++) {
		snprintf(ip, sizeof(ip), "198.51.100.%d", i + 1);
		ck_assert_int_eq(cram(ip, "alice", "guess", &res), SASL_FAIL);
	}
	/* From a new address even the right password fails now. */
	ck_assert_int_eq(cram("203.0.113.1", "alice", "alice-pw", &res),
	    SASL_FAIL);
	/* One address: ten failures, then 454 before any challenge. */
	for (i = 0; i < SASL_THROTTLE_MAX; i++)
		ck_assert_int_eq(cram("192.0.2.77", "nobody", "x", &res),
		    SASL_FAIL);
	ck_assert_int_eq(cram("192.0.2.77", "alice", "alice-pw", &res),
	    AUTHPROTO_UNAVAILABLE);
	ck_assert(strncmp(res.reply, "454 4.7.0", 9) == 0);
}
END_TEST

/* Cancelled: no callback. Down: authc_start says so at once. */
START_TEST(test_local_cancel_and_down)
{
	struct result res;
	struct authc_req *r;
	int i;

	memset(&res, 0, sizeof(res));
	r = authc_start(a, "192.0.2.1", 0, "CRAM-MD5", cb, &res);
	authc_cancel(&r);
	ck_assert_ptr_null(r);
	for (i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert(!res.done);
	authc_set_fd(a, -1);
	ck_assert(!authc_up(a));
	ck_assert_ptr_null(authc_start(a, "192.0.2.1", 0, "CRAM-MD5", cb,
	    &res));
}
END_TEST

/* ---- authd against a hostile session process (raw records) ---- */

static int raw_send(int fd, unsigned type, uint32_t id, unsigned flags,
    const char *ip, const char *data)
{
	unsigned char buf[AUTHPROTO_MAX];
	struct authproto_req q = { 0 };
	int n;

	q.type = type;
	q.id = id;
	q.flags = flags;
	q.ip = ip;
	q.iplen = ip != NULL ? strlen(ip) : 0;
	q.data = data;
	q.datalen = data != NULL ? strlen(data) : 0;
	n = authproto_encode_req(buf, sizeof(buf), &q);
	ck_assert_int_gt(n, 0);
	return (int)send(fd, buf, (size_t)n, 0);
}

/* The next reply on fd, running the loop until it comes. */
static void raw_reply(int fd, uint32_t *id, int *rc, char *user,
    size_t userlen)
{
	static unsigned char buf[AUTHPROTO_MAX];
	struct authproto_reply p;
	ssize_t n = -1;
	int i;

	for (i = 0; i < 3000 && n < 0; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0)
			usleep(1000);
	}
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(authproto_decode_reply(buf, (size_t)n, &p), 0);
	*id = p.id;
	*rc = p.rc;
	snprintf(user, userlen, "%.*s", (int)p.userlen, p.user);
}

static int raw_quiet(int fd, int rounds)
{
	unsigned char buf[64];
	int i;

	for (i = 0; i < rounds; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_PEEK) > 0)
			return 0;
		usleep(1000);
	}
	return 1;
}

static char *plain_arg(const char *user, const char *pw)
{
	char raw[256], b64[400];
	int n = snprintf(raw, sizeof(raw), "%c%s%c%s", 0, user, 0, pw);

	ck_assert_int_ge(util_base64_encode((unsigned char *)raw, (size_t)n,
	    b64, sizeof(b64)), 0);
	return xasprintf("PLAIN %s", b64);
}

/*
 * Garbage, an oversized record, a reused id while a failure is held back:
 * authd stays up, answers each exchange once with its own verdict, and a
 * failure replaced by a new exchange of the same id is never delivered
 * (it would read as the new exchange's verdict).
 */
START_TEST(test_hostile_session)
{
	static unsigned char big[AUTHPROTO_MAX + 4096];
	char err[256], user[300], *good, *bad;
	struct authd *d;
	uint32_t id;
	int sv[2], rc;

	cfg->auth_delay_max = 1;
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	d = authd_new(base, NULL, cfg, sv[1], NULL, NULL, err, sizeof(err));
	ck_assert_msg(d != NULL, "authd_new: %s", err);
	good = plain_arg("alice", "alice-pw");
	bad = plain_arg("alice", "guess");

	/* Garbage of every kind: ignored, nothing answered. */
	ck_assert_int_eq(send(sv[0], "\001\001", 2, 0), 2);
	memset(big, 'A', sizeof(big));
	big[0] = AUTHPROTO_VERSION;
	big[1] = AUTHPROTO_START;
	ck_assert_int_eq(send(sv[0], big, sizeof(big), 0), (int)sizeof(big));
	ck_assert_int_eq(send(sv[0], big, 7, 0), 7);
	ck_assert(raw_quiet(sv[0], 50));

	/* Two exchanges at once: each verdict under its own id. */
	raw_send(sv[0], AUTHPROTO_START, 5, AUTHPROTO_TLS, "192.0.2.5", bad);
	raw_send(sv[0], AUTHPROTO_START, 6, AUTHPROTO_TLS, "192.0.2.6", good);
	raw_reply(sv[0], &id, &rc, user, sizeof(user));
	ck_assert_uint_eq(id, 6);	/* the failure waits its delay */
	ck_assert_int_eq(rc, SASL_OK);
	ck_assert_str_eq(user, "alice");
	raw_reply(sv[0], &id, &rc, user, sizeof(user));
	ck_assert_uint_eq(id, 5);
	ck_assert_int_eq(rc, SASL_FAIL);

	/* Id 7 fails (held back), then id 7 is used again and succeeds:
	 * one reply for 7, the success, and no failure after it. */
	raw_send(sv[0], AUTHPROTO_START, 7, AUTHPROTO_TLS, "192.0.2.7", bad);
	ck_assert(raw_quiet(sv[0], 20));
	raw_send(sv[0], AUTHPROTO_START, 7, AUTHPROTO_TLS, "192.0.2.7", good);
	raw_reply(sv[0], &id, &rc, user, sizeof(user));
	ck_assert_uint_eq(id, 7);
	ck_assert_int_eq(rc, SASL_OK);
	ck_assert(raw_quiet(sv[0], 1500));

	/* A step for an exchange that does not exist: 454, still up. */
	raw_send(sv[0], AUTHPROTO_STEP, 99, 0, NULL, "AAAA");
	raw_reply(sv[0], &id, &rc, user, sizeof(user));
	ck_assert_uint_eq(id, 99);
	ck_assert_int_eq(rc, AUTHPROTO_UNAVAILABLE);

	free(good);
	free(bad);
	authd_free(&d);
	close(sv[0]);
}
END_TEST

/* A new channel (the auth process restarted): exchanges of the old one
 * end with 454, but one started on the new channel before the loop ran
 * again goes on (it got a spurious 454 before). */
START_TEST(test_restart_new_exchange_survives)
{
	struct result old_res, new_res;
	struct authc_req *r_old, *r_new;
	struct authd *d2;
	char err[256], *good;
	int sv[2];

	memset(&old_res, 0, sizeof(old_res));
	memset(&new_res, 0, sizeof(new_res));
	good = plain_arg("alice", "alice-pw");
	r_old = authc_start(a, "192.0.2.1", AUTHPROTO_TLS, "CRAM-MD5", cb,
	    &old_res);
	ck_assert_ptr_nonnull(r_old);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	d2 = authd_new(base, NULL, cfg, sv[1], NULL, NULL, err, sizeof(err));
	ck_assert_ptr_nonnull(d2);
	authc_set_fd(a, sv[0]);
	r_new = authc_start(a, "192.0.2.2", AUTHPROTO_TLS, good, cb, &new_res);
	ck_assert_ptr_nonnull(r_new);
	wait_done(&new_res);
	ck_assert_int_eq(new_res.rc, SASL_OK);
	ck_assert_str_eq(new_res.user, "alice");
	/* The old exchange: its 334 may have come; its next line fails. */
	if (!old_res.done || old_res.rc == SASL_CONTINUE)
		ck_assert_int_eq(authc_step(r_old, "AAAA"), -1);
	else
		ck_assert_int_eq(old_res.rc, AUTHPROTO_UNAVAILABLE);
	authc_free(&a);		/* before d2: its channel goes first */
	authd_free(&d2);
	free(good);
}
END_TEST

static Suite *auth_suite(void)
{
	Suite *s = suite_create("auth");
	TCase *tp = tcase_create("proto");
	TCase *tc = tcase_create("local");

	tcase_add_test(tp, test_proto_roundtrip);
	tcase_add_test(tp, test_proto_limits);
	tcase_add_test(tp, test_proto_check);
	suite_add_tcase(s, tp);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_local_ok_and_domains);
	tcase_add_test(tc, test_local_check);
	tcase_add_test(tc, test_local_limits);
	tcase_add_test(tc, test_local_cancel_and_down);
	tcase_add_test(tc, test_hostile_session);
	tcase_add_test(tc, test_restart_new_exchange_survives);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(auth_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
