/*
 * authproto - encode and decode the session/auth process records. Both
 * processes treat what the other sends as hostile: every length is checked
 * against the record and the field's own limit.
 */
#include <string.h>

#include "authproto.h"

#define AUTHPROTO_HDR	7

struct authproto_w {
	unsigned char *buf;
	size_t size, len;
	int bad;
};

static void authproto_put_field(struct authproto_w *w, const char *s,
    size_t len, size_t max)
{
	if (w->bad || len > max || (len > 0 && memchr(s, '\0', len) != NULL) ||
	    w->size - w->len < 4 + len) {
		w->bad = 1;
		return;
	}
	w->buf[w->len++] = (unsigned char)(len >> 24);
	w->buf[w->len++] = (unsigned char)(len >> 16);
	w->buf[w->len++] = (unsigned char)(len >> 8);
	w->buf[w->len++] = (unsigned char)len;
	if (len > 0)
		memcpy(w->buf + w->len, s, len);
	w->len += len;
}

static int authproto_header(struct authproto_w *w, unsigned type,
    uint32_t id, unsigned byte6)
{
	if (w->size < AUTHPROTO_HDR)
		return -1;
	/* A record must fit a receiver's AUTHPROTO_MAX buffer. */
	if (w->size > AUTHPROTO_MAX)
		w->size = AUTHPROTO_MAX;
	w->buf[0] = AUTHPROTO_VERSION;
	w->buf[1] = (unsigned char)type;
	w->buf[2] = (unsigned char)(id >> 24);
	w->buf[3] = (unsigned char)(id >> 16);
	w->buf[4] = (unsigned char)(id >> 8);
	w->buf[5] = (unsigned char)id;
	w->buf[6] = (unsigned char)byte6;
	w->len = AUTHPROTO_HDR;
	return 0;
}

int authproto_encode_req(unsigned char *buf, size_t size,
    const struct authproto_req *r)
{
	struct authproto_w w = { buf, size, 0, 0 };

	if (authproto_header(&w, r->type, r->id,
	    r->type == AUTHPROTO_START || r->type == AUTHPROTO_CLAIM ||
	    r->type == AUTHPROTO_TICKETS ? r->flags & 0xff : 0) < 0)
		return -1;
	switch (r->type) {
	case AUTHPROTO_START:
	case AUTHPROTO_CLAIM:
		/* the same layout: TLS flags, client address, first line */
		if (r->iplen == 0)
			return -1;
		authproto_put_field(&w, r->ip, r->iplen, AUTHPROTO_IP_MAX);
		authproto_put_field(&w, r->data, r->datalen,
		    AUTHPROTO_LINE_MAX);
		break;
	case AUTHPROTO_STEP:
		authproto_put_field(&w, r->data, r->datalen,
		    AUTHPROTO_LINE_MAX);
		break;
	case AUTHPROTO_TICKETS:
		if (r->flags == 0 || r->flags > AUTHPROTO_TICKETS_MAX)
			return -1;
		break;
	case AUTHPROTO_CHECK:
		if (r->datalen == 0)
			return -1;
		authproto_put_field(&w, r->data, r->datalen,
		    AUTHPROTO_USER_MAX);
		break;
	case AUTHPROTO_CANCEL:
	case AUTHPROTO_RELOAD:
		break;
	default:
		return -1;
	}
	return w.bad ? -1 : (int)w.len;
}

int authproto_encode_reply(unsigned char *buf, size_t size,
    const struct authproto_reply *r)
{
	struct authproto_w w = { buf, size, 0, 0 };

	if (r->rc < AUTHPROTO_UNAVAILABLE || r->rc > 1 || r->textlen < 3)
		return -1;
	if (authproto_header(&w, AUTHPROTO_REPLY, r->id,
	    (unsigned)(r->rc + 8)) < 0)
		return -1;
	authproto_put_field(&w, r->text, r->textlen, AUTHPROTO_REPLY_MAX);
	authproto_put_field(&w, r->user, r->userlen, AUTHPROTO_USER_MAX);
	authproto_put_field(&w, r->domains, r->domainslen,
	    AUTHPROTO_DOMAINS_MAX);
	return w.bad ? -1 : (int)w.len;
}

struct authproto_r {
	const unsigned char *buf;
	size_t len, off;
	int bad;
};

