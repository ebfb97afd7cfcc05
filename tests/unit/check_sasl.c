/*
 * check_sasl - SASL server/client mechanisms against RFC examples and each
 * other, plus AUTH failure throttling.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "passwd.h"
#include "sasl.h"
#include "util.h"

static char tmpdir[] = "/tmp/check_sasl.XXXXXX";
static struct passwd_db *pw;

static const char *doms[] = { "example.org", "Example.NET" };

static void add_line(FILE *fp, const char *name, const char *pass)
{
	char err[256];
	char *line = passwd_make_entry(name, pass, doms, 2, err, sizeof(err));

	ck_assert_msg(line != NULL, "make_entry: %s", err);
	fprintf(fp, "%s\n", line);
	free(line);
}

static void setup(void)
{
	char path[256], err[256];
	unsigned char salt[32];
	int n;
	char *line;
	FILE *fp;

	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/passwd", tmpdir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fprintf(fp, "# test users\n\n");
	add_line(fp, "tim", "tanstaaftanstaaf");
	add_line(fp, "alice", "s3cret pass");
	add_line(fp, "we,ird=name", "pw");
	/* RFC 7677's user with RFC 7677's salt. */
	n = util_base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof(salt));
	ck_assert_int_eq(n, 16);
	line = passwd_make_entry_salt("user", "pencil", doms, 1, salt, 16,
	    4096, err, sizeof(err));
	ck_assert_msg(line != NULL, "%s", err);
	fprintf(fp, "%s\n", line);
	free(line);
	/* A user imported with only a CRAM-MD5 secret. */
	fprintf(fp, "cramonly:{CRAM-MD5}");
	line = passwd_make_entry("x", "only-cram", doms, 1, err, sizeof(err));
	ck_assert_ptr_nonnull(line);
	fprintf(fp, "%.64s:example.org\n", strstr(line, "cram=") + 5);
	free(line);
	fclose(fp);
	chmod(path, 0600);
	pw = passwd_load(path, NULL, NULL);
	ck_assert_ptr_nonnull(pw);
	ck_assert_int_eq(passwd_count(pw), 5);
	sasl_test_set_nonces(NULL, NULL, NULL);
	sasl_test_set_time(-1);
}

static void teardown(void)
{
	char cmd[300];

	passwd_free(&pw);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(tmpdir, "/tmp/check_sasl.XXXXXX");
	sasl_test_set_nonces(NULL, NULL, NULL);
	sasl_test_set_time(-1);
}

/* One server step with a C-string input; returns rc, out as C string. */
static int sstep(struct sasl_server *s, const char *in, size_t inlen,
    char *out)
{
	size_t outlen = 12345;
	int rc;

	rc = sasl_server_step(s, (const unsigned char *)in, inlen,
	    (unsigned char *)out, SASL_OUT_MAX, &outlen);
	ck_assert_uint_le(outlen, SASL_OUT_MAX - 1);
	out[outlen] = '\0';
	return rc;
}

START_TEST(test_mechs_offered)
{
	ck_assert_str_eq(sasl_mechs_offered(0, 1), "SCRAM-SHA-256 CRAM-MD5");
	ck_assert_str_eq(sasl_mechs_offered(1, 1),
	    "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN");
	ck_assert_str_eq(sasl_mechs_offered(0, 0),
	    "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN");
	ck_assert(sasl_mech_known("cram-md5"));
	ck_assert(sasl_mech_known("PLAIN"));
	ck_assert(!sasl_mech_known("GSSAPI"));
	ck_assert(!sasl_mech_known("SCRAM-SHA-256-PLUS"));
	ck_assert_ptr_null(sasl_server_new("GSSAPI", pw, "h", 1, 0));
	ck_assert_ptr_null(sasl_server_new("PLAIN", pw, "h", 0, 1));
	ck_assert_ptr_null(sasl_server_new("LOGIN", pw, "h", 0, 1));
	ck_assert(sasl_mech_plaintext("login"));
	ck_assert(!sasl_mech_plaintext("CRAM-MD5"));
	ck_assert_int_eq(sasl_server_step(NULL, NULL, 0, NULL, 0,
	    &(size_t){0}), SASL_BAD_MECH);
}
END_TEST

