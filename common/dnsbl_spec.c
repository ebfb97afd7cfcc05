/*
 * dnsbl_spec - the parts of DNS blocklist checking that need no DNS: the
 * "LIST[=CODES]" items, networks never checked, the action, and the query
 * name of an address (see dnsbl_spec.h). Shared by the configuration
 * parser (common/config_set.c) and the checks (dns/dnsbl.c).
 *
 * Trust: items come from the configuration file, answers from DNS; both
 * are parsed strictly into fixed-size fields.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dnsbl_spec.h"
#include "util.h"

static void dnsbl_bit_set(uint8_t *bits, unsigned v)
{
	bits[v / 8] |= (uint8_t)(1u << (v % 8));
}

static int dnsbl_num(const char **sp, unsigned *v_r)
{
	const char *s = *sp;
	unsigned v = 0;
	int n = 0;

	while (*s >= '0' && *s <= '9' && n < 4) {
		v = v * 10 + (unsigned)(*s - '0');
		s++;
		n++;
	}
	if (n == 0 || n > 3 || v > 255)
		return -1;
	*sp = s;
	*v_r = v;
	return 0;
}

/* One octet: "N" or "[r;r;...]" with r "N" or "N..M". */
static int dnsbl_octet(const char **sp, uint8_t *bits)
{
	const char *s = *sp;
	unsigned a, b, v;

	if (*s != '[') {
		if (dnsbl_num(&s, &a) < 0)
			return -1;
		dnsbl_bit_set(bits, a);
		*sp = s;
		return 0;
	}
	s++;
	for (;;) {
		if (dnsbl_num(&s, &a) < 0)
			return -1;
		b = a;
		if (s[0] == '.' && s[1] == '.') {
			s += 2;
			if (dnsbl_num(&s, &b) < 0 || b < a)
				return -1;
		}
		for (v = a; v <= b; v++)
			dnsbl_bit_set(bits, v);
		if (*s == ';') {
			s++;
			continue;
		}
		if (*s != ']')
			return -1;
		*sp = s + 1;
		return 0;
	}
}

static int dnsbl_name_ok(const char *s)
{
	size_t len = strlen(s), label = 0, i;

	if (len == 0 || len > DNSBL_NAME_MAX || s[len - 1] == '.' ||
	    s[0] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		char c = s[i];

		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_') {
			if (++label > 63)
				return 0;
		} else
			return 0;
	}
	return 1;
}

int dnsbl_spec_parse(const char *item, struct dnsbl_spec *out, char *err,
    size_t errlen)
{
	const char *eq = strchr(item, '='), *s;
	size_t len = eq != NULL ? (size_t)(eq - item) : strlen(item);
	int i;

	memset(out, 0, sizeof(*out));
	if (len == 0 || len > DNSBL_NAME_MAX) {
		snprintf(err, errlen, "bad list name in '%.100s'", item);
		return -1;
	}
	memcpy(out->list, item, len);
	out->list[len] = '\0';
	util_lowercase(out->list);
	if (!dnsbl_name_ok(out->list)) {
		snprintf(err, errlen, "bad list name '%.100s'", out->list);
		return -1;
	}
	if (eq == NULL) {
		/* 127.0.0.0/8 without 127.255.255.x */
		out->any = 1;
		dnsbl_bit_set(out->codes[0], 127);
		for (i = 0; i < 256; i++) {
			dnsbl_bit_set(out->codes[1], (unsigned)i);
			dnsbl_bit_set(out->codes[2], (unsigned)i);
			dnsbl_bit_set(out->codes[3], (unsigned)i);
		}
		return 0;
	}
	s = eq + 1;
	for (i = 0; i < 4; i++) {
		if (i > 0 && *s++ != '.')
			goto bad;
		if (dnsbl_octet(&s, out->codes[i]) < 0)
			goto bad;
	}
	if (*s == '\0')
		return 0;
bad:
	snprintf(err, errlen, "bad return codes in '%.100s' (expected e.g. "
	    "LIST=127.0.0.[2..11])", item);
	return -1;
}

int dnsbl_spec_match(const struct dnsbl_spec *spec, const uint8_t a[4])
{
	int i;

	/* the default pattern leaves out the lists' own error codes */
	if (spec->any && a[0] == 127 && a[1] == 255 && a[2] == 255)
		return 0;
	for (i = 0; i < 4; i++)
		if (!(spec->codes[i][a[i] / 8] & (1u << (a[i] % 8))))
			return 0;
	return 1;
}

int dnsbl_cidr_parse(const char *s, struct dnsbl_cidr *out)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash;
	unsigned long bits;
	char *end;

	memset(out, 0, sizeof(*out));
	if (util_strlcpy(buf, s, sizeof(buf)) < 0)
		return -1;
	if ((slash = strchr(buf, '/')) != NULL)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		out->bits = 32;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		out->bits = 128;
	} else
		return -1;
	if (slash != NULL) {
		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		bits = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || bits > out->bits)
			return -1;
		out->bits = (unsigned)bits;
	}
	return 0;
}

static int dnsbl_prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[full] ^ b[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int dnsbl_cidr_match(const struct dnsbl_cidr *nets, size_t n, const char *ip)
{
	uint8_t a4[4], a6[16];
	int is4 = inet_pton(AF_INET, ip, a4) == 1;
	int is6 = !is4 && inet_pton(AF_INET6, ip, a6) == 1;
	size_t i;

	/* an IPv4-mapped client address also matches IPv4 networks */
	if (is6 && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a6)) {
		memcpy(a4, a6 + 12, 4);
		is4 = 1;
	}
	for (i = 0; i < n; i++) {
		if (nets[i].family == AF_INET && is4 &&
		    dnsbl_prefix_eq(nets[i].addr, a4, nets[i].bits))
			return 1;
		if (nets[i].family == AF_INET6 && is6 &&
		    dnsbl_prefix_eq(nets[i].addr, a6, nets[i].bits))
			return 1;
	}
	return 0;
}

int dnsbl_query_name(const char *ip, const char *list, char *out,
    size_t outlen)
{
	uint8_t a[16];
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	int i, r;

	if (inet_pton(AF_INET, ip, a) == 1) {
		r = snprintf(out, outlen, "%u.%u.%u.%u.%s", a[3], a[2], a[1],
		    a[0], list);
		return r < 0 || (size_t)r >= outlen ? -1 : 0;
	}
	if (inet_pton(AF_INET6, ip, a) != 1)
		return -1;
	if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a)) {
		r = snprintf(out, outlen, "%u.%u.%u.%u.%s", a[15], a[14],
		    a[13], a[12], list);
		return r < 0 || (size_t)r >= outlen ? -1 : 0;
	}
	/* RFC 5782 2.4: 32 nibbles, least significant first */
	if (outlen < 64 + strlen(list) + 1)
		return -1;
	for (i = 15; i >= 0; i--) {
		out[o++] = hex[a[i] & 0xf];
		out[o++] = '.';
		out[o++] = hex[a[i] >> 4];
		out[o++] = '.';
	}
	memcpy(out + o, list, strlen(list) + 1);
	return 0;
}

int dnsbl_action_parse(const char *s, enum dnsbl_action *a_r)
{
	if (strcasecmp(s, "reject") == 0)
		*a_r = DNSBL_REJECT;
	else if (strcasecmp(s, "tempfail") == 0)
		*a_r = DNSBL_TEMPFAIL;
	else if (strcasecmp(s, "log") == 0)
		*a_r = DNSBL_LOG;
	else
		return -1;
	return 0;
}
