/*
 * tlsa - read TLSA records (RFC 6698) out of a DNS response, and what a
 * validating resolver said about them (RFC 7672 2.2).
 *
 * Pure functions over untrusted bytes: no allocation, every read bounded
 * by the message length (fuzzed: tests/fuzz/fuzz_tlsa.c).
 */
#ifndef OD_TLSA_H
#define OD_TLSA_H

#include <stddef.h>

#include "tlspolicy.h"

enum tlsa_status {
	TLSA_SECURE,		/* authenticated, at least one record */
	TLSA_SECURE_NONE,	/* authenticated: no records (NXDOMAIN/NODATA) */
	TLSA_INSECURE,		/* not authenticated (unsigned zone): ignore */
	TLSA_TEMPFAIL		/* no usable answer: SERVFAIL (bogus), malformed */
};

/*
 * Parse a response to a TLSA query. Records go to out[0..*n) (at most max;
 * records whose digest length does not fit their matching type are
 * dropped, RFC 7671 5). Returns the status.
 */
enum tlsa_status tlsa_parse(const unsigned char *msg, size_t len,
    struct tlspolicy_tlsa *out, size_t max, size_t *n);
const char *tlsa_status_str(enum tlsa_status st);

/* "_PORT._tcp.HOST" into buf; -1 if it does not fit. */
int tlsa_name(const char *host, int port, char *buf, size_t size);

#endif