START_TEST(test_client_choose)
{
	ck_assert_str_eq(sasl_client_choose("PLAIN CRAM-MD5 scram-sha-256", 1),
	    "SCRAM-SHA-256");
	ck_assert_str_eq(sasl_client_choose("LOGIN PLAIN CRAM-MD5", 0),
	    "CRAM-MD5");
	ck_assert_str_eq(sasl_client_choose("LOGIN PLAIN", 1), "PLAIN");
	ck_assert_ptr_null(sasl_client_choose("LOGIN PLAIN", 0));
	ck_assert_ptr_null(sasl_client_choose("SCRAM-SHA-256-PLUS", 1));
	ck_assert_ptr_null(sasl_client_choose("", 1));
}
END_TEST

/* RFC 2195 section 2 example, verified through the stored form. */
START_TEST(test_cram_rfc2195)
{
	static const char chal[] = "<1896.697170952@postoffice.reston.mci.net>";
	char out[SASL_OUT_MAX];
	unsigned char digest[16];
	char hex[33];
	struct sasl_server *s;
	int i;

	ck_assert_int_eq(passwd_user_cram_md5(passwd_find(pw, "tim"),
	    (const unsigned char *)chal, strlen(chal), digest), 0);
	for (i = 0; i < 16; i++)
		sprintf(hex + 2 * i, "%02x", digest[i]);
	ck_assert_str_eq(hex, "b913a602c7eda7a495b4e6e7334d3890");

	sasl_test_set_nonces(NULL, NULL, chal);
	s = sasl_server_new("CRAM-MD5", pw, "postoffice.reston.mci.net", 0, 1);
	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(sstep(s, "", 0, out), SASL_CONTINUE);
	ck_assert_str_eq(out, chal);
	ck_assert_ptr_null(sasl_server_user(s));
	ck_assert_int_eq(sstep(s, "tim b913a602c7eda7a495b4e6e7334d3890", 36,
	    out), SASL_OK);
	ck_assert_str_eq(sasl_server_user(s), "tim");
	ck_assert_str_eq(sasl_server_mech(s), "CRAM-MD5");
	/* Nothing after the end. */
	ck_assert_int_eq(sstep(s, "", 0, out), SASL_FAIL);
	sasl_server_free(&s);
	ck_assert_ptr_null(s);

	/* Uppercase hex is the same digest. */
	s = sasl_server_new("CRAM-MD5", pw, "h", 0, 1);
	sstep(s, "", 0, out);
	ck_assert_int_eq(sstep(s, "tim B913A602C7EDA7A495B4E6E7334D3890", 36,
	    out), SASL_OK);
	sasl_server_free(&s);
}
END_TEST

START_TEST(test_cram_bad)
{
	static const char *bad[] = {
		"tim b913a602c7eda7a495b4e6e7334d3891",	/* wrong digest */
		"tom b913a602c7eda7a495b4e6e7334d3890",	/* unknown user */
		"tim b913a602c7eda7a495b4e6e7334d389",	/* short */
		"timb913a602c7eda7a495b4e6e7334d3890",	/* no space */
		" b913a602c7eda7a495b4e6e7334d3890",	/* empty user */
		"tim b913a602c7eda7a495b4e6e7334d389g",	/* not hex */
		"",
	};
	char out[SASL_OUT_MAX];
	struct sasl_server *s;
	size_t i;

	sasl_test_set_nonces(NULL, NULL,
	    "<1896.697170952@postoffice.reston.mci.net>");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = sasl_server_new("CRAM-MD5", pw, "h", 0, 1);
		ck_assert_int_eq(sstep(s, "", 0, out), SASL_CONTINUE);
		ck_assert_msg(sstep(s, bad[i], strlen(bad[i]), out) == SASL_FAIL,
		    "accepted %s", bad[i]);
		ck_assert_ptr_null(sasl_server_user(s));
		sasl_server_free(&s);
	}
	/* CRAM-MD5 has no initial response. */
	s = sasl_server_new("CRAM-MD5", pw, "h", 0, 1);
	ck_assert_int_eq(sstep(s, "tim", 3, out), SASL_FAIL);
	sasl_server_free(&s);
}
END_TEST

