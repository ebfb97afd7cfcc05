/*
 * fuzz_mx - libFuzzer target for dns/mx: mx_select() on MX answer sets.
 *
 * Input: a sequence of entries, each 2 bytes of preference (big-endian),
 * one length byte L and L host bytes. L = 255 fills the whole host array
 * without a terminating NUL (mx_select must terminate it itself). The
 * shuffle's random source is a fixed LCG, so runs are deterministic.
 * Checked: the null-MX rule, ordering by preference, no duplicates, no
 * empty hosts, every survivor was in the input with its lowest preference.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define MAXN 64

static unsigned
lcg(void *arg)
{
	uint32_t *st = arg;

	*st = *st * 1103515245u + 12345u;
	return *st >> 8;
}

/* The host as mx_select must see it: NUL-cut, lower case, one dot dropped. */
static void
norm(const struct mx_entry *in, char *out)
{
	size_t n;

	memcpy(out, in->host, sizeof(in->host));
	out[sizeof(in->host) - 1] = '\0';
	for (n = 0; out[n] != '\0'; n++)
		out[n] = (char)tolower((unsigned char)out[n]);
	if (n > 0 && out[n - 1] == '.')
		out[n - 1] = '\0';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mx_entry in[MAXN];
	static char nin[MAXN][256];
	struct mx_entry *e;
	size_t n = 0, off = 0, len, i, j;
	uint32_t seed = 1;
	int rc, found;
	unsigned best;

	while (n < MAXN && off + 3 <= size) {
		memset(&in[n], 0, sizeof(in[n]));
		in[n].pref = (unsigned)data[off] << 8 | data[off + 1];
		len = data[off + 2];
		off += 3;
		if (len == 255) {
			len = size - off < sizeof(in[n].host) ? size - off :
			    sizeof(in[n].host);
			memset(in[n].host, 'a', sizeof(in[n].host));
		}
		if (len > size - off)
			len = size - off;
		memcpy(in[n].host, data + off, len);
		off += len;
		n++;
	}
	/* exact-size heap copy: ASan catches any access beyond n entries */
	e = malloc(n > 0 ? n * sizeof(*e) : 1);
	if (e == NULL)
		abort();
	memcpy(e, in, n * sizeof(*e));
	for (i = 0; i < n; i++)
		norm(&in[i], nin[i]);
	rc = mx_select(e, n, lcg, &seed);
	if (rc == -1) {
		CHECK(n == 1 && nin[0][0] == '\0');
		free(e);
		return 0;
	}
	CHECK(rc >= 0 && (size_t)rc <= n);
	for (i = 0; i < (size_t)rc; i++) {
		CHECK(memchr(e[i].host, '\0', sizeof(e[i].host)) != NULL);
		CHECK(e[i].host[0] != '\0');
		if (i > 0)
			CHECK(e[i - 1].pref <= e[i].pref);
		for (j = 0; j < i; j++)
			CHECK(strcmp(e[i].host, e[j].host) != 0);
		/* from the input, with the lowest preference it had there */
		found = 0;
		best = ~0u;
		for (j = 0; j < n; j++)
			if (strcmp(nin[j], e[i].host) == 0) {
				found = 1;
				if (in[j].pref < best)
					best = in[j].pref;
			}
		CHECK(found && best == e[i].pref);
	}
	/* every distinct non-empty input host survived */
	for (j = 0; j < n; j++) {
		if (nin[j][0] == '\0')
			continue;
		found = 0;
		for (i = 0; i < (size_t)rc; i++)
			if (strcmp(nin[j], e[i].host) == 0)
				found = 1;
		CHECK(found);
	}
	free(e);
	return 0;
}
