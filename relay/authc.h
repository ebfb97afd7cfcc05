/*
 * authc - the session process's side of AUTH: smtpd and odmr hand each
 * AUTH exchange to the auth process (authd) over one authproto channel and
 * get the reply line back, later (failures come after their delay).
 *
 *	r = authc_start(a, ip, flags, "MECH [initial-response]", cb, arg);
 *	NULL: the auth process is not there: answer AUTHC_DOWN_REPLY (454).
 *	Else stop reading the client until cb(arg, rc, reply, user, domains):
 *	  SASL_CONTINUE	send reply (334); feed the client's next line with
 *			authc_step(r, line) (-1: r is gone, answer 454)
 *	  SASL_OK	send reply (235); user and domains (comma-separated)
 *	  SASL_FAIL	send reply (535); the delay has been applied
 *	  other		send reply (454, 501, 504, 538)
 *	After any rc but SASL_CONTINUE, r is freed when cb returns: forget it.
 *	authc_cancel(&r) when the session ends first (no callback after).
 * The callback never runs from inside authc_start or authc_step.
 */
#ifndef OD_AUTHC_H
#define OD_AUTHC_H

#include <stddef.h>

struct authc;
struct authc_req;
struct config;
struct event_base;

#define AUTHC_DOWN_REPLY \
	"454 4.7.0 Temporary authentication failure, try again later"

typedef void authc_cb(void *arg, int rc, const char *reply,
    const char *user, const char *domains);

/* Not connected yet: every AUTH gets 454 until authc_set_fd. */
struct authc *authc_new(struct event_base *base);
/* A (new) channel to the auth process; exchanges on the old one end with
 * 454. Takes fd. */
void authc_set_fd(struct authc *a, int fd);
int authc_up(const struct authc *a);
/* flags: AUTHPROTO_TLS, AUTHPROTO_REQUIRE_TLS. */
struct authc_req *authc_start(struct authc *a, const char *ip,
    unsigned flags, const char *arg, authc_cb *cb, void *cbarg);
int authc_step(struct authc_req *r, const char *line);
void authc_cancel(struct authc_req **r);
/* Ask the auth process to read the password file again. */
void authc_reload(struct authc *a);
/*
 * Ask whether user is still in the password file (after authc_reload:
 * the channel keeps the order, so the answer is the new file's).
 * cb(arg, rc, reply, user, domains) later: SASL_OK with the user's
 * domains now, SASL_FAIL when the user is gone, AUTHPROTO_UNAVAILABLE
 * when the auth process went away meanwhile. NULL: the auth process is
 * not there (no callback). authc_cancel as for an exchange.
 */
struct authc_req *authc_check(struct authc *a, const char *user,
    authc_cb *cb, void *cbarg);
void authc_free(struct authc **a);

/*
 * An auth server in this process on the same loop (tests, and a daemon
 * built without privilege separation): reads cfg->passwd_file now. NULL
 * and err when it is broken.
 */
struct authc *authc_new_local(struct event_base *base, struct config *cfg,
    char *err, size_t errlen);

/* 1 if domain (any case) is in the comma-separated list. */
int authc_domains_has(const char *list, const char *domain);

#endif
