/*
 * queue_jobs - the loop thread's side of writes: puts (a body streamed in
 * chunks with backpressure, then the commit), recipient updates and
 * deletes, and leases (in memory, mirrored to the lease database for
 * tools). Each write becomes a job for the writer thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <lmdb.h>

#include "config.h"
#include "domhash.h"
#include "util.h"
#include "xmalloc.h"
#include "queue.h"
#include "queue_private.h"
#include "domstate.h"
#include "queue_impl.h"

static void queue_job_free(struct job *j);

/* ---- puts ---- */

static void queue_put_free(struct queue_put *p)
{
	free(p->buf);
	free(p);
}

static void queue_put_maybe_free(struct queue_put *p)
{
	if (p->abandoned && p->refs == 0)
		queue_put_free(p);
}

/* Tell the hook which domains just got mail (each once, lower case). */
static void queue_announce(struct queue *q, const struct queue_envelope *env)
{
	char dom[QUEUE_DOMAIN_MAX + 1];

	if (q->arrival == NULL || env == NULL)
		return;
	for (size_t i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i].state != QUEUE_RCPT_QUEUED ||
		    env->rcpts[i].domain == NULL || !queue_rcpt_first_in_domain(env, i))
			continue;
		queue_domain_key(env->rcpts[i].domain, dom);
		q->arrival(q->arrival_arg, dom);
	}
}

void queue_set_arrival_hook(struct queue *q, queue_arrival_fn *fn, void *arg)
{
	q->arrival = fn;
	q->arrival_arg = arg;
}

void queue_complete(struct queue *q, struct job *j)
{
	struct queue_put *p = j->put;

	/* Committed mail (or a committed bounce) is visible to readers now. */
	if (j->result == QUEUE_OK && j->type == JOB_COMMIT)
		queue_announce(q, j->env);
	else if (j->result == QUEUE_OK && j->type == JOB_UPDATE)
		queue_announce(q, j->bounce);
	switch (j->type) {
	case JOB_CHUNK:
		p->refs--;
		p->inflight--;
		if (j->result != QUEUE_OK && p->err == 0)
			p->err = j->result;
		/* On error too, so the reader learns it at its next write. */
		if (p->paused && !p->abandoned &&
		    (p->inflight <= QUEUE_RESUME_AT || p->err != 0)) {
			p->paused = 0;
			if (p->resume != NULL)
				p->resume(p->resume_arg);
		}
		queue_put_maybe_free(p);
		break;
	case JOB_ABORT:
		p->refs--;
		queue_put_maybe_free(p);
		break;
	case JOB_COMMIT:
		p->refs--;
		if (!p->abandoned && j->done != NULL)
			j->done(j->arg, j->result);
		p->abandoned = 1;
		queue_put_maybe_free(p);
		break;
	case JOB_COMPACT:
		if (j->result == QUEUE_OK && q->writer_started) {
			j->result = queue_swap(q);
			pthread_mutex_lock(&q->mu);
			q->swap_wait = 0;
			pthread_cond_signal(&q->cv);
			pthread_mutex_unlock(&q->mu);
		} else if (j->result != QUEUE_OK) {
			char *tmp = xasprintf("%s/data.mdb.compact", q->dir);

			(void)unlink(tmp);
			free(tmp);
		}
		/* The reasons before the result (a QUEUE_ELOST caller exits). */
		queue_notices_flush(q);
		if (j->done != NULL)
			j->done(j->arg, j->result);
		break;
	default:
		if (j->done != NULL)
			j->done(j->arg, j->result);
		break;
	}
	queue_job_free(j);
}

void queue_quotas_free(struct quota *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].domain);
	free(v);
}

static void queue_job_free(struct job *j)
{
	size_t i;

	free(j->data);
	queue_envelope_free(&j->env);
	queue_envelope_free(&j->bounce);
	queue_quotas_free(j->quotas, j->nquotas);
	for (i = 0; i < j->nupdates; i++)
		free((char *)j->updates[i].reply);
	free(j->updates);
	free(j->owner);
	if (j->ext_free != NULL)
		j->ext_free(j->ext_arg);
	free(j);
}

struct job *queue_job_new(enum job_type type, const char *id)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->type = type;
	if (id != NULL)
		util_strlcpy(j->id, id, sizeof(j->id));
	return j;
}

/* 1 if id names a stored or unfinished message (a short read txn). */
static int queue_id_in_use(struct queue *q, const char *id)
{
	MDB_txn *txn;
	MDB_val k = { QUEUE_ID_LEN, (void *)id }, d;
	int used;

	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	used = mdb_get(txn, q->db_msg, &k, &d) == 0 ||
	    mdb_get(txn, q->db_incomplete, &k, &d) == 0;
	mdb_txn_abort(txn);
	return used;
}

