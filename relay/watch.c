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

void watch_gauges(struct evbuffer *out, const struct config *cfg,
    struct queue *q, struct domstate *ds)
{
	time_t now = time(NULL);
	struct queue_space sp;
	struct statvfs sv;

	watch_head(out, "odrelay_queue_oldest_age_seconds", "Age of the oldest "
	    "message with recipients still queued, by domain (0: none).");
	for (size_t i = 0; i < cfg->ndomains; i++) {
		time_t t;

		if (queue_domain_oldest(q, cfg->domains[i].name, &t) != QUEUE_OK)
			continue;
		evbuffer_add_printf(out,
		    "odrelay_queue_oldest_age_seconds{domain=\"%s\"} %lld\n",
		    cfg->domains[i].name,
		    t > 0 && now > t ? (long long)(now - t) : 0LL);
	}
	watch_head(out, "odrelay_domain_last_atrn_timestamp_seconds", "When the "
	    "domain was last pulled with ATRN successfully (Unix time; 0: never).");
	for (size_t i = 0; i < cfg->ndomains; i++) {
		struct domstate_rec r;

		if (domstate_get(ds, cfg->domains[i].name, &r) != 0)
			continue;
		evbuffer_add_printf(out, "odrelay_domain_last_atrn_timestamp_seconds"
		    "{domain=\"%s\"} %lld\n", cfg->domains[i].name,
		    (long long)r.last[DOMSTATE_ATRN]);
	}
	watch_head(out, "odrelay_domain_last_etrn_timestamp_seconds", "When an "
	    "ETRN for the domain was last accepted (Unix time; 0: never).");
	for (size_t i = 0; i < cfg->ndomains; i++) {
		struct domstate_rec r;

		if (domstate_get(ds, cfg->domains[i].name, &r) != 0)
			continue;
		evbuffer_add_printf(out, "odrelay_domain_last_etrn_timestamp_seconds"
		    "{domain=\"%s\"} %lld\n", cfg->domains[i].name,
		    (long long)r.last[DOMSTATE_ETRN]);
	}
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
	/* A statvfs is a quick local call, like the map statistics above. */
	if (statvfs(cfg->queue_dir, &sv) == 0) {
		watch_head(out, "odrelay_queue_disk_size_bytes",
		    "Size of the queue directory's file system.");
		evbuffer_add_printf(out, "odrelay_queue_disk_size_bytes %llu\n",
		    (unsigned long long)sv.f_blocks * sv.f_frsize);
	}
}
