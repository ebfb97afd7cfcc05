/*
 * fdbudget - one connection budget for every listener. See fdbudget.h.
 */
#include <sys/resource.h>
#include <stdlib.h>
#include <time.h>

#include "config.h"
#include "fdbudget.h"
#include "log.h"
#include "xmalloc.h"

/* The queue (LMDB data and lock files), c-ares sockets, the event base
 * (epoll, signal and notify pipes), log, control and metrics sockets,
 * webhook and milter probes, and descriptors a refused connection holds
 * for the moment it takes to write 421. */
#define FDBUDGET_BASE_RESERVE	64

struct fdbudget {
	size_t limit, used;
	unsigned long refused;	/* since the last log line */
	time_t logged;
};

struct fdbudget *fdbudget_new(size_t limit)
{
	struct fdbudget *b = xcalloc(1, sizeof(*b));

	b->limit = limit;
	return b;
}

void fdbudget_free(struct fdbudget **bp)
{
	free(*bp);
	*bp = NULL;
}

int fdbudget_take(struct fdbudget *b)
{
	if (b == NULL)
		return 1;
	if (b->used >= b->limit)
		return 0;
	b->used++;
	return 1;
}

void fdbudget_refused(struct fdbudget *b, const char *who)
{
	time_t now = time(NULL);

	if (b == NULL)
		return;
	b->refused++;
	if (b->logged != 0 && now - b->logged < 10)
		return;
	log_warn("%s: all %zu connection slots in use (descriptor limit): "
	    "%lu connection(s) refused with 421", who, b->limit, b->refused);
	b->logged = now;
	b->refused = 0;
}

void fdbudget_set_limit(struct fdbudget *b, size_t limit)
{
	if (b != NULL)
		b->limit = limit;
}

void fdbudget_put(struct fdbudget *b)
{
	if (b != NULL && b->used > 0)
		b->used--;
}

size_t fdbudget_used(const struct fdbudget *b)
{
	return b != NULL ? b->used : 0;
}

size_t fdbudget_limit(const struct fdbudget *b)
{
	return b != NULL ? b->limit : 0;
}

int fdbudget_raise_nofile(unsigned long *nofile_r)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		*nofile_r = 1024;
		return -1;
	}
	if (rl.rlim_cur != rl.rlim_max) {
		rlim_t cur = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			*nofile_r = cur == RLIM_INFINITY ? (unsigned long)-1 :
			    (unsigned long)cur;
			return -1;
		}
	}
	*nofile_r = rl.rlim_cur == RLIM_INFINITY ? (unsigned long)-1 :
	    (unsigned long)rl.rlim_cur;
	return 0;
}

size_t fdbudget_reserve(const struct config *cfg)
{
	/* every outbound delivery, and the listening sockets themselves */
	return FDBUDGET_BASE_RESERVE + cfg->max_deliveries +
	    cfg->smtp_listen.n + cfg->odmr_listen.n + cfg->odmrs_listen.n +
	    cfg->metrics_listen.n +
	    (cfg->milter_reuse && cfg->milters.n > 0 ?
	    CONFIG_MILTER_POOL_MAX : 0);
}

size_t fdbudget_sessions(const struct config *cfg, unsigned long nofile)
{
	size_t reserve = fdbudget_reserve(cfg);
	/* With milters a session also holds one connection to each and,
	 * during DATA, the spool file of the body they have not seen. */
	size_t per = 1 + (cfg->milters.n > 0 ? cfg->milters.n + 1 : 0);

	if (nofile <= reserve + per)
		return 1;
	return (nofile - reserve) / per;
}
