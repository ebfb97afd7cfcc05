/*
 * milter_proto - milter packets: encoding of commands, decoding of filter
 * replies. Every field of a reply is checked here; the client never sees
 * a string without its NUL or a reply code it cannot send on.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>

#include "milter_proto.h"

int milter_frame(const unsigned char *buf, size_t len, uint32_t *len_r)
{
	uint32_t n;

	if (len < 4)
		return 0;
	n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
	    (uint32_t)buf[2] << 8 | buf[3];
	if (n == 0 || n > MILTER_REPLY_MAX)
		return -1;
	*len_r = n;
	return 1;
}

/* The NUL-terminated string at *off, or NULL when there is none. */
static const char *mp_str(unsigned char *pkt, size_t len, size_t *off)
{
	const unsigned char *nul;
	const char *s;

	if (*off >= len)
		return NULL;
	nul = memchr(pkt + *off, '\0', len - *off);
	if (nul == NULL)
		return NULL;
	s = (const char *)pkt + *off;
	*off = (size_t)(nul - pkt) + 1;
	return s;
}

static uint32_t mp_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* Header field name (RFC 5322 2.2): printable ASCII but ':', 1..255. */
static int mp_hname_ok(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++, n++)
		if ((unsigned char)*s <= 32 || (unsigned char)*s >= 127 ||
		    *s == ':')
			return 0;
	return n > 0 && n <= 255;
}

/* Header value: no CR or LF except as a fold (LF or CRLF + SP/HT). */
static int mp_hvalue_ok(const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\r') {
			if (s[1] != '\n')
				return 0;
			continue;
		}
		if (*s == '\n' && s[1] != ' ' && s[1] != '\t')
			return 0;
	}
	return 1;
}

/* One reply line: "NNN" then ' ' or '-' (or end), no controls. */
static int mp_line_ok(const char *s, size_t n, const char *code, int last)
{
	size_t i;

	if (n < 3 || s[0] != code[0] || s[1] != code[1] || s[2] != code[2])
		return 0;
	if (n > 3 && s[3] != (last ? ' ' : '-'))
		return 0;
	if (n == 3 && !last)
		return 0;
	for (i = 3; i < n; i++)
		if ((unsigned char)s[i] < 32 || s[i] == 127)
			return 0;
	return 1;
}

int milter_replycode_ok(const char *text)
{
	const char *p = text, *eol;
	char code[3];

	if ((text[0] != '4' && text[0] != '5') || text[1] < '0' ||
	    text[1] > '9' || text[2] < '0' || text[2] > '9')
		return 0;
	memcpy(code, text, 3);
	for (;;) {
		eol = strstr(p, "\r\n");
		if (eol == NULL)
			return strlen(p) <= 512 && mp_line_ok(p, strlen(p), code,
			    1);
		if ((size_t)(eol - p) > 512 || !mp_line_ok(p, (size_t)(eol - p),
		    code, 0))
			return 0;
		p = eol + 2;
	}
}

int milter_reply_parse(unsigned char *pkt, size_t len, struct milter_reply *r)
{
	size_t off = 1;

	memset(r, 0, sizeof(*r));
	if (len < 1)
		return -1;
	switch (pkt[0]) {
	case 'a': r->type = MILTER_R_ACCEPT; goto empty;
	case 'c': r->type = MILTER_R_CONTINUE; goto empty;
	case 'r': r->type = MILTER_R_REJECT; goto empty;
	case 't': r->type = MILTER_R_TEMPFAIL; goto empty;
	case 'd': r->type = MILTER_R_DISCARD; goto empty;
	case 's': r->type = MILTER_R_SKIP; goto empty;
	case 'p': r->type = MILTER_R_PROGRESS; goto empty;
	case '4': r->type = MILTER_R_SHUTDOWN; goto empty;
	case 'f': r->type = MILTER_R_CONNFAIL; goto empty;
	case 'O':
		/* version, actions, protocol; macro lists may follow */
		if (len < 13)
			return -1;
		r->type = MILTER_R_OPTNEG;
		r->version = mp_u32(pkt + 1);
		r->actions = mp_u32(pkt + 5);
		r->protocol = mp_u32(pkt + 9);
		return 0;
	case 'y':
		r->type = MILTER_R_REPLYCODE;
		if ((r->text = mp_str(pkt, len, &off)) == NULL || off != len ||
		    !milter_replycode_ok(r->text))
			return -1;
		return 0;
	case 'h':
		r->type = MILTER_R_ADDHEADER;
		goto header;
	case 'i':
	case 'm':
		r->type = pkt[0] == 'i' ? MILTER_R_INSHEADER :
		    MILTER_R_CHGHEADER;
		if (len < 5)
			return -1;
		r->index = mp_u32(pkt + 1);
		off = 5;
		goto header;
	case '-':
		r->type = MILTER_R_DELRCPT;
		goto one;
	case '+':
		r->type = MILTER_R_ADDRCPT;
		goto one;
	case 'q':
		r->type = MILTER_R_QUARANTINE;
		goto one;
	case '2':
	case 'e':
		r->type = pkt[0] == '2' ? MILTER_R_ADDRCPT : MILTER_R_CHGFROM;
		if ((r->text = mp_str(pkt, len, &off)) == NULL)
			return -1;
		if (off < len && (r->args = mp_str(pkt, len, &off)) == NULL)
			return -1;
		return off == len ? 0 : -1;
	case 'b':
		r->type = MILTER_R_REPLBODY;
		r->data = pkt + 1;
		r->datalen = len - 1;
		return 0;
	case 'l':
		r->type = MILTER_R_SETSYMLIST;
		return 0;
	default:
		return -1;
	}
empty:
	return len == 1 ? 0 : -1;
one:
	if ((r->text = mp_str(pkt, len, &off)) == NULL || off != len)
		return -1;
	return 0;
header:
	if ((r->name = mp_str(pkt, len, &off)) == NULL ||
	    (r->value = mp_str(pkt, len, &off)) == NULL || off != len)
		return -1;
	if (!mp_hname_ok(r->name) || !mp_hvalue_ok(r->value))
		return -1;
	return 0;
}

