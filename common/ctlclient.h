/*
 * ctlclient - the control socket's protocol and its client side, shared
 * by odrelayctl (queue/) and the daemon's server (relay/control.h).
 *
 * Protocol: the client sends one command line ("flush DOMAIN",
 * "bounce ID", "ping"), the daemon answers one line starting with a
 * three-digit code (2xx ok, 4xx temporary, 5xx refused) and closes.
 * A long answer ("domains", "waiting") is several lines as in SMTP: "250-TEXT"
 * each, then the final "250 TEXT" (or a 4xx/5xx line if it could not
 * be finished).
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
/* Its second half, after ctlclient_stream_send (the daemon answers
 * while the caller works): reads the reply line and closes fd. */
int ctlclient_request_read(int fd, const char *path, char *reply,
    size_t replylen, char *err, size_t errlen);

/*
 * Send one command and read a multi-line answer: line(arg, TEXT) for each
 * "CODE-TEXT" line (a non-zero return stops reading: -1 then), the final
 * line into final (bounded, CR/LF removed). Lines longer than
 * CTLCLIENT_LINE_MAX are an error. 0 ok, -1 on a connection or protocol
 * error (err set).
 */
#define CTLCLIENT_LINE_MAX 1024
int ctlclient_stream(const char *path, const char *line,
    int (*fn)(void *arg, const char *text), void *arg, char *final,
    size_t finallen, char *err, size_t errlen);
/* The same in two steps, so that the daemon prepares the answer while the
 * caller does other work: send (the socket, or -1 and err), then read
 * (closes fd; path only names it in messages). */
int ctlclient_stream_send(const char *path, const char *line, char *err,
    size_t errlen);
int ctlclient_stream_read(int fd, const char *path,
    int (*fn)(void *arg, const char *text), void *arg, char *final,
    size_t finallen, char *err, size_t errlen);

#endif
