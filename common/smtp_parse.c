/*
 * smtp_parse - pure SMTP syntax (see smtp_parse.h).
 *
 * The grammar is RFC 5321 4.1.2 (paths), RFC 1870/6152/6531/3461 (MAIL and
 * RCPT parameters) and RFC 1985 (ETRN). The relay decision that follows is
 * made on smtp_path.domain only, so the one job here is to find that domain
 * exactly as a careful MTA would: after the last unquoted '@', with any
 * source route dropped, and never inside a quoted local part.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smtp_parse.h"

static int
smtp_parse_ieq(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

/* A parameter value that must be one of two keywords (BODY=, RET=):
 * *r gets the matching one's code; 0 when v is absent or neither. */
static int
smtp_parse_pick(const char *v, size_t vlen, const char *a, int code_a,
    const char *b, int code_b, int *r)
{
	if (v != NULL && smtp_parse_ieq(v, vlen, a))
		*r = code_a;
	else if (v != NULL && smtp_parse_ieq(v, vlen, b))
		*r = code_b;
	else
		return 0;
	return 1;
}

/* Length of one well-formed UTF-8 sequence at s, or 0. */
static size_t
smtp_parse_utf8_seq(const unsigned char *s, size_t len)
{
	size_t n, i;
	unsigned c = s[0];
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond U+10FFFF */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

int
smtp_parse_command(const char *line, size_t len, char *verb_r,
    size_t verbsize, const char **arg_r, size_t *arglen_r)
{
	size_t i, v;

	for (i = 0; i < len; i++) {
		unsigned char c = line[i];
		if ((c < 32 && c != '\t') || c == 127)
			return SMTP_PARSE_ECHAR;
	}
	for (v = 0; v < len && line[v] != ' '; v++)
		;
	if (v == 0 || v >= verbsize || v > SMTP_VERB_MAX)
		return SMTP_PARSE_ESYNTAX;
	for (i = 0; i < v; i++) {
		if (!isalnum((unsigned char)line[i]))
			return SMTP_PARSE_ESYNTAX;
		verb_r[i] = toupper((unsigned char)line[i]);
	}
	verb_r[v] = '\0';
	i = v;
	while (i < len && line[i] == ' ')
		i++;
	while (len > i && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	*arg_r = line + i;
	*arglen_r = len - i;
	return SMTP_PARSE_OK;
}

static int
smtp_parse_is_ldh(unsigned char c)
{
	return isalnum(c) || c == '-';
}

int
smtp_parse_domain(const char *s, size_t len, int utf8_ok, char *out,
    size_t outsize)
{
	size_t i, lab = 0, n;
	int utf8 = 0;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0)
		return SMTP_PARSE_EPATH;
	if (len > SMTP_DOMAIN_MAX || len + 1 > outsize)
		return SMTP_PARSE_ETOOLONG;
	for (i = 0; i < len; ) {
		unsigned char c = s[i];
		if (c == '.') {
			/* empty label, or label ending with '-' */
			if (lab == 0 || s[i - 1] == '-')
				return SMTP_PARSE_EPATH;
			lab = 0;
			out[i] = '.';
			i++;
			continue;
		}
		if (c >= 0x80) {
			n = smtp_parse_utf8_seq((const unsigned char *)s + i,
			    len - i);
			if (n == 0)
				return SMTP_PARSE_EPATH;
			memcpy(out + i, s + i, n);
			i += n;
			lab += n;
			utf8 = 1;
		} else {
			if (!smtp_parse_is_ldh(c))
				return SMTP_PARSE_EPATH;
			if (lab == 0 && c == '-')
				return SMTP_PARSE_EPATH;
			out[i] = tolower(c);
			i++;
			lab++;
		}
		if (lab > 63)
			return SMTP_PARSE_ETOOLONG;
	}
	/* "a.test.." leaves "a.test.": an empty last label */
	if (lab == 0 || s[len - 1] == '-')
		return SMTP_PARSE_EPATH;
	if (utf8 && !utf8_ok)
		return SMTP_PARSE_E8BIT;
	out[len] = '\0';
	return SMTP_PARSE_OK;
}

/* "[...]" address literal (RFC 5321 4.1.3), shape-checked only. */
static int
smtp_parse_literal(const char *s, size_t len)
{
	size_t i;

	if (len < 3 || s[0] != '[' || s[len - 1] != ']')
		return SMTP_PARSE_EPATH;
	for (i = 1; i < len - 1; i++) {
		unsigned char c = s[i];
		/* dcontent: %d33-90 / %d94-126 */
		if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\')
			return SMTP_PARSE_EPATH;
	}
	return SMTP_PARSE_OK;
}

static int
smtp_parse_atext(unsigned char c)
{
	return isalnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/*
 * Local part: dot-string or quoted-string. Sets routing/quoted/utf8 flags.
 */
static int
smtp_parse_local(const char *s, size_t len, int utf8_ok,
    struct smtp_path *p)
{
	size_t i, n;

	if (len == 0)
		return SMTP_PARSE_EPATH;
	if (len > SMTP_LOCAL_MAX)
		return SMTP_PARSE_ETOOLONG;
	if (s[0] == '"') {
		if (len < 2 || s[len - 1] != '"')
			return SMTP_PARSE_EPATH;
		p->quoted = 1;
		for (i = 1; i < len - 1; ) {
			unsigned char c = s[i];
			if (c == '\\') {
				if (i + 1 >= len - 1)
					return SMTP_PARSE_EPATH;
				c = s[i + 1];
				if (c < 32 || c > 126)
					return SMTP_PARSE_EPATH;
				if (c == '@' || c == '%' || c == '!')
					p->local_routing = 1;
				i += 2;
				continue;
			}
			if (c == '"')
				return SMTP_PARSE_EPATH;
			if (c >= 0x80) {
				n = smtp_parse_utf8_seq(
				    (const unsigned char *)s + i, len - 1 - i);
				if (n == 0)
					return SMTP_PARSE_EPATH;
				p->utf8 = 1;
				i += n;
				continue;
			}
			if (c < 32 || c == 127)
				return SMTP_PARSE_EPATH;
			if (c == '@' || c == '%' || c == '!')
				p->local_routing = 1;
			i++;
		}
	} else {
		if (s[0] == '.' || s[len - 1] == '.')
			return SMTP_PARSE_EPATH;
		for (i = 0; i < len; ) {
			unsigned char c = s[i];
			if (c == '.') {
				if (s[i + 1] == '.')
					return SMTP_PARSE_EPATH;
				i++;
				continue;
			}
			if (c >= 0x80) {
				n = smtp_parse_utf8_seq(
				    (const unsigned char *)s + i, len - i);
				if (n == 0)
					return SMTP_PARSE_EPATH;
				p->utf8 = 1;
				i += n;
				continue;
			}
			if (!smtp_parse_atext(c))
				return SMTP_PARSE_EPATH;
			if (c == '%' || c == '!')
				p->local_routing = 1;
			i++;
		}
	}
	if (p->utf8 && !utf8_ok)
		return SMTP_PARSE_E8BIT;
	memcpy(p->local, s, len);
	p->local[len] = '\0';
	return SMTP_PARSE_OK;
}

/* End of a quoted string starting at s[i] == '"': index after it, or 0. */
static size_t
smtp_parse_skip_quoted(const char *s, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (s[i] == '\\') {
			i++;
			continue;
		}
		if (s[i] == '"')
			return i + 1;
	}
	return 0;
}

int
smtp_parse_path(const char *s, size_t len, int utf8_ok, int is_mail,
    struct smtp_path *p)
{
	size_t i, at, llen, dlen;
	int r;
	char dom[SMTP_DOMAIN_MAX + 1];

	memset(p, 0, sizeof(*p));
	if (len + 2 > SMTP_PATH_MAX)
		return SMTP_PARSE_ETOOLONG;
	if (len == 0) {
		if (!is_mail)
			return SMTP_PARSE_EPATH;
		p->null_path = 1;
		return SMTP_PARSE_OK;
	}
	/* A-d-l ":" — each hop must be "@domain"; all are dropped. */
	if (s[0] == '@') {
		size_t start = 0;
		for (i = 0; i < len; i++) {
			if (s[i] == ',' || s[i] == ':') {
				if (s[start] != '@' || i - start < 2)
					return SMTP_PARSE_EPATH;
				r = (s[start + 1] == '[') ?
				    smtp_parse_literal(s + start + 1,
				    i - start - 1) :
				    smtp_parse_domain(s + start + 1,
				    i - start - 1, utf8_ok, dom, sizeof(dom));
				if (r != 0)
					return r;
				if (s[i] == ':')
					break;
				start = i + 1;
			} else if (s[i] == '"' || s[i] == '\\' ||
			    s[i] == '<' || s[i] == '>' || s[i] == ' ')
				return SMTP_PARSE_EPATH;
		}
		if (i >= len)
			return SMTP_PARSE_EPATH;
		p->had_route = 1;
		s += i + 1;
		len -= i + 1;
		if (len == 0)
			return SMTP_PARSE_EPATH;
	}
	/* Find the '@' that ends the local part: after a quoted string the
	 * very next octet; in a dot-string the first '@' (a second one is a
	 * syntax error, caught by the domain check). */
	if (s[0] == '"') {
		at = smtp_parse_skip_quoted(s, len, 0);
		if (at == 0)
			return SMTP_PARSE_EPATH;
		if (at >= len || s[at] != '@') {
			/* "postmaster" quoted without domain is not worth it */
			return SMTP_PARSE_EPATH;
		}
	} else {
		for (at = 0; at < len && s[at] != '@'; at++)
			;
		if (at >= len) {
			/* only <postmaster> may come without a domain */
			if (!is_mail && smtp_parse_ieq(s, len, "postmaster")) {
				memcpy(p->local, s, len);
				p->local[len] = '\0';
				memcpy(p->addr, s, len);
				p->addr[len] = '\0';
				p->no_domain = 1;
				return SMTP_PARSE_OK;
			}
			return SMTP_PARSE_EPATH;
		}
	}
	llen = at;
	r = smtp_parse_local(s, llen, utf8_ok, p);
	if (r != 0)
		return r;
	s += at + 1;
	dlen = len - at - 1;
	if (dlen == 0)
		return SMTP_PARSE_EPATH;
	if (s[0] == '[') {
		r = smtp_parse_literal(s, dlen);
		if (r != 0)
			return r;
		memcpy(p->domain, s, dlen);
		p->domain[dlen] = '\0';
		/* IPv6 tag case-folded; addresses compared as written */
		for (i = 0; i < dlen; i++)
			p->domain[i] = tolower((unsigned char)p->domain[i]);
		p->literal = 1;
	} else {
		r = smtp_parse_domain(s, dlen, utf8_ok, p->domain,
		    sizeof(p->domain));
		if (r != 0)
			return r;
		for (i = 0; p->domain[i] != '\0'; i++)
			if ((unsigned char)p->domain[i] >= 0x80)
				p->utf8 = 1;
	}
	if ((size_t)snprintf(p->addr, sizeof(p->addr), "%s@%s", p->local,
	    p->domain) >= sizeof(p->addr))
		return SMTP_PARSE_ETOOLONG;
	return SMTP_PARSE_OK;
}

int
smtp_xtext_valid(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = s[i];
		if (c == '+') {
			if (i + 2 >= len)
				return 0;
			if (!isxdigit((unsigned char)s[i + 1]) ||
			    !isxdigit((unsigned char)s[i + 2]) ||
			    islower((unsigned char)s[i + 1]) ||
			    islower((unsigned char)s[i + 2]))
				return 0;
			i += 2;
			continue;
		}
		if (c < 33 || c > 126 || c == '=')
			return 0;
	}
	return 1;
}

