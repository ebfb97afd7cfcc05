/*
 * authproto - the records exchanged by the session process (smtpd, odmr)
 * and the auth process, which alone reads the password file.
 *
 * Transport: an AF_UNIX SOCK_SEQPACKET socketpair, one record per packet,
 * so a record never arrives in pieces and a dead peer leaves no half
 * record behind. Every record is at most AUTHPROTO_MAX bytes:
 *
 *	byte 0		version (AUTHPROTO_VERSION)
 *	byte 1		type (enum authproto_type)
 *	bytes 2-5	exchange id, big-endian (the session side picks it)
 *	byte 6		START: flags; REPLY: result + 8; else 0
 *	then fields, each a 4-byte big-endian length and that many bytes:
 *	  START		ip, "MECH [initial-response]" (as the AUTH argument)
 *	  STEP		the client's line (base64, "" or "*")
 *	  CANCEL, RELOAD  none
 *	  TICKETS	none; byte 6 is a count n (1..AUTHPROTO_TICKETS_MAX):
 *			start n CRAM-MD5 exchanges, ids id..id+n-1, before
 *			any client asks (one REPLY each, the 334 challenge),
 *			so that AUTH CRAM-MD5 costs one round trip, not two
 *	  CLAIM		ip, the client's line; byte 6: flags. The client's
 *			response to a ticket's challenge: the address is
 *			checked now (blocked: 454), then as STEP
 *	  CHECK		a user name: is the user still in the password
 *			file, and with which domains? (a SIGHUP reload
 *			keeps the ODMR sessions whose answer did not
 *			change). REPLY: SASL_OK with the user and domains,
 *			or SASL_FAIL for a user no longer there; no secret
 *			is ever sent back
 *	  REPLY		reply line (with its code, no CRLF), user, domains
 *			(comma-separated; user and domains empty but on
 *			success)
 *
 * Strings never hold a NUL byte and are bounded (AUTHPROTO_*_MAX); the
 * decoders refuse anything else, trailing bytes included. Decoded
 * strings point into the record (not NUL-terminated: use the lengths).
 */
#ifndef OD_AUTHPROTO_H
#define OD_AUTHPROTO_H

#include <stddef.h>
#include <stdint.h>

#define AUTHPROTO_VERSION	1
#define AUTHPROTO_MAX		65536
#define AUTHPROTO_IP_MAX	64
#define AUTHPROTO_LINE_MAX	12288	/* an AUTH line (RFC 4954) */
#define AUTHPROTO_REPLY_MAX	4096
#define AUTHPROTO_USER_MAX	255
#define AUTHPROTO_DOMAINS_MAX	(AUTHPROTO_MAX - 1024)

enum authproto_type {
	AUTHPROTO_START = 1,
	AUTHPROTO_STEP = 2,
	AUTHPROTO_CANCEL = 3,
	AUTHPROTO_RELOAD = 4,
	AUTHPROTO_TICKETS = 5,
	AUTHPROTO_CLAIM = 6,
	AUTHPROTO_CHECK = 7,
	AUTHPROTO_REPLY = 0x81
};

/* START flags */
#define AUTHPROTO_TLS		0x1	/* the session is inside TLS */
#define AUTHPROTO_REQUIRE_TLS	0x2	/* auth_requires_tls */

#define AUTHPROTO_TICKETS_MAX	32

/* REPLY results: the sasl.h values, and one more. */
#define AUTHPROTO_UNAVAILABLE	(-3)	/* 454: blocked, busy, lost */

struct authproto_req {
	unsigned type;
	uint32_t id;
	unsigned flags;		/* START, CLAIM; TICKETS: the count */
	const char *ip;
	size_t iplen;
	const char *data;	/* START: the AUTH argument; STEP: the line;
				 * CHECK: the user */
	size_t datalen;
};

struct authproto_reply {
	uint32_t id;
	int rc;
	const char *text;
	size_t textlen;
	const char *user;
	size_t userlen;
	const char *domains;
	size_t domainslen;
};

/* Length of the record written to buf, or -1 when it does not fit or a
 * string breaks the rules above. */
int authproto_encode_req(unsigned char *buf, size_t size,
    const struct authproto_req *r);
int authproto_encode_reply(unsigned char *buf, size_t size,
    const struct authproto_reply *r);
/* 0, or -1 for anything malformed. */
int authproto_decode_req(const unsigned char *buf, size_t len,
    struct authproto_req *r);
int authproto_decode_reply(const unsigned char *buf, size_t len,
    struct authproto_reply *r);

#endif
