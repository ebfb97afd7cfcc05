/*
 * dns_msg - read a DNS response in wire format (RFC 1035 4.1): walk the
 * answer section record by record, bounds-checked, for every module that
 * reads answers itself (the resolver's TTLs, TLSA, MTA-STS TXT).
 *
 * No allocation, no state beyond the walker; names are skipped, never
 * expanded. Header flags and RCODE are the caller's to judge.
 */
#ifndef OD_DNS_MSG_H
#define OD_DNS_MSG_H

#include <stddef.h>
#include <stdint.h>

#define DNS_MSG_HEADER	12	/* octets of the fixed header */

struct dns_msg {
	const unsigned char *m;
	size_t len;
	size_t off;		/* next answer record */
	unsigned left;		/* answer records not yet read */
};

struct dns_rr {
	unsigned type;
	unsigned class;
	uint32_t ttl;
	const unsigned char *rdata;	/* inside the message, rdlen octets */
	size_t rdlen;
};

/* Start at the answer section (question names skipped): 0, or -1 when
 * shorter than a header or the question section is malformed. */
int dns_msg_open(struct dns_msg *w, const unsigned char *m, size_t len);
/* The next answer record: 1 read into rr, 0 none left, -1 malformed. */
int dns_msg_next(struct dns_msg *w, struct dns_rr *rr);
/* The 16-bit big-endian number at p. */
unsigned dns_msg_u16(const unsigned char *p);

#endif
