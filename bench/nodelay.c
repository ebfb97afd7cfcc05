/*
 * nodelay.c - LD_PRELOAD shim for bench/pull.sh: sets TCP_NODELAY on the
 * sockets a program connects to port $NODELAY_PORT (all TCP/IPv4 ports
 * if unset). Used to show where the remaining delayed-ACK stall of a
 * fetchmail ODMR pull is: on fetchmail's own connection to its smtphost,
 * which the provider cannot reach. Not part of odrelay.
 *
 *   cc -shared -fPIC -o nodelay.so nodelay.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	static int (*next)(int, const struct sockaddr *, socklen_t);
	const char *port = getenv("NODELAY_PORT");

	if (next == NULL)
		next = (int (*)(int, const struct sockaddr *, socklen_t))
		    dlsym(RTLD_NEXT, "connect");
	if (sa != NULL && sa->sa_family == AF_INET && (port == NULL ||
	    *port == '\0' || atoi(port) ==
	    ntohs(((const struct sockaddr_in *)sa)->sin_port))) {
		int one = 1;

		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return next(fd, sa, len);
}
