/*
 * watch - per-domain and capacity gauges for /metrics.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <time.h>

#include <event2/buffer.h>

#include "config.h"
#include "domstate.h"
#include "queue.h"
#include "watch.h"

static void watch_head(struct evbuffer *out, const char *name,
    const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help,
	    name);
}

static const struct {
	const char *name;
	const char *help;
} watch_defs[] = {
	[WATCH_MESSAGES] = { "odrelay_queue_messages",
	    "Messages queued, by domain." },
	[WATCH_BYTES] = { "odrelay_queue_bytes", "Octets queued, by domain." },
	[WATCH_OLDEST] = { "odrelay_queue_oldest_age_seconds", "Age of the "
	    "oldest message with recipients still queued, by domain (0: none)." },
	[WATCH_LAST_ATRN] = { "odrelay_domain_last_atrn_timestamp_seconds",
	    "When the domain was last pulled with ATRN successfully (Unix "
	    "time; 0: never)." },
	[WATCH_LAST_ETRN] = { "odrelay_domain_last_etrn_timestamp_seconds",
	    "When an ETRN for the domain was last accepted (Unix time; 0: "
	    "never)." },
};

/* The value of family f for one domain; 0 when it is to be left out
 * (the look-up failed). */
static int watch_value(enum watch_family f, const char *domain,
    struct queue *q, struct domstate *ds, time_t now, long long *v_r)
{
	struct queue_domain_stats st;
	struct domstate_rec r;
	time_t t;

	switch (f) {
	case WATCH_MESSAGES:
	case WATCH_BYTES:
		if (queue_domain_stats(q, domain, &st) != QUEUE_OK)
			return 0;
		*v_r = (long long)(f == WATCH_MESSAGES ? st.messages : st.bytes);
		return 1;
	case WATCH_OLDEST:
		if (queue_domain_oldest(q, domain, &t) != QUEUE_OK)
			return 0;
		*v_r = t > 0 && now > t ? (long long)(now - t) : 0LL;
		return 1;
	case WATCH_LAST_ATRN:
	case WATCH_LAST_ETRN:
		if (domstate_get(ds, domain, &r) != 0)
			return 0;
		*v_r = (long long)r.last[f == WATCH_LAST_ATRN ? DOMSTATE_ATRN :
		    DOMSTATE_ETRN];
		return 1;
	}
	return 0;
}

int watch_family(struct evbuffer *out, size_t limit, enum watch_family f,
    const struct config *cfg, struct queue *q, struct domstate *ds,
    size_t *pos)
{
	const char *name = watch_defs[f].name;
	time_t now = time(NULL);

	if (*pos == 0) {
		watch_head(out, name, watch_defs[f].help);
		*pos = 1;
	}
	for (; *pos - 1 < cfg->ndomains; (*pos)++) {
		const char *domain = cfg->domains[*pos - 1].name;
		long long v;

		if (evbuffer_get_length(out) >= limit)
			return 0;
		if (watch_value(f, domain, q, ds, now, &v))
			evbuffer_add_printf(out, "%s{domain=\"%s\"} %lld\n", name,
			    domain, v);
	}
	return 1;
}

/* The queue's trouble counters since the start (the queue never logs:
 * each also went to the log as a notice, these let an alert see them). */
static void watch_trouble(struct evbuffer *out, struct queue *q)
{
	static const struct {
		const char *name;
		const char *help;
	} defs[] = {
		{ "odrelay_queue_corrupt_records_total", "Queue records "
		    "refused or skipped as corrupt since the start." },
		{ "odrelay_queue_body_unreadable_total", "Message body chunks "
		    "the queue could not read since the start." },
		{ "odrelay_queue_write_failures_total", "Queue writes that "
		    "failed since the start (a full map or quota aside)." },
		{ "odrelay_queue_notices_dropped_total", "Queue notices lost "
		    "before they reached the log (too many at once)." },
	};
	struct queue_stats st;
	uint64_t v[4];

	queue_stats(q, &st);
	v[0] = st.corrupt_records;
	v[1] = st.body_unreadable;
	v[2] = st.write_failures;
	v[3] = st.notices_dropped;
	for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n"
		    "%s %llu\n", defs[i].name, defs[i].help, defs[i].name,
		    defs[i].name, (unsigned long long)v[i]);
}

void watch_capacity(struct evbuffer *out, const struct config *cfg,
    struct queue *q)
{
	struct queue_space sp;
	struct statvfs sv;

	if (queue_space(q, &sp) == QUEUE_OK) {
		watch_head(out, "odrelay_queue_map_used_bytes",
		    "Octets of the LMDB map the queue occupies.");
		evbuffer_add_printf(out, "odrelay_queue_map_used_bytes %llu\n",
		    (unsigned long long)sp.map_used);
		watch_head(out, "odrelay_queue_map_size_bytes",
		    "queue_map_size: the LMDB map size (new mail is refused "
		    "beyond 90% of it).");
		evbuffer_add_printf(out, "odrelay_queue_map_size_bytes %llu\n",
		    (unsigned long long)sp.map_size);
		watch_head(out, "odrelay_queue_disk_free_bytes", "Octets free "
		    "for unprivileged users on the queue's file system.");
		evbuffer_add_printf(out, "odrelay_queue_disk_free_bytes %llu\n",
		    (unsigned long long)sp.fs_avail);
		watch_head(out, "odrelay_queue_space_low", "1 while new mail "
		    "is refused for lack of space (map, disk or reserve).");
		evbuffer_add_printf(out, "odrelay_queue_space_low %d\n",
		    sp.low ? 1 : 0);
	}
	watch_trouble(out, q);
	/* A statvfs is a quick local call, like the map statistics above. */
	if (statvfs(cfg->queue_dir, &sv) == 0) {
		watch_head(out, "odrelay_queue_disk_size_bytes",
		    "Size of the queue directory's file system.");
		evbuffer_add_printf(out, "odrelay_queue_disk_size_bytes %llu\n",
		    (unsigned long long)sv.f_blocks * sv.f_frsize);
	}
}
