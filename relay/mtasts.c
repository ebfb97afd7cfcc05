/*
 * mtasts - MTA-STS texts (see mtasts.h).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns_msg.h"
#include "mtasts.h"

/* ---- the TXT record ---- */

/*
 * One record's text (its strings joined): -1 not an STS record, 0 an STS
 * record that is malformed, 1 good (id set).
 */
static int mtasts_txt_record(const char *t, size_t len, char *id, size_t idlen)
{
	size_t i = 0;
	int first = 1, have_id = 0;

	if (len < 8 || strncmp(t, "v=STSv1", 7) != 0 ||
	    (t[7] != ';' && t[7] != ' ' && t[7] != '\t'))
		return -1;
	while (i < len) {
		size_t ks, ke, vs, ve;

		while (i < len && (t[i] == ' ' || t[i] == '\t'))
			i++;
		if (i == len)
			break;
		ks = i;
		while (i < len && t[i] != '=' && t[i] != ';')
			i++;
		if (i == len || t[i] != '=')
			return 0;
		ke = i++;
		vs = i;
		while (i < len && t[i] != ';')
			i++;
		ve = i;
		while (ve > vs && (t[ve - 1] == ' ' || t[ve - 1] == '\t'))
			ve--;
		if (i < len)
			i++;		/* the ';' */
		if (first) {
			first = 0;	/* v=STSv1, checked above */
			continue;
		}
		if (ke - ks == 2 && strncmp(t + ks, "id", 2) == 0) {
			size_t n = ve - vs;

			if (n == 0 || n > 32 || n >= idlen)
				return 0;
			for (size_t k = vs; k < ve; k++)
				if (!isalnum((unsigned char)t[k]))
					return 0;
			memcpy(id, t + vs, n);
			id[n] = '\0';
			have_id = 1;
		}
	}
	return have_id ? 1 : 0;
}

int mtasts_parse_txt(const unsigned char *m, size_t len, char *id,
    size_t idlen)
{
	struct dns_msg w;
	struct dns_rr rr;
	unsigned rcode;
	int found = 0, more;

	if (m == NULL || len < DNS_MSG_HEADER || !(m[2] & 0x80) ||
	    (m[2] & 0x02))
		return -1;
	rcode = m[3] & 0x0f;
	if (rcode == 3)
		return 0;
	if (rcode != 0)
		return -1;
	if (dns_msg_open(&w, m, len) < 0)
		return -1;
	while ((more = dns_msg_next(&w, &rr)) > 0) {
		char text[1024];
		size_t tl = 0, o;
		int r;

		if (rr.type != 16)
			continue;
		/* character-strings, concatenated (RFC 7208 3.3 style) */
		for (o = 0; o < rr.rdlen;) {
			size_t sl = rr.rdata[o++];

			if (o + sl > rr.rdlen)
				return -1;
			if (tl + sl < sizeof(text)) {
				memcpy(text + tl, rr.rdata + o, sl);
				tl += sl;
			}
			o += sl;
		}
		r = mtasts_txt_record(text, tl, id, idlen);
		if (r < 0)
			continue;
		if (r == 0 || found)
			return 0;	/* malformed or more than one: none */
		found = 1;
	}
	return more < 0 ? -1 : found;
}

/* ---- the policy file ---- */

static int mtasts_pattern_ok(const char *v)
{
	size_t n = strlen(v);

	if (n == 0 || n > 253)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (!(isalnum(c) || c == '-' || c == '.' || (c == '*' && i == 0)))
			return 0;
	}
	if (v[0] == '*' && v[1] != '.')
		return 0;
	return 1;
}