START_TEST(test_cram_challenge_random)
{
	char a[SASL_OUT_MAX], b[SASL_OUT_MAX];
	struct sasl_server *s1, *s2;

	s1 = sasl_server_new("CRAM-MD5", pw, "relay.example", 0, 1);
	s2 = sasl_server_new("CRAM-MD5", pw, "relay.example", 0, 1);
	ck_assert_int_eq(sstep(s1, "", 0, a), SASL_CONTINUE);
	ck_assert_int_eq(sstep(s2, "", 0, b), SASL_CONTINUE);
	ck_assert_str_ne(a, b);
	ck_assert_int_eq(a[0], '<');
	ck_assert_ptr_nonnull(strstr(a, "@relay.example>"));
	sasl_server_free(&s1);
	sasl_server_free(&s2);
}
END_TEST

#define R7677_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define R7677_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define R7677_FINAL "c=biws,r=" R7677_CNONCE R7677_SNONCE \
	",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="

/* RFC 7677 section 3 example exchange, server side. */
START_TEST(test_scram_rfc7677_server)
{
	char out[SASL_OUT_MAX];
	struct sasl_server *s;

	sasl_test_set_nonces(R7677_SNONCE, NULL, NULL);
	s = sasl_server_new("SCRAM-SHA-256", pw, "h", 0, 1);
	ck_assert_ptr_nonnull(s);
	/* No initial response: empty challenge first. */
	ck_assert_int_eq(sstep(s, "", 0, out), SASL_CONTINUE);
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(sstep(s, "n,,n=user,r=" R7677_CNONCE,
	    strlen("n,,n=user,r=" R7677_CNONCE), out), SASL_CONTINUE);
	ck_assert_str_eq(out, "r=" R7677_CNONCE R7677_SNONCE
	    ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	ck_assert_int_eq(sstep(s, R7677_FINAL, strlen(R7677_FINAL), out),
	    SASL_CONTINUE);
	ck_assert_str_eq(out, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	ck_assert_ptr_null(sasl_server_user(s));
	ck_assert_int_eq(sstep(s, "", 0, out), SASL_OK);
	ck_assert_str_eq(sasl_server_user(s), "user");
	sasl_server_free(&s);
}
END_TEST

/* RFC 7677 example, client side. */
START_TEST(test_scram_rfc7677_client)
{
	unsigned char out[SASL_OUT_MAX];
	static const char sfirst[] = "r=" R7677_CNONCE R7677_SNONCE
	    ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
	static const char sfinal[] =
	    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
	struct sasl_client *c;
	size_t len;

	sasl_test_set_nonces(NULL, R7677_CNONCE, NULL);
	c = sasl_client_new("scram-sha-256", "user", "pencil");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(sasl_client_start(c, out, sizeof(out), &len), 1);
	ck_assert_int_eq(len, strlen("n,,n=user,r=" R7677_CNONCE));
	ck_assert(memcmp(out, "n,,n=user,r=" R7677_CNONCE, len) == 0);
	ck_assert_int_eq(sasl_client_step(c, (const unsigned char *)sfirst,
	    strlen(sfirst), out, sizeof(out), &len), SASL_CONTINUE);
	ck_assert_int_eq(len, strlen(R7677_FINAL));
	ck_assert(memcmp(out, R7677_FINAL, len) == 0);
	ck_assert(!sasl_client_done(c));
	ck_assert_int_eq(sasl_client_step(c, (const unsigned char *)sfinal,
	    strlen(sfinal), out, sizeof(out), &len), SASL_CONTINUE);
	ck_assert_int_eq(len, 0);
	ck_assert(sasl_client_done(c));
	sasl_client_free(&c);

	/* A forged server signature is caught. */
	c = sasl_client_new("SCRAM-SHA-256", "user", "pencil");
	sasl_client_start(c, out, sizeof(out), &len);
	sasl_client_step(c, (const unsigned char *)sfirst, strlen(sfirst), out,
	    sizeof(out), &len);
	ck_assert_int_eq(sasl_client_step(c, (const unsigned char *)
	    "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", 46, out,
	    sizeof(out), &len), SASL_FAIL);
	ck_assert(!sasl_client_done(c));
	sasl_client_free(&c);

	/* A server that drops our nonce or weakens the count is refused. */
	c = sasl_client_new("SCRAM-SHA-256", "user", "pencil");
	sasl_client_start(c, out, sizeof(out), &len);
	ck_assert_int_eq(sasl_client_step(c, (const unsigned char *)
	    "r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 42, out,
	    sizeof(out), &len), SASL_FAIL);
	sasl_client_free(&c);
	c = sasl_client_new("SCRAM-SHA-256", "user", "pencil");
	sasl_client_start(c, out, sizeof(out), &len);
	ck_assert_int_eq(sasl_client_step(c, (const unsigned char *)
	    "r=" R7677_CNONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",
	    strlen("r=" R7677_CNONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1"), out,
	    sizeof(out), &len), SASL_FAIL);
	sasl_client_free(&c);
}
END_TEST

START_TEST(test_scram_bad)
{
	static const char *bad_first[] = {
		"p=tls-unique,,n=user,r=abc",	/* channel binding */
		"n,,m=ext,n=user,r=abc",		/* mandatory extension */
		"n,,n=user",				/* no nonce */
		"n,,n=,r=abc",				/* empty name */
		"n,,n=us=4er,r=abc",			/* bad escape */
		"n,a=other,n=user,r=abc",		/* other authzid */
		"x,,n=user,r=abc",
		"n,,n=user,r=",
	};
	char out[SASL_OUT_MAX], msg[SASL_OUT_MAX];
	struct sasl_server *s;
	size_t i;

	for (i = 0; i < sizeof(bad_first) / sizeof(bad_first[0]); i++) {
		s = sasl_server_new("SCRAM-SHA-256", pw, "h", 0, 1);
		ck_assert_msg(sstep(s, bad_first[i], strlen(bad_first[i]), out)
		    == SASL_FAIL, "accepted %s", bad_first[i]);
		sasl_server_free(&s);
	}
	/* y flag and matching authzid are fine. */
	sasl_test_set_nonces(R7677_SNONCE, NULL, NULL);
	s = sasl_server_new("SCRAM-SHA-256", pw, "h", 0, 1);
	ck_assert_int_eq(sstep(s, "y,a=user,n=user,r=" R7677_CNONCE,
	    strlen("y,a=user,n=user,r=" R7677_CNONCE), out), SASL_CONTINUE);
	/* ...but then c= must carry that header, and biws is wrong. */
	ck_assert_int_eq(sstep(s, R7677_FINAL, strlen(R7677_FINAL), out),
	    SASL_FAIL);
	sasl_server_free(&s);

	/* Wrong proof, wrong nonce, wrong c=. */
	static const char *bad_final[] = {
		"c=biws,r=" R7677_CNONCE R7677_SNONCE
		    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVM=",
		"c=biws,r=" R7677_CNONCE "XX"
		    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"c=eSws,r=" R7677_CNONCE R7677_SNONCE
		    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"c=biws,r=" R7677_CNONCE R7677_SNONCE,
		"c=biws,r=" R7677_CNONCE R7677_SNONCE ",p=AAAA",
	};
	for (i = 0; i < sizeof(bad_final) / sizeof(bad_final[0]); i++) {
		s = sasl_server_new("SCRAM-SHA-256", pw, "h", 0, 1);
		ck_assert_int_eq(sstep(s, "n,,n=user,r=" R7677_CNONCE,
		    strlen("n,,n=user,r=" R7677_CNONCE), out), SASL_CONTINUE);
		ck_assert_msg(sstep(s, bad_final[i], strlen(bad_final[i]), out)
		    == SASL_FAIL, "accepted %s", bad_final[i]);
		ck_assert_ptr_null(sasl_server_user(s));
		sasl_server_free(&s);
	}

	/* Unknown user: a plausible, stable server-first, then failure. */
	s = sasl_server_new("SCRAM-SHA-256", pw, "h", 0, 1);
	ck_assert_int_eq(sstep(s, "n,,n=nobody,r=abc", 17, out), SASL_CONTINUE);
	ck_assert_ptr_nonnull(strstr(out, ",i=4096"));
	snprintf(msg, sizeof(msg), "%s", out);
	ck_assert_int_eq(sstep(s, "c=biws,r=abc" R7677_SNONCE
	    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	    strlen("c=biws,r=abc" R7677_SNONCE
	    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), out), SASL_FAIL);
	sasl_server_free(&s);
	s = sasl_server_new("SCRAM-SHA-256", pw, "h", 0, 1);
	ck_assert_int_eq(sstep(s, "n,,n=nobody,r=abc", 17, out), SASL_CONTINUE);
	ck_assert_str_eq(out, msg);
	sasl_server_free(&s);

	/* A non-empty answer to server-final fails. */
	s = sasl_server_new("SCRAM-SHA-256", pw, "h", 0, 1);
	sstep(s, "n,,n=user,r=" R7677_CNONCE, strlen("n,,n=user,r="
	    R7677_CNONCE), out);
	ck_assert_int_eq(sstep(s, R7677_FINAL, strlen(R7677_FINAL), out),
	    SASL_CONTINUE);
	ck_assert_int_eq(sstep(s, "x", 1, out), SASL_FAIL);
	ck_assert_ptr_null(sasl_server_user(s));
	sasl_server_free(&s);
}
END_TEST

START_TEST(test_plain)
{
	char out[SASL_OUT_MAX];
	struct sasl_server *s;
	static const struct {
		const char *msg;
		size_t len;
		int rc;
	} cases[] = {
		{ "\0alice\0s3cret pass", 18, SASL_OK },
		{ "alice\0alice\0s3cret pass", 23, SASL_OK },
		{ "bob\0alice\0s3cret pass", 21, SASL_FAIL },	/* authzid */
		{ "\0alice\0s3cret pasS", 18, SASL_FAIL },
		{ "\0alice\0s3cret pass\0", 19, SASL_FAIL },
		{ "\0alice", 6, SASL_FAIL },
		{ "\0\0s3cret pass", 13, SASL_FAIL },
		{ "\0alice\0", 7, SASL_FAIL },
		{ "\0nobody\0s3cret pass", 19, SASL_FAIL },
		{ "\0tim\0tanstaaftanstaaf", 21, SASL_OK },
		/* Only a CRAM-MD5 secret stored: PLAIN still verifies. */
		{ "\0cramonly\0only-cram", 19, SASL_OK },
		{ "\0cramonly\0only-cran", 19, SASL_FAIL },
		{ "\0we,ird=name\0pw", 15, SASL_OK },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* As initial response. */
		s = sasl_server_new("PLAIN", pw, "h", 1, 1);
		ck_assert_ptr_nonnull(s);
		ck_assert_msg(sstep(s, cases[i].msg, cases[i].len, out) ==
		    cases[i].rc, "case %zu", i);
		if (cases[i].rc == SASL_OK)
			ck_assert_ptr_nonnull(sasl_server_user(s));
		sasl_server_free(&s);
		/* After an empty challenge. */
		s = sasl_server_new("PLAIN", pw, "h", 0, 0);
		ck_assert_int_eq(sstep(s, "", 0, out), SASL_CONTINUE);
		ck_assert_str_eq(out, "");
		ck_assert_int_eq(sstep(s, cases[i].msg, cases[i].len, out),
		    cases[i].rc);
		sasl_server_free(&s);
	}
	s = sasl_server_new("PLAIN", pw, "h", 1, 1);
	ck_assert_int_eq(sstep(s, "\0alice\0s3cret pass", 18, out), SASL_OK);
	ck_assert_str_eq(sasl_server_user(s), "alice");
	sasl_server_free(&s);
}
END_TEST

START_TEST(test_login)
{
	char out[SASL_OUT_MAX];
	struct sasl_server *s;

	s = sasl_server_new("LOGIN", pw, "h", 1, 1);
	ck_assert_int_eq(sstep(s, "", 0, out), SASL_CONTINUE);
	ck_assert_str_eq(out, "Username:");
	ck_assert_int_eq(sstep(s, "alice", 5, out), SASL_CONTINUE);
	ck_assert_str_eq(out, "Password:");
	ck_assert_int_eq(sstep(s, "s3cret pass", 11, out), SASL_OK);
	ck_assert_str_eq(sasl_server_user(s), "alice");
	sasl_server_free(&s);

	/* Username as initial response. */
	s = sasl_server_new("LOGIN", pw, "h", 1, 1);
	ck_assert_int_eq(sstep(s, "alice", 5, out), SASL_CONTINUE);
	ck_assert_str_eq(out, "Password:");
	ck_assert_int_eq(sstep(s, "wrong", 5, out), SASL_FAIL);
	ck_assert_ptr_null(sasl_server_user(s));
	sasl_server_free(&s);

	s = sasl_server_new("LOGIN", pw, "h", 1, 1);
	sstep(s, "", 0, out);
	ck_assert_int_eq(sstep(s, "", 0, out), SASL_FAIL);	/* empty user */
	sasl_server_free(&s);
	s = sasl_server_new("LOGIN", pw, "h", 1, 1);
	sstep(s, "", 0, out);
	sstep(s, "ghost", 5, out);
	ck_assert_int_eq(sstep(s, "s3cret pass", 11, out), SASL_FAIL);
	sasl_server_free(&s);
}
END_TEST

/* Our client against our server, every mechanism, right and wrong. */
static int converse(const char *mech, const char *user, const char *pass,
    int *client_done_r)
{
	unsigned char cbuf[SASL_OUT_MAX], sbuf[SASL_OUT_MAX];
	size_t clen, slen;
	struct sasl_client *c;
	struct sasl_server *s;
	int rc, crc, rounds = 0;

	c = sasl_client_new(mech, user, pass);
	s = sasl_server_new(mech, pw, "relay.example", 1, 1);
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(s);
	crc = sasl_client_start(c, cbuf, sizeof(cbuf), &clen);
	ck_assert_int_ge(crc, 0);
	if (crc == 0)
		clen = 0;
	for (;;) {
		ck_assert_int_lt(rounds++, 10);
		rc = sasl_server_step(s, cbuf, clen, sbuf, sizeof(sbuf), &slen);
		if (rc != SASL_CONTINUE)
			break;
		crc = sasl_client_step(c, sbuf, slen, cbuf, sizeof(cbuf), &clen);
		if (crc != SASL_CONTINUE) {
			rc = SASL_FAIL;
			break;
		}
	}
	if (rc == SASL_OK)
		ck_assert_str_eq(sasl_server_user(s), user);
	*client_done_r = sasl_client_done(c);
	sasl_client_free(&c);
	sasl_server_free(&s);
	return rc;
}

START_TEST(test_client_server)
{
	static const char *mechs[] = {
		"SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"
	};
	int i, done;

	for (i = 0; i < 4; i++) {
		ck_assert_msg(converse(mechs[i], "alice", "s3cret pass", &done)
		    == SASL_OK, "%s", mechs[i]);
		ck_assert(done);
		ck_assert_int_eq(converse(mechs[i], "we,ird=name", "pw", &done),
		    SASL_OK);
		ck_assert_int_eq(converse(mechs[i], "alice", "s3cret pasz",
		    &done), SASL_FAIL);
		ck_assert_int_eq(converse(mechs[i], "nobody", "s3cret pass",
		    &done), SASL_FAIL);
		ck_assert_int_eq(converse(mechs[i], "alic", "s3cret pass",
		    &done), SASL_FAIL);
	}
	/* cramonly has no SCRAM secret. */
	ck_assert_int_eq(converse("SCRAM-SHA-256", "cramonly", "only-cram",
	    &done), SASL_FAIL);
	ck_assert_int_eq(converse("CRAM-MD5", "cramonly", "only-cram", &done),
	    SASL_OK);
}
END_TEST

START_TEST(test_client_misc)
{
	unsigned char out[SASL_OUT_MAX];
	struct sasl_client *c;
	size_t len;

	ck_assert_ptr_null(sasl_client_new("NTLM", "a", "b"));
	/* PLAIN initial response layout. */
	c = sasl_client_new("PLAIN", "alice", "pw");
	ck_assert_int_eq(sasl_client_start(c, out, sizeof(out), &len), 1);
	ck_assert_int_eq(len, 9);
	ck_assert(memcmp(out, "\0alice\0pw", 9) == 0);
	sasl_client_free(&c);
	/* PLAIN without initial response: answers the empty challenge. */
	c = sasl_client_new("PLAIN", "alice", "pw");
	ck_assert_int_eq(sasl_client_step(c, NULL, 0, out, sizeof(out), &len),
	    SASL_CONTINUE);
	ck_assert_int_eq(len, 9);
	ck_assert_int_eq(sasl_client_step(c, NULL, 0, out, sizeof(out), &len),
	    SASL_FAIL);
	sasl_client_free(&c);
	/* CRAM-MD5 client reproduces RFC 2195. */
	c = sasl_client_new("CRAM-MD5", "tim", "tanstaaftanstaaf");
	ck_assert_int_eq(sasl_client_start(c, out, sizeof(out), &len), 0);
	ck_assert_int_eq(sasl_client_step(c, (const unsigned char *)
	    "<1896.697170952@postoffice.reston.mci.net>", 42, out, sizeof(out),
	    &len), SASL_CONTINUE);
	ck_assert_int_eq(len, 36);
	ck_assert(memcmp(out, "tim b913a602c7eda7a495b4e6e7334d3890", 36) == 0);
	ck_assert(sasl_client_done(c));
	sasl_client_free(&c);
	/* Output that does not fit fails cleanly. */
	c = sasl_client_new("PLAIN", "alice", "pw");
	ck_assert_int_eq(sasl_client_start(c, out, 4, &len), -1);
	sasl_client_free(&c);
}
END_TEST

START_TEST(test_throttle)
{
	struct sasl_throttle *t = sasl_throttle_new();
	static const unsigned want[] = { 1, 2, 4, 8, 16, 16, 16, 16, 16, 16 };
	int i;

	sasl_test_set_time(1000);
	ck_assert(!sasl_throttle_blocked(t, "192.0.2.1"));
	for (i = 0; i < 10; i++) {
		ck_assert(!sasl_throttle_blocked(t, "192.0.2.1"));
		ck_assert_uint_eq(sasl_throttle_failure(t, "192.0.2.1", NULL),
		    want[i]);
	}
	ck_assert(sasl_throttle_blocked(t, "192.0.2.1"));
	ck_assert(!sasl_throttle_blocked(t, "192.0.2.2"));
	/* Still blocked just before the window ends, free after. */
	sasl_test_set_time(1000 + SASL_THROTTLE_WINDOW - 1);
	ck_assert(sasl_throttle_blocked(t, "192.0.2.1"));
	sasl_test_set_time(1000 + SASL_THROTTLE_WINDOW);
	ck_assert(!sasl_throttle_blocked(t, "192.0.2.1"));
	ck_assert_uint_eq(sasl_throttle_failure(t, "192.0.2.1", NULL), 1);

	/* A success (of anyone) clears nothing (issue 17.4: a customer
	 * alternated his own logins with guesses). */
	ck_assert_uint_eq(sasl_throttle_failure(t, "192.0.2.1", "bob"), 2);
	sasl_throttle_success(t, "192.0.2.1", "alice");
	ck_assert_uint_eq(sasl_throttle_failure(t, "192.0.2.1", "bob"), 4);
	sasl_throttle_success(t, "192.0.2.1", "bob");
	ck_assert_uint_eq(sasl_throttle_failure(t, "192.0.2.1", "bob"), 8);

	/* IPv6: one /64 is one client. */
	ck_assert_uint_eq(sasl_throttle_failure(t, "2001:db8::1", NULL), 1);
	ck_assert_uint_eq(sasl_throttle_failure(t, "2001:db8::2:3", NULL), 2);
	ck_assert_uint_eq(sasl_throttle_failure(t, "2001:db8:0:1::1", NULL), 1);

	/* The table stays bounded. */
	for (i = 0; i < SASL_THROTTLE_SLOTS + 100; i++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16 & 255,
		    i >> 8 & 255, i & 255);
		sasl_throttle_failure(t, ip, ip);
	}
	sasl_throttle_free(&t);
	ck_assert_ptr_null(t);
}
END_TEST

/* Per user: guesses from many addresses add up; the user's own address
 * (logged in before) is not locked out by them. */
START_TEST(test_throttle_user)
{
	struct sasl_throttle *t = sasl_throttle_new();
	char ip[32];
	int i;

	sasl_test_set_time(5000);
	sasl_throttle_success(t, "198.51.100.7", "carol");
	for (i = 0; i < SASL_THROTTLE_MAX; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i + 1);
		ck_assert(!sasl_throttle_user_blocked(t, ip, "carol"));
		sasl_throttle_failure(t, ip, "carol");
	}
	ck_assert(sasl_throttle_user_blocked(t, "203.0.113.200", "carol"));
	ck_assert(!sasl_throttle_blocked(t, "203.0.113.200"));
	ck_assert(!sasl_throttle_user_blocked(t, "203.0.113.200", "dave"));
	ck_assert(!sasl_throttle_user_blocked(t, "198.51.100.7", "carol"));
	/* The hard cap holds even there. */
	for (; i < SASL_THROTTLE_USER_HARD; i++) {
		snprintf(ip, sizeof(ip), "203.0.%d.%d", i / 200, i % 200 + 1);
		sasl_throttle_failure(t, ip, "carol");
	}
	ck_assert(sasl_throttle_user_blocked(t, "198.51.100.7", "carol"));
	sasl_test_set_time(5000 + SASL_THROTTLE_WINDOW);
	ck_assert(!sasl_throttle_user_blocked(t, "203.0.113.200", "carol"));
	sasl_test_set_time(-1);
	sasl_throttle_free(&t);
}
END_TEST

/* A flood of failures from other addresses and for other names cannot
 * push a blocked user out of the table: a session process (or a client
 * with a /48 of IPv6) made 4096 cheap failures and got ten more guesses. */
START_TEST(test_throttle_flood_keeps_user)
{
	struct sasl_throttle *t = sasl_throttle_new();
	char ip[64], name[32];
	int i;

	sasl_test_set_time(7000);
	for (i = 0; i < SASL_THROTTLE_MAX; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i + 1);
		sasl_throttle_failure(t, ip, "carol");
	}
	ck_assert(sasl_throttle_user_blocked(t, "192.0.2.9", "carol"));
	for (i = 0; i < 3 * SASL_THROTTLE_SLOTS; i++) {
		snprintf(ip, sizeof(ip), "2001:db8:%x:%x::1", i >> 16 & 0xffff,
		    i & 0xffff);
		snprintf(name, sizeof(name), "junk%d", i);
		sasl_test_set_time(7001 + i / 100.0);
		sasl_throttle_failure(t, ip, i % 2 ? name : NULL);
	}
	ck_assert(sasl_throttle_user_blocked(t, "192.0.2.9", "carol"));
	sasl_test_set_time(-1);
	sasl_throttle_free(&t);
}
END_TEST

