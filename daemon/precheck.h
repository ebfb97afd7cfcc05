/*
 * precheck - what `odrelayd -n` verifies beyond the file's syntax: that the
 * files and directories the daemon will open at start exist and can be
 * used (the systemd unit's ExecStartPre), with strerror texts.
 */
#ifndef OD_PRECHECK_H
#define OD_PRECHECK_H

#include <stddef.h>

struct config;

/* Called once per problem with a one-line message (no newline). */
typedef void precheck_error_fn(void *arg, const char *msg);

/*
 * TLS certificate and key readable (strerror otherwise), loadable, and
 * matching. 0 ok (or no TLS configured), -1 with err set.
 */
int precheck_tls(const struct config *cfg, char *err, size_t errlen);

/*
 * Everything the daemon loads at start: TLS files, the queue directory (or
 * its parent when it is still to be created), the control socket's
 * directory, the ODMR password file, run_as_user. Returns the number of
 * problems reported. A hostname without a dot is reported as a warning
 * ("warning: ..."), not counted.
 */
int precheck_all(const struct config *cfg, precheck_error_fn *errfn,
    void *arg);

#endif
