/*
 * sched_expiry - the scheduler's walk by age: messages past their
 * queue_lifetime are returned (5.4.7), those past delay_warning get a
 * notice, in slices of a few milliseconds (see sched.c). Also
 * odrelayctl's bounce.
 *
 * What is read (odrelay_expiry_envelopes_read_total counts it):
 * - The global queue_lifetime and delay_warning ages walk the whole queue
 *   in arrival (id) order, each message once per age when it reaches
 *   it; the cursor of each age is kept in qmarks, so a restart goes on
 *   from there (what was read after the last save, at most
 *   SCHED_MARKS_SAVE_SEC of walking, is read again). Every message is
 *   due at the global lifetime, so that walk reads only what is due;
 *   the delay_warning walk also reads held mail, which gets no notice.
 * - A lifetime that only sections set (at most SCHED_AGE_DOMS_MAX of
 *   them) reads those sections' domain indexes from their oldest
 *   message, stopping at the first one not yet due: only what is due
 *   (plus, each slice, messages being delivered that wait for their
 *   lease). No cursor, so nothing to save, and a reload that adds such a
 *   section or lifetime reads nothing more.
 * - A lifetime set by more sections walks the queue like the global
 *   ones (a read of each message once for it, whatever its domain); an
 *   age new at a reload then starts from the oldest message.
 * - A reload that lowers some mail's lifetime to an age walked through
 *   the queue restarts that walk at the oldest message (its cursor has
 *   passed mail that was not due then): one read of the queue.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "bounce.h"
#include "config.h"
#include "deliver.h"
#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "sched.h"
#include "qmarks.h"
#include "domstate.h"
#include "selfaddr.h"
#include "tlsfind.h"
#include "tlspolicy.h"
#include "util.h"
#include "xmalloc.h"
#include "sched_private.h"
#include "turnwatch.h"

#define SCHED_BOUNCE_RETURN	(256 * 1024)
#define SCHED_SLICE_USEC	3000	/* event-loop time per expiry slice */
#define SCHED_SLICE_MSGS	512
#define SCHED_WARM_WAIT_USEC	2000	/* waiting for the queue's read-ahead */
#define SCHED_MARKS_SAVE_SEC	10	/* how often a long scan records where it is */
#define SCHED_AGE_DOMS_MAX	256	/* sections of a lifetime read by their index */
#define SCHED_DOM_BATCH		64	/* ids per read of a domain index */

/* ---- bounces and expiry ---- */

static void sched_pend_done(void *arg, int result)
{
	struct sched_pend *p = arg;

	(void)result;
	p->n--;
	if (--p->refs == 0)
		free(p);
}

static struct sched_pend *sched_pend_take(struct sched *s)
{
	if (s->pend == NULL) {
		s->pend = xcalloc(1, sizeof(*s->pend));
		s->pend->refs = 1;
	}
	s->pend->n++;
	s->pend->refs++;
	return s->pend;
}

void sched_pend_drop(struct sched *s)
{
	if (s->pend != NULL && --s->pend->refs == 0)
		free(s->pend);
	s->pend = NULL;
}

static size_t sched_return_message(struct sched *s, const struct queue_envelope *env,
    const char *status, const char *text, int only_expired, time_t now)
{
	struct queue_rcpt_update *ups;
	struct bounce_rcpt *br;
	struct queue_envelope benv;
	char *body = NULL;
	size_t i, n = 0, blen = 0;
	int have_bounce;

	if (queue_is_leased(s->q, env->id))
		return 0;
	ups = xcalloc(env->nrcpts, sizeof(*ups));
	br = xcalloc(env->nrcpts, sizeof(*br));
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		if (r->state != QUEUE_RCPT_QUEUED)
			continue;
		if (only_expired) {
			const struct config_domain *cd = config_domain_by_name(s->cfg, r->domain);
			long life = cd ? cd->queue_lifetime : s->cfg->queue_lifetime;

			if (env->arrival + life > now)
				continue;
		}
		ups[n].index = i;
		ups[n].state = QUEUE_RCPT_BOUNCED;
		ups[n].reply = text;
		br[n].index = i;
		br[n].action = BOUNCE_FAILED;
		br[n].status = status;
		br[n].diagnostic = r->last_reply;
		n++;
	}
	if (n > 0) {
		have_bounce = bounce_build(s->cfg->hostname, env, br, n, s->q,
		    SCHED_BOUNCE_RETURN, now, &benv, &body, &blen) == 0;
		if (have_bounce)
			bounce_route(&benv, s->cfg);
		metrics_add(METRIC_BOUNCED, NULL, n);
		for (i = 0; i < n; i++)
			log_info("%s: to=<%s>, status=bounced (%s)%s", env->id,
			    env->rcpts[ups[i].index].addr, text,
			    have_bounce ? "" : ", no notice");
		queue_update(s->q, env->id, ups, n, have_bounce ? &benv : NULL,
		    body, blen, sched_pend_done, sched_pend_take(s));
		if (have_bounce)
			bounce_envelope_clear(&benv);
		free(body);
	}
	free(ups);
	free(br);
	return n;
}