/*
 * Split "FROM:<path> params" / "TO:<path> params": finds the path between
 * the brackets (quote-aware, so '>' inside a quoted local part does not end
 * it) and the parameter string after it (params_r up to end_r); path_r
 * is zeroed first, for the caller's path.
 */
static int
smtp_parse_split(const char *arg, size_t len, const char *prefix,
    struct smtp_path *path_r, const char **path, size_t *pathlen_r,
    const char **params_r, const char **end_r)
{
	size_t plen = strlen(prefix), i;

	memset(path_r, 0, sizeof(*path_r));

	if (len < plen || strncasecmp(arg, prefix, plen) != 0)
		return SMTP_PARSE_ESYNTAX;
	i = plen;
	/* Tolerate "FROM: <a@b>" (common, harmless). */
	while (i < len && arg[i] == ' ')
		i++;
	if (i >= len || arg[i] != '<')
		return SMTP_PARSE_EPATH;
	*path = arg + ++i;
	for (; i < len; i++) {
		if (arg[i] == '"') {
			size_t e = smtp_parse_skip_quoted(arg, len, i);
			if (e == 0)
				return SMTP_PARSE_EPATH;
			i = e - 1;
			continue;
		}
		if (arg[i] == '\\' && i + 1 < len) {
			i++;
			continue;
		}
		if (arg[i] == '>')
			break;
		if (arg[i] == '<' || arg[i] == ' ')
			return SMTP_PARSE_EPATH;
	}
	if (i >= len)
		return SMTP_PARSE_EPATH;
	*pathlen_r = (size_t)(arg + i - *path);
	i++;
	if (i < len && arg[i] != ' ')
		return SMTP_PARSE_EPATH;
	while (i < len && arg[i] == ' ')
		i++;
	*params_r = arg + i;
	*end_r = arg + len;
	return SMTP_PARSE_OK;
}

