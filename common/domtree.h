/*
 * domtree - domain names ordered by their labels read from the right
 * ("mail.example.org" as org, example, mail), so that a name and every
 * name under it (whole labels) are one run of the order: "the sections
 * equal to NAME or below it" in O(log n + k) instead of a walk of all
 * of them (ETRN @example.org with 50,000 sections). Names are compared
 * as domhash compares them: ASCII case ignored, one trailing dot ignored.
 * Built once, read-only after (several threads may read it).
 */
#ifndef OD_DOMTREE_H
#define OD_DOMTREE_H

#include <stddef.h>

struct domtree;

/* The tree of names[0..n), each standing for its index (names copied). */
struct domtree *domtree_new(const char *const *names, size_t n);
void domtree_free(struct domtree **t);
/*
 * The indexes of the names equal to name or under it, in *vals_r (borrowed
 * from t, in the tree's order, not the indexes'); returns how many (0 for
 * an empty name or one with an empty label or a control character).
 */
size_t domtree_under(const struct domtree *t, const char *name,
    const size_t **vals_r);
size_t domtree_count(const struct domtree *t);
/*
 * names[0..n) in strcmp order, vals[] moved along (a string sort several
 * times faster than qsort's on many names; not stable).
 */
void domtree_sort(const char **names, size_t *vals, size_t n);

#endif
