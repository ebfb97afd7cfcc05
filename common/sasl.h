/*
 * sasl - SASL mechanisms for AUTH (RFC 4954) on the ODMR listener and in
 * odpull: CRAM-MD5 (RFC 2195), SCRAM-SHA-256 (RFC 5802/7677, no channel
 * binding), PLAIN (RFC 4616) and LOGIN; plus per-IP failure throttling.
 *
 * Base64 is the caller's job: every step takes and produces the decoded
 * bytes (util_base64_encode/decode). An "empty" message is length 0.
 *
 * Server use:
 *	s = sasl_server_new(mech, pw, hostname, tls_active, requires_tls);
 *	NULL: mechanism unknown (504) or not allowed here (538), see
 *	sasl_mech_known(). Then call sasl_server_step() first with the initial
 *	response (length 0 when the client gave none), then with each
 *	decoded client line. SASL_CONTINUE: send "334 " + base64(out).
 *	SASL_OK: send 235; sasl_server_user() names the user. SASL_FAIL: 535
 *	(after sasl_throttle_failure's delay).
 *	SCRAM-SHA-256's server-final "v=..." comes as a last 334 challenge,
 *	since RFC 4954 cannot carry data with 235; the client answers empty.
 *
 * Client use (odpull):
 *	c = sasl_client_new(mech, user, password);
 *	sasl_client_start(): 1 = send "AUTH MECH " + base64(out) ("=" when
 *	empty), 0 = send "AUTH MECH" alone. For each 334: sasl_client_step()
 *	with the decoded challenge; SASL_CONTINUE: send base64(out) (maybe
 *	empty line); SASL_FAIL: send "*". After 235, sasl_client_done() says
 *	whether the exchange completed (for SCRAM: the server proved it knows
 *	the password); treat 0 as a failure.
 */
#ifndef OD_SASL_H
#define OD_SASL_H

#include <stddef.h>

struct passwd_db;
struct sasl_server;
struct sasl_client;
struct sasl_throttle;

enum sasl_result {
	SASL_OK = 0,		/* authenticated */
	SASL_CONTINUE = 1,	/* send out as a challenge/response */
	SASL_FAIL = -1,		/* bad credentials or malformed exchange */
	SASL_BAD_MECH = -2	/* unknown or disallowed mechanism */
};

/* Out buffers of this size always suffice. The server side never needs
 * more than 1024 (bounded nonces and names); the client's PLAIN message
 * can reach 2 + 255 + 1024 bytes. */
#define SASL_OUT_MAX	2048

/* "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN", without PLAIN/LOGIN when
 * requires_tls && !tls_active. Static string. */
const char *sasl_mechs_offered(int tls_active, int requires_tls);
/* 1 if mech (case-insensitive) is one we implement. */
int sasl_mech_known(const char *mech);
/* 1 if mech sends the password itself (PLAIN, LOGIN). */
int sasl_mech_plaintext(const char *mech);

/* NULL if mech is unknown, or plaintext and requires_tls && !tls_active.
 * The object holds a reference on pw (passwd_ref); hostname must outlive
 * it. */
struct sasl_server *sasl_server_new(const char *mech,
    struct passwd_db *pw, const char *hostname, int tls_active,
    int requires_tls);
int sasl_server_step(struct sasl_server *s, const unsigned char *in,
    size_t inlen, unsigned char *out, size_t outsize, size_t *outlen_r);
/* SIGHUP: go on with pw (a reference is taken) if the exchange has not
 * looked a user up yet (CRAM-MD5 waiting for its response, PLAIN, LOGIN);
 * 0, or -1 when it keeps the file it started with. */
int sasl_server_set_passwd(struct sasl_server *s, struct passwd_db *pw);
/* The authenticated user after SASL_OK, else NULL. */
const char *sasl_server_user(const struct sasl_server *s);
/* The mechanism name in upper case. */
const char *sasl_server_mech(const struct sasl_server *s);
void sasl_server_free(struct sasl_server **s);

/*
 * The AUTH command (RFC 4954) on a server, shared by the SMTP and ODMR
 * listeners. sasl_auth_begin takes the argument "MECH [initial-response]",
 * sasl_auth_next each further client line (base64, or "*" to cancel).
 * An initial response, even "=" (empty), is the client's first message:
 * PLAIN, LOGIN and SCRAM-SHA-256 judge it; CRAM-MD5 refuses one (501).
 * Both write the complete reply line (no CRLF) into reply and return:
 *	SASL_CONTINUE	"334 ..." sent: feed the next line to sasl_auth_next
 *	SASL_OK		"235 ...": sasl_server_user(*s) names the user; the
 *			caller frees *s
 *	SASL_FAIL	"535 ...": wrong credentials (apply the throttle delay)
 *	SASL_BAD_MECH	"504", "538" or "501": syntax, cancel or mechanism
 * *s is freed and NULL after SASL_FAIL and SASL_BAD_MECH.
 */
