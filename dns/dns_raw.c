/*
 * dns_raw - one query sent as it is, the answer handed back whole
 * (see dns_query_raw in dns.h): TLSA and TXT look-ups read it themselves.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "dns_private.h"
#include "xmalloc.h"

struct dns_raw {
	struct dns *d;
	dns_raw_fn *done;
	void *arg;
	int pending;		/* c-ares query in flight */
	int cancelled;
	int ok;
	unsigned char *msg;
	size_t len;
	struct event *ev;	/* zero timer delivering the answer */
};

static void dns_raw_free(struct dns_raw *r)
{
	if (r->ev != NULL)
		event_free(r->ev);
	free(r->msg);
	free(r);
}

static void dns_raw_deliver(evutil_socket_t fd, short what, void *arg)
{
	struct dns_raw *r = arg;
	dns_raw_fn *done = r->done;
	void *darg = r->arg;
	unsigned char *msg = r->msg;
	size_t len = r->len;
	int ok = r->ok;

	(void)fd;
	(void)what;
	/* The handle dies before the call: the callee may not cancel it. */
	r->msg = NULL;
	dns_raw_free(r);
	done(darg, ok, msg, len);
	free(msg);
}

static void dns_raw_cb(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen)
{
	struct dns_raw *r = arg;

	(void)timeouts;
	r->pending = 0;
	if (r->cancelled) {
		dns_raw_free(r);
		return;
	}
	if (status == ARES_EDESTRUCTION)
		return;		/* shutting down: the owner cancels */
	if (status == ARES_SUCCESS && abuf != NULL && alen >= 12) {
		r->msg = xmalloc((size_t)alen);
		memcpy(r->msg, abuf, (size_t)alen);
		r->len = (size_t)alen;
		r->ok = 1;
	}
	if (r->ev == NULL) {
		r->ev = evtimer_new(r->d->base, dns_raw_deliver, r);
		if (r->ev == NULL)
			return;		/* out of memory: never answered */
	}
	{
		struct timeval tv = { 0, 0 };

		evtimer_add(r->ev, &tv);
	}
}

struct dns_raw *dns_query_raw(struct dns *d, const char *name, int qtype,
    int want_ad, dns_raw_fn *done, void *arg)
{
	unsigned char q[DNS_NAME_MAX + 32];
	struct dns_raw *r = xcalloc(1, sizeof(*r));
	size_t n = 12, len;
	const char *p = name;

	r->d = d;
	r->done = done;
	r->arg = arg;
	memset(q, 0, 12);
	q[2] = 0x01;			/* RD */
	q[3] = want_ad ? 0x20 : 0;	/* AD: tell us what was validated */
	q[5] = 1;			/* one question */
	/* Exact name, labels of 1..63 octets, 255 in all. */
	len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	while (len > 0 && p < name + len) {
		const char *dot = memchr(p, '.', (size_t)(name + len - p));
		size_t l = dot != NULL ? (size_t)(dot - p) : (size_t)(name + len - p);

		if (l == 0 || l > 63 || n + l + 1 + 5 > sizeof(q) ||
		    n + l + 1 - 12 > 254)
			goto bad;
		q[n++] = (unsigned char)l;
		memcpy(q + n, p, l);
		n += l;
		p += l + (dot != NULL ? 1 : 0);
	}
	if (len == 0)
		goto bad;
	q[n++] = 0;
	q[n++] = (unsigned char)(qtype >> 8);
	q[n++] = (unsigned char)qtype;
	q[n++] = 0;
	q[n++] = 1;			/* IN */
	if (!d->chan_ok)
		goto bad;
	r->pending = 1;
	ares_send(d->chan, q, (int)n, dns_raw_cb, r);
	dns_timer_update(d);
	return r;
bad:
	r->pending = 0;
	dns_raw_cb(r, ARES_EBADNAME, 0, NULL, 0);
	return r;
}

void dns_raw_cancel(struct dns_raw **rp)
{
	struct dns_raw *r;

	if (rp == NULL || (r = *rp) == NULL)
		return;
	*rp = NULL;
	if (r->pending) {
		r->cancelled = 1;	/* freed by the c-ares callback */
		if (r->ev != NULL) {
			event_free(r->ev);
			r->ev = NULL;
		}
		return;
	}
	dns_raw_free(r);
}
