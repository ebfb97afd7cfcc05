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

int ctlclient_request(const char *path, const char *line, char *reply,
    size_t replylen, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	size_t got = 0;
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
