/*
 * fuzz_sasl_client - libFuzzer target for the client side of common/sasl
 * (odpull): every mechanism's steps on arbitrary (already base64-decoded)
 * server challenges, and sasl_client_choose() on an EHLO AUTH list.
 *
 * Input: one byte (bits 0-1: SCRAM-SHA-256, CRAM-MD5, PLAIN, LOGIN; bit 2:
 * also run sasl_client_choose on the rest as an AUTH list; bit 3: TLS
 * active for it), then server challenges framed as in fuzz_sasl (2-byte
 * big-endian length, then the bytes). The client nonce is fixed (RFC 7677's)
 * so the RFC example exchange completes. A server may ask for up to
 * PASSWD_SCRAM_ITER_MAX PBKDF2 rounds, so such inputs are slow by design.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define CNONCE	"rOprNGfwEbeRWgbNEkqO"
#define MAXSTEPS 16

static const char *const mechs[] = {
	"SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	struct sasl_client *c;
	unsigned char out[SASL_OUT_MAX];
	unsigned char *msg;
	char *list;
	const char *pick;
	size_t off, len, outlen;
	int steps, rc;

	if (!init) {
		fuzz_log_quiet();
		sasl_test_set_nonces(NULL, CNONCE, NULL);
		init = 1;
	}
	if (size < 1)
		return 0;
	if (data[0] & 4) {
		list = malloc(size);
		CHECK(list != NULL);
		memcpy(list, data + 1, size - 1);
		list[size - 1] = '\0';
		pick = sasl_client_choose(list, (data[0] >> 3) & 1);
		CHECK(pick == NULL || sasl_mech_known(pick));
		free(list);
	}
	c = sasl_client_new(mechs[data[0] & 3], "user", "pencil");
	CHECK(c != NULL);
	outlen = (size_t)-1;
	rc = sasl_client_start(c, out, sizeof(out), &outlen);
	CHECK(rc == 0 || rc == 1);
	if (rc == 1)
		CHECK(outlen <= sizeof(out));
	off = 1;
	rc = SASL_CONTINUE;
	for (steps = 0; steps < MAXSTEPS && off < size; steps++) {
		len = 0;
		if (off + 2 <= size) {
			len = (size_t)data[off] << 8 | data[off + 1];
			off += 2;
		} else
			off = size;
		if (len > size - off)
			len = size - off;
		msg = malloc(len > 0 ? len : 1);
		CHECK(msg != NULL);
		memcpy(msg, data + off, len);
		off += len;
		outlen = (size_t)-1;
		rc = sasl_client_step(c, msg, len, out, sizeof(out), &outlen);
		free(msg);
		CHECK(rc == SASL_OK || rc == SASL_CONTINUE || rc == SASL_FAIL);
		if (rc == SASL_CONTINUE)
			CHECK(outlen <= sizeof(out));
		if (rc != SASL_CONTINUE)
			break;
	}
	rc = sasl_client_done(c);
	if (getenv("FUZZ_SASL_DEBUG") != NULL)
		fprintf(stderr, "fuzz_sasl_client: %s: %d steps, done %d\n",
		    mechs[data[0] & 3], steps, rc);
	sasl_client_free(&c);
	CHECK(c == NULL);
	return 0;
}
