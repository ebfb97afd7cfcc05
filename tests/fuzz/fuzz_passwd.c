/*
 * fuzz_passwd - libFuzzer target for common/passwd: passwd_load() on an
 * arbitrary file, then the lookups ATRN and SASL make on what loaded.
 *
 * The file is the input itself (one anonymous temporary file, rewritten for
 * each input). Password checks are not run on loaded entries: an
 * iteration count up to PASSWD_SCRAM_ITER_MAX is valid and would make one
 * input take seconds; the CRAM-MD5 and SCRAM key accessors are cheap.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "passwd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static struct fuzz_file ff;
static int nerr;

static void
errfn(void *arg, const char *msg)
{
	(void)arg;
	CHECK(msg != NULL);
	(void)strlen(msg);
	nerr++;
}

/* Run every read-only accessor on the user named name. */
static void
probe(const struct passwd_db *pw, const char *name)
{
	const struct passwd_user *u;
	const char *doms[8];
	struct passwd_scram sc;
	unsigned char dig[16];
	size_t i, nd;
	int n;

	u = passwd_find(pw, name);
	if (u == NULL) {
		CHECK(passwd_user_domain_list(pw, name, doms, 8) == 0);
		return;
	}
	CHECK(strcmp(passwd_user_name(u), name) == 0);
	nd = passwd_user_ndomains(u);
	for (i = 0; i < nd; i++) {
		const char *d = passwd_user_domain(u, i);
		CHECK(d != NULL);
		CHECK(passwd_user_may(pw, name, d) == 1);
	}
	n = passwd_user_domain_list(pw, name, doms, 8);
	CHECK(n >= 0 && (size_t)n <= (nd < 8 ? nd : 8));
	if (passwd_user_scram(u, &sc) == 0) {
		CHECK(sc.iter >= PASSWD_SCRAM_ITER_MIN &&
		    sc.iter <= PASSWD_SCRAM_ITER_MAX);
		CHECK(sc.saltlen <= PASSWD_SCRAM_SALT_MAX);
		/* touch every byte: ASan checks the stored buffers' bounds */
		volatile unsigned char x = 0;
		for (i = 0; i < sc.saltlen; i++)
			x ^= sc.salt[i];
		for (i = 0; i < 32; i++)
			x ^= sc.stored_key[i] ^ sc.server_key[i];
		(void)x;
	}
	(void)passwd_user_cram_md5(u, (const unsigned char *)"<1.2@x>", 7,
	    dig);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct passwd_db *pw;
	char name[PASSWD_NAME_MAX + 2];
	const uint8_t *p, *end, *nl, *colon;
	size_t n;

	if (ff.path[0] == '\0') {
		fuzz_log_quiet();
		fuzz_file_init(&ff);
	}
	fuzz_file_set(&ff, data, size);
	nerr = 0;
	pw = passwd_load(ff.path, errfn, NULL);
	if (pw == NULL) {
		CHECK(nerr > 0);
		return 0;
	}
	CHECK(nerr == 0);
	/* Look up the name field of every line, whatever it is. */
	for (p = data, end = data + size; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		colon = memchr(p, ':', (size_t)(nl - p));
		n = (size_t)((colon != NULL ? colon : nl) - p);
		if (n < sizeof(name) && memchr(p, '\0', n) == NULL) {
			memcpy(name, p, n);
			name[n] = '\0';
			probe(pw, name);
		}
	}
	probe(pw, "");
	probe(pw, "nosuchuser");
	passwd_free(&pw);
	CHECK(pw == NULL);
	return 0;
}
