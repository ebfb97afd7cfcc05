/*
 * fuzz_authproto - libFuzzer target for common/authproto: the records the
 * session process and the auth process exchange. Each side takes the
 * other as hostile, so both decoders get every input: the auth process's
 * (requests) and the session process's (replies). What decodes must
 * encode back to the same bytes, and the decoded strings must stay inside
 * the record and within their limits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "authc.h"
#include "authproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static unsigned char out[AUTHPROTO_MAX];

static void inside(const uint8_t *data, size_t size, const char *s,
    size_t len, size_t max)
{
	CHECK(len <= max);
	if (len == 0)
		return;
	CHECK((const uint8_t *)s >= data && (const uint8_t *)s + len <= data + size);
	CHECK(memchr(s, '\0', len) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct authproto_req q;
	struct authproto_reply r;
	int n;

	if (authproto_decode_req(data, size, &q) == 0) {
		inside(data, size, q.ip, q.iplen, AUTHPROTO_IP_MAX);
		inside(data, size, q.data, q.datalen, AUTHPROTO_LINE_MAX);
		n = authproto_encode_req(out, sizeof(out), &q);
		CHECK(n >= 0 && (size_t)n == size && memcmp(out, data, size) == 0);
	}
	if (authproto_decode_reply(data, size, &r) == 0) {
		inside(data, size, r.text, r.textlen, AUTHPROTO_REPLY_MAX);
		inside(data, size, r.user, r.userlen, AUTHPROTO_USER_MAX);
		inside(data, size, r.domains, r.domainslen,
		    AUTHPROTO_DOMAINS_MAX);
		n = authproto_encode_reply(out, sizeof(out), &r);
		CHECK(n >= 0 && (size_t)n == size && memcmp(out, data, size) == 0);
		if (r.domainslen > 0 && r.domainslen < 4096) {
			char *doms = malloc(r.domainslen + 1);

			CHECK(doms != NULL);
			memcpy(doms, r.domains, r.domainslen);
			doms[r.domainslen] = '\0';
			(void)authc_domains_has(doms, "example.org");
			free(doms);
		}
	}
	return 0;
}
