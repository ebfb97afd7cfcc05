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
#include <event2/event.h>

#include "control.h"
#include "log.h"
#include "qadmin.h"
#include "queue.h"
#include "util.h"
#include "xmalloc.h"

enum qadmin_state { QA_IDLE, QA_RUNNING, QA_DONE, QA_FAILED };

/* A "delete-domain" in progress: a piece of the domain per loop turn. */
struct qadmin_del {
	struct qadmin *qa;
	struct control_req *req;
	struct event *ev;
	char domain[256];
	char cursor[QUEUE_ID_LEN + 1];
	unsigned long deleted, partial, busy;
	struct qadmin_del *next;
};

struct qadmin {
	struct event_base *base;
	struct queue *q;
	struct qadmin_del *dels;
	enum qadmin_state state;
	uint64_t before, after;
	struct timespec started;
	double seconds;
	int result;
};

struct qadmin *qadmin_new(struct event_base *base, struct queue *q)
{
	struct qadmin *qa = xcalloc(1, sizeof(*qa));

	qa->base = base;
	qa->q = q;
	return qa;
}

static void qadmin_del_free(struct qadmin_del *del)
{
	struct qadmin_del **pp;

	for (pp = &del->qa->dels; *pp != NULL; pp = &(*pp)->next)
		if (*pp == del) {
			*pp = del->next;
			break;
		}
	event_free(del->ev);
	free(del);
}

void qadmin_free(struct qadmin **qap)
{
	struct qadmin *qa = *qap;

	if (qa == NULL)
		return;
	/* Shutting down mid-delete: what was done stays done. */
	while (qa->dels != NULL) {
		control_req_reply(qa->dels->req, "451 shutting down, delete "
		    "interrupted");
		qadmin_del_free(qa->dels);
	}
	free(qa);
	*qap = NULL;
}

/* The answer once every write of the delete is on disk. */
static void qadmin_del_answer(void *arg, int result)
{
	struct qadmin_del *del = arg;

	if (result != QUEUE_OK)
		control_req_reply(del->req, "451 %s", queue_strerror(result));
	else
		control_req_reply(del->req, "%s %.100s: %lu messages deleted, %lu "
		    "partly, %lu being delivered (skipped)", del->busy ? "450" :
		    "250", del->domain, del->deleted, del->partial, del->busy);
	qadmin_del_free(del);
}

static void qadmin_del_step(evutil_socket_t fd, short what, void *arg)
{
	struct qadmin_del *del = arg;
	struct timeval zero = { 0, 0 };
	int rc;

	(void)fd;
	(void)what;
	rc = queue_delete_domain_step(del->qa->q, del->domain, del->cursor, 256,
	    &del->deleted, &del->partial, &del->busy);
	if (rc == 1) {
		/* A timer, so the loop serves its sockets between pieces. */
		evtimer_add(del->ev, &zero);
		return;
	}
	if (rc < 0) {
		control_req_reply(del->req, "451 cannot read the queue");
		del->req = NULL;
		qadmin_del_free(del);
		return;
	}
	log_info("delete: domain=%.100s, source=control, deleted=%lu, "
	    "partial=%lu, busy=%lu", del->domain, del->deleted, del->partial,
	    del->busy);
	event_del(del->ev);
	queue_barrier(del->qa->q, qadmin_del_answer, del);
}

static void qadmin_delete_domain(struct qadmin *qa, const char *arg,
    struct control_req *req)
{
	struct qadmin_del *del;
	struct timeval zero = { 0, 0 };

	if (*arg == '\0' || strchr(arg, ' ') != NULL || strlen(arg) > 255) {
		control_req_reply(req, "501 usage: delete-domain DOMAIN");
		return;
	}
	del = xcalloc(1, sizeof(*del));
	del->qa = qa;
	del->req = req;
	util_strlcpy(del->domain, arg, sizeof(del->domain));
	del->ev = evtimer_new(qa->base, qadmin_del_step, del);
	del->next = qa->dels;
	qa->dels = del;
	evtimer_add(del->ev, &zero);
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
	else if (result == QUEUE_ELOST)
		log_fatal(1, "compact: %s", queue_strerror(result));
	else
		log_error("compact: failed: %s", queue_strerror(result));
}

int qadmin_control(struct qadmin *qa, const char *cmd, const char *arg,
    struct control_req *req)
{
	if (strcmp(cmd, "delete-domain") == 0) {
		qadmin_delete_domain(qa, arg, req);
		return 1;
	}
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
