/*
 * fuzz_lineio - libFuzzer target for common/lineio, the session core's
 * bounded line reader, against a plain model of its rule.
 *
 * Input: two bytes of line limit (1..1024 with its CRLF), one byte of
 * chunk size (how the stream is cut into reads), then the stream. The
 * model: each line of L octets through its LF is a line when L <= max
 * (content: without LF and one CR before it), else overlong; a last line
 * without LF yields nothing. The reader must give the same events, never
 * hold max octets or more between reads, and never depend on the cuts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "lineio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define FZ_MAX	1024

/* The model's next event from pos: 1 line, 2 overlong, 0 none. */
static int
fz_model(const uint8_t *s, size_t n, size_t *pos, size_t max,
    const uint8_t **line, size_t *len)
{
	const uint8_t *nl;
	size_t l;

	if (*pos >= n)
		return 0;
	nl = memchr(s + *pos, '\n', n - *pos);
	if (nl == NULL)
		return 0;
	l = (size_t)(nl - (s + *pos)) + 1;
	*line = s + *pos;
	*pos += l;
	if (l > max)
		return 2;
	*len = l - 1;
	if (*len > 0 && (*line)[*len - 1] == '\r')
		(*len)--;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evbuffer *in;
	struct lineio li;
	char buf[FZ_MAX + 1];
	size_t max, chunk, off, mpos = 0, len, mlen = 0;
	const uint8_t *s, *mline = NULL;
	size_t n;
	enum lineio_result r;

	if (size < 3)
		return 0;
	max = 1 + (size_t)((data[0] << 8 | data[1]) % FZ_MAX);
	chunk = 1 + data[2];
	s = data + 3;
	n = size - 3;
	in = evbuffer_new();
	CHECK(in != NULL);
	memset(&li, 0, sizeof(li));
	for (off = 0; off < n || evbuffer_get_length(in) > 0; ) {
		size_t k = n - off < chunk ? n - off : chunk;

		if (k > 0) {
			evbuffer_add(in, s + off, k);
			off += k;
		}
		for (;;) {
			r = lineio_peek(&li, in, max, &len);
			if (r == LINEIO_MORE)
				break;
			if (r == LINEIO_LONG) {
				CHECK(fz_model(s, n, &mpos, max, &mline,
				    &mlen) == 2);
				lineio_skip(&li, in, len);
				continue;
			}
			CHECK(len <= max);
			len = lineio_take(in, len, buf, sizeof(buf) - 1);
			CHECK(buf[len] == '\0');
			CHECK(fz_model(s, n, &mpos, max, &mline, &mlen) == 1);
			CHECK(len == mlen && memcmp(buf, mline, len) == 0);
		}
		CHECK(evbuffer_get_length(in) < max);
		if (off >= n)
			break;
	}
	/* every line the stream holds was seen */
	CHECK(fz_model(s, n, &mpos, max, &mline, &mlen) == 0);
	evbuffer_free(in);
	return 0;
}
