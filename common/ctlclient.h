/*
 * ctlclient - the control socket's protocol and its client side, shared
 * by odrelayctl (queue/) and the daemon's server (relay/control.h).
 *
 * Protocol: the client sends one command line ("flush DOMAIN",
 * "bounce ID", "ping"), the daemon answers one line starting with a
 * three-digit code (2xx ok, 4xx temporary, 5xx refused) and closes.
 */
#ifndef OD_CTLCLIENT_H
#define OD_CTLCLIENT_H

#include <stddef.h>

struct sockaddr_un;

#define CTLCLIENT_TIMEOUT_SEC 10	/* each wait for the daemon's answer */

/* Fill sun for path: 0, or -1 when path is too long. */
int ctlclient_sockaddr(const char *path, struct sockaddr_un *sun);

/*
 * Send one command, read one reply line into reply (bounded, blocking
 * with a timeout; CR/LF removed). 0 ok, -1 on connection error (err set).
 */
int ctlclient_request(const char *path, const char *line, char *reply,
    size_t replylen, char *err, size_t errlen);

#endif