int mtasts_parse_policy(const char *t, size_t len, struct mtasts_policy *p,
    char *err, size_t errlen)
{
	size_t i = 0;
	int have_version = 0, have_mode = 0, have_age = 0;

	memset(p, 0, sizeof(*p));
	if (len > MTASTS_MAX_BODY) {
		snprintf(err, errlen, "policy larger than %d octets",
		    MTASTS_MAX_BODY);
		return -1;
	}
	while (i < len) {
		char key[32], val[256];
		size_t ls = i, le, c, kn, vs, ve;

		while (i < len && t[i] != '\n')
			i++;
		le = i;
		if (i < len)
			i++;
		if (le > ls && t[le - 1] == '\r')
			le--;
		if (le == ls)
			continue;
		for (c = ls; c < le && t[c] != ':'; c++)
			;
		if (c == le) {
			snprintf(err, errlen, "policy line without ':'");
			return -1;
		}
		kn = c - ls;
		while (kn > 0 && (t[ls + kn - 1] == ' ' || t[ls + kn - 1] == '\t'))
			kn--;
		vs = c + 1;
		while (vs < le && (t[vs] == ' ' || t[vs] == '\t'))
			vs++;
		ve = le;
		while (ve > vs && (t[ve - 1] == ' ' || t[ve - 1] == '\t'))
			ve--;
		if (kn == 0 || kn >= sizeof(key) || ve - vs >= sizeof(val))
			continue;	/* unknown keys are ignored; so are monsters */
		memcpy(key, t + ls, kn);
		key[kn] = '\0';
		memcpy(val, t + vs, ve - vs);
		val[ve - vs] = '\0';
		if (memchr(val, '\0', ve - vs) != NULL) {
			snprintf(err, errlen, "NUL in policy");
			return -1;
		}
		if (strcmp(key, "version") == 0) {
			if (strcmp(val, "STSv1") != 0) {
				snprintf(err, errlen, "unknown policy version");
				return -1;
			}
			have_version = 1;
		} else if (strcmp(key, "mode") == 0) {
			if (strcmp(val, "enforce") == 0)
				p->mode = MTASTS_ENFORCE;
			else if (strcmp(val, "testing") == 0)
				p->mode = MTASTS_TESTING;
			else if (strcmp(val, "none") == 0)
				p->mode = MTASTS_NONE;
			else {
				snprintf(err, errlen, "unknown mode");
				return -1;
			}
			have_mode = 1;
		} else if (strcmp(key, "max_age") == 0) {
			char *end;
			long v;

			if (!isdigit((unsigned char)val[0]) || strlen(val) > 10) {
				snprintf(err, errlen, "bad max_age");
				return -1;
			}
			v = strtol(val, &end, 10);
			if (*end != '\0' || v < 0) {
				snprintf(err, errlen, "bad max_age");
				return -1;
			}
			p->max_age = v > MTASTS_MAX_AGE ? MTASTS_MAX_AGE : v;
			have_age = 1;
		} else if (strcmp(key, "mx") == 0) {
			size_t n = strlen(val);

			while (n > 0 && val[n - 1] == '.')
				val[--n] = '\0';
			for (size_t k = 0; k < n; k++)
				val[k] = (char)tolower((unsigned char)val[k]);
			if (!mtasts_pattern_ok(val)) {
				snprintf(err, errlen, "bad mx pattern");
				return -1;
			}
			if (p->nmx < MTASTS_MAX_MX)
				memcpy(p->mx[p->nmx++], val, n + 1);
		}
	}
	if (!have_version || !have_mode || !have_age) {
		snprintf(err, errlen, "policy lacks %s", !have_version ?
		    "version" : !have_mode ? "mode" : "max_age");
		return -1;
	}
	if (p->mode != MTASTS_NONE && p->nmx == 0) {
		snprintf(err, errlen, "policy has no mx");
		return -1;
	}
	return 0;
}

int mtasts_mx_match(const struct mtasts_policy *p, const char *host)
{
	char h[256];
	size_t n;

	if (host == NULL || (n = strlen(host)) == 0 || n >= sizeof(h))
		return 0;
	for (size_t k = 0; k <= n; k++)
		h[k] = (char)tolower((unsigned char)host[k]);
	if (h[n - 1] == '.')
		h[--n] = '\0';
	for (size_t i = 0; i < p->nmx; i++) {
		const char *pat = p->mx[i];

		if (pat[0] == '*') {
			/* "*.example.com": exactly one more label on the left. */
			const char *dot = strchr(h, '.');

			if (dot != NULL && dot != h && strcmp(dot, pat + 1) == 0)
				return 1;
		} else if (strcmp(h, pat) == 0)
			return 1;
	}
	return 0;
}
