/*
 * dnsbl - DNS blocklist checks of SMTP clients (dnsbl, dnsbl_action,
 * dnsbl_allow, dnsbl_timeout in odrelay.conf(5)).
 *
 * A check starts when a client connects: one A query per list for the
 * client's reversed address (RFC 5782), through the daemon's c-ares
 * resolver, so answers are cached for their TTL by the dns module. smtpd
 * asks for the verdict at RCPT. A lookup that fails or takes longer than
 * dnsbl_timeout counts as "not listed" (and is logged): DNS trouble never
 * refuses mail. All calls on the loop thread.
 */
#ifndef OD_DNSBL_H
#define OD_DNSBL_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
struct dns;
struct dnsbl;
struct dnsbl_check;

#define DNSBL_NAME_MAX	253

enum dnsbl_action {
	DNSBL_REJECT = 0,	/* 554 5.7.1 at RCPT (default) */
	DNSBL_TEMPFAIL,		/* 450 4.7.1 at RCPT */
	DNSBL_LOG		/* accept, log the hit */
};

/* One "LIST[=CODES]" item: the list and, per octet, the accepted values. */
struct dnsbl_spec {
	char list[DNSBL_NAME_MAX + 1];
	uint8_t codes[4][32];	/* bit v of octet i set: v accepted */
	int any;		/* no CODES given */
};

/* Parse "zen.spamhaus.org=127.0.0.[2..11]". Without CODES any answer in
 * 127.0.0.0/8 but 127.255.255.0/24 (the lists' error codes) counts.
 * 0, or -1 with err set. */
int dnsbl_spec_parse(const char *item, struct dnsbl_spec *out, char *err,
    size_t errlen);
/* 1 if the IPv4 answer (network order bytes) matches the spec's codes. */
int dnsbl_spec_match(const struct dnsbl_spec *spec, const uint8_t a[4]);

/* "10.0.0.0/8", "::1/128", "192.0.2.1" (a host). */
struct dnsbl_cidr {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned bits;
};
int dnsbl_cidr_parse(const char *s, struct dnsbl_cidr *out);
/* 1 if ip (text form) lies in any of the n networks. */
int dnsbl_cidr_match(const struct dnsbl_cidr *nets, size_t n, const char *ip);

/* The query name for ip under list ("2.0.0.127.bl.example"). 0 or -1. */
int dnsbl_query_name(const char *ip, const char *list, char *out,
    size_t outlen);
int dnsbl_action_parse(const char *s, enum dnsbl_action *a_r);

struct dnsbl *dnsbl_new(struct event_base *base, struct dns *dns);
void dnsbl_free(struct dnsbl **bl);

/*
 * Start checking client ip against cfg's lists. done(arg) runs (never from
 * inside this call) once every list answered or gave up. NULL when there
 * is nothing to check (no lists, client in dnsbl_allow).
 */
struct dnsbl_check *dnsbl_check_start(struct dnsbl *bl,
    const struct config *cfg, const char *ip, void (*done)(void *arg),
    void *arg);
int dnsbl_check_pending(const struct dnsbl_check *c);
/* The first list (in configuration order) that listed the client, or
 * NULL. Meaningful once not pending. */
const char *dnsbl_check_listed(const struct dnsbl_check *c);
/* Cancels lookups in flight; done will not run. *c set to NULL. */
void dnsbl_check_free(struct dnsbl_check **c);

#endif
