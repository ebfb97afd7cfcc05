/*
 * check_passwd - password file parsing, lookups, stored-secret
 * verification and the atomic rewrite helpers used by odrelayctl.
 */
#include <sys/stat.h>
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "passwd.h"

static char tmpdir[] = "/tmp/check_passwd.XXXXXX";
static char path[256];
static char errs[4096];
static int nerrs;

static void errfn(void *arg, const char *msg)
{
	(void)arg;
	nerrs++;
	strncat(errs, msg, sizeof(errs) - strlen(errs) - 2);
	strcat(errs, "\n");
}

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/passwd", tmpdir);
	errs[0] = '\0';
	nerrs = 0;
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(tmpdir, "/tmp/check_passwd.XXXXXX");
}

static void write_file(const char *text)
{
	FILE *fp = fopen(path, "w");

	ck_assert_ptr_nonnull(fp);
	fputs(text, fp);
	fclose(fp);
	chmod(path, 0600);
}

static char *entry(const char *name, const char *pass, const char *dom)
{
	char err[256];
	const char *d[] = { dom };
	char *line = passwd_make_entry(name, pass, d, 1, err, sizeof(err));

	ck_assert_msg(line != NULL, "%s", err);
	return line;
}

/* Secret part of an entry line (between the first two colons). */
static char *secret_of(const char *line)
{
	const char *a = strchr(line, ':') + 1;
	const char *b = strchr(a, ':');

	return strndup(a, (size_t)(b - a));
}

