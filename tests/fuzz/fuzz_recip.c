/*
 * fuzz_recip - libFuzzer target for what a primary's (or a customer's)
 * reply to RCPT turns into: the "no such user" decision and the 550 5.1.1
 * line odrelayd sends to its own client with the primary's text in it.
 *
 * Input: two bytes of reply code, then the address, a NUL, and the reply
 * text (any bytes). The refusal must be one line of printable ASCII that
 * starts with "550 5.1.1 " and fits its buffer, whatever came in.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf, *addr, *text, *nul, reply[RECIP_REPLY_MAX];
	int code;
	size_t n;

	if (size < 2)
		return 0;
	code = (data[0] << 8 | data[1]) % 1000;
	buf = malloc(size + 1);
	if (buf == NULL)
		abort();
	memcpy(buf, data + 2, size - 2);
	buf[size - 2] = '\0';
	addr = buf;
	nul = memchr(buf, '\0', size - 2);
	text = nul != NULL && nul < buf + size - 2 ? nul + 1 : buf + size - 2;
	(void)recip_no_such_user(code, text);
	(void)recip_no_such_user(code, NULL);
	recip_format_refusal(addr, text, reply, sizeof(reply));
	n = strlen(reply);
	CHECK(n < sizeof(reply));
	CHECK(strncmp(reply, "550 5.1.1 ", 10) == 0);
	for (size_t i = 0; i < n; i++)
		CHECK(reply[i] >= 0x20 && reply[i] < 0x7f);
	/* a tiny buffer is cut, never overrun */
	recip_format_refusal(addr, text, reply, 12);
	CHECK(strlen(reply) < 12);
	free(buf);
	return 0;
}
