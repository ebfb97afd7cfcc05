/*
 * queue_notice - what the queue reports instead of logging: the facts of
 * the open (queue_open_info), trouble counters (queue_stats) and notices,
 * lines of text kept for the caller's hook. Notices are made on the loop
 * thread and on the writer thread, so they are kept under their own lock
 * and handed to the hook on the loop thread only.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "queue.h"
#include "queue_impl.h"

void queue_open_info(const struct queue *q, struct queue_open_info *info_r)
{
	*info_r = q->open_info;
}

void queue_stats(struct queue *q, struct queue_stats *st_r)
{
	memset(st_r, 0, sizeof(*st_r));
	st_r->corrupt_records = __atomic_load_n(&q->n_corrupt, __ATOMIC_RELAXED);
	st_r->body_unreadable = __atomic_load_n(&q->n_unreadable,
	    __ATOMIC_RELAXED);
	st_r->write_failures = __atomic_load_n(&q->n_write_failed,
	    __ATOMIC_RELAXED);
	pthread_mutex_lock(&q->note_mu);
	st_r->notices_dropped = q->notes_dropped;
	pthread_mutex_unlock(&q->note_mu);
}

void queue_note(struct queue *q, enum queue_notice_level level,
    const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&q->note_mu);
	if (q->nnotes == QUEUE_NOTES_MAX) {
		q->notes_dropped++;
		pthread_mutex_unlock(&q->note_mu);
		return;
	}
	q->notes[q->nnotes].level = level;
	va_start(ap, fmt);
	vsnprintf(q->notes[q->nnotes].text, sizeof(q->notes[0].text), fmt, ap);
	va_end(ap);
	q->nnotes++;
	__atomic_store_n(&q->notes_waiting, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&q->note_mu);
}

void queue_set_notice_hook(struct queue *q, queue_notice_fn *fn, void *arg)
{
	pthread_mutex_lock(&q->note_mu);
	q->note_fn = fn;
	q->note_arg = arg;
	pthread_mutex_unlock(&q->note_mu);
}

void queue_notices_flush(struct queue *q)
{
	struct queue_note_rec notes[QUEUE_NOTES_MAX];
	queue_notice_fn *fn;
	void *arg;
	size_t i, n;

	if (!__atomic_load_n(&q->notes_waiting, __ATOMIC_ACQUIRE))
		return;
	/* Copied out: the hook runs without the lock (the writer may add). */
	pthread_mutex_lock(&q->note_mu);
	n = q->nnotes;
	memcpy(notes, q->notes, n * sizeof(notes[0]));
	q->nnotes = 0;
	__atomic_store_n(&q->notes_waiting, 0, __ATOMIC_RELEASE);
	fn = q->note_fn;
	arg = q->note_arg;
	pthread_mutex_unlock(&q->note_mu);
	for (i = 0; fn != NULL && i < n; i++)
		fn(arg, notes[i].level, notes[i].text);
}
