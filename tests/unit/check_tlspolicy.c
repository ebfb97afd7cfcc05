/* Unit tests: tlspolicy modes, pins and what each mode requires. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tlspolicy.h"
#include "tlsa.h"
#include "mtasts.h"

START_TEST(test_modes)
{
	ck_assert_int_eq(tlspolicy_mode_parse("none"), TLSPOLICY_NONE);
	ck_assert_int_eq(tlspolicy_mode_parse("MAY"), TLSPOLICY_MAY);
	ck_assert_int_eq(tlspolicy_mode_parse("dane-only"), TLSPOLICY_DANE_ONLY);
	ck_assert_int_eq(tlspolicy_mode_parse("sts"), TLSPOLICY_STS);
	ck_assert_int_eq(tlspolicy_mode_parse("secure"), -1);
	ck_assert_int_eq(tlspolicy_mode_parse(""), -1);
	for (int m = 0; m < TLSPOLICY_NMODES; m++)
		ck_assert_int_eq(tlspolicy_mode_parse(tlspolicy_mode_name(m)), m);
}
END_TEST

START_TEST(test_fingerprints)
{
	struct tlspolicy_fp fp[4];
	char err[200], hex[200], colon[200];
	size_t n = 99;

	memset(hex, 'a', 64);
	hex[64] = '\0';
	for (int i = 0; i < 32; i++)
		memcpy(colon + 3 * i, i == 31 ? "0F" : "0F:", 3);
	colon[95] = '\0';
	{
		char in[600];

		snprintf(in, sizeof(in), "sha256:%s, Pubkey-SHA256:%s", hex, colon);
		ck_assert_int_eq(tlspolicy_fp_parse(in, fp, 4, &n, err,
		    sizeof(err)), 0);
	}
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(fp[0].pubkey, 0);
	ck_assert_uint_eq(fp[0].md[0], 0xaa);
	ck_assert_uint_eq(fp[0].md[31], 0xaa);
	ck_assert_int_eq(fp[1].pubkey, 1);
	ck_assert_uint_eq(fp[1].md[31], 0x0f);
	/* too short, too long, odd digits, bad prefix, bad digit */
	ck_assert_int_eq(tlspolicy_fp_parse("sha256:abcd", fp, 4, &n, err,
	    sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "sha256:abcd"));
	{
		char in[600];

		snprintf(in, sizeof(in), "sha256:%sab", hex);
		ck_assert_int_eq(tlspolicy_fp_parse(in, fp, 4, &n, err,
		    sizeof(err)), -1);
		snprintf(in, sizeof(in), "sha256:%sa", hex);
		ck_assert_int_eq(tlspolicy_fp_parse(in, fp, 4, &n, err,
		    sizeof(err)), -1);
		snprintf(in, sizeof(in), "md5:%s", hex);
		ck_assert_int_eq(tlspolicy_fp_parse(in, fp, 4, &n, err,
		    sizeof(err)), -1);
		snprintf(in, sizeof(in), "sha256:%s", hex);
		in[10] = 'g';
		ck_assert_int_eq(tlspolicy_fp_parse(in, fp, 4, &n, err,
		    sizeof(err)), -1);
		/* more than max */
		snprintf(in, sizeof(in), "sha256:%s sha256:%s", hex, hex);
		ck_assert_int_eq(tlspolicy_fp_parse(in, fp, 1, &n, err,
		    sizeof(err)), -1);
	}
	ck_assert_int_eq(tlspolicy_fp_parse("  ", fp, 4, &n, err, sizeof(err)), 0);
	ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_required)
{
	struct tlspolicy p;
	char err[200];

	ck_assert_int_eq(tlspolicy_init(&p, TLSPOLICY_MAY, NULL, NULL, err,
	    sizeof(err)), 0);
	ck_assert_int_eq(tlspolicy_required(&p), 0);
	p.mode = TLSPOLICY_NONE;
	ck_assert_int_eq(tlspolicy_required(&p), 0);
	p.mode = TLSPOLICY_DANE;	/* no secure TLSA: may */
	ck_assert_int_eq(tlspolicy_required(&p), 0);
	p.ntlsa = 1;			/* secure TLSA: required */
	ck_assert_int_eq(tlspolicy_required(&p), 1);
	p.ntlsa = 0;
	p.mode = TLSPOLICY_STS;
	ck_assert_int_eq(tlspolicy_required(&p), 0);
	p.sts = 2;			/* testing: not required */
	ck_assert_int_eq(tlspolicy_required(&p), 0);
	p.sts = 1;
	ck_assert_int_eq(tlspolicy_required(&p), 1);
	for (int m = TLSPOLICY_ENCRYPT; m <= TLSPOLICY_FINGERPRINT; m++) {
		ck_assert_int_eq(tlspolicy_init(&p, m, "/x/ca.pem", NULL, err,
		    sizeof(err)), 0);
		ck_assert_int_eq(tlspolicy_required(&p), 1);
		ck_assert_str_eq(p.ca_file, "/x/ca.pem");
	}
	ck_assert_int_eq(tlspolicy_init(&p, TLSPOLICY_DANE_ONLY, NULL, NULL,
	    err, sizeof(err)), 0);
	ck_assert_int_eq(tlspolicy_required(&p), 1);
	ck_assert_int_eq(tlspolicy_init(&p, TLSPOLICY_FINGERPRINT, NULL,
	    "sha256:zz", err, sizeof(err)), -1);
}
END_TEST

