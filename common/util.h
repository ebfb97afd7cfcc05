/*
 * util - small helpers with no mail knowledge.
 */
#ifndef OD_UTIL_H
#define OD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Copy with truncation check: returns 0, or -1 if src did not fit. */
int util_strlcpy(char *dst, const char *src, size_t size);
void util_lowercase(char *s);
/* A host or domain name: letters, digits and hyphens (not first or last)
 * in dot-separated labels of 1..63 octets, 253 in all; no trailing dot. */
int util_domain_valid(const char *s);
/* util_domain_valid with one trailing dot allowed, as users (and ETRN)
 * may write a domain. */
int util_domain_valid_dot(const char *s);
/* TCP keepalive on a connection that may stay quiet for long (XWAIT):
 * a peer gone without a word is found in about two minutes. */
void util_tcp_keepalive(int fd);
/*
 * Split "host:port", "[v6]:port", "[v6]" or "host" (port = default_port).
 * host_r gets the host without brackets. Returns 0 or -1.
 */
int util_split_hostport(const char *s, char *host_r, size_t hostsize,
    int *port_r, int default_port);
/* Resolve a numeric "addr:port" into a sockaddr (no DNS). 0 or -1. */
int util_sockaddr_parse(const char *s, int default_port,
    struct sockaddr_storage *ss_r, socklen_t *len_r);
/* "1.2.3.4" / "::1" of a sockaddr, into buf. */
const char *util_sockaddr_ip(const struct sockaddr *sa, char *buf, size_t size);
/* Base64 (RFC 4648), no line breaks. Return length, or -1 on bad input /
 * no room. dst gets a NUL after the data when there is room. */
int util_base64_encode(const unsigned char *src, size_t len, char *dst, size_t dstsize);
int util_base64_decode(const char *src, size_t len, unsigned char *dst, size_t dstsize);
/* Monotonic seconds. */
double util_now(void);
/* Fill buf with cryptographically random bytes (OpenSSL). 0 or -1. */
int util_random(void *buf, size_t len);

/*
 * Per-key rate limit (ETRN per client, ATRN per user): a token bucket of
 * per_minute tokens refilled continuously, so no burst across a minute
 * boundary. slots is a caller-owned table; when full, the least recently
 * used key is replaced. Returns 1 if the request may go ahead.
 */
struct util_rate_slot {
	char key[264];		/* a whole user name (255) or address */
	double tokens;
	double last;		/* util_now() of the last update; 0 = free */
};
int util_rate_take(struct util_rate_slot *slots, size_t nslots,
    const char *key, unsigned per_minute);

#endif
