/*
 * authd - the auth server: the only code that holds the password file. It
 * answers authproto records on one channel: runs the SASL exchanges
 * (sasl.c), keeps the failure limits (per address and per user, for both
 * ports and every session) and holds each failure's reply back for its
 * delay, so a session process cannot guess faster than the limits even if
 * it is taken over.
 *
 * In odrelayd it runs alone in the auth process (privsep.c); unit tests
 * run it in-process on the same loop (authc_new_local).
 */
#ifndef OD_AUTHD_H
#define OD_AUTHD_H

#include <stddef.h>

struct authd;
struct config;
struct event_base;

/*
 * Serve the channel on fd. cfg_path (may be NULL): the configuration file
 * to read again on authd_reload (passwd_file, hostname); cfg is the one in
 * force now. The password file is read here: NULL and err when it exists
 * and is broken (a missing file is an empty one). gone runs when the
 * session side closes the channel.
 */
struct authd *authd_new(struct event_base *base, const char *cfg_path,
    struct config *cfg, int fd, void (*gone)(void *arg), void *gone_arg,
    char *err, size_t errlen);
/* Read the configuration and the password file again; on errors keep the
 * old ones (logged). */
void authd_reload(struct authd *d);
void authd_free(struct authd **d);

/*
 * Check that the password file cfg names loads (what odrelayd -n and the
 * start do): 0, or -1 after errfn. quiet: no warning for a missing file.
 */
int authd_check_passwd(const struct config *cfg,
    void (*errfn)(void *arg, const char *msg), void *arg, int quiet);

#endif