static char *read_all(void)
{
	static char buf[8192];
	FILE *fp = fopen(path, "r");
	size_t n;

	ck_assert_ptr_nonnull(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

START_TEST(test_parse_errors)
{
	char *good = entry("alice", "pw1", "example.org");
	char *sec = secret_of(good);
	char text[4096], want[512];
	struct passwd_db *pw;
	static const int bad_lines[] = { 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 };
	size_t i;

	snprintf(text, sizeof(text),
	    "# comment\n"					/* 1 */
	    "\n"						/* 2 */
	    "%s\n"						/* 3 */
	    "bob:{ODR1}cram=zz:example.org\n"			/* 4 */
	    "nocolon\n"						/* 5 */
	    "carol:{PLAIN}secret:example.org\n"		/* 6 */
	    "alice:%s:example.org\n"				/* 7 dup */
	    "dave:%s:exa mple.org\n"				/* 8 */
	    "eve:%s:\n"						/* 9 */
	    "frank:{ODR1}scram=10$AAAA$AAAA$AAAA:example.org\n" /* 10 */
	    "gina:%s:example.org:extra\n"			/* 11 */
	    "h i:%s:example.org\n"				/* 12 */
	    "ivan:{ODR1}cram=00;bogus=1:example.org\n"		/* 13 */
	    "   # indented comment\n",				/* 14 */
	    good, sec, sec, sec, sec, sec);
	write_file(text);
	pw = passwd_load(path, errfn, NULL);
	ck_assert_ptr_null(pw);
	ck_assert_int_eq(nerrs, (int)(sizeof(bad_lines) / sizeof(bad_lines[0])));
	for (i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
		snprintf(want, sizeof(want), "%s:%d: ", path, bad_lines[i]);
		ck_assert_msg(strstr(errs, want) != NULL, "no error for line %d:\n%s",
		    bad_lines[i], errs);
	}
	snprintf(want, sizeof(want), "%s:7: duplicate user alice (first on line 3)",
	    path);
	ck_assert_msg(strstr(errs, want) != NULL, "%s", errs);
	snprintf(want, sizeof(want), "%s:3: ", path);
	ck_assert_ptr_null(strstr(errs, want));
	free(good);
	free(sec);
}
END_TEST

START_TEST(test_missing_file)
{
	ck_assert_ptr_null(passwd_load(path, errfn, NULL));
	ck_assert_int_eq(nerrs, 1);
	ck_assert_ptr_nonnull(strstr(errs, "cannot open"));
	ck_assert(strncmp(errs, path, strlen(path)) == 0);
	ck_assert_ptr_null(passwd_load(path, NULL, NULL));
}
END_TEST

/* A file with no users is valid: nobody may ATRN. */
START_TEST(test_empty_file)
{
	struct passwd_db *pw;
	const char *doms[2];

	write_file("# nobody yet\n\n   \n");
	pw = passwd_load(path, errfn, NULL);
	ck_assert_msg(pw != NULL, "%s", errs);
	ck_assert_int_eq(nerrs, 0);
	ck_assert_uint_eq(passwd_count(pw), 0);
	ck_assert_ptr_null(passwd_find(pw, "alice"));
	ck_assert(!passwd_user_may(pw, "alice", "example.org"));
	ck_assert_int_eq(passwd_user_domain_list(pw, "alice", doms, 2), 0);
	passwd_free(&pw);
}
END_TEST

START_TEST(test_lookup)
{
	char *a = entry("alice", "pw1", "example.org");
	char *sec = secret_of(a);
	char text[4096];
	const char *doms[8];
	struct passwd_db *pw;
	const struct passwd_user *u;

	snprintf(text, sizeof(text),
	    "# users\r\n"
	    "  alice : %s : Example.ORG , other.example.net,example.org \r\n"
	    "\t\n"
	    "bob:%s:b.example\n"
	    "Bob:%s:c.example",		/* no final newline; case matters */
	    sec, sec, sec);
	write_file(text);
	pw = passwd_load(path, errfn, NULL);
	ck_assert_msg(pw != NULL, "%s", errs);
	ck_assert_int_eq(passwd_count(pw), 3);
	u = passwd_find(pw, "alice");
	ck_assert_ptr_nonnull(u);
	ck_assert_str_eq(passwd_user_name(u), "alice");
	ck_assert_uint_eq(passwd_user_ndomains(u), 2);	/* duplicate folded */
	ck_assert_str_eq(passwd_user_domain(u, 0), "example.org");
	ck_assert_str_eq(passwd_user_domain(u, 1), "other.example.net");
	ck_assert_ptr_null(passwd_user_domain(u, 2));
	ck_assert(passwd_user_may(pw, "alice", "EXAMPLE.org"));
	ck_assert(passwd_user_may(pw, "alice", "other.example.net"));
	ck_assert(!passwd_user_may(pw, "alice", "sub.example.org"));
	ck_assert(!passwd_user_may(pw, "alice", "b.example"));
	ck_assert(!passwd_user_may(pw, "ALICE", "example.org"));
	ck_assert(!passwd_user_may(pw, "nobody", "example.org"));
	ck_assert(passwd_user_may(pw, "bob", "b.example"));
	ck_assert(!passwd_user_may(pw, "bob", "c.example"));
	ck_assert(passwd_user_may(pw, "Bob", "c.example"));
	ck_assert_int_eq(passwd_user_domain_list(pw, "alice", doms, 8), 2);
	ck_assert_str_eq(doms[1], "other.example.net");
	ck_assert_int_eq(passwd_user_domain_list(pw, "alice", doms, 1), 1);
	ck_assert_int_eq(passwd_user_domain_list(pw, "zed", doms, 8), 0);
	ck_assert_ptr_null(passwd_find(pw, "zed"));
	ck_assert_ptr_null(passwd_find(NULL, "alice"));
	/* The stored secret verifies the password, nothing else. */
	ck_assert(passwd_user_check_password(u, "pw1", 3));
	ck_assert(!passwd_user_check_password(u, "pw2", 3));
	ck_assert(!passwd_user_check_password(u, "pw", 2));
	ck_assert(!passwd_user_check_password(NULL, "pw1", 3));
	passwd_free(&pw);
	ck_assert_ptr_null(pw);
	passwd_free(&pw);
	free(a);
	free(sec);
}
END_TEST

/* The stored CRAM-MD5 state gives plain HMAC-MD5, also for long keys. */
START_TEST(test_cram_state)
{
	static const char *passwords[] = {
		"tanstaaftanstaaf", "x",
		"0123456789012345678901234567890123456789012345678901234567890123",
		"a much longer password than the sixty-four byte HMAC block size, "
		"so the key is hashed first",
	};
	static const char chal[] = "<12345.67890@relay.example>";
	unsigned char want[16], got[16];
	unsigned int len;
	struct passwd_db *pw;
	size_t i;
	FILE *fp;
	char *e;

	fp = fopen(path, "w");
	for (i = 0; i < 4; i++) {
		char name[16];

		snprintf(name, sizeof(name), "u%zu", i);
		e = entry(name, passwords[i], "example.org");
		fprintf(fp, "%s\n", e);
		free(e);
	}
	fclose(fp);
	chmod(path, 0600);
	pw = passwd_load(path, errfn, NULL);
	ck_assert_msg(pw != NULL, "%s", errs);
	for (i = 0; i < 4; i++) {
		char name[16];

		snprintf(name, sizeof(name), "u%zu", i);
		len = sizeof(want);
		HMAC(EVP_md5(), passwords[i], (int)strlen(passwords[i]),
		    (const unsigned char *)chal, strlen(chal), want, &len);
		ck_assert_int_eq(passwd_user_cram_md5(passwd_find(pw, name),
		    (const unsigned char *)chal, strlen(chal), got), 0);
		ck_assert_msg(memcmp(want, got, 16) == 0, "password %zu", i);
		ck_assert(passwd_user_check_password(passwd_find(pw, name),
		    passwords[i], strlen(passwords[i])));
	}
	ck_assert_int_eq(passwd_user_cram_md5(NULL, (const unsigned char *)chal,
	    strlen(chal), got), -1);
	passwd_free(&pw);
}
END_TEST

/* Same layout as Dovecot: `doveadm pw -s CRAM-MD5 -p password` gives this. */
START_TEST(test_cram_dovecot_vector)
{
	char *e = entry("x", "password", "example.org");

	ck_assert(strncmp(e, "x:{ODR1}cram=9186d855e11eba527a7a52ca82b313e1"
	    "80d62234f0acc9051b527243d41e2740;", 78) == 0);
	free(e);
	write_file("d:{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b"
	    "527243d41e2740:example.org\n");
	struct passwd_db *pw = passwd_load(path, errfn, NULL);
	ck_assert_msg(pw != NULL, "%s", errs);
	ck_assert(passwd_user_check_password(passwd_find(pw, "d"), "password", 8));
	passwd_free(&pw);
}
END_TEST

/* Dovecot's own scheme strings are accepted as imports. */
START_TEST(test_dovecot_import)
{
	char *e = entry("x", "pencil", "example.org");
	char *cram = strstr(e, "cram=") + 5;
	char *scram = strstr(e, "scram=") + 6, *p;
	char text[2048];
	struct passwd_db *pw;
	struct passwd_scram sc;

	*strchr(cram, ';') = '\0';
	*strchr(scram, ':') = '\0';
	for (p = scram; *p != '\0'; p++)
		if (*p == '$')
			*p = ',';
	snprintf(text, sizeof(text),
	    "c:{CRAM-MD5}%s:example.org\n"
	    "s:{SCRAM-SHA-256}%s:example.org\n", cram, scram);
	write_file(text);
	pw = passwd_load(path, errfn, NULL);
	ck_assert_msg(pw != NULL, "%s", errs);
	ck_assert(passwd_user_check_password(passwd_find(pw, "c"), "pencil", 6));
	ck_assert(passwd_user_check_password(passwd_find(pw, "s"), "pencil", 6));
	ck_assert(!passwd_user_check_password(passwd_find(pw, "s"), "pencip", 6));
	ck_assert_int_eq(passwd_user_scram(passwd_find(pw, "c"), &sc), -1);
	ck_assert_int_eq(passwd_user_scram(passwd_find(pw, "s"), &sc), 0);
	ck_assert_uint_eq(sc.iter, PASSWD_SCRAM_ITER);
	ck_assert_uint_eq(sc.saltlen, 16);
	passwd_free(&pw);
	free(e);
}
END_TEST

START_TEST(test_make_entry_invalid)
{
	const char *d[] = { "example.org" }, *bad[] = { "-bad.example" };
	const char *single[] = { "localhost" };
	char err[256];
	char longpw[PASSWD_PASSWORD_MAX + 2];
	unsigned char salt[4] = { 1, 2, 3, 4 };

	memset(longpw, 'a', sizeof(longpw) - 1);
	longpw[sizeof(longpw) - 1] = '\0';
	ck_assert_ptr_null(passwd_make_entry("a", "", d, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("a", "x\ny", d, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("a", longpw, d, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("a:b", "x", d, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("a b", "x", d, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("#a", "x", d, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("", "x", d, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("a", "x", d, 0, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("a", "x", bad, 1, err, sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry("a", "x", single, 1, err,
	    sizeof(err)));
	ck_assert_ptr_null(passwd_make_entry_salt("a", "x", d, 1, salt, 4, 100,
	    err, sizeof(err)));
	ck_assert(passwd_domain_valid("a-b.example.org"));
	ck_assert(!passwd_domain_valid("a..b"));
	ck_assert(!passwd_domain_valid("a.b."));
	ck_assert(!passwd_domain_valid("a_b.org"));
	ck_assert(passwd_name_valid("user@example.org"));
}
END_TEST

/* Same password, same salt: same line; fresh salts differ. */
START_TEST(test_make_entry_format)
{
	const char *d[] = { "Example.org", "b.example" };
	unsigned char salt[16] = { 0 };
	char err[256], *a, *b;

	a = passwd_make_entry_salt("n", "pw", d, 2, salt, 16, 4096, err,
	    sizeof(err));
	b = passwd_make_entry_salt("n", "pw", d, 2, salt, 16, 4096, err,
	    sizeof(err));
	ck_assert_str_eq(a, b);
	ck_assert(strncmp(a, "n:{ODR1}cram=", 13) == 0);
	ck_assert_ptr_nonnull(strstr(a, ";scram=4096$AAAAAAAAAAAAAAAAAAAAAA==$"));
	ck_assert_ptr_nonnull(strstr(a, ":example.org,b.example"));
	ck_assert_ptr_null(strstr(a, "pw:"));
	free(a);
	free(b);
	a = passwd_make_entry("n", "pw", d, 2, err, sizeof(err));
	b = passwd_make_entry("n", "pw", d, 2, err, sizeof(err));
	ck_assert_str_ne(a, b);
	free(a);
	free(b);
}
END_TEST

static int count_files(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	int n = 0;

	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

START_TEST(test_file_add_del)
{
	const char *d1[] = { "example.org" }, *d2[] = { "b.example", "c.example" };
	char err[256], text[4096], bad[300];
	struct passwd_db *pw;
	struct stat st1, st2;
	FILE *out;
	char *buf;
	size_t buflen;
	mode_t old = umask(022);

	/* Created when missing, mode 0600 despite the umask. */
	ck_assert_int_eq(passwd_file_add(path, "alice", "pw1", d1, 1, err,
	    sizeof(err)), 0);
	ck_assert_int_eq(stat(path, &st1), 0);
	ck_assert_int_eq(st1.st_mode & 0777, 0600);
	ck_assert_int_eq(passwd_file_add(path, "bob", "pw2", d2, 2, err,
	    sizeof(err)), 0);
	umask(old);

	/* Add comments (last line without newline), loosen the mode. */
	snprintf(text, sizeof(text), "# header\n%s# trailer", read_all());
	write_file(text);
	chmod(path, 0644);
	ck_assert_int_eq(stat(path, &st1), 0);

	/* Replace alice: same place, new password, new inode; the mode is
	 * kept but for the bits of others (0644 -> 0640, issue 17.9). */
	ck_assert_int_eq(passwd_file_add(path, "alice", "pw3", d2, 2, err,
	    sizeof(err)), 1);
	ck_assert_int_eq(stat(path, &st2), 0);
	ck_assert_int_eq(st2.st_mode & 0777, 0640);
	ck_assert(st1.st_ino != st2.st_ino);
	ck_assert_int_eq(count_files(), 1);	/* no temporary left */
	buf = read_all();
	ck_assert(strncmp(buf, "# header\nalice:", 15) == 0);
	ck_assert_ptr_nonnull(strstr(buf, "\nbob:"));
	ck_assert(strstr(buf, "\nbob:") > strstr(buf, "alice:"));
	ck_assert_ptr_nonnull(strstr(buf, "\n# trailer"));

	pw = passwd_load(path, errfn, NULL);
	ck_assert_msg(pw != NULL, "%s", errs);
	ck_assert_int_eq(passwd_count(pw), 2);
	ck_assert(passwd_user_check_password(passwd_find(pw, "alice"), "pw3", 3));
	ck_assert(!passwd_user_check_password(passwd_find(pw, "alice"), "pw1", 3));
	ck_assert(passwd_user_may(pw, "alice", "c.example"));
	ck_assert(!passwd_user_may(pw, "alice", "example.org"));
	passwd_free(&pw);

	/* A new user after a last line without newline. */
	ck_assert_int_eq(passwd_file_add(path, "carol", "pw4", d1, 1, err,
	    sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(read_all(), "# trailer\ncarol:"));

	/* Delete. */
	ck_assert_int_eq(passwd_file_del(path, "bob", err, sizeof(err)), 0);
	ck_assert_int_eq(passwd_file_del(path, "bob", err, sizeof(err)), 1);
	ck_assert_int_eq(passwd_file_del(path, "a:b", err, sizeof(err)), -1);
	ck_assert_ptr_null(strstr(read_all(), "bob:"));
	ck_assert_int_eq(count_files(), 1);

	/* List. */
	out = open_memstream(&buf, &buflen);
	ck_assert_int_eq(passwd_file_list(path, out, err, sizeof(err)), 0);
	fclose(out);
	ck_assert_str_eq(buf,
	    "alice b.example,c.example SCRAM-SHA-256,CRAM-MD5,PLAIN,LOGIN\n"
	    "carol example.org SCRAM-SHA-256,CRAM-MD5,PLAIN,LOGIN\n");
	free(buf);

	/* Errors are reported, not fatal. */
	snprintf(bad, sizeof(bad), "%s/nodir/passwd", tmpdir);
	err[0] = '\0';
	ck_assert_int_eq(passwd_file_add(bad, "x", "y", d1, 1, err,
	    sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "nodir"));
	ck_assert_int_eq(passwd_file_list(bad, stdout, err, sizeof(err)), -1);
	ck_assert_int_eq(passwd_file_add(path, "x", "", d1, 1, err,
	    sizeof(err)), -1);
}
END_TEST

static Suite *passwd_suite(void)
{
	Suite *s = suite_create("passwd");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_parse_errors);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_empty_file);
	tcase_add_test(tc, test_lookup);
	tcase_add_test(tc, test_cram_state);
	tcase_add_test(tc, test_cram_dovecot_vector);
	tcase_add_test(tc, test_dovecot_import);
	tcase_add_test(tc, test_make_entry_invalid);
	tcase_add_test(tc, test_make_entry_format);
	tcase_add_test(tc, test_file_add_del);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(passwd_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
