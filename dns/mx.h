/*
 * mx - RFC 5321 section 5.1 ordering of MX answers, kept apart from c-ares
 * so it can be unit tested and fuzzed on its own.
 */
#ifndef OD_MX_H
#define OD_MX_H

#include <stddef.h>

struct mx_entry {
	char host[256];		/* lower case, no trailing dot */
	unsigned pref;
};

/*
 * Sort entries by preference, shuffling equal preferences with rnd (a
 * caller-supplied source so tests are deterministic; NULL = util_random),
 * and drop duplicates. Returns the new count. Detects null MX: returns -1
 * when the set is exactly one entry with host "" (RFC 7505).
 */
int mx_select(struct mx_entry *e, size_t n, unsigned (*rnd)(void *), void *rndarg);

#endif
