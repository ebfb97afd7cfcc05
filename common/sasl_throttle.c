/*
 * sasl_throttle - AUTH failure throttling per address (IPv6 per /64) and
 * per user name, bounded in entries. Interface notes in sasl.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "passwd.h"
#include "sasl.h"
#include "util.h"
#include "xmalloc.h"
#include "sasl_private.h"

/* ---- failure throttling ---- */

/*
 * Two tables: "i:" + the address key (IPv6 per /64), and "u:" + the user
 * name tried. Neither is ever cleared by a success: a success cleared the
 * address before, and a customer could alternate his own logins with
 * guesses at another customer's password. They are kept apart, and the
 * user table grows instead of forgetting, so that a flood of cheap
 * failures from other addresses (a /48 of IPv6, or a session process
 * taken over that names any address) cannot push a blocked user out and
 * win more guesses. The caller counts only names that exist (authd),
 * in it, which bounds the user table by the password file; other names
 * go with the addresses.
 */
struct sasl_throttle_entry {
	char key[2 + PASSWD_NAME_MAX + 1];
	double last;
	unsigned failures;
};

struct sasl_throttle_table {
	struct sasl_throttle_entry *e;
	size_t n, cap, max;		/* in use, allocated, never beyond */
};

/* (user, address) pairs that logged in: that user's own block does not
 * keep them out (a stranger's guesses cannot lock a customer out of his
 * usual address), the address's block still does. */
struct sasl_throttle_good {
	char user[PASSWD_NAME_MAX + 1];
	char ip[INET6_ADDRSTRLEN + 8];
	double at;
};

struct sasl_throttle {
	struct sasl_throttle_table ips, users;
	struct sasl_throttle_good *good;
	size_t ngood;
};

static double sasl_throttle_now(void)
{
	return sasl_test_now >= 0 ? sasl_test_now : util_now();
}

/* IPv6 clients own a whole /64: count failures per /64. */
static void sasl_throttle_ipkey(const char *ip, char *key, size_t size)
{
	struct in6_addr a6;

	if (strchr(ip, ':') != NULL && inet_pton(AF_INET6, ip, &a6) == 1 &&
	    !IN6_IS_ADDR_V4MAPPED(&a6)) {
		memset(a6.s6_addr + 8, 0, 8);
		if (inet_ntop(AF_INET6, &a6, key, (socklen_t)size) != NULL)
			return;
	}
	util_strlcpy(key, ip, size);
}

/* "i:KEY", "u:NAME" or "n:NAME" (a name that does not exist); 0, or -1
 * for a name too long to be a user. */
static int sasl_throttle_key(char kind, const char *s, char *key,
    size_t size)
{
	key[0] = kind;
	key[1] = ':';
	if (kind == 'i') {
		sasl_throttle_ipkey(s, key + 2, size - 2);
		return 0;
	}
	if (strlen(s) > PASSWD_NAME_MAX)
		return -1;
	util_strlcpy(key + 2, s, size - 2);
	return 0;
}

static struct sasl_throttle_table *sasl_throttle_table(struct sasl_throttle *t,
    const char *key)
{
	return key[0] == 'u' ? &t->users : &t->ips;
}

struct sasl_throttle *sasl_throttle_new(void)
{
	struct sasl_throttle *t = xcalloc(1, sizeof(*t));

	t->ips.cap = t->ips.max = SASL_THROTTLE_SLOTS;
	t->ips.e = xcalloc(t->ips.cap, sizeof(*t->ips.e));
	t->users.cap = 64;
	t->users.max = SASL_THROTTLE_USER_SLOTS;
	t->users.e = xcalloc(t->users.cap, sizeof(*t->users.e));
	t->good = xcalloc(SASL_THROTTLE_GOOD_SLOTS, sizeof(*t->good));
	return t;
}

void sasl_throttle_free(struct sasl_throttle **tp)
{
	if (*tp == NULL)
		return;
	free((*tp)->ips.e);
	free((*tp)->users.e);
	free((*tp)->good);
	free(*tp);
	*tp = NULL;
}

/* The live entry for key, or NULL; stale entries are dropped on the way. */
static struct sasl_throttle_entry *sasl_throttle_find(
    struct sasl_throttle_table *tb, const char *key, double now)
{
	size_t i;

	for (i = 0; i < tb->n; i++) {
		if (now - tb->e[i].last >= SASL_THROTTLE_WINDOW) {
			tb->e[i] = tb->e[--tb->n];
			i--;
			continue;
		}
		if (strcmp(tb->e[i].key, key) == 0)
			return &tb->e[i];
	}
	return NULL;
}

