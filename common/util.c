/*
 * util - small helpers with no mail knowledge: strings, host:port
 * splitting, numeric socket addresses, base64, clocks, randomness.
 * Handles untrusted input (host:port and base64 from the network); every
 * function here is bounded by its size arguments.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "util.h"

int util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t len;

	if (size == 0)
		return -1;
	len = strlen(src);
	if (len >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = '\0';
		return -1;
	}
	memcpy(dst, src, len + 1);
	return 0;
}

void util_lowercase(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)tolower((unsigned char)*s);
}

int util_domain_valid(const char *s)
{
	size_t len = strlen(s), label = 0;
	const char *p;

	if (len == 0 || len > 253)
		return 0;
	for (p = s; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-')
			return 0;
		if (*p == '-' && label == 0)
			return 0;
		if (++label > 63)
			return 0;
	}
	return label > 0 && p[-1] != '-';
}

int util_domain_valid_dot(const char *s)
{
	char buf[256];
	size_t n = strlen(s);

	if (n == 0 || n >= sizeof(buf))
		return 0;
	memcpy(buf, s, n + 1);
	if (n > 1 && buf[n - 1] == '.')
		buf[n - 1] = '\0';
	return util_domain_valid(buf);
}

void util_tcp_keepalive(int fd)
{
	int on = 1, idle = 60, intvl = 20, cnt = 3;

	if (fd < 0)
		return;
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
#ifdef TCP_KEEPIDLE
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
#else
	(void)idle;
	(void)intvl;
	(void)cnt;
#endif
}

/* Strict decimal port 1..65535. */
static int util_parse_port(const char *s, int *port_r)
{
	long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	if (v == 0)
		return -1;
	*port_r = (int)v;
	return 0;
}

static int util_copy_host(const char *s, size_t len, char *host_r,
    size_t hostsize)
{
	if (len == 0 || len >= hostsize)
		return -1;
	memcpy(host_r, s, len);
	host_r[len] = '\0';
	return 0;
}

int util_split_hostport(const char *s, char *host_r, size_t hostsize,
    int *port_r, int default_port)
{
	const char *end, *colon;
	int port = default_port;

	if (s == NULL || *s == '\0')
		return -1;
	if (*s == '[') {
		/* "[v6]" or "[v6]:port" (also "[1.2.3.4]:port"). */
		if ((end = strchr(s, ']')) == NULL)
			return -1;
		if (end[1] == ':') {
			if (util_parse_port(end + 2, &port) < 0)
				return -1;
		} else if (end[1] != '\0')
			return -1;
		if (memchr(s + 1, '[', (size_t)(end - s - 1)) != NULL)
			return -1;
		if (util_copy_host(s + 1, (size_t)(end - s - 1), host_r,
		    hostsize) < 0)
			return -1;
	} else {
		colon = strchr(s, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			/* Bare IPv6 without brackets: no port possible. */
			struct in6_addr a6;

			if (inet_pton(AF_INET6, s, &a6) != 1 ||
			    util_copy_host(s, strlen(s), host_r, hostsize) < 0)
				return -1;
		} else if (colon != NULL) {
			if (util_parse_port(colon + 1, &port) < 0)
				return -1;
			if (util_copy_host(s, (size_t)(colon - s), host_r,
			    hostsize) < 0)
				return -1;
		} else if (util_copy_host(s, strlen(s), host_r, hostsize) < 0)
			return -1;
		if (strchr(host_r, ']') != NULL)
			return -1;
	}
	if (port < 1 || port > 65535)
		return -1;
	*port_r = port;
	return 0;
}

int util_sockaddr_parse(const char *s, int default_port,
    struct sockaddr_storage *ss_r, socklen_t *len_r)
{
	char host[INET6_ADDRSTRLEN + 1];
	int port;
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;

	if (util_split_hostport(s, host, sizeof(host), &port, default_port) < 0)
		return -1;
	memset(ss_r, 0, sizeof(*ss_r));
	sin = (struct sockaddr_in *)ss_r;
	sin6 = (struct sockaddr_in6 *)ss_r;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len_r = sizeof(*sin);
		return 0;
	}
	memset(ss_r, 0, sizeof(*ss_r));
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len_r = sizeof(*sin6);
		return 0;
	}
	return -1;
}

const char *util_sockaddr_ip(const struct sockaddr *sa, char *buf, size_t size)
{
	const void *addr;

	if (size == 0)
		return buf;
	switch (sa->sa_family) {
	case AF_INET:
		addr = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		break;
	case AF_INET6:
		addr = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		break;
	default:
		util_strlcpy(buf, "unknown", size);
		return buf;
	}
	if (inet_ntop(sa->sa_family, addr, buf, (socklen_t)size) == NULL)
		util_strlcpy(buf, "unknown", size);
	return buf;
}