/* Next "KEY[=VALUE]" from a parameter list. 1 found, 0 end, <0 error. */
static int
smtp_parse_next_param(const char **pp, const char *end, const char **key_r,
    size_t *keylen_r, const char **val_r, size_t *vallen_r)
{
	const char *p = *pp, *k, *v = NULL;
	size_t klen, vlen = 0;

	while (p < end && *p == ' ')
		p++;
	if (p >= end)
		return 0;
	k = p;
	while (p < end && *p != ' ' && *p != '=') {
		if (!isalnum((unsigned char)*p) && !(p > k && *p == '-'))
			return SMTP_PARSE_ESYNTAX;
		p++;
	}
	klen = (size_t)(p - k);
	if (klen == 0)
		return SMTP_PARSE_ESYNTAX;
	if (p < end && *p == '=') {
		v = ++p;
		while (p < end && *p != ' ') {
			unsigned char c = *p;
			/* esmtp-value: %d33-60 / %d62-126 (UTF-8 allowed by
			 * RFC 6531 only in some values; refuse here) */
			if (c < 33 || c > 126 || c == '=')
				return SMTP_PARSE_EPARAMVAL;
			p++;
		}
		vlen = (size_t)(p - v);
		if (vlen == 0)
			return SMTP_PARSE_EPARAMVAL;
	}
	*key_r = k;
	*keylen_r = klen;
	*val_r = v;
	*vallen_r = vlen;
	*pp = p;
	return 1;
}

