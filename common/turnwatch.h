/*
 * turnwatch - find the event loop's slow turns (a diagnostic).
 *
 * With ODRELAY_SLOW_TURN_MS=N in the environment, odrelayd runs its loop
 * one turn at a time and logs (info) every turn whose work took more than
 * N ms of wall-clock or CPU time, or that waited more than N ms for a CPU
 * (also on waking up for it): its wall time from the first watched
 * callback to the end of the turn, the thread's CPU time and page faults
 * (major ones are disk reads) over the turn, and the watched callbacks
 * that ran in it with their wall and CPU times. A turn slow in wall time
 * but not in CPU time was waiting (for a CPU, for the disk), not working.
 *
 * Without the variable the loop is event_base_dispatch() and a watched
 * callback costs one test of a global.
 *
 * All calls on the loop thread.
 */
#ifndef OD_TURNWATCH_H
#define OD_TURNWATCH_H

struct event_base;

extern int turnwatch_on;

/* Read the environment; call once before the loop. */
void turnwatch_init(void);
/* Run base until it is told to exit (as event_base_dispatch). */
int turnwatch_dispatch(struct event_base *base);

void turnwatch_begin_(const char *what);
void turnwatch_end_(void);

/* Bracket a callback's work; what is a static string ("control"). */
static inline void turnwatch_begin(const char *what)
{
	if (turnwatch_on)
		turnwatch_begin_(what);
}

static inline void turnwatch_end(void)
{
	if (turnwatch_on)
		turnwatch_end_();
}

#endif
