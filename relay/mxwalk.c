/*
 * mxwalk - trying a destination's hosts in order (see mxwalk.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "dns.h"
#include "mxwalk.h"
#include "tlspolicy.h"
#include "xmalloc.h"

void mxwalk_start(struct mxwalk *w, const struct dns_result *res)
{
	mxwalk_clear(w);
	w->res = res;
	w->target = w->addr = 0;
}

void mxwalk_clear(struct mxwalk *w)
{
	tlsfind_cancel(&w->tf);
	free(w->pol);
	w->pol = NULL;
}

const struct sockaddr *mxwalk_addr(struct mxwalk *w)
{
	if (w->res == NULL)
		return NULL;
	/* A host without (usable) addresses: the next one. */
	while (w->target < w->res->ntargets &&
	    w->addr >= w->res->targets[w->target].naddrs) {
		w->target++;
		w->addr = 0;
	}
	if (w->target >= w->res->ntargets)
		return NULL;
	return (const struct sockaddr *)
	    &w->res->targets[w->target].addrs[w->addr];
}

const struct dns_target *mxwalk_target(const struct mxwalk *w)
{
	return &w->res->targets[w->target];
}

int mxwalk_port(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ?
	    ntohs(((const struct sockaddr_in6 *)sa)->sin6_port) :
	    ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

void mxwalk_next_addr(struct mxwalk *w)
{
	w->addr++;
}

int mxwalk_need_policy(struct mxwalk *w, struct dns *dns,
    const struct config *cfg, const char *domain, int routed,
    tlsfind_fn *found, void *arg)
{
	const struct sockaddr *sa = mxwalk_addr(w);

	if (sa == NULL || (w->pol != NULL && w->pol_target == w->target) ||
	    !tlsfind_needed(cfg, domain, routed))
		return 0;
	/* DANE or MTA-STS: what DNS says first. */
	w->tf = tlsfind_host(dns, cfg, domain, mxwalk_target(w)->host,
	    mxwalk_port(sa), found, arg);
	return 1;
}

void mxwalk_found(struct mxwalk *w, const struct tlspolicy *pol)
{
	w->tf = NULL;
	if (pol != NULL) {
		if (w->pol == NULL)
			w->pol = xmalloc(sizeof(*w->pol));
		*w->pol = *pol;
		w->pol_target = w->target;
	} else {
		w->target++;
		w->addr = 0;
	}
}

const struct tlspolicy *mxwalk_policy(const struct mxwalk *w)
{
	return w->pol != NULL && w->pol_target == w->target ? w->pol : NULL;
}

struct bufferevent *mxwalk_connect(struct mxwalk *w, struct event_base *base,
    int timeout_sec, void (*eventcb)(struct bufferevent *, short, void *),
    void *arg)
{
	const struct sockaddr *sa = mxwalk_addr(w);
	struct timeval tv = { timeout_sec, 0 };
	struct bufferevent *bev;

	if (sa == NULL)
		return NULL;
	bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return NULL;
	bufferevent_setcb(bev, NULL, NULL, eventcb, arg);
	bufferevent_set_timeouts(bev, &tv, &tv);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)sa,
	    sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in)) == 0)
		return bev;
	bufferevent_free(bev);
	return NULL;
}