static void sched_delay_warn(struct sched *s, const struct queue_envelope *env, time_t now)
{
	struct queue_rcpt_update ups[64];
	struct bounce_rcpt br[64];
	struct queue_envelope benv;
	char *body = NULL;
	size_t i, n = 0, blen = 0;

	if (s->cfg->delay_warning <= 0 || env->arrival + s->cfg->delay_warning > now ||
	    queue_is_leased(s->q, env->id))
		return;
	for (i = 0; i < env->nrcpts && n < 64; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		const struct config_domain *cd = config_domain_by_name(s->cfg, r->domain);

		/* spec.md: no delay notices for held domains. */
		if (r->state != QUEUE_RCPT_QUEUED || r->delay_warned || (cd && cd->hold))
			continue;
		memset(&ups[n], 0, sizeof(ups[n]));
		memset(&br[n], 0, sizeof(br[n]));
		ups[n].index = i;
		ups[n].state = QUEUE_RCPT_QUEUED;
		ups[n].reply = r->last_reply;
		ups[n].next_attempt = r->next_attempt;
		ups[n].delay_warned = 1;
		br[n].index = i;
		br[n].action = BOUNCE_DELAYED;
		br[n].status = "4.4.7";
		br[n].diagnostic = r->last_reply;
		n++;
	}
	if (n == 0)
		return;
	if (bounce_build(s->cfg->hostname, env, br, n, s->q, 0, now, &benv, &body, &blen) == 0) {
		bounce_route(&benv, s->cfg);
		queue_update(s->q, env->id, ups, n, &benv, body, blen,
		    sched_pend_done, sched_pend_take(s));
		bounce_envelope_clear(&benv);
		free(body);
	} else {
		queue_update(s->q, env->id, ups, n, NULL, NULL, 0,
		    sched_pend_done, sched_pend_take(s));
	}
}

static long sched_usec_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)(t.tv_sec - t0->tv_sec) * 1000000 +
	    (t.tv_nsec - t0->tv_nsec) / 1000;
}

/* 1 = stop before this message (read again later), 0 = done with it. */
static int sched_expiry_cb(void *arg, const struct queue_envelope *env)
{
	struct sched *s = arg;
	time_t now = time(NULL);

	if (sched_usec_since(&s->slice_start) > SCHED_SLICE_USEC) {
		s->slice_over = 1;
		return 1;
	}
	metrics_inc(METRIC_EXPIRY_READ, s->walk_label);
	/* Being delivered: its state is about to change; look again when
	 * the delivery is over (the cursor waits here). */
	if (queue_is_leased(s->q, env->id))
		return 1;
	/* Both work from this snapshot: after a return, the delay notice
	 * waits for a later pass, which sees the new state. */
	if (sched_return_message(s, env, "5.4.7", "message expired (queue_lifetime)",
	    1, now) == 0)
		sched_delay_warn(s, env, now);
	return 0;
}

void sched_marks_save(struct sched *s, time_t now)
{
	for (size_t i = 0; i < s->nages; i++)
		if (s->marks[i][0] != '\0' && s->agedoms[i].idx == NULL)
			qmarks_put(s->qmarks, s->ages[i], s->marks[i]);
	s->marks_saved = now;
	s->marks_dirty = 0;
}

/* At start: each age's scan goes on from where it was (the messages
 * before its mark were read by the previous run). */
