/*
 * dnsbl_spec - DNS blocklist items, networks and actions as odrelay.conf(5)
 * writes them (dnsbl, dnsbl_allow, dnsbl_action), parsed and matched
 * without DNS. The checks themselves are in dns/dnsbl.h.
 */
#ifndef OD_DNSBL_SPEC_H
#define OD_DNSBL_SPEC_H

#include <stddef.h>
#include <stdint.h>

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

#endif
