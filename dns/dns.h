/*
 * dns - c-ares on the daemon's libevent loop: MX, A and AAAA lookups with a
 * small TTL cache, and RFC 5321 section 5.1 MX selection.
 *
 * No blocking resolver call anywhere: c-ares sockets are watched by libevent
 * events (ARES_OPT_SOCK_STATE_CB) and a timer drives ares_process_fd with
 * ARES_SOCKET_BAD for timeouts. Callbacks never run synchronously from the
 * resolve call (a cache hit is delivered from a zero timer), so the caller
 * may store the request handle first. All calls on the loop thread.
 */
#ifndef OD_DNS_H
#define OD_DNS_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct dns;
struct dns_req;

enum dns_status {
	DNS_OK = 0,		/* targets[] holds at least one address */
	DNS_TEMPFAIL,		/* SERVFAIL, timeout, refused: defer */
	DNS_NXDOMAIN,		/* no such domain / no address: permanent */
	DNS_NULLMX		/* RFC 7505 "MX 0 .": return the mail */
};

#define DNS_MAX_TARGETS	16	/* MX hosts kept per answer */
#define DNS_MAX_ADDRS	8	/* addresses kept per host */

struct dns_target {
	char host[256];		/* MX host (or the domain for implicit MX) */
	unsigned pref;		/* MX preference */
	size_t naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];	/* port filled in */
};

struct dns_result {
	enum dns_status status;
	size_t ntargets;	/* in the order to try them */
	struct dns_target targets[DNS_MAX_TARGETS];
};

/* Callback owns res (free with dns_result_free). Runs on the loop thread,
 * never from inside dns_resolve_*. */
typedef void dns_done_fn(void *arg, struct dns_result *res);

/*
 * servers: "ip[:port]" / "[v6]:port" strings (n == 0: /etc/resolv.conf).
 * timeout_ms: per try. NULL and err on failure.
 */
struct dns *dns_new(struct event_base *base, const char *const *servers,
    size_t nservers, int timeout_ms, char *err, size_t errlen);
void dns_free(struct dns **d);

/*
 * MX lookup for domain with selection (preference order, random among equal
 * preference, implicit MX from A/AAAA when no MX, every address of each
 * host; null MX -> DNS_NULLMX; NXDOMAIN -> DNS_NXDOMAIN). Addresses get
 * `port`. Returns a handle valid until done runs or dns_req_cancel.
 */
struct dns_req *dns_resolve_mx(struct dns *d, const char *domain, int port,
    dns_done_fn *done, void *arg);
/* A/AAAA (or an IP literal) for one host: a result with one target. */
struct dns_req *dns_resolve_host(struct dns *d, const char *host, int port,
    dns_done_fn *done, void *arg);
/*
 * A records only for name, straight from DNS (no literal, no /etc/hosts):
 * DNS blocklist queries. NODATA and NXDOMAIN give DNS_NXDOMAIN.
 */
struct dns_req *dns_resolve_a(struct dns *d, const char *name,
    dns_done_fn *done, void *arg);
/*
 * One query as it is, for callers that read the answer themselves (TLSA,
 * TXT): name exactly, type qtype, class IN; want_ad sets the AD bit in
 * the query (RFC 6840 5.7) so a validating resolver reports whether it
 * authenticated the answer. done runs later, never from inside this call:
 * ok 1 with the whole response (any RCODE but those c-ares retries
 * elsewhere), ok 0 without one (timeout, SERVFAIL, refused, bad name).
 * msg is borrowed for the call.
 */
struct dns_raw;
typedef void dns_raw_fn(void *arg, int ok, const unsigned char *msg,
    size_t len);
struct dns_raw *dns_query_raw(struct dns *d, const char *name, int qtype,
    int want_ad, dns_raw_fn *done, void *arg);
/* done will not run; *r is set to NULL. */
void dns_raw_cancel(struct dns_raw **r);

/* done will not run; *req is set to NULL. */
void dns_req_cancel(struct dns_req **req);
void dns_result_free(struct dns_result **res);
const char *dns_status_str(enum dns_status st);

#endif
