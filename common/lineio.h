/*
 * lineio - bounded reading of protocol lines from an evbuffer, the one
 * overlong-line rule of every line-based server (SMTP, ODMR, control):
 *
 * A line ends at LF; one CR before it is part of the line end (a bare LF
 * is tolerated). The limit counts the whole line with its CRLF. When no
 * line end has come and the buffer already holds `max` octets, what is
 * there is dropped and the line is marked overlong; its rest is dropped
 * when its LF comes, and the caller answers once (LINEIO_LONG). Memory
 * stays bounded by max whatever the peer sends.
 */
#ifndef OD_LINEIO_H
#define OD_LINEIO_H

#include <stdarg.h>
#include <stddef.h>

struct evbuffer;

/* One reader's state (zero it to start). */
struct lineio {
	int discarding;		/* inside an overlong line */
};

enum lineio_result {
	LINEIO_MORE,		/* no whole line yet (wait for input) */
	LINEIO_LINE,		/* a line is there: lineio_take it */
	LINEIO_LONG		/* an overlong line ended: lineio_skip it */
};

/*
 * Look at the input: whether a whole line (through its LF, *len_r octets
 * in all) is there, and whether it is too long for max (CRLF included).
 * Drains a partial overlong line (LINEIO_MORE then).
 */
enum lineio_result lineio_peek(struct lineio *li, struct evbuffer *in,
    size_t max, size_t *len_r);
/* Drop the overlong line lineio_peek found (len from it). */
void lineio_skip(struct lineio *li, struct evbuffer *in, size_t len);
/*
 * Remove the line lineio_peek found (len from it, at most size octets)
 * into buf without its CR LF, NUL-terminated (buf has size + 1 octets).
 * Returns the line's length (it may contain NULs).
 */
size_t lineio_take(struct evbuffer *in, size_t len, char *buf, size_t size);
/* Append one protocol line, formatted, and its CRLF to out (replies of
 * both servers, commands of the client). */
void lineio_vputf(struct evbuffer *out, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#endif