int
smtp_parse_mail(const char *arg, size_t len, struct smtp_path *path_r,
    struct smtp_mail_params *mp)
{
	const char *path, *params, *end, *k, *v;
	size_t pathlen, klen, vlen, i;
	int r, pick, seen_body = 0, seen_ret = 0, seen_envid = 0, seen_auth = 0;

	memset(mp, 0, sizeof(*mp));
	r = smtp_parse_split(arg, len, "FROM:", path_r, &path, &pathlen,
	    &params, &end);
	if (r != 0)
		return r;
	while ((r = smtp_parse_next_param(&params, end, &k, &klen, &v,
	    &vlen)) == 1) {
		if (smtp_parse_ieq(k, klen, "SIZE")) {
			uint64_t n = 0;
			if (mp->has_size || v == NULL || vlen > 20)
				return SMTP_PARSE_EPARAMVAL;
			for (i = 0; i < vlen; i++) {
				if (!isdigit((unsigned char)v[i]))
					return SMTP_PARSE_EPARAMVAL;
				uint64_t d = (uint64_t)(v[i] - '0');
				if (n > (UINT64_MAX - d) / 10)
					return SMTP_PARSE_EPARAMVAL;
				n = n * 10 + d;
			}
			mp->size = n;
			mp->has_size = 1;
		} else if (smtp_parse_ieq(k, klen, "BODY")) {
			if (seen_body++ || !smtp_parse_pick(v, vlen, "7BIT",
			    SMTP_BODY_7BIT, "8BITMIME", SMTP_BODY_8BITMIME, &pick))
				return SMTP_PARSE_EPARAMVAL;
			mp->body = pick;
		} else if (smtp_parse_ieq(k, klen, "SMTPUTF8")) {
			if (mp->smtputf8 || v != NULL)
				return SMTP_PARSE_EPARAMVAL;
			mp->smtputf8 = 1;
		} else if (smtp_parse_ieq(k, klen, "RET")) {
			if (seen_ret++ || !smtp_parse_pick(v, vlen, "FULL",
			    SMTP_RET_FULL, "HDRS", SMTP_RET_HDRS, &pick))
				return SMTP_PARSE_EPARAMVAL;
			mp->ret = pick;
		} else if (smtp_parse_ieq(k, klen, "ENVID")) {
			if (seen_envid++ || v == NULL ||
			    vlen > SMTP_ENVID_MAX || !smtp_xtext_valid(v, vlen))
				return SMTP_PARSE_EPARAMVAL;
			memcpy(mp->envid, v, vlen);
			mp->envid[vlen] = '\0';
		} else if (smtp_parse_ieq(k, klen, "AUTH")) {
			/* RFC 4954 5: accepted and ignored (we are no
			 * trusted submission server). */
			if (seen_auth++ || v == NULL ||
			    !smtp_xtext_valid(v, vlen))
				return SMTP_PARSE_EPARAMVAL;
		} else
			return SMTP_PARSE_EPARAM;
	}
	if (r < 0)
		return r;
	return smtp_parse_path(path, pathlen, mp->smtputf8, 1, path_r);
}

