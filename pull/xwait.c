/*
 * xwait - registry of sessions waiting for mail, by domain.
 *
 * A hash of domain nodes, doubled as domains come (tens of thousands of
 * push customers must not make each look-up walk a long chain); each
 * node lists its waiters through links
 * that live inside the waiter's entry, so adding, cancelling and waking
 * allocate nothing but the entry (and a node the first time a domain is
 * waited for). A node is freed when its last waiter leaves.
 */
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"
#include "xwait.h"

#define XWAIT_BUCKETS_MIN 256

struct xwait_dom;

struct xwait_link {
	struct xwait_entry *e;
	struct xwait_dom *d;
	struct xwait_link *prev, *next;
};

struct xwait_dom {
	struct xwait_dom *next;		/* hash chain */
	unsigned hash;
	struct xwait_link *head;
	size_t n;
	char name[];
};

struct xwait_entry {
	struct xwait *w;
	xwait_wake_fn *fn;
	void *arg;
	size_t nlinks;
	struct xwait_link links[];
};

struct xwait {
	struct xwait_dom **bucket;
	size_t nbuckets;		/* a power of two */
	size_t ndoms;
	size_t nwaiting;
};

static unsigned xwait_hash(const char *s)
{
	unsigned h = 2166136261u;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

/* Twice the buckets when there are more domains than buckets. */
static void xwait_grow(struct xwait *w)
{
	size_t n = w->nbuckets * 2;
	struct xwait_dom **b = xcalloc(n, sizeof(*b));

	for (size_t h = 0; h < w->nbuckets; h++)
		while (w->bucket[h] != NULL) {
			struct xwait_dom *d = w->bucket[h];

			w->bucket[h] = d->next;
			d->next = b[d->hash & (n - 1)];
			b[d->hash & (n - 1)] = d;
		}
	free(w->bucket);
	w->bucket = b;
	w->nbuckets = n;
}

static struct xwait_dom *xwait_dom_find(const struct xwait *w,
    const char *domain, int create)
{
	unsigned h = xwait_hash(domain);
	struct xwait_dom *d;
	struct xwait *ww;
	size_t len;

	for (d = w->bucket[h & (w->nbuckets - 1)]; d != NULL; d = d->next)
		if (d->hash == h && strcmp(d->name, domain) == 0)
			return d;
	if (!create)
		return NULL;
	/* Casting away const: only the create path writes. */
	ww = (struct xwait *)w;
	if (ww->ndoms >= ww->nbuckets)
		xwait_grow(ww);
	len = strlen(domain);
	d = xcalloc(1, sizeof(*d) + len + 1);
	memcpy(d->name, domain, len + 1);
	d->hash = h;
	d->next = ww->bucket[h & (ww->nbuckets - 1)];
	ww->bucket[h & (ww->nbuckets - 1)] = d;
	ww->ndoms++;
	return d;
}

static void xwait_dom_drop(struct xwait *w, struct xwait_dom *d)
{
	struct xwait_dom **pp = &w->bucket[d->hash & (w->nbuckets - 1)];

	while (*pp != NULL && *pp != d)
		pp = &(*pp)->next;
	if (*pp == d) {
		*pp = d->next;
		w->ndoms--;
	}
	free(d);
}

struct xwait *xwait_new(void)
{
	struct xwait *w = xcalloc(1, sizeof(*w));

	w->nbuckets = XWAIT_BUCKETS_MIN;
	w->bucket = xcalloc(w->nbuckets, sizeof(*w->bucket));
	return w;
}

/* Unlink e from every domain; the entry itself stays. */
static void xwait_unlink(struct xwait_entry *e)
{
	for (size_t i = 0; i < e->nlinks; i++) {
		struct xwait_link *l = &e->links[i];
		struct xwait_dom *d = l->d;

		if (d == NULL)
			continue;
		if (l->prev != NULL)
			l->prev->next = l->next;
		else
			d->head = l->next;
		if (l->next != NULL)
			l->next->prev = l->prev;
		l->d = NULL;
		if (--d->n == 0)
			xwait_dom_drop(e->w, d);
	}
	e->w->nwaiting--;
}

struct xwait_entry *xwait_add(struct xwait *w, const char *const *domains,
    size_t ndomains, xwait_wake_fn *fn, void *arg)
{
	struct xwait_entry *e;

	e = xcalloc(1, sizeof(*e) + ndomains * sizeof(e->links[0]));
	e->w = w;
	e->fn = fn;
	e->arg = arg;
	for (size_t i = 0; i < ndomains; i++) {
		struct xwait_dom *d = xwait_dom_find(w, domains[i], 1);
		struct xwait_link *l;
		size_t k;

		/* A domain named twice is linked once. */
		for (k = 0; k < e->nlinks; k++)
			if (e->links[k].d == d)
				break;
		if (k < e->nlinks)
			continue;
		l = &e->links[e->nlinks++];
		l->e = e;
		l->d = d;
		l->next = d->head;
		if (d->head != NULL)
			d->head->prev = l;
		d->head = l;
		d->n++;
	}
	w->nwaiting++;
	return e;
}

void xwait_cancel(struct xwait_entry **ep)
{
	struct xwait_entry *e = *ep;

	if (e == NULL)
		return;
	xwait_unlink(e);
	free(e);
	*ep = NULL;
}

size_t xwait_arrived(struct xwait *w, const char *domain)
{
	struct xwait_dom *d = xwait_dom_find(w, domain, 0);
	size_t woken = 0, max;

	if (d == NULL)
		return 0;
	/* Bounded by the waiters present now, whatever the callbacks do. */
	max = d->n;
	while (woken < max && (d = xwait_dom_find(w, domain, 0)) != NULL &&
	    d->head != NULL) {
		struct xwait_entry *e = d->head->e;
		xwait_wake_fn *fn = e->fn;
		void *arg = e->arg;

		xwait_unlink(e);
		free(e);
		woken++;
		fn(arg);
	}
	return woken;
}

size_t xwait_count(const struct xwait *w)
{
	return w->nwaiting;
}

size_t xwait_domain_count(const struct xwait *w, const char *domain)
{
	const struct xwait_dom *d = xwait_dom_find(w, domain, 0);

	return d != NULL ? d->n : 0;
}

void xwait_foreach_domain(const struct xwait *w,
    void (*fn)(void *arg, const char *domain, size_t waiting), void *arg)
{
	for (size_t h = 0; h < w->nbuckets; h++)
		for (const struct xwait_dom *d = w->bucket[h]; d != NULL;
		    d = d->next)
			fn(arg, d->name, d->n);
}

void xwait_free(struct xwait **wp)
{
	struct xwait *w = *wp;

	if (w == NULL)
		return;
	for (size_t h = 0; h < w->nbuckets; h++) {
		while (w->bucket[h] != NULL) {
			struct xwait_dom *d = w->bucket[h];

			/* Entries are owned by their sessions, which cancel
			 * them; here only the links are cut. */
			while (d->head != NULL) {
				struct xwait_link *l = d->head;

				d->head = l->next;
				l->d = NULL;
			}
			w->bucket[h] = d->next;
			free(d);
		}
	}
	free(w->bucket);
	free(w);
	*wp = NULL;
}
