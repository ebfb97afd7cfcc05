/*
 * domhash - a map from domain names (compared without regard to ASCII
 * case, one trailing dot ignored) to indexes, so that a configuration of
 * tens of thousands of domains is loaded and searched in constant time per
 * name. Keys are copied. Not thread-safe; read-only use from several
 * threads is fine once built.
 */
#ifndef OD_DOMHASH_H
#define OD_DOMHASH_H

#include <stddef.h>

struct domhash;

struct domhash *domhash_new(void);
void domhash_free(struct domhash **h);
/* 1 and *val_r set when name is present, else 0. */
int domhash_get(const struct domhash *h, const char *name, size_t *val_r);
/* Insert or replace. */
void domhash_put(struct domhash *h, const char *name, size_t val);
size_t domhash_count(const struct domhash *h);

#endif