int sasl_auth_begin(const char *arg, struct passwd_db *pw,
    const char *hostname, int tls_active, int requires_tls,
    struct sasl_server **s, char *reply, size_t replylen);
int sasl_auth_next(struct sasl_server **s, const char *line, char *reply,
    size_t replylen);

/* NULL for an unknown mechanism. Copies user and password. */
struct sasl_client *sasl_client_new(const char *mech, const char *user,
    const char *password);
int sasl_client_start(struct sasl_client *c, unsigned char *out,
    size_t outsize, size_t *outlen_r);
int sasl_client_step(struct sasl_client *c, const unsigned char *in,
    size_t inlen, unsigned char *out, size_t outsize, size_t *outlen_r);
int sasl_client_done(const struct sasl_client *c);
void sasl_client_free(struct sasl_client **c);
/*
 * Pick the best mechanism from an EHLO AUTH list ("SCRAM-SHA-256 CRAM-MD5
 * ..."): SCRAM-SHA-256, CRAM-MD5, then PLAIN and LOGIN only if tls_active.
 * Static string, or NULL when nothing usable is offered.
 */
const char *sasl_client_choose(const char *offered, int tls_active);

/*
 * Failure throttling, kept by the auth process for both ports and every
 * session. Failures count per client address (IPv6: per /64) and per user
 * name tried, within SASL_THROTTLE_WINDOW seconds of the last one; the
 * n-th failure (the larger of the two counts) is answered after
 * min(2^(n-1), 16) seconds. From SASL_THROTTLE_MAX failures on, AUTH from
 * the address is refused (454 4.7.0), and a password for the user is not
 * even checked (535) unless that user logged in from that address within
 * SASL_THROTTLE_GOOD_TTL (and fewer than SASL_THROTTLE_USER_HARD
 * failures were counted for the user). A success clears nothing. The
 * address table is bounded (oldest entry forgotten); the user table grows
 * (to SASL_THROTTLE_USER_SLOTS) rather than forget a blocked user: names
 * that do not exist go with the addresses (sasl_throttle_failure_name).
 */
#define SASL_THROTTLE_WINDOW	600
#define SASL_THROTTLE_MAX	10
#define SASL_THROTTLE_DELAY_MAX	16
#define SASL_THROTTLE_SLOTS	4096	/* addresses (oldest forgotten) */
#define SASL_THROTTLE_USER_SLOTS (1u << 20) /* names (grows to this) */
#define SASL_THROTTLE_GOOD_SLOTS 1024
#define SASL_THROTTLE_GOOD_TTL	(7 * 86400)
#define SASL_THROTTLE_USER_HARD	100

struct sasl_throttle *sasl_throttle_new(void);
void sasl_throttle_free(struct sasl_throttle **t);
/* Record a failure (user: the name tried, or NULL); returns the delay in
 * seconds before the 535. */
unsigned sasl_throttle_failure(struct sasl_throttle *t, const char *ip,
    const char *user);
/* The same; exists: 0 for a name the password file does not hold (counted
 * alike, kept where it cannot push a real user's count out). */
unsigned sasl_throttle_failure_name(struct sasl_throttle *t, const char *ip,
    const char *user, int exists);
/* Remember that user logged in from ip. */
void sasl_throttle_success(struct sasl_throttle *t, const char *ip,
    const char *user);
/* 1 if AUTH from ip must be refused now. */
int sasl_throttle_blocked(struct sasl_throttle *t, const char *ip);
/* 1 if a password for user from ip must not be checked now. */
int sasl_throttle_user_blocked(struct sasl_throttle *t, const char *ip,
    const char *user);

/*
 * The auth process's hook into an exchange: gate(arg, user) runs before a
 * password for user is checked (so it also learns the name tried) and
 * returns 0 to make the exchange fail without checking.
 */
typedef int sasl_gate_fn(void *arg, const char *user);
void sasl_server_set_gate(struct sasl_server *s, sasl_gate_fn *gate,
    void *arg);
/* sasl_auth_begin with a gate set before the first step. */
int sasl_auth_begin_gated(const char *arg, struct passwd_db *pw,
    const char *hostname, int tls_active, int requires_tls,
    sasl_gate_fn *gate, void *gatearg, struct sasl_server **s, char *reply,
    size_t replylen);

/*
 * Test hooks: fix the next server nonce suffix / client nonce / CRAM-MD5
 * challenge (NULL: random again), and the throttle clock (< 0: real).
 */
void sasl_test_set_nonces(const char *server_nonce, const char *client_nonce,
    const char *cram_challenge);
void sasl_test_set_time(double now);

#endif
