/*
 * tlsa - TLSA records from a DNS response (see tlsa.h).
 */
#include <stdio.h>
#include <string.h>

#include "tlsa.h"

#define TLSA_TYPE	52
#define TLSA_CLASS_IN	1

/* Skip a (possibly compressed) name at *off. -1 if malformed. */
static int tlsa_skip_name(const unsigned char *m, size_t len, size_t *off)
{
	size_t o = *off;
	int labels = 0;

	while (o < len) {
		unsigned c = m[o];

		if (c == 0) {
			*off = o + 1;
			return 0;
		}
		if ((c & 0xc0) == 0xc0) {
			/* A pointer ends the name here. */
			if (o + 2 > len)
				return -1;
			*off = o + 2;
			return 0;
		}
		if ((c & 0xc0) != 0 || ++labels > 127)
			return -1;
		o += 1 + c;
	}
	return -1;
}

static unsigned tlsa_u16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

enum tlsa_status tlsa_parse(const unsigned char *m, size_t len,
    struct tlspolicy_tlsa *out, size_t max, size_t *n)
{
	size_t off = 12;
	unsigned qd, an, rcode, i, seen = 0;
	int ad;

	*n = 0;
	if (m == NULL || len < 12)
		return TLSA_TEMPFAIL;
	if (!(m[2] & 0x80) || (m[2] & 0x02))
		return TLSA_TEMPFAIL;	/* not a response, or truncated */
	ad = (m[3] & 0x20) != 0;
	rcode = m[3] & 0x0f;
	qd = tlsa_u16(m + 4);
	an = tlsa_u16(m + 6);
	if (rcode == 3)		/* NXDOMAIN */
		return ad ? TLSA_SECURE_NONE : TLSA_INSECURE;
	if (rcode != 0)
		return TLSA_TEMPFAIL;
	for (i = 0; i < qd; i++) {
		if (tlsa_skip_name(m, len, &off) < 0 || off + 4 > len)
			return TLSA_TEMPFAIL;
		off += 4;
	}
	for (i = 0; i < an; i++) {
		unsigned type, class, rdlen;

		if (tlsa_skip_name(m, len, &off) < 0 || off + 10 > len)
			return TLSA_TEMPFAIL;
		type = tlsa_u16(m + off);
		class = tlsa_u16(m + off + 2);
		rdlen = tlsa_u16(m + off + 8);
		off += 10;
		if (off + rdlen > len)
			return TLSA_TEMPFAIL;
		if (type == TLSA_TYPE && class == TLSA_CLASS_IN && rdlen > 3 &&
		    *n < max) {
			struct tlspolicy_tlsa *t = &out[*n];
			size_t dlen = rdlen - 3;

			seen++;
			t->usage = m[off];
			t->selector = m[off + 1];
			t->mtype = m[off + 2];
			/* RFC 7671 5: a digest of the wrong size is unusable. */
			if (!((t->mtype == 1 && dlen != 32) ||
			    (t->mtype == 2 && dlen != 64) ||
			    dlen > sizeof(t->data))) {
				t->len = (unsigned short)dlen;
				memcpy(t->data, m + off + 3, dlen);
				(*n)++;
			}
		}
		off += rdlen;
	}
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
