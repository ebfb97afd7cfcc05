/*
 * odmr - the ODMR listener (RFC 2645): EHLO, STARTTLS, AUTH, then ATRN,
 * after which the connection is handed to relay/deliver (smtpc in reversed
 * mode) and the held mail goes down the same connection.
 *
 * All calls on the loop thread.
 */
#ifndef OD_ODMR_H
#define OD_ODMR_H

#include <stddef.h>
#include <openssl/ssl.h>

struct event_base;
struct sockaddr;
struct config;
struct queue;
struct odmr;

/* Never NULL (err is kept for callers). AUTH goes to the auth process
 * through odmr_set_auth; until then it gets 454. */
struct odmr *odmr_new(struct event_base *base, struct config *cfg,
    struct queue *q, SSL_CTX *tls, char *err, size_t errlen);
/* The connection budget shared with the SMTP listener (borrowed; NULL:
 * none); a reversed ATRN connection keeps its slot until delivered. */
struct fdbudget;
void odmr_set_budget(struct odmr *o, struct fdbudget *b);
/* implicit_tls: TLS from the first byte (odmrs_listen). 0 or -1 + err. */
int odmr_listen(struct odmr *o, const char *addr, int implicit_tls,
    char *err, size_t errlen);
/* Take fd, an already connected socket, as a new session (socket
 * activation, tests); sa is the peer. fd is ours from now on, even when
 * the session is refused (421, limits). Returns 0. */
int odmr_adopt(struct odmr *o, int fd, const struct sockaddr *sa,
    int implicit_tls);
/* SIGHUP: new config and TLS context (the auth process reads the
 * password file again, see authc_reload). */
void odmr_reload(struct odmr *o, struct config *cfg, SSL_CTX *tls);
/* odrelayd -n: check the password file cfg names; errors via errfn. */
int odmr_check_config(const struct config *cfg,
    void (*errfn)(void *arg, const char *msg), void *arg);
/* Close listeners; sessions before ATRN get 421; reversed sessions are
 * aborted (unconfirmed mail stays queued). done runs when none is left. */
void odmr_shutdown(struct odmr *o, void (*done)(void *arg), void *arg);
size_t odmr_session_count(const struct odmr *o);
/* XWAIT: mail for domain (lower case) has committed: wake the sessions
 * waiting for it (the queue's arrival hook). Returns how many woke. */
size_t odmr_arrived(struct odmr *o, const char *domain);
/* Sessions waiting now, in all and for one domain. */
size_t odmr_waiting_count(const struct odmr *o);
size_t odmr_domain_waiting(const struct odmr *o, const char *domain);
/* fn for each domain with waiting sessions (O(those domains), in no
 * particular order); fn must not add or cancel waits. */
void odmr_foreach_waiting(const struct odmr *o,
    void (*fn)(void *arg, const char *domain, size_t waiting), void *arg);
/* The auth process's client for AUTH (borrowed). */
struct authc;
void odmr_set_auth(struct odmr *o, struct authc *auth);
void odmr_free(struct odmr **o);

#endif