START_TEST(test_for_domain)
{
	struct config *cfg = config_defaults();
	struct tlspolicy p;
	char err[200];

	/* No section: the global default (may). */
	ck_assert_int_eq(tlspolicy_for_domain(&p, cfg, "nowhere.test", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(p.mode, TLSPOLICY_MAY);
	ck_assert_str_eq(p.ca_file, "");
	config_free(&cfg);
}
END_TEST

/* A response: header flags, one question, answers of TLSA rdata. */
static size_t mkresp(unsigned char *m, int ad, int rcode,
    const unsigned char (*rd)[40], const size_t *rdlen, size_t n)
{
	static const unsigned char qname[] = "\003_25\004_tcp\002mx\004test";
	size_t o = 12;

	memset(m, 0, 12);
	m[2] = 0x81;
	m[3] = (unsigned char)((ad ? 0x20 : 0) | 0x80 | rcode);
	m[5] = 1;
	m[7] = (unsigned char)n;
	memcpy(m + o, qname, sizeof(qname));
	o += sizeof(qname);
	m[o++] = 0; m[o++] = 52; m[o++] = 0; m[o++] = 1;
	for (size_t i = 0; i < n; i++) {
		m[o++] = 0xc0; m[o++] = 12;	/* pointer to the question */
		m[o++] = 0; m[o++] = 52; m[o++] = 0; m[o++] = 1;
		m[o++] = 0; m[o++] = 0; m[o++] = 1; m[o++] = 0;
		m[o++] = 0; m[o++] = (unsigned char)rdlen[i];
		memcpy(m + o, rd[i], rdlen[i]);
		o += rdlen[i];
	}
	return o;
}

START_TEST(test_tlsa_parse)
{
	unsigned char m[512], rd[2][40];
	size_t rl[2], len, n;
	struct tlspolicy_tlsa t[4];

	memset(rd, 0xab, sizeof(rd));
	rd[0][0] = 3; rd[0][1] = 1; rd[0][2] = 1; rl[0] = 35;
	rd[1][0] = 2; rd[1][1] = 0; rd[1][2] = 1; rl[1] = 20;	/* short */
	len = mkresp(m, 1, 0, rd, rl, 2);
	ck_assert_int_eq(tlsa_parse(m, len, t, 4, &n), TLSA_SECURE);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(t[0].usage, 3);
	ck_assert_uint_eq(t[0].len, 32);
	ck_assert_uint_eq(t[0].data[31], 0xab);
	/* no AD: insecure, whatever it holds */
	len = mkresp(m, 0, 0, rd, rl, 1);
	ck_assert_int_eq(tlsa_parse(m, len, t, 4, &n), TLSA_INSECURE);
	/* secure NXDOMAIN / NODATA; SERVFAIL */
	len = mkresp(m, 1, 3, rd, rl, 0);
	ck_assert_int_eq(tlsa_parse(m, len, t, 4, &n), TLSA_SECURE_NONE);
	len = mkresp(m, 1, 0, rd, rl, 0);
	ck_assert_int_eq(tlsa_parse(m, len, t, 4, &n), TLSA_SECURE_NONE);
	len = mkresp(m, 0, 2, rd, rl, 0);
	ck_assert_int_eq(tlsa_parse(m, len, t, 4, &n), TLSA_TEMPFAIL);
	/* only malformed records: TLS still required */
	len = mkresp(m, 1, 0, rd + 1, rl + 1, 1);
	ck_assert_int_eq(tlsa_parse(m, len, t, 4, &n), TLSA_SECURE);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(t[0].usage, 255);
	/* every truncation is refused or parsed within bounds */
	len = mkresp(m, 1, 0, rd, rl, 2);
	for (size_t k = 0; k < len; k++)
		(void)tlsa_parse(m, k, t, 4, &n);
	ck_assert_int_eq(tlsa_parse(m, len - 1, t, 4, &n), TLSA_TEMPFAIL);
}
END_TEST

START_TEST(test_mtasts_policy)
{
	static const char good[] = "version: STSv1\r\nmode: enforce\r\n"
	    "mx: Mail.Example.com.\r\nmx: *.example.net\r\nfoo: bar\r\n"
	    "max_age: 99999999999\r\n";
	struct mtasts_policy p;
	char err[200];

	ck_assert_int_eq(mtasts_parse_policy(good, strlen(good), &p, err,
	    sizeof(err)), -1);	/* max_age too many digits */
	{
		static const char ok[] = "version: STSv1\nmode: enforce\n"
		    "mx: Mail.Example.com.\nmx: *.example.net\nfoo: bar\n"
		    "max_age: 86400\n";

		ck_assert_int_eq(mtasts_parse_policy(ok, strlen(ok), &p, err,
		    sizeof(err)), 0);
	}
	ck_assert_int_eq(p.mode, MTASTS_ENFORCE);
	ck_assert_int_eq(p.max_age, 86400);
	ck_assert_uint_eq(p.nmx, 2);
	ck_assert(mtasts_mx_match(&p, "mail.example.com"));
	ck_assert(mtasts_mx_match(&p, "MAIL.example.com."));
	ck_assert(mtasts_mx_match(&p, "mx1.example.net"));
	ck_assert(!mtasts_mx_match(&p, "a.mx1.example.net"));
	ck_assert(!mtasts_mx_match(&p, "example.net"));
	ck_assert(!mtasts_mx_match(&p, "other.example.com"));
	ck_assert_int_eq(mtasts_parse_policy("version: STSv1\nmode: testing\n"
	    "max_age: 5\n", 36, &p, err, sizeof(err)), -1);	/* no mx */
	ck_assert_int_eq(mtasts_parse_policy("version: STSv2\n", 15, &p, err,
	    sizeof(err)), -1);
}
END_TEST

/* ---- the keys in odrelay.conf ---- */

static char cfg_err[512];
static int cfg_nerr;

static void cfg_errfn(void *arg, const char *msg)
{
	(void)arg;
	if (cfg_nerr++ == 0)
		snprintf(cfg_err, sizeof(cfg_err), "%s", msg);
}

static struct config *cfg_load(const char *text)
{
	char path[] = "/tmp/check_tlspolicy.XXXXXX";
	int fd = mkstemp(path);
	struct config *cfg;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cfg_nerr = 0;
	cfg_err[0] = '\0';
	cfg = config_load(path, cfg_errfn, NULL);
	unlink(path);
	return cfg;
}

START_TEST(test_config_keys)
{
	struct config *cfg;
	struct tlspolicy p;
	char err[200];

	cfg = cfg_load("tls = verify\ntls_ca_file = /etc/ca.pem\n"
	    "dns_servers = 127.0.0.1:53\n"
	    "[domain pin.test]\ntls = fingerprint\n"
	    "tls_fingerprint = pubkey-sha256:" "0102030405060708091011121314151617181920212223242526272829303132\n"
	    "[domain dane.test]\ntls = dane-only\nsubdomains = yes\n"
	    "[domain plain.test]\n");
	ck_assert_msg(cfg != NULL, "%s", cfg_err);
	ck_assert_int_eq(cfg->tls, TLSPOLICY_VERIFY);
	ck_assert_int_eq(tlspolicy_for_domain(&p, cfg, "pin.test", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(p.mode, TLSPOLICY_FINGERPRINT);
	ck_assert_uint_eq(p.nfp, 1);
	ck_assert_int_eq(p.fp[0].pubkey, 1);
	ck_assert_str_eq(p.ca_file, "/etc/ca.pem");	/* inherited */
	ck_assert_int_eq(tlspolicy_for_domain(&p, cfg, "dane.test", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(p.mode, TLSPOLICY_DANE_ONLY);
	ck_assert_int_eq(tlspolicy_for_domain(&p, cfg, "plain.test", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(p.mode, TLSPOLICY_VERIFY);	/* global */
	/* a subdomain its section takes in (ETRN sub.dane.test) has the
	 * section's; one of a section without subdomains, the global */
	ck_assert_int_eq(tlspolicy_for_domain(&p, cfg, "mx.sub.dane.test", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(p.mode, TLSPOLICY_DANE_ONLY);
	ck_assert_int_eq(tlspolicy_for_domain(&p, cfg, "sub.pin.test", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(p.mode, TLSPOLICY_VERIFY);
	config_free(&cfg);

	ck_assert_ptr_null(cfg_load("tls = secure\n"));
	ck_assert_ptr_nonnull(strstr(cfg_err, ":1: bad value for 'tls'"));
	ck_assert_ptr_null(cfg_load("\ntls_fingerprint = sha1:00\n"));
	ck_assert_ptr_nonnull(strstr(cfg_err, ":2: bad value for 'tls_fingerprint'"));
	ck_assert_ptr_null(cfg_load("[domain x.test]\ntls = fingerprint\n"));
	ck_assert_ptr_nonnull(strstr(cfg_err, ":1: domain x.test: tls = "
	    "fingerprint needs tls_fingerprint"));
	/* DANE trusts the AD bit only from a resolver on loopback. */
	ck_assert_ptr_null(cfg_load("dns_servers = 192.0.2.1\n"
	    "[domain x.test]\ntls = dane\n"));
	ck_assert_ptr_nonnull(strstr(cfg_err, "loopback"));
	ck_assert_ptr_null(cfg_load("tls = dane\n"));	/* resolv.conf */
	cfg = cfg_load("tls = dane\ndns_servers = 127.0.0.1:5353 [::1]:53\n");
	ck_assert_msg(cfg != NULL, "%s", cfg_err);
	config_free(&cfg);
}
END_TEST

static Suite *tlspolicy_suite(void)
{
	Suite *su = suite_create("tlspolicy");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_modes);
	tcase_add_test(tc, test_fingerprints);
	tcase_add_test(tc, test_required);
	tcase_add_test(tc, test_for_domain);
	tcase_add_test(tc, test_tlsa_parse);
	tcase_add_test(tc, test_mtasts_policy);
	tcase_add_test(tc, test_config_keys);
	suite_add_tcase(su, tc);
	return su;
}

int main(void)
{
	SRunner *sr = srunner_create(tlspolicy_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
