/*
 * mtasts - MTA-STS (RFC 8461) texts: the _mta-sts TXT record and the
 * policy file, and matching MX hosts against a policy.
 *
 * Pure functions over untrusted bytes (fuzzed: tests/fuzz/fuzz_tlspolicy.c);
 * fetching and caching are in stsfetch.
 */
#ifndef OD_MTASTS_H
#define OD_MTASTS_H

#include <stddef.h>

#define MTASTS_MAX_MX		16	/* mx patterns kept */
#define MTASTS_MAX_BODY		65536	/* policy file size (RFC 8461 3.3) */
#define MTASTS_MAX_AGE		31557600L	/* one year */

enum mtasts_mode {
	MTASTS_NONE = 0,
	MTASTS_TESTING,
	MTASTS_ENFORCE
};

struct mtasts_policy {
	int mode;		/* enum mtasts_mode */
	long max_age;		/* seconds */
	size_t nmx;
	char mx[MTASTS_MAX_MX][256];	/* lower case, no trailing dot */
};

/*
 * A DNS response to the TXT query for _mta-sts.DOMAIN: 1 and the policy id
 * (1 to 32 letters and digits) when exactly one "v=STSv1" record is
 * there, 0 when there is none (or several, or a malformed one: RFC 8461
 * 3.1 treats that as no policy), -1 when the answer is unusable (SERVFAIL,
 * truncated, garbage).
 */
int mtasts_parse_txt(const unsigned char *msg, size_t len, char *id,
    size_t idlen);

/* The policy file (RFC 8461 3.2). 0, or -1 with a message in err. */
int mtasts_parse_policy(const char *text, size_t len, struct mtasts_policy *p,
    char *err, size_t errlen);

/* 1 when host matches one of the policy's mx patterns (RFC 8461 4.1). */
int mtasts_mx_match(const struct mtasts_policy *p, const char *host);

#endif