static int
smtp_parse_notify(const char *v, size_t vlen, unsigned *notify_r)
{
	unsigned n = 0, bit;
	size_t i = 0, s;

	while (i <= vlen) {
		s = i;
		while (i < vlen && v[i] != ',')
			i++;
		if (smtp_parse_ieq(v + s, i - s, "NEVER"))
			bit = SMTP_NOTIFY_NEVER;
		else if (smtp_parse_ieq(v + s, i - s, "SUCCESS"))
			bit = SMTP_NOTIFY_SUCCESS;
		else if (smtp_parse_ieq(v + s, i - s, "FAILURE"))
			bit = SMTP_NOTIFY_FAILURE;
		else if (smtp_parse_ieq(v + s, i - s, "DELAY"))
			bit = SMTP_NOTIFY_DELAY;
		else
			return SMTP_PARSE_EPARAMVAL;
		if (n & bit)
			return SMTP_PARSE_EPARAMVAL;
		n |= bit;
		i++;
	}
	/* NEVER must stand alone (RFC 3461 4.1) */
	if ((n & SMTP_NOTIFY_NEVER) && n != SMTP_NOTIFY_NEVER)
		return SMTP_PARSE_EPARAMVAL;
	*notify_r = n;
	return SMTP_PARSE_OK;
}

