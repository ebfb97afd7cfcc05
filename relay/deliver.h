/*
 * deliver - one delivery run over one connection: a set of queued messages
 * (each restricted to the recipients of some domains) fed to relay/smtpc,
 * with every result written back to the queue (sent / deferred / bounced,
 * DSN created in the same transaction as the state change).
 *
 * Used by sched (outbound after ETRN, flush, retries, bounces) and by the
 * ODMR listener (ATRN reversed session). All calls on the loop thread.
 */
#ifndef OD_DELIVER_H
#define OD_DELIVER_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct event_base;
struct bufferevent;
struct config;
struct queue;
struct queue_envelope;
struct deliver;

struct deliver_summary {
	unsigned messages;	/* messages with at least one recipient sent */
	unsigned rcpts_sent;
	unsigned rcpts_bounced;
	unsigned rcpts_deferred;
	uint64_t bytes;
	int ok;			/* session ended normally (QUIT) */
	char reason[256];	/* why it ended, for the log */
	char tls[16];		/* TLS version, "" for none */
	char verified[16];	/* what the TLS policy established */
	const char *tls_result;	/* smtpc_stats.tls_result (metrics label) */
};

typedef void deliver_done_fn(void *arg, const struct deliver_summary *sum);
struct tlspolicy;

/* owner: who delivers, for leases and logs ("etrn", "atrn:user", ...).
 * relay_name: the peer, for log lines (relay=...). */
struct deliver *deliver_new(struct event_base *base, struct config *cfg,
    struct queue *q, const char *owner, const char *relay_name);
/* The peer once connected: relay_name for log lines ("[192.0.2.1]:25",
 * "mx.example.org[192.0.2.1]:25"), mta_name for the DSNs' Remote-MTA (its
 * host name; NULL: relay_name). */
void deliver_set_relay(struct deliver *d, const char *relay_name,
    const char *mta_name);
/* The TLS policy for the session deliver_start begins (copied); none: may. */
void deliver_set_tls_policy(struct deliver *d, const struct tlspolicy *p);
/*
 * Add message id; only its QUEUED recipients whose domain is one of
 * domains[0..ndomains) are sent (ndomains == 0: all queued recipients).
 * Leases the message. Returns 1 added, 0 nothing to send there,
 * QUEUE_EBUSY when another delivery holds it.
 */
int deliver_add(struct deliver *d, const char *id,
    const char *const *domains, size_t ndomains);
size_t deliver_count(const struct deliver *d);
/*
 * A long run (ATRN of a domain holding many messages) in pieces: when
 * every message added so far has gone to the connection, more(arg, d) is
 * called to add the next ones with deliver_add and returns how many it
 * added (0: there are no more). Messages already done are dropped from
 * memory first, so a run of any length holds one piece at a time.
 * release(arg) runs when d is freed (may be NULL).
 */
void deliver_set_more(struct deliver *d,
    size_t (*more)(void *arg, struct deliver *d), void *arg,
    void (*release)(void *arg));
/*
 * How deliver_add matches a recipient with the domains (set before
 * deliver_add):
 * SECTION: the section it was accepted for, or its address's domain;
 * EXACT (ETRN without '@', RFC 1985): its address is in that very domain,
 *   not in a subdomain that the domain's section takes in;
 * TREE (ETRN @node for a node below a section): its address is in that
 *   domain or below it.
 * section (EXACT, TREE; NULL: any): besides, the recipient was accepted
 * for that section, so a node's run never takes another section's mail.
 */
#define DELIVER_MATCH_SECTION	0
#define DELIVER_MATCH_EXACT	1
#define DELIVER_MATCH_TREE	2
void deliver_set_match(struct deliver *d, int match, const char *section);
/* Has env a QUEUED recipient in domain, matched as above? */
int deliver_env_has(const struct queue_envelope *env, const char *domain,
    int match, const char *section);

#define DELIVER_REVERSED	0x1	/* ATRN: no STARTTLS, no BDAT */
#define DELIVER_ONE_LINE_WRITES	0x2	/* implicit TLS pump: no pipelining */

/*
 * Run the SMTP client on bev (connected; ownership passes to deliver),
 * starting at "wait for the 220". tls: for STARTTLS when offered (not in
 * reversed mode), may be NULL. done runs once, after which the deliver
 * object frees itself (every lease released).
 */
void deliver_start(struct deliver *d, struct bufferevent *bev, unsigned flags,
    SSL_CTX *tls, const char *peer_host, deliver_done_fn *done, void *arg);
/*
 * Fail the whole run without a connection (connect error, DNS failure):
 * every added recipient is deferred (code 4xx) or bounced (5xx) with text,
 * then done runs and the object is freed.
 */
void deliver_fail(struct deliver *d, int code, const char *status,
    const char *text, deliver_done_fn *done, void *arg);
/* Abort: release leases, record nothing; no callback. */
void deliver_free(struct deliver **d);

/*
 * Retry delay for a non-held domain after `attempts` failed attempts
 * (counting this one, >= 1): retry_min, doubling, at most retry_max.
 */
long deliver_backoff(const struct config *cfg, unsigned attempts);

/* Every delivery's RCPT replies go to recip_learn (NULL: none). */
struct recip;
void deliver_set_recip(struct recip *r);

#endif
