/*
 * turnwatch - slow event-loop turns, with what ran in them (turnwatch.h).
 *
 * A turn is one event_base_loop(EVLOOP_ONCE): the wait for events, then
 * their callbacks. The wait is not work, so the turn's wall time is
 * counted from the first watched callback; CPU time and faults of the
 * whole turn are the thread's own (CLOCK_THREAD_CPUTIME_ID,
 * RUSAGE_THREAD), where waiting costs nothing, and so is its time runnable
 * but waiting for a CPU (the run delay of /proc/thread-self/schedstat,
 * which includes the wake-up from the poll): wall - cpu - run delay is
 * time blocked (disk, locks).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "turnwatch.h"

#define TURNWATCH_NAMES 8

int turnwatch_on;

struct tw_entry {
	const char *what;
	unsigned count;
	uint64_t wall_ns, cpu_ns;
};

static struct {
	uint64_t slow_ns;
	unsigned depth;			/* nested brackets: outermost counts */
	int started;			/* a bracket ran in this turn */
	uint64_t first_ns;		/* its start */
	uint64_t begin_ns, begin_cpu_ns;	/* the open bracket */
	const char *begin_what;
	size_t nent;
	unsigned other;			/* brackets past TURNWATCH_NAMES */
	struct tw_entry ent[TURNWATCH_NAMES];
} tw;

/* The thread's run delay in ns (schedstat's second field), 0 if unknown. */
static uint64_t tw_rundelay(int fd)
{
	char buf[128];
	ssize_t n;
	unsigned long long cpu, delay;

	if (fd < 0 || (n = pread(fd, buf, sizeof(buf) - 1, 0)) <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%llu %llu", &cpu, &delay) != 2)
		return 0;
	return delay;
}

static uint64_t tw_clock(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void turnwatch_init(void)
{
	const char *s = getenv("ODRELAY_SLOW_TURN_MS");
	char *end;
	double ms;

	if (s == NULL || *s == '\0')
		return;
	ms = strtod(s, &end);
	if (*end != '\0' || !(ms >= 0 && ms < 1e6)) {
		log_warn("ODRELAY_SLOW_TURN_MS=%s: not a number of ms, ignored",
		    s);
		return;
	}
	tw.slow_ns = (uint64_t)(ms * 1e6);
	turnwatch_on = 1;
	log_info("logging event-loop turns over %.3g ms "
	    "(ODRELAY_SLOW_TURN_MS)", ms);
}

void turnwatch_begin_(const char *what)
{
	if (tw.depth++ > 0)
		return;
	tw.begin_what = what;
	tw.begin_ns = tw_clock(CLOCK_MONOTONIC);
	tw.begin_cpu_ns = tw_clock(CLOCK_THREAD_CPUTIME_ID);
	if (!tw.started) {
		tw.started = 1;
		tw.first_ns = tw.begin_ns;
	}
}

void turnwatch_end_(void)
{
	uint64_t wall, cpu;
	size_t i;

	if (tw.depth == 0 || --tw.depth > 0)
		return;
	wall = tw_clock(CLOCK_MONOTONIC) - tw.begin_ns;
	cpu = tw_clock(CLOCK_THREAD_CPUTIME_ID) - tw.begin_cpu_ns;
	for (i = 0; i < tw.nent; i++)
		if (tw.ent[i].what == tw.begin_what)
			break;
	if (i == tw.nent) {
		if (i == TURNWATCH_NAMES) {
			tw.other++;
			return;
		}
		tw.ent[i] = (struct tw_entry){ tw.begin_what, 0, 0, 0 };
		tw.nent++;
	}
	tw.ent[i].count++;
	tw.ent[i].wall_ns += wall;
	tw.ent[i].cpu_ns += cpu;
}

static void tw_report(uint64_t end_ns, uint64_t cpu_ns, uint64_t runq_ns,
    const struct rusage *ru0, const struct rusage *ru1)
{
	char buf[1024];
	size_t off = 0;
	uint64_t wall = tw.started ? end_ns - tw.first_ns : 0, watched = 0;
	struct timespec rt;

	/* A long run delay alone is a late wake-up: as slow to a client. */
	if (wall <= tw.slow_ns && cpu_ns <= tw.slow_ns && runq_ns <= tw.slow_ns)
		return;
	for (size_t i = 0; i < tw.nent && off < sizeof(buf); i++) {
		int n = snprintf(buf + off, sizeof(buf) - off,
		    "%s %s x%u %.1f/%.1f", i ? "," : "", tw.ent[i].what,
		    tw.ent[i].count, tw.ent[i].wall_ns / 1e6,
		    tw.ent[i].cpu_ns / 1e6);

		if (n < 0)
			break;
		off += (size_t)n;
	}
	if (off >= sizeof(buf))
		off = sizeof(buf) - 1;
	buf[off] = '\0';
	for (size_t i = 0; i < tw.nent; i++)
		watched += tw.ent[i].cpu_ns;
	clock_gettime(CLOCK_REALTIME, &rt);
	/* The real time (s since the epoch) to match a client's view. */
	log_info("slow turn at %lld.%03ld: %.1f ms wall, %.1f ms cpu, %.1f ms "
	    "waiting for a cpu, %ld major/%ld minor faults, %ld/%ld "
	    "voluntary/involuntary switches; callbacks (wall/cpu ms):%s%s; "
	    "cpu outside them %.1f ms",
	    (long long)rt.tv_sec, rt.tv_nsec / 1000000, wall / 1e6,
	    cpu_ns / 1e6, runq_ns / 1e6, ru1->ru_majflt - ru0->ru_majflt,
	    ru1->ru_minflt - ru0->ru_minflt, ru1->ru_nvcsw - ru0->ru_nvcsw,
	    ru1->ru_nivcsw - ru0->ru_nivcsw,
	    tw.nent > 0 ? buf : " none watched", tw.other > 0 ? ", more" : "",
	    cpu_ns > watched ? (cpu_ns - watched) / 1e6 : 0.0);
}

int turnwatch_dispatch(struct event_base *base)
{
	int fd;

	if (!turnwatch_on)
		return event_base_dispatch(base);
	/* Opened here, on the loop thread of the final process. */
	fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	for (;;) {
		struct rusage ru0, ru1;
		uint64_t cpu0, cpu1, rq0, rq1, end;
		int rc;

		getrusage(RUSAGE_THREAD, &ru0);
		cpu0 = tw_clock(CLOCK_THREAD_CPUTIME_ID);
		rq0 = tw_rundelay(fd);
		tw.started = 0;
		tw.nent = 0;
		tw.other = 0;
		tw.depth = 0;
		rc = event_base_loop(base, EVLOOP_ONCE);
		end = tw_clock(CLOCK_MONOTONIC);
		cpu1 = tw_clock(CLOCK_THREAD_CPUTIME_ID);
		rq1 = tw_rundelay(fd);
		getrusage(RUSAGE_THREAD, &ru1);
		tw_report(end, cpu1 - cpu0, rq1 - rq0, &ru0, &ru1);
		if (rc != 0 || event_base_got_exit(base) ||
		    event_base_got_break(base))
			break;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}
