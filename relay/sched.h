/*
 * sched - decides what to deliver, where and when: ETRN and odrelayctl
 * flushes of held domains, immediate delivery and backoff retries of
 * non-held mail (backup MX, bounces), expiry and delay warnings.
 *
 * Delivery goes over new outbound connections (route or MX via dns/),
 * each driven by relay/smtpc. All calls on the loop thread.
 */
#ifndef OD_SCHED_H
#define OD_SCHED_H

#include <stddef.h>
#include <openssl/ssl.h>

struct event_base;
struct config;
struct queue;
struct dns;
struct sched;

/* client_tls: context for opportunistic STARTTLS outbound (may be NULL). */
struct sched *sched_new(struct event_base *base, struct config *cfg,
    struct queue *q, struct dns *dns, SSL_CTX *client_tls);
void sched_reload(struct sched *s, struct config *cfg);

/*
 * ETRN (RFC 1985) for an argument already checked for syntax by smtpd;
 * writes one reply line (no CRLF). Signature matches smtpd_etrn_fn, with
 * arg = the sched.
 */
void sched_etrn(void *sched, const char *client_ip, const char *arg,
    char *reply, size_t replylen);
/* odrelayctl flush: same effect as ETRN node (domain, @domain, #queue),
 * without the rate limit and whatever a section's etrn says. */
void sched_flush(struct sched *s, const char *node, char *reply, size_t replylen);
/* odrelayctl bounce: return the message's queued recipients now. */
void sched_bounce(struct sched *s, const char *id, char *reply, size_t replylen);
/* A message was accepted: deliver its non-held recipients at once. */
void sched_message_added(void *sched, const char *id);
/* Number of flushes/deliveries running (for metrics/shutdown). */
size_t sched_active(const struct sched *s);
/* Stop starting deliveries; running ones are aborted, nothing acknowledged
 * is lost (unconfirmed recipients simply stay queued). */
void sched_shutdown(struct sched *s);
void sched_free(struct sched **s);

#endif
