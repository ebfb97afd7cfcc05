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

struct domtree_ent {
	const char *key;
	size_t val;
};

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

static int domtree_ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct domtree_ent *)a)->key,
	    ((const struct domtree_ent *)b)->key);
}

struct domtree *domtree_new(const char *const *names, size_t n)
{
	struct domtree *t = xcalloc(1, sizeof(*t));
	struct domtree_ent *e = xcalloc(n ? n : 1, sizeof(*e));
	size_t *off = xcalloc(n ? n : 1, sizeof(*off));
	size_t alen = 0, acap = 0, m = 0;
	char key[DOMTREE_KEY_MAX];

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
		e[m++].val = i;
		alen += (size_t)len + 1;
	}
	for (size_t i = 0; i < m; i++)
		e[i].key = t->arena + off[i];
	free(off);
	qsort(e, m, sizeof(*e), domtree_ent_cmp);
	t->keys = xcalloc(m ? m : 1, sizeof(*t->keys));
	t->vals = xcalloc(m ? m : 1, sizeof(*t->vals));
	for (size_t i = 0; i < m; i++) {
		t->keys[i] = e[i].key;
		t->vals[i] = e[i].val;
	}
	t->n = m;
	free(e);
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
