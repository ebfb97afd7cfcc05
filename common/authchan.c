/*
 * authchan - a SOCK_SEQPACKET channel on libevent; see authchan.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "authchan.h"
#include "authproto.h"
#include "log.h"
#include "xmalloc.h"

struct authchan_rec {
	struct authchan_rec *next;
	size_t len;
	unsigned char data[];
};

struct authchan {
	int fd;
	int open;
	struct event *ev_read, *ev_write;
	struct authchan_rec *head, *tail;
	size_t queued;
	unsigned char *buf;		/* AUTHPROTO_MAX */
	authchan_recv_fn *recv;
	authchan_closed_fn *closed;
	void *arg;
};

static void authchan_shut(struct authchan *c)
{
	struct authchan_rec *r;

	if (!c->open)
		return;
	c->open = 0;
	event_del(c->ev_read);
	event_del(c->ev_write);
	while ((r = c->head) != NULL) {
		c->head = r->next;
		free(r);
	}
	c->tail = NULL;
	c->queued = 0;
	/* The peer sees EOF now, not when the owner frees us. */
	shutdown(c->fd, SHUT_RDWR);
	if (c->closed != NULL)
		c->closed(c->arg);
}

static void authchan_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct authchan *c = arg;
	ssize_t n;
	/* One record a wake-up: level-triggered, the loop calls again when
	 * there is more, and the usual single record costs no extra recv. */
	int budget = 1;

	(void)what;
	while (c->open && budget-- > 0) {
		n = recv(fd, c->buf, AUTHPROTO_MAX, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				return;
			authchan_shut(c);
			return;
		}
		if (n == 0) {
			authchan_shut(c);
			return;
		}
		if ((size_t)n > AUTHPROTO_MAX) {
			log_warn("auth channel: %zd-byte record dropped", n);
			continue;
		}
		if (c->recv(c->arg, c->buf, (size_t)n) != 0) {
			authchan_shut(c);
			return;
		}
	}
}

static int authchan_flush(struct authchan *c)
{
	struct authchan_rec *r;
	ssize_t n;

	while ((r = c->head) != NULL) {
		n = send(c->fd, r->data, r->len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR || errno == ENOBUFS) {
				event_add(c->ev_write, NULL);
				return 0;
			}
			return -1;
		}
		c->head = r->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->queued -= r->len;
		free(r);
	}
	return 0;
}

static void authchan_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct authchan *c = arg;

	(void)fd;
	(void)what;
	if (authchan_flush(c) < 0)
		authchan_shut(c);
}

struct authchan *authchan_new(struct event_base *base, int fd,
    authchan_recv_fn *recv, authchan_closed_fn *closed, void *arg)
{
	struct authchan *c = xcalloc(1, sizeof(*c));
	int fl;

	if ((fl = fcntl(fd, F_GETFL)) >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	c->fd = fd;
	c->open = 1;
	c->buf = xmalloc(AUTHPROTO_MAX);
	c->recv = recv;
	c->closed = closed;
	c->arg = arg;
	c->ev_read = event_new(base, fd, EV_READ | EV_PERSIST,
	    authchan_read_cb, c);
	c->ev_write = event_new(base, fd, EV_WRITE, authchan_write_cb, c);
	event_add(c->ev_read, NULL);
	return c;
}

int authchan_send(struct authchan *c, const unsigned char *rec, size_t len)
{
	struct authchan_rec *r;

	if (c == NULL || !c->open || len == 0 || len > AUTHPROTO_MAX)
		return -1;
	if (c->queued + len > AUTHCHAN_QUEUE_MAX)
		return -1;
	r = xmalloc(sizeof(*r) + len);
	r->next = NULL;
	r->len = len;
	memcpy(r->data, rec, len);
	if (c->tail != NULL)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
	c->queued += len;
	if (c->head == r && authchan_flush(c) < 0) {
		/* Closed under us: the read side sees the EOF and tells the
		 * owner from the loop, never from inside this call. */
		return -1;
	}
	return 0;
}

int authchan_is_open(const struct authchan *c)
{
	return c != NULL && c->open;
}

void authchan_free(struct authchan **cp)
{
	struct authchan *c = *cp;
	struct authchan_rec *r;

	if (c == NULL)
		return;
	c->closed = NULL;
	while ((r = c->head) != NULL) {
		c->head = r->next;
		free(r);
	}
	event_free(c->ev_read);
	event_free(c->ev_write);
	close(c->fd);
	free(c->buf);
	free(c);
	*cp = NULL;
}
