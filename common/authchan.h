/*
 * authchan - one end of the session/auth socketpair (AF_UNIX,
 * SOCK_SEQPACKET) on a libevent loop: whole records in, whole records out,
 * never blocking. Records over AUTHPROTO_MAX are dropped on receipt.
 * What cannot be sent at once waits in a bounded queue (AUTHCHAN_QUEUE_MAX
 * bytes); beyond it a record is refused (authchan_send: -1) and the channel
 * stays open: a peer that does not read loses its own replies, nothing
 * more (the auth process stays up for the next exchange).
 */
#ifndef OD_AUTHCHAN_H
#define OD_AUTHCHAN_H

#include <stddef.h>

struct event_base;
struct authchan;

#define AUTHCHAN_QUEUE_MAX	(4u << 20)

/* A received record. Return nonzero to close the channel (then closed
 * runs). Must not free the channel. */
typedef int authchan_recv_fn(void *arg, const unsigned char *rec,
    size_t len);
/* The peer is gone or the channel broke; the channel may be freed here. */
typedef void authchan_closed_fn(void *arg);

/* Takes fd (made non-blocking and close-on-exec). */
struct authchan *authchan_new(struct event_base *base, int fd,
    authchan_recv_fn *recv, authchan_closed_fn *closed, void *arg);
/* 0, or -1 when the channel is closed or its queue full. */
int authchan_send(struct authchan *c, const unsigned char *rec, size_t len);
int authchan_is_open(const struct authchan *c);
void authchan_free(struct authchan **c);

#endif