void sched_marks_load(struct sched *s)
{
	char err[256];

	if ((s->qmarks = qmarks_open(s->q, err, sizeof(err))) == NULL)
		log_error("queue: %s (scans will start over at each start)",
		    err);
	for (size_t i = 0; i < s->nages; i++)
		if (s->agedoms[i].idx == NULL)
			(void)qmarks_get(s->qmarks, s->ages[i], s->marks[i]);
	s->marks_saved = time(NULL);
}

/* The second an id was made in (its first 8 hex digits). */
static time_t sched_id_time(const char *id)
{
	char hex[9];

	memcpy(hex, id, 8);
	hex[8] = '\0';
	return (time_t)strtoul(hex, NULL, 16);
}

/*
 * An age read through its sections' indexes: the messages of each that
 * have reached it, oldest first. A message returned leaves the index
 * when its update commits; until every update of the walk has committed,
 * each section's walk goes on after what it read (a return not yet
 * committed is not read twice), then starts over at the oldest (a
 * message that was being delivered is read again). Returns the number
 * read, at most budget.
 */
static size_t sched_expiry_domains(struct sched *s, size_t age, time_t until,
    size_t budget)
{
	const struct sched_age_doms *ad = &s->agedoms[age];
	char ids[SCHED_DOM_BATCH][QUEUE_ID_LEN + 1];
	size_t read = 0;

	s->walk_label = "domain";
	for (size_t d = 0; d < ad->n && read < budget && !s->slice_over; d++) {
		const char *name = s->cfg->domains[ad->idx[d]].name;
		char *after = ad->after[d];
		/* Mostly nothing is due: the first look reads one id. */
		size_t want = 1;
		int n, past = 0;

		while (!past && read < budget && !s->slice_over &&
		    (n = queue_domain_ids(s->q, name, after, ids, want)) > 0) {
			for (int i = 0; i < n && read < budget; i++) {
				struct queue_envelope *env = NULL;

				if (sched_id_time(ids[i]) > until) {
					past = 1;
					break;
				}
				memcpy(after, ids[i], QUEUE_ID_LEN + 1);
				if (queue_get(s->q, ids[i], &env) == 1) {
					read++;
					if (sched_expiry_cb(s, env) != 0 &&
					    s->slice_over) {
						queue_envelope_free(&env);
						break;
					}
				}
				queue_envelope_free(&env);
			}
			if ((size_t)n < want)
				break;
			want = SCHED_DOM_BATCH;
		}
	}
	s->walk_label = "queue";
	return read;
}

/*
 * One slice: for each age, the messages that reached it since the last
 * look. Stops after SCHED_SLICE_USEC and continues in the next turn.
 */
void sched_expiry_slice(struct sched *s)
{
	time_t now = time(NULL);
	size_t budget = SCHED_SLICE_MSGS;
	int waiting = 0;

	clock_gettime(CLOCK_MONOTONIC, &s->slice_start);
	s->slice_over = 0;
	if (s->pend == NULL || s->pend->n == 0) {
		s->agedoms_wait = 0;
		for (size_t i = 0; i < s->nages; i++)
			if (s->agedoms[i].idx != NULL)
				memset(s->agedoms[i].after, 0, s->agedoms[i].n *
				    sizeof(*s->agedoms[i].after));
	}
	for (size_t i = 0; i < s->nages && budget > 0 && !s->slice_over; i++) {
		int more = 0;
		int n;

		if (s->agedoms[i].idx != NULL) {
			/* New after a reload, with returns still being
			 * written: they would be read (and returned) again. */
			if (s->agedoms_wait)
				continue;
			budget -= sched_expiry_domains(s, i, now - s->ages[i],
			    budget);
			continue;
		}
		/* Only records read ahead by the queue's thread: a page
		 * fault on a cold cache would stall the loop for ms. */
		n = queue_scan_ahead(s->q, s->marks[i], now - s->ages[i],
		    budget, &more, sched_expiry_cb, s);

		if (n > 0) {
			budget -= (size_t)n;
			s->marks_dirty = 1;
		}
		waiting |= more;
	}
	/* Where the scans are, for the next start: when they have caught
	 * up, and now and then during a long one. */
	if (s->marks_dirty && (!(budget == 0 || s->slice_over || waiting) ||
	    now - s->marks_saved >= SCHED_MARKS_SAVE_SEC))
		sched_marks_save(s, now);
	if ((budget == 0 || s->slice_over) && !s->shutting_down) {
		/* The next slice after a pause as long as this one: a long
		 * scan takes at most about half of the loop thread, which then
		 * sleeps between slices instead of being always runnable, and
		 * on a busy machine its wake-ups for network input are served
		 * sooner (bench/RESULTS.md, "event-loop turns"). */
		long ran = sched_usec_since(&s->slice_start);
		struct timeval gap = { 0, ran < SCHED_SLICE_USEC ?
		    (ran > 0 ? ran : 0) : SCHED_SLICE_USEC };

		evtimer_add(s->expiry_ev, &gap);
	} else if (waiting && !s->shutting_down) {
		/* The read-ahead is behind: look again shortly. */
		struct timeval tv = { 0, SCHED_WARM_WAIT_USEC };

		evtimer_add(s->expiry_ev, &tv);
	}
}

