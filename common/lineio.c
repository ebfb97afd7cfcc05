/*
 * lineio - bounded line reading (see lineio.h for the rule). The search
 * for LF is libevent's; nothing is copied before a whole line is there.
 */
#include <event2/buffer.h>

#include "lineio.h"

enum lineio_result
lineio_peek(struct lineio *li, struct evbuffer *in, size_t max,
    size_t *len_r)
{
	struct evbuffer_ptr eol;
	size_t n = evbuffer_get_length(in);

	*len_r = 0;
	if (n == 0)
		return LINEIO_MORE;
	eol = evbuffer_search(in, "\n", 1, NULL);
	if (eol.pos < 0) {
		/* the line is at least one octet (its LF) longer */
		if (n >= max) {
			li->discarding = 1;
			evbuffer_drain(in, n);
		}
		return LINEIO_MORE;
	}
	*len_r = (size_t)eol.pos + 1;
	if (li->discarding || *len_r > max)
		return LINEIO_LONG;
	return LINEIO_LINE;
}

void
lineio_skip(struct lineio *li, struct evbuffer *in, size_t len)
{
	evbuffer_drain(in, len);
	li->discarding = 0;
}

size_t
lineio_take(struct evbuffer *in, size_t len, char *buf, size_t size)
{
	size_t rest = 0;

	if (len > size) {	/* max was larger than buf: cut, never split */
		rest = len - size;
		len = size;
	}
	evbuffer_remove(in, buf, len);
	evbuffer_drain(in, rest);
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	return len;
}

void lineio_vputf(struct evbuffer *out, const char *fmt, va_list ap)
{
	evbuffer_add_vprintf(out, fmt, ap);
	evbuffer_add(out, "\r\n", 2);
}
