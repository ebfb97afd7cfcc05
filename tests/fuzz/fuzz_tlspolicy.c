/*
 * fuzz_tlspolicy - libFuzzer target for the outbound TLS policy parsers:
 * TLSA records out of a DNS response (dns/tlsa.c), the MTA-STS TXT record
 * and policy file (relay/mtasts.c), tls_fingerprint pins
 * (common/tlspolicy.c).
 *
 * Input: one selector byte (low 2 bits: 0 TLSA response, 1 MTA-STS TXT
 * response, 2 MTA-STS policy, 3 pins), then the bytes. Checked: counts and
 * lengths within bounds, parsed fields within their ranges, mx patterns
 * well formed and matched by a host built from them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mtasts.h"
#include "tlsa.h"
#include "tlspolicy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static void fuzz_tlsa(const uint8_t *d, size_t n)
{
	struct tlspolicy_tlsa t[TLSPOLICY_MAX_TLSA];
	size_t k = 99;
	enum tlsa_status st = tlsa_parse(d, n, t, TLSPOLICY_MAX_TLSA, &k);

	CHECK(k <= TLSPOLICY_MAX_TLSA);
	CHECK(st != TLSA_SECURE || k > 0);
	for (size_t i = 0; i < k; i++) {
		CHECK(t[i].len <= sizeof(t[i].data));
		CHECK(t[i].mtype != 1 || t[i].len == 32 || t[i].usage == 255);
		CHECK(t[i].mtype != 2 || t[i].len == 64);
	}
}

static void fuzz_txt(const uint8_t *d, size_t n)
{
	char id[40];
	int r;

	memset(id, 'x', sizeof(id));
	r = mtasts_parse_txt(d, n, id, sizeof(id));
	CHECK(r >= -1 && r <= 1);
	if (r == 1) {
		size_t l = strnlen(id, sizeof(id));

		CHECK(l >= 1 && l <= 32);
	}
}

static void fuzz_policy(const uint8_t *d, size_t n)
{
	struct mtasts_policy *p = malloc(sizeof(*p));
	char err[200];

	CHECK(p != NULL);
	if (mtasts_parse_policy((const char *)d, n, p, err, sizeof(err)) == 0) {
		CHECK(p->mode >= MTASTS_NONE && p->mode <= MTASTS_ENFORCE);
		CHECK(p->max_age >= 0 && p->max_age <= MTASTS_MAX_AGE);
		CHECK(p->nmx <= MTASTS_MAX_MX);
		CHECK(p->mode == MTASTS_NONE || p->nmx > 0);
		for (size_t i = 0; i < p->nmx; i++) {
			char host[300];
			size_t l = strnlen(p->mx[i], sizeof(p->mx[i]));

			CHECK(l > 0 && l < sizeof(p->mx[i]));
			if (p->mx[i][0] == '*')
				snprintf(host, sizeof(host), "a%s", p->mx[i] + 1);
			else
				snprintf(host, sizeof(host), "%s", p->mx[i]);
			CHECK(mtasts_mx_match(p, host));
		}
	} else
		CHECK(strlen(err) > 0);
	free(p);
}

static void fuzz_pins(const uint8_t *d, size_t n)
{
	struct tlspolicy_fp fp[TLSPOLICY_MAX_FP];
	char *s = malloc(n + 1), err[200];
	size_t k = 99;

	CHECK(s != NULL);
	memcpy(s, d, n);
	s[n] = '\0';
	if (tlspolicy_fp_parse(s, fp, TLSPOLICY_MAX_FP, &k, err,
	    sizeof(err)) == 0)
		CHECK(k <= TLSPOLICY_MAX_FP);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] & 3) {
	case 0:
		fuzz_tlsa(data + 1, size - 1);
		break;
	case 1:
		fuzz_txt(data + 1, size - 1);
		break;
	case 2:
		fuzz_policy(data + 1, size - 1);
		break;
	default:
		fuzz_pins(data + 1, size - 1);
		break;
	}
	return 0;
}
