/*
 * tlsa - TLSA records from a DNS response (see tlsa.h).
 */
#include <stdio.h>
#include <string.h>

#include "dns_msg.h"
#include "tlsa.h"

#define TLSA_TYPE	52
#define TLSA_CLASS_IN	1

enum tlsa_status tlsa_parse(const unsigned char *m, size_t len,
    struct tlspolicy_tlsa *out, size_t max, size_t *n)
{
	struct dns_msg w;
	struct dns_rr rr;
	unsigned rcode, seen = 0;
	int ad, r;

	*n = 0;
	if (m == NULL || len < DNS_MSG_HEADER)
		return TLSA_TEMPFAIL;
	if (!(m[2] & 0x80) || (m[2] & 0x02))
		return TLSA_TEMPFAIL;	/* not a response, or truncated */
	ad = (m[3] & 0x20) != 0;
	rcode = m[3] & 0x0f;
	if (rcode == 3)		/* NXDOMAIN */
		return ad ? TLSA_SECURE_NONE : TLSA_INSECURE;
	if (rcode != 0)
		return TLSA_TEMPFAIL;
	if (dns_msg_open(&w, m, len) < 0)
		return TLSA_TEMPFAIL;
	while ((r = dns_msg_next(&w, &rr)) > 0) {
		if (rr.type == TLSA_TYPE && rr.class == TLSA_CLASS_IN &&
		    rr.rdlen > 3 && *n < max) {
			struct tlspolicy_tlsa *t = &out[*n];
			size_t dlen = rr.rdlen - 3;

			seen++;
			t->usage = rr.rdata[0];
			t->selector = rr.rdata[1];
			t->mtype = rr.rdata[2];
			/* RFC 7671 5: a digest of the wrong size is unusable. */
			if (!((t->mtype == 1 && dlen != 32) ||
			    (t->mtype == 2 && dlen != 64) ||
			    dlen > sizeof(t->data))) {
				t->len = (unsigned short)dlen;
				memcpy(t->data, rr.rdata + 3, dlen);
				(*n)++;
			}
		}
	}
	if (r < 0)
		return TLSA_TEMPFAIL;
	if (!ad)
		return TLSA_INSECURE;
	if (*n == 0 && seen > 0 && max > 0) {
		/* Only malformed records: TLS stays mandatory (RFC 7672 2.2),
		 * kept as one record no one can match. */
		memset(&out[0], 0, sizeof(out[0]));
		out[0].usage = 255;
		*n = 1;
	}
	return *n > 0 ? TLSA_SECURE : TLSA_SECURE_NONE;
}

const char *tlsa_status_str(enum tlsa_status st)
{
	switch (st) {
	case TLSA_SECURE:
		return "secure";
	case TLSA_SECURE_NONE:
		return "secure, no records";
	case TLSA_INSECURE:
		return "insecure";
	case TLSA_TEMPFAIL:
		return "lookup failed";
	}
	return "?";
}

int tlsa_name(const char *host, int port, char *buf, size_t size)
{
	int r = snprintf(buf, size, "_%d._tcp.%s", port, host);

	return r < 0 || (size_t)r >= size ? -1 : 0;
}
