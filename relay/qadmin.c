/*
 * qadmin - compaction and space reporting for a running daemon.
 *
 * A compaction can take longer than a control connection may stay open,
 * so "compact" only starts it and "compact-status" tells how it went;
 * odrelayctl polls. While the copy runs, queue writes wait (a message's
 * 250 comes when the copy is done); nothing is refused and reads go on.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "control.h"
#include "log.h"
#include "qadmin.h"
#include "queue.h"
#include "xmalloc.h"

enum qadmin_state { QA_IDLE, QA_RUNNING, QA_DONE, QA_FAILED };

struct qadmin {
	struct queue *q;
	enum qadmin_state state;
	uint64_t before, after;
	struct timespec started;
	double seconds;
	int result;
};

struct qadmin *qadmin_new(struct queue *q)
{
	struct qadmin *qa = xcalloc(1, sizeof(*qa));

	qa->q = q;
	return qa;
}

void qadmin_free(struct qadmin **qap)
{
	free(*qap);
	*qap = NULL;
}

static void qadmin_compact_done(void *arg, int result)
{
	struct qadmin *qa = arg;
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	qa->seconds = (double)(t.tv_sec - qa->started.tv_sec) +
	    (double)(t.tv_nsec - qa->started.tv_nsec) / 1e9;
	qa->result = result;
	qa->state = result == QUEUE_OK ? QA_DONE : QA_FAILED;
	if (result == QUEUE_OK)
		log_info("compact: done, %llu bytes before, %llu after, %.2f s",
		    (unsigned long long)qa->before,
		    (unsigned long long)qa->after, qa->seconds);
	else
		log_error("compact: failed: %s", queue_strerror(result));
}

int qadmin_control(struct qadmin *qa, const char *cmd, const char *arg,
    struct control_req *req)
{
	(void)arg;
	if (strcmp(cmd, "compact") == 0) {
		if (qa->state == QA_RUNNING) {
			control_req_reply(req, "250 compaction already running");
			return 1;
		}
		qa->state = QA_RUNNING;
		qa->before = qa->after = 0;
		clock_gettime(CLOCK_MONOTONIC, &qa->started);
		log_info("compact: started by odrelayctl");
		control_req_reply(req, "250 compaction started");
		queue_compact(qa->q, &qa->before, &qa->after,
		    qadmin_compact_done, qa);
		return 1;
	}
	if (strcmp(cmd, "compact-status") == 0) {
		switch (qa->state) {
		case QA_IDLE:
			control_req_reply(req, "250 idle");
			break;
		case QA_RUNNING:
			control_req_reply(req, "250 running");
			break;
		case QA_DONE:
			control_req_reply(req, "250 done before=%llu after=%llu "
			    "seconds=%.2f", (unsigned long long)qa->before,
			    (unsigned long long)qa->after, qa->seconds);
			break;
		case QA_FAILED:
			control_req_reply(req, "451 compaction failed: %s",
			    queue_strerror(qa->result));
			break;
		}
		return 1;
	}
	return 0;
}

void qadmin_gauges(struct qadmin *qa, struct evbuffer *out)
{
	struct queue_space sp;
	struct queue_totals t;

	/* Map use, disk free and "low" are relay/watch's; these add the
	 * file with its delivery reserve. */
	if (queue_space(qa->q, &sp) == QUEUE_OK)
		evbuffer_add_printf(out,
		    "# HELP odrelay_queue_file_bytes Size of data.mdb with its reserve.\n"
		    "# TYPE odrelay_queue_file_bytes gauge\n"
		    "odrelay_queue_file_bytes %llu\n"
		    "# HELP odrelay_queue_reserve_bytes Free inside data.mdb: room "
		    "kept for recording deliveries.\n"
		    "# TYPE odrelay_queue_reserve_bytes gauge\n"
		    "odrelay_queue_reserve_bytes %llu\n",
		    (unsigned long long)sp.file_size, (unsigned long long)sp.reserve);
	if (queue_totals(qa->q, &t) == QUEUE_OK)
		evbuffer_add_printf(out,
		    "# HELP odrelay_queue_size_messages Messages in the queue.\n"
		    "# TYPE odrelay_queue_size_messages gauge\n"
		    "odrelay_queue_size_messages %llu\n"
		    "# HELP odrelay_queue_size_bytes Octets in the queue.\n"
		    "# TYPE odrelay_queue_size_bytes gauge\n"
		    "odrelay_queue_size_bytes %llu\n",
		    (unsigned long long)t.messages, (unsigned long long)t.bytes);
}
