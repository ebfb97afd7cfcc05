/*
 * fdbudget - one connection budget for every listener, derived from the
 * descriptor limit (issue 17): the SMTP and ODMR listeners count against
 * the same budget, so together they can never take the descriptors the
 * queue, DNS, deliveries and the control socket need, and accept() never
 * meets EMFILE in normal operation.
 */
#ifndef OD_FDBUDGET_H
#define OD_FDBUDGET_H

#include <stddef.h>

struct config;
struct fdbudget;

/* limit: connections at most (0 = none allowed). */
struct fdbudget *fdbudget_new(size_t limit);
void fdbudget_free(struct fdbudget **bp);
/* Take one slot: 1, or 0 when the budget is spent. b == NULL: always 1. */
int fdbudget_take(struct fdbudget *b);
/* A connection was refused for want of a slot: logged, at most one line
 * per 10 s with the count, so a flood cannot fill the log. */
void fdbudget_refused(struct fdbudget *b, const char *who);
/* A new limit (a reload changed what a session costs): connections over
 * it stay, new ones wait until fewer are open. */
void fdbudget_set_limit(struct fdbudget *b, size_t limit);
/* Give one taken slot back. */
void fdbudget_put(struct fdbudget *b);
size_t fdbudget_used(const struct fdbudget *b);
size_t fdbudget_limit(const struct fdbudget *b);

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit (the daemon, started as
 * root or not, may use what it is allowed). Stores the resulting soft
 * limit in *nofile_r. Returns 0, or -1 when it could not be raised (the
 * current limit is stored then).
 */
int fdbudget_raise_nofile(unsigned long *nofile_r);
/* Descriptors kept back from nofile for everything but client sessions. */
size_t fdbudget_reserve(const struct config *cfg);
/*
 * Client connections that nofile descriptors allow: (nofile - reserve)
 * divided by the descriptors one SMTP session may hold (itself; with
 * milters one per milter and the body's spool file), at least 1.
 */
size_t fdbudget_sessions(const struct config *cfg, unsigned long nofile);

#endif