int
smtp_parse_rcpt(const char *arg, size_t len, int smtputf8,
    struct smtp_path *path_r, struct smtp_rcpt_params *rp)
{
	const char *path, *params, *end, *k, *v, *semi;
	size_t pathlen, klen, vlen, i;
	int r, seen_orcpt = 0;

	memset(rp, 0, sizeof(*rp));
	r = smtp_parse_split(arg, len, "TO:", path_r, &path, &pathlen,
	    &params, &end);
	if (r != 0)
		return r;
	while ((r = smtp_parse_next_param(&params, end, &k, &klen, &v,
	    &vlen)) == 1) {
		if (smtp_parse_ieq(k, klen, "NOTIFY")) {
			if (rp->notify != 0 || v == NULL)
				return SMTP_PARSE_EPARAMVAL;
			r = smtp_parse_notify(v, vlen, &rp->notify);
			if (r != 0)
				return r;
		} else if (smtp_parse_ieq(k, klen, "ORCPT")) {
			if (seen_orcpt++ || v == NULL || vlen > SMTP_ORCPT_MAX)
				return SMTP_PARSE_EPARAMVAL;
			semi = memchr(v, ';', vlen);
			if (semi == NULL || semi == v)
				return SMTP_PARSE_EPARAMVAL;
			/* addr-type is an atom */
			for (i = 0; v + i < semi; i++)
				if (!smtp_parse_atext((unsigned char)v[i]))
					return SMTP_PARSE_EPARAMVAL;
			if (!smtp_xtext_valid(semi + 1,
			    vlen - (size_t)(semi + 1 - v)) ||
			    (size_t)(semi + 1 - v) == vlen)
				return SMTP_PARSE_EPARAMVAL;
			memcpy(rp->orcpt, v, vlen);
			rp->orcpt[vlen] = '\0';
		} else
			return SMTP_PARSE_EPARAM;
	}
	if (r < 0)
		return r;
	return smtp_parse_path(path, pathlen, smtputf8, 0, path_r);
}

int
smtp_parse_etrn(const char *arg, size_t len, int *kind_r, char *node_r,
    size_t nodesize)
{
	int kind = 0;

	if (len > 0 && (arg[0] == '@' || arg[0] == '#')) {
		kind = arg[0];
		arg++;
		len--;
	}
	if (len == 0 || arg[0] == '[')
		return SMTP_PARSE_ESYNTAX;
	if (smtp_parse_domain(arg, len, 0, node_r, nodesize) != 0)
		return SMTP_PARSE_ESYNTAX;
	/* "@tld" would flush a whole top-level domain: want two labels */
	if (kind == '@' && strchr(node_r, '.') == NULL)
		return SMTP_PARSE_ESYNTAX;
	*kind_r = kind;
	return SMTP_PARSE_OK;
}

const char *
smtp_parse_strerror(int code, int is_rcpt)
{
	switch (code) {
	case SMTP_PARSE_OK:
		return "250 2.0.0 Ok";
	case SMTP_PARSE_EPATH:
		return is_rcpt ? "501 5.1.3 Bad recipient address syntax" :
		    "501 5.1.7 Bad sender address syntax";
	case SMTP_PARSE_ETOOLONG:
		return is_rcpt ? "501 5.1.3 Recipient address too long" :
		    "501 5.1.7 Sender address too long";
	case SMTP_PARSE_E8BIT:
		return "553 5.6.7 Non-ASCII address requires SMTPUTF8";
	case SMTP_PARSE_EPARAM:
		return "555 5.5.4 Unsupported parameter";
	case SMTP_PARSE_EPARAMVAL:
		return "501 5.5.4 Invalid parameter value";
	case SMTP_PARSE_ECHAR:
		return "501 5.5.2 Invalid character in command";
	case SMTP_PARSE_ESYNTAX:
	default:
		return "501 5.5.2 Syntax error";
	}
}

/* ---- replies ---- */