/* Guesses at a name that does not exist are delayed as for one that does:
 * the delay must not tell which user names exist. */
START_TEST(test_throttle_unknown_name_same_delays)
{
	struct sasl_throttle *t = sasl_throttle_new();
	static const unsigned want[] = { 1, 2, 4, 8, 16, 16 };
	char ip[32];
	int i;

	sasl_test_set_time(9000);
	for (i = 0; i < 6; i++) {
		snprintf(ip, sizeof(ip), "198.51.100.%d", i + 1);
		ck_assert_uint_eq(sasl_throttle_failure_name(t, ip, "carol", 1),
		    want[i]);
		snprintf(ip, sizeof(ip), "203.0.113.%d", i + 1);
		ck_assert_uint_eq(sasl_throttle_failure_name(t, ip, "ghost", 0),
		    want[i]);
	}
	sasl_test_set_time(-1);
	sasl_throttle_free(&t);
}
END_TEST

static Suite *sasl_suite(void)
{
	Suite *s = suite_create("sasl");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_mechs_offered);
	tcase_add_test(tc, test_client_choose);
	tcase_add_test(tc, test_cram_rfc2195);
	tcase_add_test(tc, test_cram_bad);
	tcase_add_test(tc, test_cram_challenge_random);
	tcase_add_test(tc, test_scram_rfc7677_server);
	tcase_add_test(tc, test_scram_rfc7677_client);
	tcase_add_test(tc, test_scram_bad);
	tcase_add_test(tc, test_plain);
	tcase_add_test(tc, test_login);
	tcase_add_test(tc, test_client_server);
	tcase_add_test(tc, test_client_misc);
	tcase_add_test(tc, test_throttle);
	tcase_add_test(tc, test_throttle_user);
	tcase_add_test(tc, test_throttle_flood_keeps_user);
	tcase_add_test(tc, test_throttle_unknown_name_same_delays);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(sasl_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
