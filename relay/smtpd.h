/*
 * smtpd - the SMTP listener (MX role): listeners, limits, and the inbound
 * sessions that accept mail into the queue and answer ETRN.
 *
 * All calls on the loop thread.
 */
#ifndef OD_SMTPD_H
#define OD_SMTPD_H

#include <stddef.h>
#include <openssl/ssl.h>

struct event_base;
struct config;
struct queue;
struct smtpd;

/*
 * ETRN hook (RFC 1985). arg_text is the argument as received (syntax
 * already checked by smtpd: one word). The handler writes one complete
 * reply line without CRLF (e.g. "253 2.0.0 OK, 3 pending messages for node
 * example.org started") into reply. Without a handler, smtpd answers
 * "458 4.3.0 Unable to queue messages for node X".
 */
typedef void smtpd_etrn_fn(void *arg, const char *client_ip,
    const char *arg_text, char *reply, size_t replylen);

/* tls may be NULL (no STARTTLS). cfg is referenced (config_ref). */
struct smtpd *smtpd_new(struct event_base *base, struct config *cfg,
    struct queue *q, SSL_CTX *tls);
/* Bind and listen on "addr:port" / "[v6]:port". 0, or -1 with err set. */
int smtpd_listen(struct smtpd *s, const char *addr, char *err, size_t errlen);
/* Take fd, an already connected socket, as a new session (tests); sa is
 * the peer. fd is ours from now on, even when it is refused. */
struct sockaddr;
void smtpd_adopt(struct smtpd *s, int fd, const struct sockaddr *sa);
/* SIGHUP: sessions started from now on use cfg and tls. */
void smtpd_reload(struct smtpd *s, struct config *cfg, SSL_CTX *tls);
/* AUTH after STARTTLS through the auth process (borrowed; NULL: no AUTH).
 * Authentication gives no relaying: it is recorded (ESMTPSA). */
struct authc;
void smtpd_set_auth(struct smtpd *s, struct authc *auth);
/* The connection budget shared with the ODMR listener (borrowed; NULL:
 * none). */
struct fdbudget;
void smtpd_set_budget(struct smtpd *s, struct fdbudget *b);
/* Recipient verdicts (lists, learning, probes); NULL: lists only. */
struct recip;
void smtpd_set_recip(struct smtpd *s, struct recip *r);
/* DNS blocklist checks (borrowed; outlives smtpd; NULL: none). */
struct dnsbl;
void smtpd_set_dnsbl(struct smtpd *s, struct dnsbl *bl);
void smtpd_set_etrn_handler(struct smtpd *s, smtpd_etrn_fn *fn, void *arg);
/*
 * Called (loop thread) after each message is durably queued and its 250
 * sent, with its queue id (borrowed for the call), e.g. so the scheduler
 * can start delivering non-held mail at once.
 */
void smtpd_set_added_handler(struct smtpd *s,
    void (*fn)(void *arg, const char *id), void *arg);
/*
 * SIGTERM: close the listeners; sessions between commands get "421 4.3.2"
 * and are closed; a message waiting for its commit keeps its session until
 * the commit completes (then 250 is sent); a message still in DATA is
 * dropped unacknowledged. done() is called once no session is left.
 */
void smtpd_shutdown(struct smtpd *s, void (*done)(void *arg), void *arg);
size_t smtpd_session_count(const struct smtpd *s);
void smtpd_free(struct smtpd **s);

#endif