void
smtp_reply_init(struct smtp_reply *r)
{
	/* Not the text: it is read only up to textlen (a reply per command
	 * on the delivery path; 4 KiB of zeroes each would be waste). */
	r->code = 0;
	r->enh[0] = '\0';
	r->nlines = 0;
	r->done = 0;
	r->truncated = 0;
	r->textlen = 0;
}

/*
 * The one reply-line grammar (RFC 5321 4.2), for every reply reader:
 * "NNN", "NNN text" (last line), "NNN-text" (more follow); N1 2-5 (1yz is
 * not an SMTP reply: a peer sending one is broken, and treating it as a
 * refusal would bounce mail). A missing space ("250text") is taken as a
 * last line, as deployed clients do: refusing it would defer mail to
 * servers that otherwise work. 0, or -1 for a malformed line.
 */
static int
smtp_reply_parse_line(const char *line, size_t len, int *code_r, int *last_r,
    const char **text_r, size_t *tlen_r)
{
	size_t skip;

	if (len < 3 || !isdigit((unsigned char)line[0]) ||
	    !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]) || line[0] < '2' ||
	    line[0] > '5')
		return -1;
	*code_r = (line[0] - '0') * 100 + (line[1] - '0') * 10 +
	    (line[2] - '0');
	*last_r = len == 3 || line[3] != '-';
	skip = len > 3 && (line[3] == ' ' || line[3] == '-') ? 4 : 3;
	*text_r = line + skip;
	*tlen_r = len - skip;
	return 0;
}

int
smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
	int code, last;
	size_t i, tlen;
	const char *text;

	if (r->done || smtp_reply_parse_line(line, len, &code, &last, &text,
	    &tlen) < 0)
		return -1;
	if (r->nlines > 0 && code != r->code)
		return -1;
	if (r->nlines == 0) {
		r->code = code;
		/* enhanced code: class.subject.detail, class = first digit */
		for (i = 0; i < tlen && i < sizeof(r->enh) - 1 &&
		    (isdigit((unsigned char)text[i]) || text[i] == '.'); i++)
			;
		if (i >= 5 && text[0] == line[0] && text[1] == '.' &&
		    (i == tlen || text[i] == ' ') &&
		    i < sizeof(r->enh)) {
			memcpy(r->enh, text, i);
			r->enh[i] = '\0';
		}
	}
	if (!r->truncated && r->textlen + tlen + 1 <= sizeof(r->text)) {
		memcpy(r->text + r->textlen, text, tlen);
		r->textlen += tlen;
		r->text[r->textlen++] = '\n';
	} else
		r->truncated = 1;
	r->nlines++;
	r->done = last;
	return last;
}

const char *
smtp_reply_line(const struct smtp_reply *r, size_t i, size_t *len_r)
{
	size_t pos = 0, n = 0;
	const char *nl;

	while (pos < r->textlen) {
		nl = memchr(r->text + pos, '\n', r->textlen - pos);
		if (nl == NULL)
			return NULL;
		if (n == i) {
			*len_r = (size_t)(nl - (r->text + pos));
			return r->text + pos;
		}
		n++;
		pos = (size_t)(nl - r->text) + 1;
	}
	return NULL;
}

int
smtp_reply_keyword(const struct smtp_reply *r, const char *kw, char *arg_r,
    size_t argsize)
{
	size_t klen = strlen(kw);

	/* Line 0 is the greeting text, not a keyword. */
	for (size_t i = 1; i < r->nlines; i++) {
		size_t len;
		const char *t = smtp_reply_line(r, i, &len);

		if (t == NULL || len < klen || strncasecmp(t, kw, klen) != 0 ||
		    (len > klen && t[klen] != ' ' && t[klen] != '='))
			continue;
		if (arg_r != NULL && argsize > 0) {
			size_t alen = len > klen ? len - klen - 1 : 0;

			if (alen >= argsize)
				alen = argsize - 1;
			memcpy(arg_r, t + klen + (len > klen), alen);
			arg_r[alen] = '\0';
		}
		return 1;
	}
	return 0;
}
