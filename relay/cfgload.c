/*
 * cfgload - the configuration parsed on a thread; see cfgload.h.
 *
 * config_load only reads files and builds a plain value; the thread
 * touches nothing else (its messages are queued, not logged, since the
 * logger belongs to the loop), and the loop waits for it with
 * event_active (libevent is set up for threads by odrelayd).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfgload.h"
#include "config.h"
#include "log.h"
#include "util.h"
#include "xmalloc.h"
#include "turnwatch.h"

/* Messages kept from one parse; a file with more says so once. */
#define CFGLOAD_MSGS_MAX 200

struct cfgload {
	struct event *ev_done;
	pthread_t thread;
	int running;
	char *path;
	cfgload_error_fn *errfn;
	cfgload_prepare_fn *prepare;
	cfgload_done_fn *done;
	void *arg;
	/* Written by the thread, read on the loop after the join. */
	struct config *cfg;
	char **msgs;
	size_t nmsgs, dropped;
};

static void cfgload_collect(void *arg, const char *msg)
{
	struct cfgload *cl = arg;

	if (cl->nmsgs >= CFGLOAD_MSGS_MAX) {
		cl->dropped++;
		return;
	}
	cl->msgs = xreallocarray(cl->msgs, cl->nmsgs + 1, sizeof(*cl->msgs));
	cl->msgs[cl->nmsgs++] = xstrdup(msg);
}

/* These threads compete with the event loop for the CPU: on a busy
 * machine the loop should win (Linux keeps a nice value per thread). */
static void cfgload_background(void)
{
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
}

/* Reaper threads still freeing a configuration (cfgload_free waits). */
static int cfgload_reaping;

static void *cfgload_reap_main(void *arg)
{
	config_destroy(arg);
	__atomic_sub_fetch(&cfgload_reaping, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *cfgload_reap_thread(void *arg)
{
	cfgload_background();
	return cfgload_reap_main(arg);
}

/* config_free's last reference to a big configuration: a thread frees
 * it (or this one, when no thread can be had). */
static void cfgload_reap(struct config *cfg)
{
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	__atomic_add_fetch(&cfgload_reaping, 1, __ATOMIC_SEQ_CST);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, cfgload_reap_thread, cfg);
	pthread_attr_destroy(&attr);
	if (rc != 0)
		cfgload_reap_main(cfg);
}

static void *cfgload_main(void *arg)
{
	struct cfgload *cl = arg;

	cfgload_background();
	cl->cfg = config_load(cl->path, cfgload_collect, cl);
	if (cl->cfg != NULL && cl->prepare != NULL)
		cl->prepare(cl->arg, cl->cfg);
	event_active(cl->ev_done, EV_READ, 0);
	return NULL;
}

static void cfgload_clear(struct cfgload *cl)
{
	for (size_t i = 0; i < cl->nmsgs; i++)
		free(cl->msgs[i]);
	free(cl->msgs);
	cl->msgs = NULL;
	cl->nmsgs = cl->dropped = 0;
	free(cl->path);
	cl->path = NULL;
}

static void cfgload_finished_work(evutil_socket_t fd, short what, void *arg)
{
	struct cfgload *cl = arg;
	struct config *cfg;

	(void)fd;
	(void)what;
	if (!cl->running)
		return;
	pthread_join(cl->thread, NULL);
	cl->running = 0;
	for (size_t i = 0; i < cl->nmsgs; i++)
		if (cl->errfn != NULL)
			cl->errfn(cl->arg, cl->msgs[i]);
	if (cl->dropped > 0 && cl->errfn != NULL) {
		char line[96];

		snprintf(line, sizeof(line), "%s: %zu more errors not shown",
		    cl->path, cl->dropped);
		cl->errfn(cl->arg, line);
	}
	cfgload_clear(cl);
	cfg = cl->cfg;
	cl->cfg = NULL;
	cl->done(cl->arg, cfg);
}

/* Watched: turnwatch.h. */
static void cfgload_finished(evutil_socket_t fd, short what, void *arg)
{
	turnwatch_begin("reload");
	cfgload_finished_work(fd, what, arg);
	turnwatch_end();
}

struct cfgload *cfgload_new(struct event_base *base)
{
	struct cfgload *cl = xcalloc(1, sizeof(*cl));

	cl->ev_done = event_new(base, -1, 0, cfgload_finished, cl);
	if (cl->ev_done == NULL)
		log_fatal(1, "cfgload: event_new failed");
	config_set_reaper(cfgload_reap);
	return cl;
}

int cfgload_start(struct cfgload *cl, const char *path,
    cfgload_error_fn *errfn, cfgload_prepare_fn *prepare,
    cfgload_done_fn *done, void *arg)
{
	if (cl->running)
		return -1;
	cl->path = xstrdup(path);
	cl->errfn = errfn;
	cl->prepare = prepare;
	cl->done = done;
	cl->arg = arg;
	cl->cfg = NULL;
	if (pthread_create(&cl->thread, NULL, cfgload_main, cl) != 0) {
		log_error("reload: cannot start the configuration thread");
		cfgload_clear(cl);
		return -1;
	}
	cl->running = 1;
	return 0;
}

int cfgload_busy(const struct cfgload *cl)
{
	return cl->running;
}

void cfgload_free(struct cfgload **clp)
{
	struct cfgload *cl = *clp;

	if (cl == NULL)
		return;
	if (cl->running) {
		pthread_join(cl->thread, NULL);
		config_free(&cl->cfg);
		cfgload_clear(cl);
	}
	/* Frees from now on are done here; wait for those under way. */
	config_set_reaper(NULL);
	while (__atomic_load_n(&cfgload_reaping, __ATOMIC_SEQ_CST) > 0) {
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
	event_free(cl->ev_done);
	free(cl);
	*clp = NULL;
}
