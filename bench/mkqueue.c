/*
 * mkqueue - build a large held queue quickly for bench/scale.sh: N
 * messages of SIZE octets for domains d0.test .. d(D-1).test (round
 * robin), written through the queue's own writer thread (group commit),
 * so a million messages take seconds instead of an SMTP session's pace.
 * Also adds SMALL messages for small.test (the ETRN probe).
 *
 *   mkqueue QUEUE_DIR MAP_SIZE N D SIZE SMALL
 *
 * Not installed; built with the tests (bench only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "queue.h"

#define INFLIGHT 2000

struct mk {
	struct queue *q;
	struct event_base *base;
	unsigned long n, d, small, sent, done, failed;
	size_t size;
	char *body;
};

static void mk_next(struct mk *m);

static void mk_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void mk_done(void *arg, int result)
{
	struct mk *m = arg;

	m->done++;
	if (result != QUEUE_OK && m->failed++ == 0)
		fprintf(stderr, "mkqueue: commit failed: %s\n",
		    queue_strerror(result));
	if (m->done == m->n + m->small)
		event_base_loopexit(m->base, NULL);
	else
		mk_next(m);
}

static void mk_one(struct mk *m, const char *domain, unsigned long i)
{
	struct queue_envelope env;
	struct queue_rcpt r;
	struct queue_put *p = queue_put_begin(m->q);
	char addr[300];

	snprintf(addr, sizeof(addr), "u%lu@%s", i, domain);
	memset(&env, 0, sizeof(env));
	memset(&r, 0, sizeof(r));
	r.addr = addr;
	r.domain = (char *)domain;
	r.state = QUEUE_RCPT_QUEUED;
	env.sender = (char *)"bench@client.test";
	env.arrival = time(NULL);
	env.client_addr = (char *)"127.0.0.1";
	env.rcpts = &r;
	env.nrcpts = 1;
	queue_put_write(p, m->body, m->size);
	queue_put_commit(p, &env, mk_done, m);
}

static void mk_next(struct mk *m)
{
	char dom[64];

	while (m->sent < m->n + m->small && m->sent - m->done < INFLIGHT) {
		unsigned long i = m->sent++;

		if (i < m->small)
			snprintf(dom, sizeof(dom), "small.test");
		else
			snprintf(dom, sizeof(dom), "d%lu.test", (i - m->small) % m->d);
		mk_one(m, dom, i);
	}
}

int main(int argc, char **argv)
{
	struct mk m;
	char err[256];
	size_t i;

	if (argc != 7) {
		fprintf(stderr, "usage: mkqueue QUEUE_DIR MAP_SIZE N D SIZE SMALL\n");
		return 2;
	}
	memset(&m, 0, sizeof(m));
	m.n = strtoul(argv[3], NULL, 10);
	m.d = strtoul(argv[4], NULL, 10);
	m.size = strtoul(argv[5], NULL, 10);
	m.small = strtoul(argv[6], NULL, 10);
	if (m.d == 0)
		m.d = 1;
	m.body = malloc(m.size + 1);
	for (i = 0; i < m.size; i++)
		m.body[i] = (i % 64 == 62) ? '\r' : (i % 64 == 63) ? '\n' : 'x';
	evthread_use_pthreads();
	m.base = event_base_new();
	m.q = queue_open(argv[1], m.base, strtoull(argv[2], NULL, 10), err,
	    sizeof(err));
	if (m.q == NULL) {
		fprintf(stderr, "mkqueue: %s\n", err);
		return 1;
	}
	if (m.n + m.small > 0) {
		/* The queue's completion event is not pending by itself: a
		 * timer keeps the loop running until the last commit. */
		struct event *keep = event_new(m.base, -1, EV_PERSIST, mk_tick, NULL);
		struct timeval tv = { 3600, 0 };

		event_add(keep, &tv);
		mk_next(&m);
		event_base_dispatch(m.base);
		event_free(keep);
	}
	queue_close(&m.q);
	event_base_free(m.base);
	free(m.body);
	printf("%lu messages written, %lu failed\n", m.done, m.failed);
	return m.failed ? 1 : 0;
}
