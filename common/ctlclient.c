/*
 * ctlclient - the client side of the control socket (see ctlclient.h):
 * odrelayctl's blocking request, and the socket address both sides use.
 *
 * Trust: talks only to the daemon's 0600 socket; the reply is bounded by
 * the caller's buffer and the wait by CTLCLIENT_TIMEOUT_SEC.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctlclient.h"
#include "util.h"

int ctlclient_sockaddr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	return util_strlcpy(sun->sun_path, path, sizeof(sun->sun_path));
}

/* Connect to path and send line: the socket, or -1 (err set). */
static int ctlclient_send(const char *path, const char *line, char *err,
    size_t errlen)
{
	struct sockaddr_un sun;
	int fd;

	if (ctlclient_sockaddr(path, &sun) < 0) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s (is odrelayd running?)",
		    path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (write(fd, line, strlen(line)) < 0 || write(fd, "\n", 1) < 0) {
		snprintf(err, errlen, "%s: write: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int ctlclient_stream_send(const char *path, const char *line, char *err,
    size_t errlen)
{
	return ctlclient_send(path, line, err, errlen);
}

int ctlclient_stream(const char *path, const char *line,
    int (*fn)(void *arg, const char *text), void *arg, char *final,
    size_t finallen, char *err, size_t errlen)
{
	int fd;

	final[0] = '\0';
	if ((fd = ctlclient_send(path, line, err, errlen)) < 0)
		return -1;
	return ctlclient_stream_read(fd, path, fn, arg, final, finallen, err,
	    errlen);
}

int ctlclient_stream_read(int fd, const char *path,
    int (*fn)(void *arg, const char *text), void *arg, char *final,
    size_t finallen, char *err, size_t errlen)
{
	char buf[64 * 1024];
	size_t have = 0;
	int rc = -1;

	final[0] = '\0';
	snprintf(err, errlen, "%s: answer cut short", path);
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		char *p, *nl;
		ssize_t n;

		if (poll(&pfd, 1, CTLCLIENT_TIMEOUT_SEC * 1000) <= 0) {
			snprintf(err, errlen, "%s: no answer from odrelayd", path);
			break;
		}
		n = read(fd, buf + have, sizeof(buf) - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		/* Each complete line; a partial one waits for more. */
		for (p = buf; (nl = memchr(p, '\n', have - (size_t)(p - buf))) != NULL;
		    p = nl + 1) {
			*nl = '\0';
			if (nl > p && nl[-1] == '\r')
				nl[-1] = '\0';
			if (strlen(p) < 4 || p[0] < '0' || p[0] > '9' ||
			    (p[3] != '-' && p[3] != ' ')) {
				snprintf(err, errlen, "%s: bad answer line", path);
				goto out;
			}
			if (p[3] == ' ') {
				snprintf(final, finallen, "%s", p);
				rc = 0;
				goto out;
			}
			if (fn(arg, p + 4) != 0) {
				snprintf(err, errlen, "%s: answer not usable", path);
				goto out;
			}
		}
		have -= (size_t)(p - buf);
		memmove(buf, p, have);
		if (have > CTLCLIENT_LINE_MAX) {
			snprintf(err, errlen, "%s: answer line too long", path);
			break;
		}
	}
out:
	close(fd);
	return rc;
}

int ctlclient_request_read(int fd, const char *path, char *reply,
    size_t replylen, char *err, size_t errlen)
{
	size_t got = 0;

	while (got + 1 < replylen) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&pfd, 1, CTLCLIENT_TIMEOUT_SEC * 1000) <= 0)
			break;
		n = read(fd, reply + got, replylen - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(reply, '\n', got) != NULL)
			break;
	}
	close(fd);
	reply[got] = '\0';
	reply[strcspn(reply, "\r\n")] = '\0';
	if (got == 0) {
		snprintf(err, errlen, "%s: no answer from odrelayd", path);
		return -1;
	}
	return 0;
}

int ctlclient_request(const char *path, const char *line, char *reply,
    size_t replylen, char *err, size_t errlen)
{
	int fd;

	if ((fd = ctlclient_send(path, line, err, errlen)) < 0)
		return -1;
	return ctlclient_request_read(fd, path, reply, replylen, err, errlen);
}
