/*
 * probe - asking a primary about a recipient (see probe.h).
 */
#include <stdlib.h>

#include <event2/event.h>

#include "config.h"
#include "probe.h"
#include "xmalloc.h"

struct probe_job {
	struct probe *p;
	struct probe_job *prev, *next;
	struct event *ev;
	probe_done_fn *fn;
	void *arg;
};

struct probe {
	struct event_base *base;
	struct dns *dns;
	struct probe_job *jobs;
};

struct probe *probe_new(struct event_base *base, struct dns *dns)
{
	struct probe *p = xcalloc(1, sizeof(*p));

	p->base = base;
	p->dns = dns;
	return p;
}

static void probe_job_free(struct probe_job *j)
{
	if (j->prev != NULL)
		j->prev->next = j->next;
	else
		j->p->jobs = j->next;
	if (j->next != NULL)
		j->next->prev = j->prev;
	event_free(j->ev);
	free(j);
}

void probe_free(struct probe **pp)
{
	struct probe *p = *pp;

	if (p == NULL)
		return;
	while (p->jobs != NULL)
		probe_job_free(p->jobs);
	free(p);
	*pp = NULL;
}

static void probe_job_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe_job *j = arg;
	probe_done_fn *fn = j->fn;
	void *farg = j->arg;

	(void)fd;
	(void)what;
	probe_job_free(j);
	fn(farg, PROBE_UNKNOWN, "");
}

void probe_ask(struct probe *p, struct config *cfg,
    const struct config_domain *dom, const char *addr, probe_done_fn *fn,
    void *arg)
{
	struct probe_job *j = xcalloc(1, sizeof(*j));
	struct timeval tv = { 0, 0 };

	(void)cfg;
	(void)dom;
	(void)addr;
	j->p = p;
	j->fn = fn;
	j->arg = arg;
	j->ev = evtimer_new(p->base, probe_job_cb, j);
	j->next = p->jobs;
	if (p->jobs != NULL)
		p->jobs->prev = j;
	p->jobs = j;
	evtimer_add(j->ev, &tv);
}
