/*
 * probe - recipient verification by asking a domain's primary server:
 * MAIL FROM:<> / RCPT TO:<addr> / RSET over relay/smtpc, the client that
 * delivers mail. One connection per destination is kept for a while and
 * reused for the next probes; the number of probe connections is bounded;
 * every probe ends within the domain's verify_timeout.
 *
 * All calls on the loop thread.
 */
#ifndef OD_PROBE_H
#define OD_PROBE_H

struct event_base;
struct config;
struct config_domain;
struct dns;
struct probe;

#define PROBE_VALID	0	/* 2xx to RCPT */
#define PROBE_INVALID	1	/* 5xx to RCPT: text is the primary's reply */
#define PROBE_UNKNOWN	2	/* 4xx, no answer, garbage, no primary */

typedef void probe_done_fn(void *arg, int result, const char *text);

/* dns may be NULL: only domains with a route can be probed. */
struct probe *probe_new(struct event_base *base, struct dns *dns);
/* Drops every probe without calling back. */
void probe_free(struct probe **p);

/*
 * Ask dom's primary (its route, else its MX hosts preferred over this
 * relay, never this relay) about addr. fn is called exactly once, never
 * before probe_ask returns. cfg is referenced while needed.
 */
void probe_ask(struct probe *p, struct config *cfg,
    const struct config_domain *dom, const char *addr, probe_done_fn *fn,
    void *arg);

#endif