const char *milter_rtype_name(enum milter_rtype t)
{
	static const char *const names[] = {
		"accept", "continue", "reject", "tempfail", "discard",
		"replycode", "skip", "progress", "optneg", "addheader",
		"insheader", "chgheader", "delrcpt", "addrcpt", "chgfrom",
		"replbody", "quarantine", "setsymlist", "shutdown", "connfail"
	};

	if ((size_t)t < sizeof(names) / sizeof(names[0]))
		return names[t];
	return "unknown";
}

/* ---- encoding ---- */

static void mp_head(struct evbuffer *out, char cmd, size_t datalen)
{
	uint32_t n = htonl((uint32_t)(datalen + 1));

	evbuffer_add(out, &n, 4);
	evbuffer_add(out, &cmd, 1);
}

void milter_put_optneg(struct evbuffer *out, uint32_t actions,
    uint32_t protocol)
{
	uint32_t v[3] = { htonl(MILTER_PROTO_VERSION), htonl(actions),
	    htonl(protocol) };

	mp_head(out, SMFIC_OPTNEG, sizeof(v));
	evbuffer_add(out, v, sizeof(v));
}

void milter_put_cmd(struct evbuffer *out, char cmd)
{
	mp_head(out, cmd, 0);
}

void milter_put_macros(struct evbuffer *out, char cmd,
    const char *const *names, const char *const *values, size_t n)
{
	size_t i, len = 1;

	for (i = 0; i < n; i++)
		if (values[i] != NULL)
			len += strlen(names[i]) + 1 + strlen(values[i]) + 1;
	mp_head(out, SMFIC_MACRO, len);
	evbuffer_add(out, &cmd, 1);
	for (i = 0; i < n; i++) {
		if (values[i] == NULL)
			continue;
		evbuffer_add(out, names[i], strlen(names[i]) + 1);
		evbuffer_add(out, values[i], strlen(values[i]) + 1);
	}
}

void milter_put_connect(struct evbuffer *out, const char *host, char family,
    uint16_t port, const char *addr)
{
	uint16_t p = htons(port);

	mp_head(out, SMFIC_CONNECT, strlen(host) + 1 + 1 + 2 +
	    strlen(addr) + 1);
	evbuffer_add(out, host, strlen(host) + 1);
	evbuffer_add(out, &family, 1);
	evbuffer_add(out, &p, 2);
	evbuffer_add(out, addr, strlen(addr) + 1);
}

void milter_put_strings(struct evbuffer *out, char cmd,
    const char *const *v, size_t n)
{
	size_t i, len = 0;

	for (i = 0; i < n; i++)
		len += strlen(v[i]) + 1;
	mp_head(out, cmd, len);
	for (i = 0; i < n; i++)
		evbuffer_add(out, v[i], strlen(v[i]) + 1);
}

void milter_put_header(struct evbuffer *out, const char *name,
    const char *value)
{
	mp_head(out, SMFIC_HEADER, strlen(name) + 1 + strlen(value) + 1);
	evbuffer_add(out, name, strlen(name) + 1);
	evbuffer_add(out, value, strlen(value) + 1);
}

void milter_put_body(struct evbuffer *out, const void *data, size_t len)
{
	mp_head(out, SMFIC_BODY, len);
	evbuffer_add(out, data, len);
}
