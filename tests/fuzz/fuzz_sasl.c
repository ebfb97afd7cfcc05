/*
 * fuzz_sasl - libFuzzer target for the server side of common/sasl: every
 * mechanism's steps on arbitrary (already base64-decoded) client messages.
 *
 * Input: one byte choosing the mechanism (bits 0-1: SCRAM-SHA-256,
 * CRAM-MD5, PLAIN, LOGIN; bit 2: TLS active; bit 3: auth_requires_tls),
 * then client messages, each a 2-byte big-endian length and that many
 * bytes (cut short at the end of the input). The first message is the
 * initial response. Steps run until the mechanism stops asking.
 *
 * The password database is loaded once from an anonymous temporary file
 * holding the RFC 2195 and RFC 7677 example users, and the server nonce and
 * CRAM-MD5 challenge are fixed, so the RFCs' example exchanges succeed and
 * every run is deterministic. Note: PLAIN and LOGIN verify a password by
 * PBKDF2 (4096 rounds), so those inputs are much slower than the others.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "passwd.h"
#include "sasl.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

/* RFC 7677 section 3 and RFC 2195 section 2 values. */
#define SNONCE	"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define CRAMCHAL "<1896.697170952@postoffice.reston.mci.net>"
#define MAXSTEPS 16

static const char *const mechs[] = {
	"SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"
};
static struct passwd_db *pw;
static struct fuzz_file ff;

static void
fuzz_errfn(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "fuzz_sasl: passwd: %s\n", msg);
}

static char *
entry(const char *name, const char *pass, const unsigned char *salt,
    size_t saltlen)
{
	static const char *const doms[] = { "example.org", "example.net" };
	char err[256];
	char *line;

	line = passwd_make_entry_salt(name, pass, doms, 2, salt, saltlen,
	    4096, err, sizeof(err));
	if (line == NULL) {
		fprintf(stderr, "fuzz_sasl: %s\n", err);
		abort();
	}
	return line;
}

static void
setup(void)
{
	static const unsigned char salt2[16] = "fuzz-salt-16byte";
	unsigned char salt[32];
	char buf[4096], *l1, *l2, *l3;
	int n;

	fuzz_log_quiet();
	fuzz_file_init(&ff);
	n = util_base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt,
	    sizeof(salt));
	CHECK(n == 16);
	l1 = entry("user", "pencil", salt, 16);
	l2 = entry("tim", "tanstaaftanstaaf", salt2, 16);
	l3 = entry("x", "only-cram", salt2, 16);
	/* cramonly: an imported Dovecot CRAM-MD5 secret, no SCRAM part */
	n = snprintf(buf, sizeof(buf), "# fuzz users\n%s\n%s\n"
	    "cramonly:{CRAM-MD5}%.64s:example.org\n", l1, l2,
	    strstr(l3, "cram=") + 5);
	CHECK(n > 0 && (size_t)n < sizeof(buf));
	free(l1);
	free(l2);
	free(l3);
	fuzz_file_set(&ff, buf, (size_t)n);
	pw = passwd_load(ff.path, fuzz_errfn, NULL);
	CHECK(pw != NULL && passwd_count(pw) == 3);
	sasl_test_set_nonces(SNONCE, NULL, CRAMCHAL);
	sasl_test_set_time(1000);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sasl_server *s;
	unsigned char out[SASL_OUT_MAX];
	unsigned char *msg;
	size_t off, len, outlen;
	int steps, rc, tls, req;
	const char *user;

	if (pw == NULL)
		setup();
	if (size < 1)
		return 0;
	tls = (data[0] >> 2) & 1;
	req = (data[0] >> 3) & 1;
	s = sasl_server_new(mechs[data[0] & 3], pw, "postoffice.reston.mci.net",
	    tls, req);
	if (s == NULL) {
		CHECK(req && !tls && (data[0] & 3) >= 2);
		return 0;
	}
	CHECK(strcmp(sasl_server_mech(s), mechs[data[0] & 3]) == 0);
	off = 1;
	rc = SASL_CONTINUE;
	for (steps = 0; steps < MAXSTEPS && rc == SASL_CONTINUE; steps++) {
		len = 0;
		if (off + 2 <= size) {
			len = (size_t)data[off] << 8 | data[off + 1];
			off += 2;
		} else
			off = size;
		if (len > size - off)
			len = size - off;
		/* exact-size heap copy so ASan sees reads past the message */
		msg = malloc(len > 0 ? len : 1);
		CHECK(msg != NULL);
		memcpy(msg, data + off, len);
		off += len;
		outlen = (size_t)-1;
		rc = sasl_server_step(s, msg, len, out, sizeof(out), &outlen);
		free(msg);
		CHECK(rc == SASL_OK || rc == SASL_CONTINUE || rc == SASL_FAIL);
		if (rc == SASL_CONTINUE)
			CHECK(outlen <= sizeof(out));
		user = sasl_server_user(s);
		if (rc == SASL_OK) {
			CHECK(user != NULL);
			CHECK(passwd_find(pw, user) != NULL);
		} else
			CHECK(user == NULL);
		if (off >= size && rc == SASL_CONTINUE)
			break;
	}
	if (getenv("FUZZ_SASL_DEBUG") != NULL)
		fprintf(stderr, "fuzz_sasl: %s: %d steps, result %d, user %s\n",
		    mechs[data[0] & 3], steps, rc, user != NULL ? user : "-");
	sasl_server_free(&s);
	CHECK(s == NULL);
	return 0;
}
