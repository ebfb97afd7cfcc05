/*
 * metrics - counters kept by every module and a Prometheus text endpoint
 * (libevent evhttp) at /metrics.
 *
 * Counters are process-wide and only touched on the loop thread, so any
 * module can count an event without plumbing: metrics_inc(METRIC_..., label).
 */
#ifndef OD_METRICS_H
#define OD_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct metrics;

enum metric {
	METRIC_RECEIVED,	/* messages accepted (250 after commit) */
	METRIC_RECEIVED_BYTES,
	METRIC_DELIVERED,	/* recipients delivered (label: how: etrn, atrn, retry) */
	METRIC_BOUNCED,		/* recipients returned to the sender */
	METRIC_DEFERRED,	/* recipient attempts answered 4xx or failed */
	METRIC_REJECTED,	/* label: reason (relay, recipient, size, loop, ...) */
	METRIC_ETRN,		/* label: result */
	METRIC_ATRN,		/* label: result */
	METRIC_AUTH,		/* label: result */
	METRIC_RCPT_PROBE,	/* recipient probes, label: result */
	METRIC_RCPT_CACHE,	/* recipient cache look-ups, label: hit/miss */
	METRIC_RCPT_LEARNED_VALID,	/* label: domain */
	METRIC_RCPT_LEARNED_INVALID,	/* label: domain */
	METRIC_RCPT_REFUSED,	/* label: mechanism (list, learned, probe, tempfail) */
	METRIC_XWAIT,		/* label: result (waiting, woken, timeout, ...) */
	METRIC_XWAIT_WAKEUPS,	/* waiting sessions woken by arrivals */
	METRIC_NOTIFY,		/* webhooks, label: result */
	METRIC_DNSBL_HITS,	/* clients listed, label: list */
	METRIC_DNSBL_ERRORS,	/* lookups failed, label: timeout, tempfail */
	METRIC_MILTER_ACTIONS,	/* label: "milter/action" */
	METRIC_MILTER_FAILURES,	/* milter unreachable, timeout, garbage */
	METRIC_MILTER_REPLIES,	/* answers, label: milter */
	METRIC_MILTER_LATENCY_MS,	/* summed answer times, label: milter */
	METRIC_DELIVERY_TLS,	/* delivery sessions, label: TLS outcome (clear,
				 * encrypted, verified, missing, failed) */
	METRIC_ODMR_RELOAD,	/* logged-in ODMR sessions at a reload,
				 * label: result (kept, ended) */
	METRIC_COUNT
};

/* Add n to a counter; label may be NULL (no label). Labels are short
 * constant words chosen by the caller, never peer input. */
void metrics_add(enum metric m, const char *label, uint64_t n);
#define metrics_inc(m, label) metrics_add((m), (label), 1)
/* Current value (for odrelayctl stats and tests). */
uint64_t metrics_get(enum metric m, const char *label);

/*
 * Gauge lines (queue sizes per domain, sessions) are produced a slice at a
 * time so that a scrape of 50,000 domains never holds the event loop: the
 * reply is chunked, and the next slice is made when the previous one has
 * been written. The cursor starts zeroed; its meaning is the producer's.
 */
struct metrics_cursor {
	unsigned part;		/* which group of lines */
	unsigned sub;		/* a step inside it */
	size_t index;		/* e.g. the next domain */
	uint64_t tag;		/* e.g. the configuration's generation */
};
/* About how many octets a producer appends per call before returning. */
#define METRICS_SLICE 32768
/* Appends the next slice of gauge lines to out (stopping once out holds
 * METRICS_SLICE octets or so); 1 while more follows, 0 at the end. */
typedef int metrics_gauge_fn(void *arg, struct metrics_cursor *cur,
    struct evbuffer *out);

/* Every counter as "name{label=\"v\"}=N" words separated by spaces (the
 * control socket's one-line "stats" answer). Returns buf. */
char *metrics_format_line(char *buf, size_t size);
/* Every counter in Prometheus text format into out. */
void metrics_format(struct evbuffer *out);

/* Serve /metrics on addr ("ip:port"). NULL and err on failure. */
struct metrics *metrics_listen(struct event_base *base, const char *addr,
    metrics_gauge_fn *gauges, void *arg, char *err, size_t errlen);
void metrics_free(struct metrics **m);

/* v escaped as a label value of the text format, in dst. */
const char *metrics_label_escape(char *dst, size_t size, const char *v);

#endif
