/*
 * watch - the per-domain facts and queue capacity an operator of many
 * customers watches, as Prometheus gauges at each /metrics scrape: the
 * messages and octets queued, the oldest held message's age, the last
 * successful ATRN pull and the last ETRN per domain, the queue map's fill
 * level and the free disk space, and the queue's trouble counters.
 *
 * The per-domain families are written a slice at a time (see
 * metrics_gauge_fn): with 50,000 domains one family is 50,000 look-ups.
 */
#ifndef OD_WATCH_H
#define OD_WATCH_H

#include <stddef.h>

struct evbuffer;
struct config;
struct queue;
struct domstate;

enum watch_family {
	WATCH_MESSAGES,		/* odrelay_queue_messages */
	WATCH_BYTES,		/* odrelay_queue_bytes */
	WATCH_OLDEST,		/* odrelay_queue_oldest_age_seconds */
	WATCH_LAST_ATRN,	/* odrelay_domain_last_atrn_timestamp_seconds */
	WATCH_LAST_ETRN		/* odrelay_domain_last_etrn_timestamp_seconds */
};

/*
 * Appends family f for the configured domains from *pos (0: its header
 * first, then domain *pos - 1) until out holds `limit` octets: 1 when the
 * family is complete, 0 when more follows (*pos updated).
 */
int watch_family(struct evbuffer *out, size_t limit, enum watch_family f,
    const struct config *cfg, struct queue *q, struct domstate *ds,
    size_t *pos);
/* The queue capacity gauges and the queue's trouble counters
 * (queue_stats) (a few lines, no per-domain work). */
void watch_capacity(struct evbuffer *out, const struct config *cfg,
    struct queue *q);

#endif
