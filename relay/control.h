/*
 * control - the daemon's side of the Unix control socket odrelayctl talks
 * to for actions that must go through the daemon (flush, bounce). The
 * protocol and the client side are in common/ctlclient.h.
 */
#ifndef OD_CONTROL_H
#define OD_CONTROL_H

#include <stddef.h>

struct event_base;
struct evbuffer;
struct control;

struct control_req;

/*
 * Handler: cmd is the verb (lower case), arg the rest (may be ""). It
 * answers with control_req_reply() exactly once, at once or later (after a
 * queue write has committed, so that what odrelayctl reads next reflects
 * it). req stays valid until then, even if the client has gone.
 */
typedef void control_cmd_fn(void *arg, const char *cmd, const char *cmdarg,
    struct control_req *req);

/* One reply line (no newline); frees req. */
void control_req_reply(struct control_req *req, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * A streamed answer of many lines (a list of 50,000 domains): fn adds a
 * slice of lines to out, a bounded piece of work (a few ms at most, so
 * the event loop never stalls), and returns 1 while there is more, 0
 * after its last line. The next call comes when the previous slices are
 * nearly written, so memory stays bounded whatever the client's pace.
 * Lines follow the protocol of ctlclient.h: "250-..." each, then one
 * final "CODE text". release(arg) is called when the answer is over or
 * the client has gone (then fn is not called again). Frees req.
 */
typedef int control_stream_fn(void *arg, struct evbuffer *out);
void control_req_stream(struct control_req *req, control_stream_fn *fn,
    void *arg, void (*release)(void *));

/* Create the socket at path (a stale one is replaced), mode 0600. NULL and
 * err on failure. */
struct control *control_new(struct event_base *base, const char *path,
    control_cmd_fn *fn, void *arg, char *err, size_t errlen);
/* Removes the socket file. */
void control_free(struct control **c);

#endif
