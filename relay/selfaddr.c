/*
 * selfaddr - the relay's own addresses, to keep delivery from looping
 * mail back into the relay. See selfaddr.h.
 */
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "selfaddr.h"
#include "util.h"
#include "xmalloc.h"

/* One own address; port 0 = any port (an interface address only expands
 * wildcard listeners, it never matches on its own). */
struct selfaddr_ent {
	int family;
	unsigned char addr[16];
	uint16_t port;
};

struct selfaddr {
	struct selfaddr_ent *listen;	/* smtp_listen and proxy_interfaces */
	size_t nlisten;
	struct selfaddr_ent *ifs;	/* interface addresses */
	size_t nifs;
};

/* IPv4-mapped IPv6 addresses compare as IPv4. Returns 0 for other families. */
static int selfaddr_ent_of(const struct sockaddr *sa, struct selfaddr_ent *e)
{
	memset(e, 0, sizeof(*e));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		e->family = AF_INET;
		memcpy(e->addr, &sin->sin_addr, 4);
		e->port = ntohs(sin->sin_port);
		return 1;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		e->port = ntohs(sin6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			e->family = AF_INET;
			memcpy(e->addr, sin6->sin6_addr.s6_addr + 12, 4);
		} else {
			e->family = AF_INET6;
			memcpy(e->addr, &sin6->sin6_addr, 16);
		}
		return 1;
	}
	return 0;
}

static size_t selfaddr_alen(int family)
{
	return family == AF_INET ? 4 : 16;
}

static int selfaddr_wildcard(const struct selfaddr_ent *e)
{
	static const unsigned char zero[16];

	return memcmp(e->addr, zero, selfaddr_alen(e->family)) == 0;
}

static void selfaddr_push(struct selfaddr_ent **v, size_t *n,
    const struct selfaddr_ent *e)
{
	*v = xreallocarray(*v, *n + 1, sizeof(**v));
	(*v)[(*n)++] = *e;
}

static void selfaddr_add_list(struct selfaddr *s, const struct strlist *l,
    int default_port)
{
	for (size_t i = 0; i < l->n; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		struct selfaddr_ent e;

		if (util_sockaddr_parse(l->v[i], default_port, &ss, &len) == 0 &&
		    selfaddr_ent_of((struct sockaddr *)&ss, &e))
			selfaddr_push(&s->listen, &s->nlisten, &e);
	}
}

void selfaddr_add_interface(struct selfaddr *s, const struct sockaddr *sa)
{
	struct selfaddr_ent e;

	if (selfaddr_ent_of(sa, &e)) {
		e.port = 0;
		selfaddr_push(&s->ifs, &s->nifs, &e);
	}
}

struct selfaddr *selfaddr_new(const struct config *cfg)
{
	struct selfaddr *s = xcalloc(1, sizeof(*s));
	struct ifaddrs *ifa, *p;

	selfaddr_add_list(s, &cfg->smtp_listen, 25);
	selfaddr_add_list(s, &cfg->proxy_interfaces, 25);
	/* getifaddrs is one netlink exchange with the kernel: no network. */
	if (getifaddrs(&ifa) == 0) {
		for (p = ifa; p != NULL; p = p->ifa_next)
			if (p->ifa_addr != NULL)
				selfaddr_add_interface(s, p->ifa_addr);
		freeifaddrs(ifa);
	} else {
		/* Wildcard listeners then match loopback only: say so. */
		static int warned;

		if (!warned++)
			log_warn("getifaddrs: %s: a wildcard smtp_listen matches "
			    "only loopback when looking for MX hosts that are "
			    "this relay; list the addresses in proxy_interfaces",
			    strerror(errno));
	}
	return s;
}

void selfaddr_free(struct selfaddr **sp)
{
	struct selfaddr *s = *sp;

	if (s == NULL)
		return;
	free(s->listen);
	free(s->ifs);
	free(s);
	*sp = NULL;
}

static int selfaddr_same(const struct selfaddr_ent *a,
    const struct selfaddr_ent *b)
{
	return a->family == b->family &&
	    memcmp(a->addr, b->addr, selfaddr_alen(a->family)) == 0;
}

static int selfaddr_is_interface(const struct selfaddr *s,
    const struct selfaddr_ent *t)
{
	/* 127.0.0.0/8 is all loopback (Linux answers on every address). */
	if (t->family == AF_INET && t->addr[0] == 127)
		return 1;
	for (size_t i = 0; i < s->nifs; i++)
		if (selfaddr_same(&s->ifs[i], t))
			return 1;
	return 0;
}

int selfaddr_is_self(const struct selfaddr *s, const struct sockaddr *sa)
{
	struct selfaddr_ent t;

	if (s == NULL || !selfaddr_ent_of(sa, &t))
		return 0;
	/* A connection to 0.0.0.0 or :: reaches this host's loopback (an
	 * MX record can say so). */
	if (selfaddr_wildcard(&t)) {
		if (t.family == AF_INET) {
			t.addr[0] = 127;
			t.addr[3] = 1;
		} else
			t.addr[15] = 1;
	}
	for (size_t i = 0; i < s->nlisten; i++) {
		const struct selfaddr_ent *l = &s->listen[i];

		if (l->port != t.port)
			continue;
		if (selfaddr_same(l, &t))
			return 1;
		/* 0.0.0.0 takes IPv4; [::] takes both (unless v6only, and
		 * then 0.0.0.0 is listed too): any address of this host */
		if (selfaddr_wildcard(l) &&
		    (l->family == t.family || l->family == AF_INET6) &&
		    selfaddr_is_interface(s, &t))
			return 1;
	}
	return 0;
}
