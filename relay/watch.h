/*
 * watch - the per-domain facts and queue capacity an operator of many
 * customers watches, as Prometheus gauges at each /metrics scrape: the
 * oldest held message's age, the last successful ATRN pull and the last
 * ETRN per domain, the queue map's fill level and the free disk space.
 */
#ifndef OD_WATCH_H
#define OD_WATCH_H

struct evbuffer;
struct config;
struct queue;
struct domstate;

void watch_gauges(struct evbuffer *out, const struct config *cfg,
    struct queue *q, struct domstate *ds);

#endif