struct queue_put *queue_put_begin(struct queue *q)
{
	struct queue_put *p = xcalloc(1, sizeof(*p));

	p->q = q;
	queue_new_id(q, p->id);
	/* Ids are time-ordered; after a clock step back one may exist. */
	for (int tries = 0; tries < 8 && queue_id_in_use(q, p->id); tries++)
		queue_new_id(q, p->id);
	if (q->rdonly)
		p->err = QUEUE_EIO;
	return p;
}

const char *queue_put_id(const struct queue_put *p)
{
	return p->id;
}

void queue_put_set_resume(struct queue_put *p, void (*resume)(void *arg),
    void *arg)
{
	p->resume = resume;
	p->resume_arg = arg;
}

static void queue_put_send_chunk(struct queue_put *p)
{
	struct job *j = queue_job_new(JOB_CHUNK, p->id);

	j->put = p;
	j->chunkno = p->nchunks++;
	j->data = p->buf;
	j->len = p->fill;
	p->buf = NULL;
	p->fill = 0;
	p->refs++;
	p->inflight++;
	queue_submit(p->q, j);
}

int queue_put_write(struct queue_put *p, const void *data, size_t len)
{
	const unsigned char *s = data;

	if (p->err != 0)
		return p->err;
	if (p->committed || p->abandoned)
		return QUEUE_EIO;
	while (len > 0) {
		size_t n;

		if (p->buf == NULL)
			p->buf = xmalloc(QUEUE_CHUNK_SIZE);
		n = QUEUE_CHUNK_SIZE - p->fill;
		if (n > len)
			n = len;
		memcpy(p->buf + p->fill, s, n);
		p->fill += n;
		p->size += n;
		s += n;
		len -= n;
		if (p->fill == QUEUE_CHUNK_SIZE)
			queue_put_send_chunk(p);
		if (p->err != 0)
			return p->err;	/* inline mode: the write failed now */
	}
	if (p->inflight >= QUEUE_MAX_INFLIGHT) {
		p->paused = 1;
		return 1;
	}
	return 0;
}

void queue_put_commit(struct queue_put *p, const struct queue_envelope *env,
    queue_done_fn *done, void *arg)
{
	struct queue *q = p->q;
	struct job *j;
	size_t i, k;

	j = queue_job_new(JOB_COMMIT, p->id);
	j->put = p;
	j->done = done;
	j->arg = arg;
	p->committed = 1;
	p->paused = 0;
	/*
	 * Even after a failed chunk the commit goes to the writer: it fails
	 * there (wr_failed) and removes the chunks that did get written.
	 */
	j->env = queue_envelope_copy(env);
	memcpy(j->env->id, p->id, sizeof(j->env->id));
	j->env->size = p->size;
	j->chunkno = p->nchunks;
	j->data = p->buf;
	j->len = p->fill;
	p->buf = NULL;
	p->fill = 0;
	/* Quotas travel with the job: the writer never reads q->quotas. */
	for (i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i].domain == NULL ||
		    !domhash_get(q->quota_index, env->rcpts[i].domain, &k) ||
		    q->quotas[k].max == 0 || !queue_rcpt_first_in_domain(env, i))
			continue;
		j->quotas = xreallocarray(j->quotas, j->nquotas + 1, sizeof(*j->quotas));
		j->quotas[j->nquotas].domain = xstrdup(q->quotas[k].domain);
		j->quotas[j->nquotas].max = q->quotas[k].max;
		j->nquotas++;
	}
	p->refs++;
	queue_submit(q, j);
}

void queue_put_abandon(struct queue_put **pp)
{
	struct queue_put *p = *pp;
	struct job *j;

	if (p == NULL)
		return;
	*pp = NULL;
	if (p->committed) {
		/* Commit in flight: its completion frees the put silently. */
		p->abandoned = 1;
		return;
	}
	p->abandoned = 1;
	p->committed = 1;
	if (p->nchunks == 0) {
		queue_put_maybe_free(p);
		return;
	}
	j = queue_job_new(JOB_ABORT, p->id);
	j->put = p;
	p->refs++;
	queue_submit(p->q, j);
}

/* ---- updates, deletes ---- */

/* A job on message id with its completion, or NULL (done already called
 * with QUEUE_ENOTFOUND) when the id is malformed. */
static struct job *queue_job_for_id(enum job_type type, const char *id, queue_done_fn *done,
    void *arg)
{
	struct job *j;

	if (!queue_id_valid(id)) {
		if (done != NULL)
			done(arg, QUEUE_ENOTFOUND);
		return NULL;
	}
	j = queue_job_new(type, id);
	j->done = done;
	j->arg = arg;
	return j;
}