static const char *authproto_get_field(struct authproto_r *r, size_t max,
    size_t *len_r)
{
	size_t n;
	const char *s;

	*len_r = 0;
	if (r->bad || r->len - r->off < 4) {
		r->bad = 1;
		return "";
	}
	n = (size_t)r->buf[r->off] << 24 | (size_t)r->buf[r->off + 1] << 16 |
	    (size_t)r->buf[r->off + 2] << 8 | (size_t)r->buf[r->off + 3];
	r->off += 4;
	if (n > max || n > r->len - r->off) {
		r->bad = 1;
		return "";
	}
	s = (const char *)r->buf + r->off;
	if (n > 0 && memchr(s, '\0', n) != NULL) {
		r->bad = 1;
		return "";
	}
	r->off += n;
	*len_r = n;
	return s;
}

static int authproto_get_header(struct authproto_r *r, unsigned *type_r,
    uint32_t *id_r, unsigned *byte6_r)
{
	if (r->len < AUTHPROTO_HDR || r->len > AUTHPROTO_MAX ||
	    r->buf[0] != AUTHPROTO_VERSION)
		return -1;
	*type_r = r->buf[1];
	*id_r = (uint32_t)r->buf[2] << 24 | (uint32_t)r->buf[3] << 16 |
	    (uint32_t)r->buf[4] << 8 | (uint32_t)r->buf[5];
	*byte6_r = r->buf[6];
	r->off = AUTHPROTO_HDR;
	return 0;
}

int authproto_decode_req(const unsigned char *buf, size_t len,
    struct authproto_req *q)
{
	struct authproto_r r = { buf, len, 0, 0 };
	unsigned byte6;

	memset(q, 0, sizeof(*q));
	q->ip = q->data = "";
	if (authproto_get_header(&r, &q->type, &q->id, &byte6) < 0)
		return -1;
	switch (q->type) {
	case AUTHPROTO_START:
	case AUTHPROTO_CLAIM:
		/* the same layout: TLS flags, client address, first line */
		if (byte6 & ~(unsigned)(AUTHPROTO_TLS | AUTHPROTO_REQUIRE_TLS))
			return -1;
		q->flags = byte6;
		q->ip = authproto_get_field(&r, AUTHPROTO_IP_MAX, &q->iplen);
		q->data = authproto_get_field(&r, AUTHPROTO_LINE_MAX,
		    &q->datalen);
		if (q->iplen == 0)
			return -1;
		break;
	case AUTHPROTO_STEP:
		if (byte6 != 0)
			return -1;
		q->data = authproto_get_field(&r, AUTHPROTO_LINE_MAX,
		    &q->datalen);
		break;
	case AUTHPROTO_TICKETS:
		if (byte6 == 0 || byte6 > AUTHPROTO_TICKETS_MAX)
			return -1;
		q->flags = byte6;
		break;
	case AUTHPROTO_CHECK:
		if (byte6 != 0)
			return -1;
		q->data = authproto_get_field(&r, AUTHPROTO_USER_MAX,
		    &q->datalen);
		if (q->datalen == 0)
			return -1;
		break;
	case AUTHPROTO_CANCEL:
	case AUTHPROTO_RELOAD:
		if (byte6 != 0)
			return -1;
		break;
	default:
		return -1;
	}
	return r.bad || r.off != r.len ? -1 : 0;
}

int authproto_decode_reply(const unsigned char *buf, size_t len,
    struct authproto_reply *p)
{
	struct authproto_r r = { buf, len, 0, 0 };
	unsigned type, byte6;

	memset(p, 0, sizeof(*p));
	p->text = p->user = p->domains = "";
	if (authproto_get_header(&r, &type, &p->id, &byte6) < 0 ||
	    type != AUTHPROTO_REPLY)
		return -1;
	if (byte6 < 8 + AUTHPROTO_UNAVAILABLE || byte6 > 8 + 1)
		return -1;
	p->rc = (int)byte6 - 8;
	p->text = authproto_get_field(&r, AUTHPROTO_REPLY_MAX, &p->textlen);
	p->user = authproto_get_field(&r, AUTHPROTO_USER_MAX, &p->userlen);
	p->domains = authproto_get_field(&r, AUTHPROTO_DOMAINS_MAX,
	    &p->domainslen);
	if (r.bad || r.off != r.len)
		return -1;
	/* A reply line starts with its three-digit code. */
	if (p->textlen < 3 || p->text[0] < '2' || p->text[0] > '5' ||
	    p->text[1] < '0' || p->text[1] > '9' ||
	    p->text[2] < '0' || p->text[2] > '9' ||
	    memchr(p->text, '\r', p->textlen) != NULL ||
	    memchr(p->text, '\n', p->textlen) != NULL)
		return -1;
	return 0;
}