static const char util_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int util_base64_encode(const unsigned char *src, size_t len, char *dst,
    size_t dstsize)
{
	size_t need, i, o = 0;
	unsigned v;

	if (len > (size_t)INT_MAX / 4 * 3 - 3)
		return -1;
	need = (len + 2) / 3 * 4;
	if (need > dstsize)
		return -1;
	for (i = 0; i + 2 < len; i += 3) {
		v = (unsigned)src[i] << 16 | (unsigned)src[i + 1] << 8 | src[i + 2];
		dst[o++] = util_b64[v >> 18 & 63];
		dst[o++] = util_b64[v >> 12 & 63];
		dst[o++] = util_b64[v >> 6 & 63];
		dst[o++] = util_b64[v & 63];
	}
	if (len - i == 1) {
		v = (unsigned)src[i] << 16;
		dst[o++] = util_b64[v >> 18 & 63];
		dst[o++] = util_b64[v >> 12 & 63];
		dst[o++] = '=';
		dst[o++] = '=';
	} else if (len - i == 2) {
		v = (unsigned)src[i] << 16 | (unsigned)src[i + 1] << 8;
		dst[o++] = util_b64[v >> 18 & 63];
		dst[o++] = util_b64[v >> 12 & 63];
		dst[o++] = util_b64[v >> 6 & 63];
		dst[o++] = '=';
	}
	if (o < dstsize)
		dst[o] = '\0';
	return (int)o;
}

static int util_b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Strict: length a multiple of 4, padding only at the end, no whitespace,
 * and the unused bits before padding must be zero (one encoding per value,
 * so nothing can be smuggled in SASL exchanges).
 */
int util_base64_decode(const char *src, size_t len, unsigned char *dst,
    size_t dstsize)
{
	size_t i, o = 0, pad = 0, out;
	int a, b, c, d;

	if (len % 4 != 0 || len / 4 * 3 > (size_t)INT_MAX)
		return -1;
	if (len > 0 && src[len - 1] == '=')
		pad++;
	if (len > 1 && src[len - 2] == '=')
		pad++;
	out = len / 4 * 3 - pad;
	if (out > dstsize)
		return -1;
	for (i = 0; i < len; i += 4) {
		a = util_b64_value((unsigned char)src[i]);
		b = util_b64_value((unsigned char)src[i + 1]);
		if (a < 0 || b < 0)
			return -1;
		if (i + 4 == len && pad == 2) {
			if (src[i + 2] != '=' || (b & 15) != 0)
				return -1;
			dst[o++] = (unsigned char)(a << 2 | b >> 4);
			break;
		}
		c = util_b64_value((unsigned char)src[i + 2]);
		if (c < 0)
			return -1;
		if (i + 4 == len && pad == 1) {
			if ((c & 3) != 0)
				return -1;
			dst[o++] = (unsigned char)(a << 2 | b >> 4);
			dst[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
			break;
		}
		d = util_b64_value((unsigned char)src[i + 3]);
		if (d < 0)
			return -1;
		dst[o++] = (unsigned char)(a << 2 | b >> 4);
		dst[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
		dst[o++] = (unsigned char)((c & 3) << 6 | d);
	}
	if (o < dstsize)
		dst[o] = '\0';
	return (int)o;
}

double util_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int util_random(void *buf, size_t len)
{
	unsigned char *p = buf;
	int chunk;

	/* RAND_bytes takes an int length. */
	while (len > 0) {
		chunk = len > INT_MAX ? INT_MAX : (int)len;
		if (RAND_bytes(p, chunk) != 1)
			return -1;
		p += chunk;
		len -= (size_t)chunk;
	}
	return 0;
}

int util_rate_take(struct util_rate_slot *slots, size_t nslots,
    const char *key, unsigned per_minute)
{
	struct util_rate_slot *slot = NULL, *oldest = &slots[0];
	double now = util_now();

	for (size_t i = 0; i < nslots; i++) {
		if (slots[i].last != 0 && strcmp(slots[i].key, key) == 0) {
			slot = &slots[i];
			break;
		}
		if (slots[i].last < oldest->last)
			oldest = &slots[i];
	}
	if (slot == NULL) {
		slot = oldest;
		util_strlcpy(slot->key, key, sizeof(slot->key));
		slot->tokens = per_minute;
		slot->last = now;
	}
	slot->tokens += (now - slot->last) * per_minute / 60.0;
	if (slot->tokens > per_minute)
		slot->tokens = per_minute;
	slot->last = now;
	if (slot->tokens < 1.0)
		return 0;
	slot->tokens -= 1.0;
	return 1;
}
