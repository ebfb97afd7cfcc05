/*
 * xmalloc - allocation wrappers.
 *
 * Policy (written once, here): running out of memory is not recoverable in
 * a mail daemon that must not half-accept mail, so these log and abort().
 * A zero or overflowing size is a bug and also aborts.
 */
#ifndef OD_XMALLOC_H
#define OD_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xreallocarray(void *ptr, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Formatted allocation; the caller owns the result. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