static unsigned sasl_throttle_count(struct sasl_throttle *t, const char *key,
    double now)
{
	struct sasl_throttle_table *tb = sasl_throttle_table(t, key);
	struct sasl_throttle_entry *e;
	size_t i, old;

	if ((e = sasl_throttle_find(tb, key, now)) == NULL) {
		if (tb->n == tb->cap && tb->cap < tb->max) {
			tb->cap = tb->cap * 2 < tb->max ? tb->cap * 2 : tb->max;
			tb->e = xreallocarray(tb->e, tb->cap, sizeof(*tb->e));
		}
		if (tb->n == tb->cap) {
			/* Full of live entries: forget the quietest. */
			for (old = 0, i = 1; i < tb->n; i++)
				if (tb->e[i].last < tb->e[old].last)
					old = i;
			e = &tb->e[old];
		} else
			e = &tb->e[tb->n++];
		memset(e, 0, sizeof(*e));
		util_strlcpy(e->key, key, sizeof(e->key));
	}
	if (e->failures < 1000)
		e->failures++;
	e->last = now;
	return e->failures;
}

static unsigned sasl_throttle_get(struct sasl_throttle *t, const char *key)
{
	struct sasl_throttle_entry *e;

	e = sasl_throttle_find(sasl_throttle_table(t, key), key,
	    sasl_throttle_now());
	return e != NULL ? e->failures : 0;
}

unsigned sasl_throttle_failure(struct sasl_throttle *t, const char *ip,
    const char *user)
{
	return sasl_throttle_failure_name(t, ip, user, 1);
}

unsigned sasl_throttle_failure_name(struct sasl_throttle *t, const char *ip,
    const char *user, int exists)
{
	char key[sizeof(t->ips.e->key)];
	double now = sasl_throttle_now();
	unsigned n, nu;

	sasl_throttle_key('i', ip, key, sizeof(key));
	n = sasl_throttle_count(t, key, now);
	/* A name that does not exist is counted as well (its delays must
	 * not tell it from one that does), but with the addresses, in the
	 * table that forgets: it cannot crowd out a real user. */
	if (user != NULL && *user != '\0' &&
	    sasl_throttle_key(exists ? 'u' : 'n', user, key, sizeof(key)) == 0) {
		nu = sasl_throttle_count(t, key, now);
		if (nu > n)
			n = nu;
	}
	return n >= 5 ? SASL_THROTTLE_DELAY_MAX : 1u << (n - 1);
}

void sasl_throttle_success(struct sasl_throttle *t, const char *ip,
    const char *user)
{
	struct sasl_throttle_good *g = NULL;
	char key[INET6_ADDRSTRLEN + 8];
	double now = sasl_throttle_now();
	size_t i, old = 0;

	if (user == NULL || strlen(user) > PASSWD_NAME_MAX)
		return;
	sasl_throttle_ipkey(ip, key, sizeof(key));
	for (i = 0; i < t->ngood; i++) {
		if (strcmp(t->good[i].user, user) == 0 &&
		    strcmp(t->good[i].ip, key) == 0) {
			g = &t->good[i];
			break;
		}
		if (t->good[i].at < t->good[old].at)
			old = i;
	}
	if (g == NULL) {
		g = t->ngood < SASL_THROTTLE_GOOD_SLOTS ? &t->good[t->ngood++] :
		    &t->good[old];
		util_strlcpy(g->user, user, sizeof(g->user));
		util_strlcpy(g->ip, key, sizeof(g->ip));
	}
	g->at = now;
}

int sasl_throttle_blocked(struct sasl_throttle *t, const char *ip)
{
	char key[sizeof(t->ips.e->key)];

	sasl_throttle_key('i', ip, key, sizeof(key));
	return sasl_throttle_get(t, key) >= SASL_THROTTLE_MAX;
}

int sasl_throttle_user_blocked(struct sasl_throttle *t, const char *ip,
    const char *user)
{
	char key[sizeof(t->ips.e->key)];
	double now = sasl_throttle_now();
	unsigned n;
	size_t i;

	if (sasl_throttle_blocked(t, ip))
		return 1;
	if (sasl_throttle_key('u', user, key, sizeof(key)) < 0)
		return 1;
	n = sasl_throttle_get(t, key);
	if (n < SASL_THROTTLE_MAX)
		return 0;
	/* Past the hard cap even the user's own addresses wait: a session
	 * process taken over could claim them. */
	if (n >= SASL_THROTTLE_USER_HARD)
		return 1;
	sasl_throttle_ipkey(ip, key, sizeof(key));
	for (i = 0; i < t->ngood; i++)
		if (now - t->good[i].at < SASL_THROTTLE_GOOD_TTL &&
		    strcmp(t->good[i].user, user) == 0 &&
		    strcmp(t->good[i].ip, key) == 0)
			return 0;
	return 1;
}
