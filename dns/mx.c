/*
 * mx - RFC 5321 section 5.1 ordering of an MX answer set: lowest
 * preference first, random order among equal preferences, duplicates
 * dropped (a host keeps its lowest preference), RFC 7505 null MX detected.
 * Input comes from DNS (untrusted): host names are normalised here too.
 */
#include <stdlib.h>
#include <string.h>

#include "mx.h"
#include "util.h"

static unsigned mx_rnd_default(void *arg)
{
	unsigned v = 0;

	(void)arg;
	if (util_random(&v, sizeof(v)) < 0)
		v = (unsigned)rand();	/* ordering only, not security */
	return v;
}

/* Lower case, no trailing dot: "." (null MX) becomes "". */
static void mx_normalise(char *host)
{
	size_t len;

	host[sizeof(((struct mx_entry *)0)->host) - 1] = '\0';
	util_lowercase(host);
	len = strlen(host);
	if (len > 0 && host[len - 1] == '.')
		host[len - 1] = '\0';
}

static int mx_cmp(const void *a, const void *b)
{
	const struct mx_entry *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	/* Deterministic before the shuffle, and groups duplicates. */
	return strcmp(x->host, y->host);
}

int mx_select(struct mx_entry *e, size_t n, unsigned (*rnd)(void *),
    void *rndarg)
{
	size_t i, j, k, lo, hi;
	struct mx_entry tmp;

	if (rnd == NULL)
		rnd = mx_rnd_default;
	for (i = 0; i < n; i++)
		mx_normalise(e[i].host);
	if (n == 1 && e[0].host[0] == '\0')
		return -1;
	/* An empty exchange beside real ones is no null MX: drop it. */
	for (i = j = 0; i < n; i++)
		if (e[i].host[0] != '\0')
			e[j++] = e[i];
	n = j;
	if (n == 0)
		return 0;
	qsort(e, n, sizeof(*e), mx_cmp);
	/* Sorted by preference, so the first occurrence has the lowest. */
	for (i = j = 0; i < n; i++) {
		for (k = 0; k < j; k++)
			if (strcmp(e[k].host, e[i].host) == 0)
				break;
		if (k == j)
			e[j++] = e[i];
	}
	n = j;
	/* Fisher-Yates within each run of equal preference. */
	for (lo = 0; lo < n; lo = hi) {
		for (hi = lo + 1; hi < n && e[hi].pref == e[lo].pref; hi++)
			;
		for (i = hi - 1; i > lo; i--) {
			j = lo + rnd(rndarg) % (i - lo + 1);
			if (j != i) {
				tmp = e[i];
				e[i] = e[j];
				e[j] = tmp;
			}
		}
	}
	return (int)n;
}