void queue_update(struct queue *q, const char *id,
    const struct queue_rcpt_update *updates, size_t nupdates,
    const struct queue_envelope *bounce, const void *bounce_body,
    size_t bounce_len, queue_done_fn *done, void *arg)
{
	struct job *j = queue_job_for_id(JOB_UPDATE, id, done, arg);
	size_t i;

	if (j == NULL)
		return;
	if (nupdates > 0) {
		j->updates = xcalloc(nupdates, sizeof(*j->updates));
		j->nupdates = nupdates;
		for (i = 0; i < nupdates; i++) {
			j->updates[i] = updates[i];
			j->updates[i].reply = queue_xstrdup_null(updates[i].reply);
		}
	}
	if (bounce != NULL) {
		j->bounce = queue_envelope_copy(bounce);
		queue_new_id(q, j->bounce->id);
		j->bounce->size = bounce_len;
		if (bounce_len > 0) {
			j->data = xmalloc(bounce_len);
			memcpy(j->data, bounce_body, bounce_len);
		}
		queue_note(q, QUEUE_NOTICE_DEBUG, "%s: bounce %s queued with update",
		    id, j->bounce->id);
	}
	queue_submit(q, j);
}

void queue_delete(struct queue *q, const char *id, queue_done_fn *done,
    void *arg)
{
	struct job *j = queue_job_for_id(JOB_DELETE, id, done, arg);

	if (j != NULL)
		queue_submit(q, j);
}

void queue_release(struct queue *q, const char *id, queue_done_fn *done,
    void *arg)
{
	struct job *j = queue_job_for_id(JOB_RELEASE, id, done, arg);

	if (j != NULL)
		queue_submit(q, j);
}

void queue_barrier(struct queue *q, queue_done_fn *done, void *arg)
{
	queue_submit(q, queue_job_for_id(JOB_BARRIER, "0000000000000000", done, arg));
}

void queue_set_quota(struct queue *q, const char *domain, uint64_t max_bytes)
{
	size_t i;

	if (q->quota_index == NULL)
		q->quota_index = domhash_new();
	if (domhash_get(q->quota_index, domain, &i)) {
		q->quotas[i].max = max_bytes;
		return;
	}
	/* Doubling, so that 50,000 domains are set up in linear time. */
	if ((q->nquotas & (q->nquotas - 1)) == 0)
		q->quotas = xreallocarray(q->quotas, q->nquotas ? q->nquotas * 2 : 1,
		    sizeof(*q->quotas));
	q->quotas[q->nquotas].domain = xstrdup(domain);
	q->quotas[q->nquotas].max = max_bytes;
	domhash_put(q->quota_index, domain, q->nquotas);
	q->nquotas++;
}

/* ---- leases ---- */

static size_t queue_lease_find(struct queue *q, const char *id, int *found)
{
	size_t lo = 0, hi = q->nleases;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(q->leases[mid].id, id);

		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

int queue_lease(struct queue *q, const char *id, const char *owner)
{
	struct job *j;
	size_t i;
	int found;

	if (!queue_id_valid(id))
		return QUEUE_ENOTFOUND;
	if (q->rdonly)
		return QUEUE_EIO;
	i = queue_lease_find(q, id, &found);
	if (found)
		return QUEUE_EBUSY;
	q->leases = xreallocarray(q->leases, q->nleases + 1, sizeof(*q->leases));
	memmove(&q->leases[i + 1], &q->leases[i], (q->nleases - i) * sizeof(*q->leases));
	memcpy(q->leases[i].id, id, sizeof(q->leases[i].id));
	q->leases[i].owner = xstrdup(owner ? owner : "");
	q->nleases++;
	j = queue_job_new(JOB_LEASE, id);
	j->owner = xstrdup(owner ? owner : "");
	queue_submit(q, j);
	return QUEUE_OK;
}

void queue_unlease(struct queue *q, const char *id)
{
	size_t i;
	int found;

	if (!queue_id_valid(id) || q->rdonly)
		return;
	i = queue_lease_find(q, id, &found);
	if (!found)
		return;
	free(q->leases[i].owner);
	memmove(&q->leases[i], &q->leases[i + 1], (q->nleases - i - 1) * sizeof(*q->leases));
	q->nleases--;
	queue_submit(q, queue_job_new(JOB_UNLEASE, id));
}

int queue_is_leased(struct queue *q, const char *id)
{
	MDB_txn *txn;
	MDB_val k, d;
	int found, rc;

	if (!queue_id_valid(id))
		return 0;
	if (!q->rdonly) {
		queue_lease_find(q, id, &found);
		return found;
	}
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	k.mv_data = (void *)id;
	k.mv_size = QUEUE_ID_LEN;
	rc = mdb_get(txn, q->db_lease, &k, &d);
	mdb_txn_abort(txn);
	return rc == 0;
}
