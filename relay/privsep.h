/*
 * privsep - odrelayd's process model (odrelayd(8), SECURITY).
 *
 *   odrelayd (session process): listeners, sessions, queue, delivery, DNS,
 *     control socket, metrics. Drops to run_as_user after binding, then
 *     NO_NEW_PRIVS and a seccomp deny-list (sandbox.h). Never reads the
 *     password file.
 *   odrelayd-priv (privileged helper): forked by privsep_start before
 *     anything else is opened; stays as started (root), holds no socket
 *     but its channel to the session process. It checks the password file
 *     once, starts the auth process, and restarts it when it dies
 *     (after 1 s, backing off to 30 s when it keeps dying), handing the
 *     session process each new channel (SCM_RIGHTS).
 *   odrelayd-auth (auth process): the only reader of the password file
 *     (authd.h). Root with every capability dropped but
 *     CAP_DAC_READ_SEARCH, NO_NEW_PRIVS, no network (seccomp: AF_UNIX
 *     sockets only). Reads the file again on SIGHUP or when the session
 *     process forwards one.
 *
 * When the session process exits, both others see the channel close and
 * exit. Without root the same three processes run under one user.
 */
#ifndef OD_PRIVSEP_H
#define OD_PRIVSEP_H

#include <stddef.h>

struct config;
struct event_base;
struct privsep;

/*
 * Fork the helper (which starts the first auth process) and wait for it.
 * need_passwd: ODMR is configured, so a broken password file is fatal.
 * NULL on failure: *status_r is the exit status for odrelayd (2 for a
 * broken password file) and err says why.
 */
struct privsep *privsep_start(const char *cfg_path, struct config *cfg,
    int need_passwd, int *status_r, char *err, size_t errlen);
/* The channel to the first auth process (once; -1 after). */
int privsep_first_auth_fd(struct privsep *p);
/* From now on, channels to restarted auth processes go to newfd. */
void privsep_attach(struct privsep *p, struct event_base *base,
    void (*newfd)(void *arg, int fd), void *arg);
/*
 * SIGHUP: ask the helper to open the TLS files the configuration file
 * names now (run_as_user may not read the key). done(arg, cert_fd,
 * key_fd, err) runs later from the loop: both descriptors (done closes
 * them), or -1, -1 and err (NULL: no TLS configured). -1 when a request
 * is already out or the helper is gone.
 */
int privsep_tls_files(struct privsep *p,
    void (*done)(void *arg, int cert_fd, int key_fd, const char *err),
    void *arg);
/*
 * odrelayd -n: the password file's layout. A file others may read or
 * write is a problem (errfn; the count is returned); one run_as_user can
 * read works but defeats the split: a warning on stderr.
 */
int privsep_check_layout(const struct config *cfg,
    void (*errfn)(void *arg, const char *msg), void *arg);
/* Closes the channel: the helper and the auth process exit. */
void privsep_free(struct privsep **p);

#endif