void sched_expiry_next(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	turnwatch_begin("expiry");
	sched_expiry_slice(arg);
	turnwatch_end();
}

static int sched_long_cmp(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return x < y ? -1 : x > y;
}

void sched_agedoms_free(struct sched *s, size_t n)
{
	if (s->agedoms == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(s->agedoms[i].idx);
		free(s->agedoms[i].after);
	}
	free(s->agedoms);
	s->agedoms = NULL;
}

/* Index of age in s->ages (present). */
static size_t sched_age_find(const struct sched *s, long age)
{
	size_t lo = 0, hi = s->nages;

	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (s->ages[mid] <= age)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/*
 * The ages that only sections' own lifetimes bring, set by at most
 * SCHED_AGE_DOMS_MAX sections: read through those sections' indexes.
 * O(sections) with a count per age.
 */
static void sched_set_agedoms(struct sched *s)
{
	const struct config *cfg = s->cfg;
	size_t *count = xcalloc(s->nages, sizeof(*count));

	for (size_t i = 0; i < cfg->ndomains; i++) {
		long life = cfg->domains[i].queue_lifetime;

		if (life != cfg->queue_lifetime && life != cfg->delay_warning)
			count[sched_age_find(s, life)]++;
	}
	for (size_t i = 0; i < s->nages; i++)
		if (count[i] > 0 && count[i] <= SCHED_AGE_DOMS_MAX) {
			s->agedoms[i].idx = xcalloc(count[i],
			    sizeof(*s->agedoms[i].idx));
			s->agedoms[i].after = xcalloc(count[i],
			    sizeof(*s->agedoms[i].after));
		}
	for (size_t i = 0; i < cfg->ndomains; i++) {
		long life = cfg->domains[i].queue_lifetime;
		struct sched_age_doms *ad;

		if (life == cfg->queue_lifetime || life == cfg->delay_warning)
			continue;
		ad = &s->agedoms[sched_age_find(s, life)];
		if (ad->idx != NULL)
			ad->idx[ad->n++] = i;
	}
	free(count);
}

/*
 * The distinct ages (lifetimes, warning delay). An age that was there
 * before a reload keeps its cursor; a new one starts from the oldest
 * message.
 */
/*
 * After a reload: the ages walked through the queue that a lifetime now
 * applies to, lowered from a longer one (a section's override removed or
 * shortened, a section removed, the global one lowered). Their cursors have passed messages
 * that were not due then and are now: such a walk starts over at the
 * oldest message (one read of the queue, as for a new age). Ages read
 * through domain indexes have no cursor and need nothing.
 */
static void sched_lowered_ages(struct sched *s, const struct config *old)
{
	const struct config *cfg = s->cfg;
	unsigned char *reset = xcalloc(s->nages, 1);

	if (cfg->queue_lifetime < old->queue_lifetime)
		reset[sched_age_find(s, cfg->queue_lifetime)] = 1;
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *cd = &cfg->domains[i], *od;
		size_t a = sched_age_find(s, cd->queue_lifetime);

		if (reset[a] || s->agedoms[a].idx != NULL ||
		    s->ages[a] != cd->queue_lifetime)
			continue;
		/* Mostly the same file: the same section at the same place. */
		if (i < old->ndomains && strcmp(old->domains[i].name, cd->name) == 0)
			od = &old->domains[i];
		else
			od = config_domain_by_name(old, cd->name);
		if (cd->queue_lifetime < (od != NULL ? od->queue_lifetime :
		    old->queue_lifetime))
			reset[a] = 1;
	}
	/* A section gone: its mail now has the global lifetime. */
	for (size_t i = 0, g = sched_age_find(s, cfg->queue_lifetime);
	    i < old->ndomains && !reset[g]; i++)
		if (old->domains[i].queue_lifetime > cfg->queue_lifetime &&
		    config_domain_by_name(cfg, old->domains[i].name) == NULL)
			reset[g] = 1;
	for (size_t i = 0; i < s->nages; i++)
		if (reset[i] && s->agedoms[i].idx == NULL) {
			/* Before every id: saved like any position, so that
			 * a restart does not go back to the old one. */
			memset(s->marks[i], '0', QUEUE_ID_LEN);
			s->marks[i][QUEUE_ID_LEN] = '\0';
			s->marks_dirty = 1;
			log_info("expiry: lifetime %lds lowered for some mail at "
			    "the reload: its walk starts over", s->ages[i]);
		}
	free(reset);
}

