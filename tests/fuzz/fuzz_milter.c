/*
 * fuzz_milter - libFuzzer target for relay/milter_proto: the framing and
 * the reply parser that read what a (possibly hostile) filter sends.
 *
 * Input: a byte stream as it would arrive from a filter, cut into packets
 * by milter_frame. Each packet is copied into a buffer of exactly its size
 * (so the sanitizers see any read past it) and parsed. Checked: every
 * string of an accepted reply lies inside the packet and is terminated
 * there; reply codes are 4xx/5xx; header names are printable without ':'.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "milter_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static void
inside(const unsigned char *pkt, size_t len, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	if (s == NULL)
		return;
	CHECK(p >= pkt && p < pkt + len);
	CHECK(memchr(p, '\0', (size_t)(pkt + len - p)) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct milter_reply r;
	uint32_t n;
	size_t off = 0;
	unsigned char *pkt;
	const char *s;

	while (off < size) {
		if (milter_frame(data + off, size - off, &n) != 1)
			break;
		CHECK(n >= 1 && n <= MILTER_REPLY_MAX);
		off += 4;
		if (n > size - off)
			break;
		pkt = malloc(n);
		memcpy(pkt, data + off, n);
		off += n;
		if (milter_reply_parse(pkt, n, &r) == 0) {
			inside(pkt, n, r.name);
			inside(pkt, n, r.value);
			inside(pkt, n, r.text);
			inside(pkt, n, r.args);
			if (r.type == MILTER_R_REPLYCODE)
				CHECK(r.text[0] == '4' || r.text[0] == '5');
			if (r.name != NULL) {
				CHECK(r.name[0] != '\0');
				for (s = r.name; *s != '\0'; s++)
					CHECK(*s > ' ' && *s < 127 && *s != ':');
			}
			if (r.type == MILTER_R_REPLBODY)
				CHECK(r.data == pkt + 1 && r.datalen == n - 1);
			(void)milter_rtype_name(r.type);
		}
		free(pkt);
	}
	/* the reply-code check on arbitrary text */
	if (size > 0 && size < 4096) {
		char *t = malloc(size + 1);

		memcpy(t, data, size);
		t[size] = '\0';
		if (milter_replycode_ok(t))
			CHECK(t[0] == '4' || t[0] == '5');
		free(t);
	}
	return 0;
}
