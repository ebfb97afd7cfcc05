/*
 * domtree - a sorted array of keys: each name lower-cased with its labels
 * in reverse order, joined by \001 (below every byte a name may hold), so
 * that "org\1example" sorts right before "org\1example\1a..." and every
 * other name under it, and right after them comes the first key at or
 * above "org\1example\2". Two binary searches give the run.
 */
#include <stdlib.h>
#include <string.h>

#include "domtree.h"
#include "xmalloc.h"

#define DOMTREE_KEY_MAX	256	/* a name's 255 octets and the NUL */

struct domtree {
	char *arena;		/* the keys, NUL-terminated */
	const char **keys;	/* sorted */
	size_t *vals;		/* vals[i]: the index of keys[i]'s name */
	size_t n;
};

/*
 * name's key into out (DOMTREE_KEY_MAX): its length, or -1 when it is
 * empty, too long, has an empty label or a byte below 0x20.
 */
static int domtree_key(const char *name, char *out)
{
	size_t len = strlen(name), o = 0, end;

	if (len > 1 && name[len - 1] == '.')
		len--;
	if (len == 0 || len >= DOMTREE_KEY_MAX)
		return -1;
	/* labels from the last: [start, end) */
	end = len;
	for (;;) {
		size_t start = end;

		while (start > 0 && name[start - 1] != '.')
			start--;
		if (start == end)
			return -1;	/* empty label */
		if (o > 0)
			out[o++] = '\1';
		for (size_t i = start; i < end; i++) {
			unsigned char c = (unsigned char)name[i];

			if (c < 0x20)
				return -1;
			out[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
		}
		if (start == 0)
			break;
		end = start - 1;
		if (end == 0)
			return -1;	/* a leading dot */
	}
	out[o] = '\0';
	return (int)o;
}

/* ---- the sort ---- */

/* For the rare fallback (domtree_mkqs out of budget). */
struct domtree_ent {
	const char *key;
	size_t val;
};

/* arg: the number of bytes equal in all the strings */
static int domtree_ent_cmp(const void *a, const void *b, void *arg)
{
	size_t d = *(const size_t *)arg;

	return strcmp(((const struct domtree_ent *)a)->key + d,
	    ((const struct domtree_ent *)b)->key + d);
}

static void domtree_swap(const char **k, size_t *v, size_t a, size_t b)
{
	const char *tk = k[a];
	size_t tv = v[a];

	k[a] = k[b];
	v[a] = v[b];
	k[b] = tk;
	v[b] = tv;
}

static void domtree_vecswap(const char **k, size_t *v, size_t a, size_t b,
    size_t n)
{
	while (n-- > 0)
		domtree_swap(k, v, a++, b++);
}

/* k[0..n) equal in their first d bytes, sorted from there by qsort. */
static void domtree_qsort(const char **k, size_t *v, size_t n, size_t d)
{
	struct domtree_ent *e = xcalloc(n, sizeof(*e));

	for (size_t i = 0; i < n; i++) {
		e[i].key = k[i];
		e[i].val = v[i];
	}
	qsort_r(e, n, sizeof(*e), domtree_ent_cmp, &d);
	for (size_t i = 0; i < n; i++) {
		k[i] = e[i].key;
		v[i] = e[i].val;
	}
	free(e);
}

/*
 * Multikey quicksort (Bentley and Sedgewick): k[0..n), equal in their
 * first d bytes, partitioned on byte d into <, = and >; the = part goes
 * on from byte d + 1. A byte compared instead of a whole strcmp through
 * a function pointer: a few times faster than qsort on 50,000 names (a
 * configuration load sorts them twice). Insertion sort below 16; a run
 * of bad pivots (budget spent) ends in qsort.
 */
static void domtree_mkqs(const char **k, size_t *v, size_t n, size_t d,
    int budget)
{
#define DOMTREE_BYTE(i) ((int)(unsigned char)k[i][d])
	while (n > 1) {
		size_t le, lt, gt, ge, r, nlt, ngt;
		int pv, c;

		if (n < 16) {
			for (size_t i = 1; i < n; i++)
				for (size_t j = i; j > 0 &&
				    strcmp(k[j - 1] + d, k[j] + d) > 0; j--)
					domtree_swap(k, v, j - 1, j);
			return;
		}
		if (budget-- <= 0) {
			domtree_qsort(k, v, n, d);
			return;
		}
		domtree_swap(k, v, 0, n / 2);
		pv = DOMTREE_BYTE(0);
		le = lt = 1;
		gt = ge = n - 1;
		for (;;) {
			for (; lt <= gt && (c = DOMTREE_BYTE(lt) - pv) <= 0; lt++)
				if (c == 0)
					domtree_swap(k, v, le++, lt);
			for (; lt <= gt && (c = DOMTREE_BYTE(gt) - pv) >= 0; gt--)
				if (c == 0)
					domtree_swap(k, v, gt, ge--);
			if (lt > gt)
				break;
			domtree_swap(k, v, lt++, gt--);
		}
		/* the = runs from both ends into the middle */
		r = le < lt - le ? le : lt - le;
		domtree_vecswap(k, v, 0, lt - r, r);
		r = ge - gt < n - ge - 1 ? ge - gt : n - ge - 1;
		domtree_vecswap(k, v, lt, n - r, r);
		nlt = lt - le;
		ngt = ge - gt;
		domtree_mkqs(k, v, nlt, d, budget);
		if (pv != 0)
			domtree_mkqs(k + nlt, v + nlt, n - nlt - ngt, d + 1, budget);
		k += n - ngt;
		v += n - ngt;
		n = ngt;
	}
#undef DOMTREE_BYTE
}

void domtree_sort(const char **names, size_t *vals, size_t n)
{
	/* the bytes of a name, and twice the bits of n in bad pivots */
	domtree_mkqs(names, vals, n, 0, DOMTREE_KEY_MAX + 2 * 64);
}

struct domtree *domtree_new(const char *const *names, size_t n)
{
	struct domtree *t = xcalloc(1, sizeof(*t));
	size_t *off = xcalloc(n ? n : 1, sizeof(*off));
	size_t alen = 0, acap = 0, m = 0;
	char key[DOMTREE_KEY_MAX];

	t->vals = xcalloc(n ? n : 1, sizeof(*t->vals));
	/* Offsets while the arena grows, pointers after. */
	for (size_t i = 0; i < n; i++) {
		int len = domtree_key(names[i], key);

		if (len < 0)
			continue;	/* never matched by a query either */
		if (alen + (size_t)len + 1 > acap) {
			acap = (alen + (size_t)len + 1) * 2;
			t->arena = xreallocarray(t->arena, acap, 1);
		}
		memcpy(t->arena + alen, key, (size_t)len + 1);
		off[m] = alen;
		t->vals[m++] = i;
		alen += (size_t)len + 1;
	}
	t->keys = xcalloc(m ? m : 1, sizeof(*t->keys));
	for (size_t i = 0; i < m; i++)
		t->keys[i] = t->arena + off[i];
	free(off);
	domtree_sort(t->keys, t->vals, m);
	t->n = m;
	return t;
}

void domtree_free(struct domtree **tp)
{
	struct domtree *t = *tp;

	if (t == NULL)
		return;
	free(t->arena);
	free(t->keys);
	free(t->vals);
	free(t);
	*tp = NULL;
}

/* The first position whose key is not below key. */
static size_t domtree_lower(const struct domtree *t, const char *key)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(t->keys[mid], key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t domtree_under(const struct domtree *t, const char *name,
    const size_t **vals_r)
{
	char key[DOMTREE_KEY_MAX + 1];
	size_t first, end;
	int len;

	*vals_r = NULL;
	if (t == NULL || t->n == 0 || (len = domtree_key(name, key)) < 0)
		return 0;
	first = domtree_lower(t, key);
	/* past the name and its \1-joined descendants */
	key[len] = '\2';
	key[len + 1] = '\0';
	end = domtree_lower(t, key);
	*vals_r = t->vals + first;
	return end - first;
}

size_t domtree_count(const struct domtree *t)
{
	return t == NULL ? 0 : t->n;
}
