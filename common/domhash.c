/*
 * domhash - open addressing with linear probing, FNV-1a over the
 * lower-cased name; the table is kept at most half full so probes stay
 * short. Names are at most a domain's length, so hashing is cheap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "domhash.h"
#include "xmalloc.h"

struct domhash_slot {
	char *key;		/* lower case, no trailing dot; NULL = empty */
	uint32_t hash;
	size_t val;
};

struct domhash {
	struct domhash_slot *slots;
	size_t cap;		/* power of two */
	size_t n;
};

static size_t domhash_keylen(const char *name)
{
	size_t len = strlen(name);

	if (len > 1 && name[len - 1] == '.')
		len--;
	return len;
}

static unsigned char domhash_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static uint32_t domhash_hash(const char *name, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++) {
		h ^= domhash_lower((unsigned char)name[i]);
		h *= 16777619u;
	}
	/* FNV's low bits, the ones the table uses, vary little between
	 * names that differ in a few digits (d1.test ... d50000.test made
	 * long probe runs): mix the high bits in. */
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static int domhash_eq(const char *key, const char *name, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (key[i] == '\0' ||
		    key[i] != (char)domhash_lower((unsigned char)name[i]))
			return 0;
	return key[len] == '\0';
}

struct domhash *domhash_new(void)
{
	struct domhash *h = xcalloc(1, sizeof(*h));

	h->cap = 64;
	h->slots = xcalloc(h->cap, sizeof(*h->slots));
	return h;
}

void domhash_free(struct domhash **hp)
{
	struct domhash *h = *hp;

	if (h == NULL)
		return;
	for (size_t i = 0; i < h->cap; i++)
		free(h->slots[i].key);
	free(h->slots);
	free(h);
	*hp = NULL;
}

static struct domhash_slot *domhash_find(const struct domhash *h,
    const char *name, size_t len, uint32_t hash)
{
	size_t i = hash & (h->cap - 1);

	while (h->slots[i].key != NULL) {
		if (h->slots[i].hash == hash && domhash_eq(h->slots[i].key, name, len))
			return &h->slots[i];
		i = (i + 1) & (h->cap - 1);
	}
	return &h->slots[i];
}

int domhash_get(const struct domhash *h, const char *name, size_t *val_r)
{
	size_t len = domhash_keylen(name);
	struct domhash_slot *s;

	if (h == NULL)
		return 0;
	s = domhash_find(h, name, len, domhash_hash(name, len));
	if (s->key == NULL)
		return 0;
	*val_r = s->val;
	return 1;
}

static void domhash_grow(struct domhash *h)
{
	struct domhash_slot *old = h->slots;
	size_t oldcap = h->cap;

	h->cap *= 2;
	h->slots = xcalloc(h->cap, sizeof(*h->slots));
	for (size_t i = 0; i < oldcap; i++) {
		size_t j;

		if (old[i].key == NULL)
			continue;
		j = old[i].hash & (h->cap - 1);
		while (h->slots[j].key != NULL)
			j = (j + 1) & (h->cap - 1);
		h->slots[j] = old[i];
	}
	free(old);
}

void domhash_put(struct domhash *h, const char *name, size_t val)
{
	size_t len = domhash_keylen(name);
	uint32_t hash = domhash_hash(name, len);
	struct domhash_slot *s = domhash_find(h, name, len, hash);

	if (s->key != NULL) {
		s->val = val;
		return;
	}
	s->key = xstrndup(name, len);
	for (size_t i = 0; i < len; i++)
		s->key[i] = (char)domhash_lower((unsigned char)s->key[i]);
	s->hash = hash;
	s->val = val;
	if (++h->n * 2 > h->cap)
		domhash_grow(h);
}

size_t domhash_count(const struct domhash *h)
{
	return h == NULL ? 0 : h->n;
}
