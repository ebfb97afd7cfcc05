/*
 * dns_msg - a bounds-checked walk over a DNS response (see dns_msg.h).
 */
#include "dns_msg.h"

/* A legal name has at most 127 labels (255 octets). */
#define DNS_MSG_LABELS_MAX	127

unsigned dns_msg_u16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* Skip a (possibly compressed) name at *off. 0, or -1 if malformed. */
static int dns_msg_skip_name(const unsigned char *m, size_t len, size_t *off)
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
		if ((c & 0xc0) != 0 || ++labels > DNS_MSG_LABELS_MAX)
			return -1;
		o += 1 + c;
	}
	return -1;
}

int dns_msg_open(struct dns_msg *w, const unsigned char *m, size_t len)
{
	unsigned qd, i;

	w->m = m;
	w->len = len;
	w->off = DNS_MSG_HEADER;
	w->left = 0;
	if (m == NULL || len < DNS_MSG_HEADER)
		return -1;
	qd = dns_msg_u16(m + 4);
	for (i = 0; i < qd; i++) {
		if (dns_msg_skip_name(m, len, &w->off) < 0 ||
		    w->off + 4 > len)
			return -1;
		w->off += 4;	/* QTYPE, QCLASS */
	}
	w->left = dns_msg_u16(m + 6);
	return 0;
}

int dns_msg_next(struct dns_msg *w, struct dns_rr *rr)
{
	const unsigned char *p;

	if (w->left == 0)
		return 0;
	w->left--;
	if (dns_msg_skip_name(w->m, w->len, &w->off) < 0 ||
	    w->off + 10 > w->len)
		goto bad;
	p = w->m + w->off;
	rr->type = dns_msg_u16(p);
	rr->class = dns_msg_u16(p + 2);
	rr->ttl = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
	    (uint32_t)p[6] << 8 | (uint32_t)p[7];
	rr->rdlen = dns_msg_u16(p + 8);
	w->off += 10;
	if (w->off + rr->rdlen > w->len)
		goto bad;
	rr->rdata = w->m + w->off;
	w->off += rr->rdlen;
	return 1;
bad:
	w->left = 0;	/* nothing after a malformed record can be trusted */
	return -1;
}
