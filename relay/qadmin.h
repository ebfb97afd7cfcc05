/*
 * qadmin - queue maintenance through the control socket: compaction while
 * the daemon runs ("compact", then "compact-status" until it is done),
 * "delete-domain" a piece per loop turn, and the queue's space and totals
 * as metrics gauges. Loop thread only.
 */
#ifndef OD_QADMIN_H
#define OD_QADMIN_H

struct event_base;
struct queue;
struct control_req;
struct evbuffer;
struct qadmin;

struct qadmin *qadmin_new(struct event_base *base, struct queue *q);
void qadmin_free(struct qadmin **qa);
/* 1 if cmd is one of ours (req answered), else 0 (req untouched). */
int qadmin_control(struct qadmin *qa, const char *cmd, const char *arg,
    struct control_req *req);
/* Prometheus gauges: file size and reserve, whole-queue totals. */
void qadmin_gauges(struct qadmin *qa, struct evbuffer *out);

#endif