void sched_set_ages(struct sched *s, const struct config *old)
{
	const struct config *cfg = s->cfg;
	long *old_ages = s->ages;
	char (*old_marks)[QUEUE_ID_LEN + 1] = s->marks;
	size_t n = 0, old_n = s->nages, j = 0;

	size_t cap = 2;
	long last = cfg->queue_lifetime;

	/* Most sections repeat a lifetime: keep the array and the sort
	 * short (a 50,000-entry array at each reload made malloc work). */
	for (size_t i = 0; i < cfg->ndomains; i++)
		if (cfg->domains[i].queue_lifetime != cfg->queue_lifetime &&
		    cfg->domains[i].queue_lifetime != last) {
			last = cfg->domains[i].queue_lifetime;
			cap++;
		}
	s->ages = xcalloc(cap, sizeof(*s->ages));
	s->ages[n++] = cfg->queue_lifetime;
	if (cfg->delay_warning > 0)
		s->ages[n++] = cfg->delay_warning;
	last = cfg->queue_lifetime;
	for (size_t i = 0; i < cfg->ndomains; i++)
		if (cfg->domains[i].queue_lifetime != cfg->queue_lifetime &&
		    cfg->domains[i].queue_lifetime != last) {
			last = cfg->domains[i].queue_lifetime;
			s->ages[n++] = last;
		}
	qsort(s->ages, n, sizeof(*s->ages), sched_long_cmp);
	s->nages = 0;
	for (size_t i = 0; i < n; i++)
		if (s->nages == 0 || s->ages[s->nages - 1] != s->ages[i])
			s->ages[s->nages++] = s->ages[i];
	s->marks = xcalloc(s->nages, sizeof(*s->marks));
	sched_agedoms_free(s, old_n);
	s->agedoms = xcalloc(s->nages, sizeof(*s->agedoms));
	sched_set_agedoms(s);
	s->agedoms_wait = 1;
	s->walk_label = "queue";
	/* Both lists ascending: carry the cursors of ages still walked
	 * through the queue. */
	for (size_t i = 0; i < s->nages && old_ages != NULL; i++) {
		while (j < old_n && old_ages[j] < s->ages[i])
			j++;
		if (j < old_n && old_ages[j] == s->ages[i] &&
		    s->agedoms[i].idx == NULL)
			memcpy(s->marks[i], old_marks[j], sizeof(s->marks[i]));
	}
	free(old_ages);
	free(old_marks);
	if (old != NULL)
		sched_lowered_ages(s, old);
}

void sched_bounce(struct sched *s, const char *id, char *reply, size_t replylen)
{
	struct queue_envelope *env = NULL;
	int rc;

	if (!queue_id_valid(id)) {
		snprintf(reply, replylen, "501 bad queue id");
		return;
	}
	rc = queue_get(s->q, id, &env);
	if (rc != 1) {
		snprintf(reply, replylen, "550 %s: no such message", id);
		return;
	}
	if (queue_is_leased(s->q, id)) {
		snprintf(reply, replylen, "450 %s: being delivered, try again", id);
	} else {
		sched_return_message(s, env, "5.0.0", "returned by the administrator", 0, time(NULL));
		snprintf(reply, replylen, "250 %s: returned to sender", id);
	}
	queue_envelope_free(&env);
}
