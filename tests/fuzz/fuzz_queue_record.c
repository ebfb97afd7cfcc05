/*
 * fuzz_queue_record - libFuzzer target for the queue's on-disk envelope
 * record decoder (queue_record_decode in queue/queue_private.h).
 *
 * A record comes from the LMDB file, which a crash, a disk error or an
 * older/newer version may have damaged: decoding must refuse anything
 * malformed without reading out of bounds or leaking. When a record is
 * accepted, its re-encoding must decode again and re-encode to the same
 * bytes. -DFUZZ_STRICT_ROUNDTRIP also demands the input's own bytes back.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"
#include "queue_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct queue_envelope *env = NULL, *env2 = NULL;
	unsigned char *copy, *enc, *enc2;
	uint32_t nchunks = 0, nchunks2 = 0;
	size_t enclen = 0, enclen2 = 0;
	int rc;

	copy = malloc(size > 0 ? size : 1);
	if (copy == NULL)
		abort();
	memcpy(copy, data, size);
	rc = queue_record_decode("0123456789abcdef", copy, size, &env,
	    &nchunks);
	if (rc != QUEUE_OK) {
		CHECK(rc == QUEUE_EIO && env == NULL);
		free(copy);
		return 0;
	}
	CHECK(env != NULL && env->sender != NULL);
	enc = queue_record_encode(env, nchunks, &enclen);
	CHECK(enc != NULL);
#ifdef FUZZ_STRICT_ROUNDTRIP
	/* one encoding per envelope: off by default, as the decoder takes
	 * any non-zero byte for the delay_warned flag */
	CHECK(enclen == size && memcmp(enc, data, size) == 0);
#endif
	rc = queue_record_decode("0123456789abcdef", enc, enclen, &env2,
	    &nchunks2);
	CHECK(rc == QUEUE_OK && nchunks2 == nchunks);
	CHECK(env2->nrcpts == env->nrcpts);
	/* what the encoder writes, it reads back to the same envelope */
	enc2 = queue_record_encode(env2, nchunks2, &enclen2);
	CHECK(enc2 != NULL && enclen2 == enclen &&
	    memcmp(enc2, enc, enclen) == 0);
	free(enc2);
	queue_envelope_free(&env2);
	queue_envelope_free(&env);
	free(enc);
	free(copy);
	return 0;
}
