/*
 * queue - the durable mail queue in LMDB.
 *
 * Databases (all in one environment, MDB_NOTLS so read transactions are
 * not tied to threads):
 *   meta        "version" -> uint32 BE format version
 *               "totals" -> uint64 BE messages, bytes, queued recipients,
 *               messages with a retry time (format 2; what stats read)
 *   msg         id -> envelope + recipients (queue_record_encode)
 *   body        id + uint32 BE chunk no -> up to QUEUE_CHUNK_SIZE bytes
 *   dom         lowercase domain + '\0' + id -> "" (QUEUED rcpts there)
 *   sched       uint64 BE next_attempt + id -> "" (QUEUED, next_attempt > 0)
 *   count       lowercase domain -> uint64 BE messages, uint64 BE bytes
 *   lease       id -> owner (mirror of the in-memory leases, for tools)
 *   incomplete  id -> "" while a put has chunks but no msg record
 *
 * One writer thread runs every write transaction. It takes all pending
 * jobs at once and applies them in one transaction (group commit: one
 * fsync for the batch); if any job fails, the batch is aborted and the
 * jobs are replayed one per transaction so only the guilty one fails.
 * Completions travel back to the loop thread through an event made
 * active from the writer. Without a loop (tools, tests) jobs run inline.
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
#include "log.h"
#include "util.h"
#include "xmalloc.h"
#include "queue.h"
#include "queue_private.h"
#include "domstate.h"

#define QUEUE_MAX_INFLIGHT	4	/* chunks queued per put before backpressure */
#define QUEUE_RESUME_AT		2	/* resume the reader at this many */
#define QUEUE_SCAN_BATCH	256	/* records per short read transaction */
#define QUEUE_DUE_MAX		1024	/* due ids per queue_foreach_due call */
#define QUEUE_DOMAIN_MAX	255
#define QUEUE_DEFAULT_MAP_SIZE	(4ULL * 1024 * 1024 * 1024)
#define BODY_KEY_LEN		(QUEUE_ID_LEN + 4)
#define SCHED_KEY_LEN		(8 + QUEUE_ID_LEN)

enum job_type {
	JOB_CHUNK,	/* one full body chunk of a put */
	JOB_COMMIT,	/* last chunk + envelope + indexes of a put */
	JOB_ABORT,	/* remove a put's chunks */
	JOB_UPDATE,
	JOB_DELETE,
	JOB_RELEASE,	/* out of quarantine */
	JOB_LEASE,
	JOB_UNLEASE,
	JOB_BARRIER,	/* writes nothing: completes after every earlier job */
	JOB_COMPACT,	/* compacting copy; the loop then swaps the files */
	JOB_EXT		/* a write of another queue/ module (queue_ext_submit) */
};

struct quota {
	char *domain;
	uint64_t max;
};

struct job {
	enum job_type type;
	struct job *next;
	struct queue_put *put;		/* CHUNK, COMMIT, ABORT */
	char id[QUEUE_ID_LEN + 1];
	uint32_t chunkno;
	unsigned char *data;		/* chunk bytes (owned) */
	size_t len;
	struct queue_envelope *env;	/* COMMIT: copy */
	struct quota *quotas;		/* COMMIT: quotas of env's domains */
	size_t nquotas;
	struct queue_rcpt_update *updates;	/* UPDATE: copy */
	size_t nupdates;
	struct queue_envelope *bounce;	/* UPDATE: copy, id assigned */
	char *owner;			/* LEASE */
	uint64_t *before_r, *after_r;	/* COMPACT */
	queue_ext_apply_fn *ext_apply;	/* EXT */
	void (*ext_free)(void *);
	void *ext_arg;
	queue_done_fn *done;
	void *arg;
	int result;
};

struct lease {
	char id[QUEUE_ID_LEN + 1];
	char *owner;
};

struct queue {
	MDB_env *env;
	MDB_dbi db_meta, db_msg, db_body, db_dom, db_sched, db_count, db_lease,
	    db_incomplete;
	int rdonly;
	int lock_fd;			/* flock: one writable opener at a time */
	struct event_base *base;
	struct event *done_ev;

	pthread_t writer;
	int writer_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *pending, *pending_tail;	/* loop -> writer */
	struct job *finished, *finished_tail;	/* writer -> loop */
	int stopping;
	int test_hold;		/* queue_test_hold_writer */
	int swap_wait;		/* writer waits for the loop to swap files */
	char *dir;
	uint64_t map_size;
	uint64_t min_free;	/* queue_min_free: file system reserve */
	int space_low;		/* the reserve could not be kept */
	struct strlist ext_dbs;	/* other modules' databases, in open order */
	int nosync_mode;		/* writer-thread only: current env flag */

	struct quota *quotas;
	size_t nquotas;
	struct domhash *quota_index;	/* domain -> index into quotas */
	struct lease *leases;		/* sorted by id */
	size_t nleases;

	uint32_t id_sec, id_ctr;

	queue_arrival_fn *arrival;	/* queue_set_arrival_hook */
	void *arrival_arg;
};

struct queue_put {
	struct queue *q;
	char id[QUEUE_ID_LEN + 1];
	unsigned char *buf;
	size_t fill;
	uint64_t size;
	uint32_t nchunks;
	unsigned inflight;		/* chunk jobs not yet completed */
	unsigned refs;			/* jobs not yet completed */
	int err;
	int committed, abandoned, paused;
	int wr_failed;			/* writer thread only */
	void (*resume)(void *arg);
	void *resume_arg;
};

struct queue_body {
	struct queue *q;
	char id[QUEUE_ID_LEN + 1];
	uint32_t next, nchunks;
	unsigned char *buf;
	size_t len;
};

static void job_free(struct job *j);
static void queue_complete(struct queue *q, struct job *j);
static int queue_swap(struct queue *q);
static int open_dbs(struct queue *q, MDB_txn *txn, unsigned flags);

/* ---- small helpers ---- */

static void be32_put(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint32_t be32_get(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static void be64_put(unsigned char *p, uint64_t v)
{
	be32_put(p, v >> 32);
	be32_put(p + 4, (uint32_t)v);
}

static uint64_t be64_get(const unsigned char *p)
{
	return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}

static int queue_code(int rc)
{
	if (rc == 0)
		return QUEUE_OK;
	/* Storage exhausted (map, file system, quota; a full disk may also
	 * surface as EIO from write or fsync): 452 4.3.1, as for the map. */
	if (rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT ||
	    rc == EFBIG || rc == EIO)
		return QUEUE_EFULL;
	if (rc == MDB_NOTFOUND)
		return QUEUE_ENOTFOUND;
	return QUEUE_EIO;
}

const char *queue_strerror(int code)
{
	switch (code) {
	case QUEUE_OK:
		return "ok";
	case QUEUE_EFULL:
		return "queue storage full";
	case QUEUE_EQUOTA:
		return "domain queue quota exceeded";
	case QUEUE_EIO:
		return "queue storage error";
	case QUEUE_ENOTFOUND:
		return "no such message";
	case QUEUE_EBUSY:
		return "message is being delivered";
	case QUEUE_EVERSION:
		return "queue format version not supported";
	default:
		return "unknown queue error";
	}
}

int queue_id_valid(const char *id)
{
	size_t i;

	if (id == NULL)
		return 0;
	for (i = 0; i < QUEUE_ID_LEN; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F')))
			return 0;
	return id[QUEUE_ID_LEN] == '\0';
}

/*
 * 8 hex digits of seconds, then a counter that starts at a random point
 * below 2^31 each second: sorted within a process, and a restart in the
 * same second is very unlikely to collide (a collision fails the put via
 * MDB_NOOVERWRITE rather than mixing two messages).
 */
static void queue_new_id(struct queue *q, char *id)
{
	uint32_t now = (uint32_t)time(NULL);
	uint32_t r = 0;

	if (now > q->id_sec) {
		q->id_sec = now;
		if (util_random(&r, sizeof(r)) < 0)
			r = (uint32_t)rand();
		q->id_ctr = r & 0x7fffffff;
	} else if (++q->id_ctr == 0) {
		/* 2^32 ids in a second: borrow the next second. */
		q->id_sec++;
	}
	snprintf(id, QUEUE_ID_LEN + 1, "%08X%08X", q->id_sec, q->id_ctr);
}

/* Lowercase copy of a domain for index keys; returns its length. */
static size_t domain_key(const char *domain, char *buf)
{
	size_t i, n = strlen(domain);

	if (n > QUEUE_DOMAIN_MAX)
		n = QUEUE_DOMAIN_MAX;
	for (i = 0; i < n; i++) {
		char c = domain[i];

		buf[i] = (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
	}
	buf[n] = '\0';
	return n;
}

/* ---- record format ---- */

struct wbuf {
	unsigned char *p;
	size_t len, cap;
};

static void wb_reserve(struct wbuf *b, size_t n)
{
	if (b->len + n > b->cap) {
		while (b->len + n > b->cap)
			b->cap = b->cap ? b->cap * 2 : 256;
		b->p = xreallocarray(b->p, b->cap, 1);
	}
}

static void wb_u8(struct wbuf *b, unsigned v)
{
	wb_reserve(b, 1);
	b->p[b->len++] = (unsigned char)v;
}

static void wb_u32(struct wbuf *b, uint32_t v)
{
	wb_reserve(b, 4);
	be32_put(b->p + b->len, v);
	b->len += 4;
}

static void wb_u64(struct wbuf *b, uint64_t v)
{
	wb_reserve(b, 8);
	be64_put(b->p + b->len, v);
	b->len += 8;
}

static void wb_str(struct wbuf *b, const char *s)
{
	size_t n;

	if (s == NULL) {
		wb_u32(b, 0xffffffffu);
		return;
	}
	n = strlen(s);
	wb_u32(b, (uint32_t)n);
	wb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

unsigned char *queue_record_encode(const struct queue_envelope *env,
    uint32_t nchunks, size_t *len_r)
{
	struct wbuf b = { NULL, 0, 0 };
	size_t i;

	wb_u8(&b, QUEUE_RECORD_VERSION);
	wb_u32(&b, env->flags);
	wb_u8(&b, (unsigned)env->ret);
	wb_u64(&b, (uint64_t)(int64_t)env->arrival);
	wb_u64(&b, env->size);
	wb_u32(&b, nchunks);
	wb_str(&b, env->sender ? env->sender : "");
	wb_str(&b, env->envid);
	wb_str(&b, env->helo);
	wb_str(&b, env->client_addr);
	wb_u32(&b, (uint32_t)env->nrcpts);
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		wb_str(&b, r->addr ? r->addr : "");
		wb_str(&b, r->domain ? r->domain : "");
		wb_str(&b, r->orcpt);
		wb_u32(&b, r->notify);
		wb_u8(&b, (unsigned)r->state);
		wb_u32(&b, r->attempts);
		wb_u64(&b, (uint64_t)(int64_t)r->last_attempt);
		wb_u64(&b, (uint64_t)(int64_t)r->next_attempt);
		wb_str(&b, r->last_reply);
		wb_u8(&b, r->delay_warned ? 1 : 0);
	}
	*len_r = b.len;
	return b.p;
}

struct rbuf {
	const unsigned char *p;
	size_t len, off;
	int bad;
};

static uint64_t rb_uint(struct rbuf *b, size_t n)
{
	uint64_t v = 0;
	size_t i;

	if (b->bad || b->len - b->off < n) {
		b->bad = 1;
		return 0;
	}
	for (i = 0; i < n; i++)
		v = v << 8 | b->p[b->off + i];
	b->off += n;
	return v;
}

static char *rb_str(struct rbuf *b, int nullable)
{
	uint32_t n = (uint32_t)rb_uint(b, 4);
	char *s;

	if (b->bad)
		return NULL;
	if (n == 0xffffffffu) {
		if (!nullable)
			b->bad = 1;
		return NULL;
	}
	if (b->len - b->off < n || memchr(b->p + b->off, '\0', n) != NULL) {
		b->bad = 1;
		return NULL;
	}
	s = xstrndup((const char *)b->p + b->off, n);
	b->off += n;
	return s;
}

/* Smallest encoded recipient: 3 strings, u32, u8, u32, 2 u64, string, u8. */
#define RCPT_MIN_LEN	(4 + 4 + 4 + 4 + 1 + 4 + 8 + 8 + 4 + 1)

int queue_record_decode(const char *id, const void *data, size_t len,
    struct queue_envelope **env_r, uint32_t *nchunks_r)
{
	struct rbuf b = { data, len, 0, 0 };
	struct queue_envelope *env;
	uint64_t n;
	uint32_t nchunks;
	size_t i;

	*env_r = NULL;
	if (rb_uint(&b, 1) != QUEUE_RECORD_VERSION || b.bad)
		return QUEUE_EIO;
	env = xcalloc(1, sizeof(*env));
	util_strlcpy(env->id, id, sizeof(env->id));
	env->flags = (unsigned)rb_uint(&b, 4);
	env->ret = (int)rb_uint(&b, 1);
	env->arrival = (time_t)(int64_t)rb_uint(&b, 8);
	env->size = rb_uint(&b, 8);
	nchunks = (uint32_t)rb_uint(&b, 4);
	env->sender = rb_str(&b, 0);
	env->envid = rb_str(&b, 1);
	env->helo = rb_str(&b, 1);
	env->client_addr = rb_str(&b, 1);
	n = rb_uint(&b, 4);
	if (!b.bad && n > (b.len - b.off) / RCPT_MIN_LEN)
		b.bad = 1;
	if (!b.bad && n > 0) {
		env->rcpts = xcalloc((size_t)n, sizeof(*env->rcpts));
		env->nrcpts = (size_t)n;
	}
	for (i = 0; !b.bad && i < env->nrcpts; i++) {
		struct queue_rcpt *r = &env->rcpts[i];
		uint64_t st;

		r->addr = rb_str(&b, 0);
		r->domain = rb_str(&b, 0);
		r->orcpt = rb_str(&b, 1);
		r->notify = (unsigned)rb_uint(&b, 4);
		st = rb_uint(&b, 1);
		if (st > QUEUE_RCPT_BOUNCED)
			b.bad = 1;
		r->state = (enum queue_rcpt_state)st;
		r->attempts = (unsigned)rb_uint(&b, 4);
		r->last_attempt = (time_t)(int64_t)rb_uint(&b, 8);
		r->next_attempt = (time_t)(int64_t)rb_uint(&b, 8);
		r->last_reply = rb_str(&b, 1);
		st = rb_uint(&b, 1);	/* the encoder writes 0 or 1 only */
		if (st > 1)
			b.bad = 1;
		r->delay_warned = (int)st;
	}
	/* The chunk count must match the size: bodies are cut at full chunks. */
	if (!b.bad && (b.off != b.len ||
	    (uint64_t)nchunks != (env->size + QUEUE_CHUNK_SIZE - 1) / QUEUE_CHUNK_SIZE))
		b.bad = 1;
	if (b.bad) {
		queue_envelope_free(&env);
		return QUEUE_EIO;
	}
	if (nchunks_r != NULL)
		*nchunks_r = nchunks;
	*env_r = env;
	return QUEUE_OK;
}

static void rcpt_clear(struct queue_rcpt *r)
{
	free(r->addr);
	free(r->domain);
	free(r->orcpt);
	free(r->last_reply);
}

void queue_envelope_free(struct queue_envelope **envp)
{
	struct queue_envelope *env = *envp;
	size_t i;

	if (env == NULL)
		return;
	for (i = 0; i < env->nrcpts; i++)
		rcpt_clear(&env->rcpts[i]);
	free(env->rcpts);
	free(env->sender);
	free(env->envid);
	free(env->helo);
	free(env->client_addr);
	free(env);
	*envp = NULL;
}

static char *xstrdup_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static struct queue_envelope *envelope_copy(const struct queue_envelope *src)
{
	struct queue_envelope *env = xcalloc(1, sizeof(*env));
	size_t i;

	memcpy(env->id, src->id, sizeof(env->id));
	env->id[QUEUE_ID_LEN] = '\0';
	env->sender = xstrdup(src->sender ? src->sender : "");
	env->envid = xstrdup_null(src->envid);
	env->ret = src->ret;
	env->flags = src->flags;
	env->arrival = src->arrival;
	env->size = src->size;
	env->helo = xstrdup_null(src->helo);
	env->client_addr = xstrdup_null(src->client_addr);
	if (src->nrcpts > 0) {
		env->rcpts = xcalloc(src->nrcpts, sizeof(*env->rcpts));
		env->nrcpts = src->nrcpts;
	}
	for (i = 0; i < src->nrcpts; i++) {
		const struct queue_rcpt *s = &src->rcpts[i];
		struct queue_rcpt *r = &env->rcpts[i];

		*r = *s;
		r->addr = xstrdup(s->addr ? s->addr : "");
		r->domain = xstrdup(s->domain ? s->domain : "");
		r->orcpt = xstrdup_null(s->orcpt);
		r->last_reply = xstrdup_null(s->last_reply);
	}
	return env;
}

/* ---- index maintenance (writer thread, inside a write txn) ---- */

static int dom_key_make(const char *domain, const char *id, char *buf, MDB_val *k)
{
	size_t n = domain_key(domain, buf);

	buf[n] = '\0';
	memcpy(buf + n + 1, id, QUEUE_ID_LEN);
	k->mv_data = buf;
	k->mv_size = n + 1 + QUEUE_ID_LEN;
	return 0;
}

/* Is recipient i the first QUEUED one of its domain (case-insensitive)? */
static int rcpt_first_in_domain(const struct queue_envelope *env, size_t i)
{
	size_t j;

	for (j = 0; j < i; j++)
		if (env->rcpts[j].state == QUEUE_RCPT_QUEUED &&
		    strcasecmp(env->rcpts[j].domain, env->rcpts[i].domain) == 0)
			return 0;
	return 1;
}

static int count_adjust(struct queue *q, MDB_txn *txn, const char *domain,
    int64_t dmsgs, int64_t dbytes)
{
	char kbuf[QUEUE_DOMAIN_MAX + 1];
	unsigned char v[16];
	MDB_val k, d;
	uint64_t msgs = 0, bytes = 0;
	int rc;

	k.mv_data = kbuf;
	k.mv_size = domain_key(domain, kbuf);
	rc = mdb_get(txn, q->db_count, &k, &d);
	if (rc == 0 && d.mv_size == 16) {
		msgs = be64_get(d.mv_data);
		bytes = be64_get((const unsigned char *)d.mv_data + 8);
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		return rc;
	}
	/* Counters never go below zero, whatever happened before. */
	msgs = (dmsgs < 0 && (uint64_t)-dmsgs > msgs) ? 0 : msgs + dmsgs;
	bytes = (dbytes < 0 && (uint64_t)-dbytes > bytes) ? 0 : bytes + dbytes;
	if (msgs == 0) {
		rc = mdb_del(txn, q->db_count, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	be64_put(v, msgs);
	be64_put(v + 8, bytes);
	d.mv_data = v;
	d.mv_size = sizeof(v);
	return mdb_put(txn, q->db_count, &k, &d, 0);
}

#define TOTALS_N	4	/* messages, bytes, queued rcpts, on the retry index */

/* Whole-queue counters in meta "totals", so stats never scan. */
static int totals_adjust(struct queue *q, MDB_txn *txn, const int64_t *delta)
{
	MDB_val k = { 6, "totals" }, d;
	unsigned char v[8 * TOTALS_N];
	uint64_t cur[TOTALS_N] = { 0, 0, 0, 0 };
	int rc, i;

	rc = mdb_get(txn, q->db_meta, &k, &d);
	if (rc == 0 && d.mv_size == sizeof(v)) {
		for (i = 0; i < TOTALS_N; i++)
			cur[i] = be64_get((const unsigned char *)d.mv_data + 8 * i);
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		return rc;
	}
	for (i = 0; i < TOTALS_N; i++) {
		cur[i] = (delta[i] < 0 && (uint64_t)-delta[i] > cur[i]) ? 0 :
		    cur[i] + delta[i];
		be64_put(v + 8 * i, cur[i]);
	}
	d.mv_data = v;
	d.mv_size = sizeof(v);
	return mdb_put(txn, q->db_meta, &k, &d, 0);
}

/* env's share of the totals (times sign). */
static void totals_of(const struct queue_envelope *env, int sign, int64_t *delta)
{
	int64_t rcpts = 0, retry = 0;

	for (size_t i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED) {
			rcpts++;
			if (env->rcpts[i].next_attempt > 0)
				retry = 1;
		}
	delta[0] = rcpts > 0 ? sign : 0;
	delta[1] = rcpts > 0 ? sign * (int64_t)env->size : 0;
	delta[2] = sign * rcpts;
	delta[3] = sign * retry;
}

/* Add (sign 1) or remove (sign -1) every index entry and counter of env. */
static int index_env(struct queue *q, MDB_txn *txn,
    const struct queue_envelope *env, int sign)
{
	char kbuf[QUEUE_DOMAIN_MAX + 2 + QUEUE_ID_LEN];
	unsigned char skey[SCHED_KEY_LEN];
	MDB_val k, d = { 0, NULL };
	size_t i;
	int rc;

	/* quarantined: kept, but found only by id (list, release, delete) */
	if (env->flags & QUEUE_F_QUARANTINE)
		return 0;
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		if (r->state != QUEUE_RCPT_QUEUED)
			continue;
		if (rcpt_first_in_domain(env, i)) {
			dom_key_make(r->domain, env->id, kbuf, &k);
			if (sign > 0)
				rc = mdb_put(txn, q->db_dom, &k, &d, 0);
			else
				rc = mdb_del(txn, q->db_dom, &k, NULL);
			if (rc != 0 && rc != MDB_NOTFOUND)
				return rc;
			rc = count_adjust(q, txn, r->domain, sign,
			    sign * (int64_t)env->size);
			if (rc != 0)
				return rc;
		}
		if (r->next_attempt > 0) {
			be64_put(skey, (uint64_t)(int64_t)r->next_attempt);
			memcpy(skey + 8, env->id, QUEUE_ID_LEN);
			k.mv_data = skey;
			k.mv_size = sizeof(skey);
			if (sign > 0)
				rc = mdb_put(txn, q->db_sched, &k, &d, 0);
			else
				rc = mdb_del(txn, q->db_sched, &k, NULL);
			if (rc != 0 && rc != MDB_NOTFOUND)
				return rc;
		}
	}
	{
		int64_t delta[TOTALS_N];

		totals_of(env, sign, delta);
		if (delta[0] != 0 || delta[2] != 0)
			return totals_adjust(q, txn, delta);
	}
	return 0;
}

static void body_key(const char *id, uint32_t chunk, unsigned char *key)
{
	memcpy(key, id, QUEUE_ID_LEN);
	be32_put(key + QUEUE_ID_LEN, chunk);
}

static int body_put(struct queue *q, MDB_txn *txn, const char *id,
    uint32_t chunk, const void *data, size_t len)
{
	unsigned char key[BODY_KEY_LEN];
	MDB_val k = { sizeof(key), key }, d = { len, (void *)data };

	body_key(id, chunk, key);
	return mdb_put(txn, q->db_body, &k, &d, MDB_NOOVERWRITE);
}

static int body_delete(struct queue *q, MDB_txn *txn, const char *id)
{
	unsigned char key[BODY_KEY_LEN];
	MDB_cursor *c;
	MDB_val k, d;
	int rc;

	rc = mdb_cursor_open(txn, q->db_body, &c);
	if (rc != 0)
		return rc;
	body_key(id, 0, key);
	k.mv_data = key;
	k.mv_size = sizeof(key);
	rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size == BODY_KEY_LEN &&
	    memcmp(k.mv_data, id, QUEUE_ID_LEN) == 0) {
		rc = mdb_cursor_del(c, 0);
		if (rc != 0)
			break;
		rc = mdb_cursor_get(c, &k, &d, MDB_GET_CURRENT);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND || rc == EINVAL ? 0 : rc;
}

static int marker_set(struct queue *q, MDB_txn *txn, const char *id, int on)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)id }, d = { 0, NULL };
	int rc;

	if (on)
		return mdb_put(txn, q->db_incomplete, &k, &d, 0);
	rc = mdb_del(txn, q->db_incomplete, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Store a whole new message: record, indexes, counters. */
static int msg_store(struct queue *q, MDB_txn *txn,
    const struct queue_envelope *env, int overwrite)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)env->id }, d;
	uint32_t nchunks = (uint32_t)((env->size + QUEUE_CHUNK_SIZE - 1) / QUEUE_CHUNK_SIZE);
	int rc;

	d.mv_data = queue_record_encode(env, nchunks, &d.mv_size);
	rc = mdb_put(txn, q->db_msg, &k, &d, overwrite ? 0 : MDB_NOOVERWRITE);
	free(d.mv_data);
	if (rc != 0)
		return rc;
	return index_env(q, txn, env, 1);
}

/* Load and decode a message inside txn: 0, an LMDB code, or QUEUE_EIO. */
static int msg_load(struct queue *q, MDB_txn *txn, const char *id,
    struct queue_envelope **env_r, uint32_t *nchunks_r)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)id }, d;
	int rc;

	*env_r = NULL;
	rc = mdb_get(txn, q->db_msg, &k, &d);
	if (rc != 0)
		return rc;
	if (queue_record_decode(id, d.mv_data, d.mv_size, env_r, nchunks_r) != QUEUE_OK) {
		log_error("%.16s: corrupt queue record", id);
		return QUEUE_EIO;
	}
	return 0;
}

static int msg_remove(struct queue *q, MDB_txn *txn, const struct queue_envelope *env)
{
	MDB_val k = { QUEUE_ID_LEN, (void *)env->id };
	int rc;

	rc = index_env(q, txn, env, -1);
	if (rc == 0)
		rc = mdb_del(txn, q->db_msg, &k, NULL);
	if (rc == 0)
		rc = body_delete(q, txn, env->id);
	if (rc == 0) {
		rc = mdb_del(txn, q->db_lease, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	return rc;
}

/* ---- job application (writer thread) ---- */

/* Returns an LMDB code, or one of the negative QUEUE_E* codes as such. */
/*
 * New mail may fill the map only up to QUEUE_MAP_RESERVE_PCT: the rest is
 * kept for recording deliveries and deletions, so a full queue can always
 * drain (a delivery whose result could not be written would be sent
 * again). Pages in use are counted per database; free pages do not count.
 */
#define QUEUE_MAP_RESERVE_PCT	90

/* Bytes in pages in use, every database counted; free pages not. */
static uint64_t map_used_bytes(struct queue *q, MDB_txn *txn)
{
	MDB_dbi dbis[] = { 0, 1, q->db_meta, q->db_msg, q->db_body, q->db_dom,
	    q->db_sched, q->db_count, q->db_lease, q->db_incomplete };
	MDB_stat st;
	uint64_t pages = 0, psize = 4096;

	for (size_t i = 0; i < sizeof(dbis) / sizeof(dbis[0]); i++) {
		if (mdb_stat(txn, dbis[i], &st) != 0)
			continue;
		psize = st.ms_psize;
		pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
	}
	return pages * psize;
}

static int map_has_room(struct queue *q, MDB_txn *txn, uint64_t need)
{
	MDB_envinfo info;

	if (mdb_env_info(q->env, &info) != 0)
		return 1;
	return map_used_bytes(q, txn) + need <=
	    (uint64_t)info.me_mapsize / 100 * QUEUE_MAP_RESERVE_PCT;
}

/*
 * The file system: LMDB needs new pages even to delete, so the data file
 * is kept allocated QUEUE_PREALLOC beyond its last used page (fallocate).
 * Recording a delivery writes into that space and never needs the file
 * system; new mail is refused while the file system has less than
 * min_free left after it, or while the preallocation could not be kept.
 */
static uint64_t queue_prealloc_bytes(const struct queue *q)
{
	uint64_t b = q->map_size / 64;

	if (b < 1024 * 1024)
		b = 1024 * 1024;
	return b > 16 * 1024 * 1024 ? 16 * 1024 * 1024 : b;
}

/*
 * Writer thread (or the opener): keep at least the reserve free inside
 * the data file. Free pages left by deliveries count (LMDB reuses them
 * for the pages a delete needs); what is missing is allocated at the end.
 */
static void queue_prealloc(struct queue *q)
{
	MDB_envinfo info;
	MDB_txn *txn;
	struct stat sb;
	uint64_t want, used;
	int fd, rc;

	if (q->rdonly || mdb_env_info(q->env, &info) != 0 ||
	    mdb_env_get_fd(q->env, &fd) != 0 || fstat(fd, &sb) < 0 ||
	    mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return;
	used = map_used_bytes(q, txn);
	mdb_txn_abort(txn);
	want = used + queue_prealloc_bytes(q);
	if (want > (uint64_t)info.me_mapsize)
		want = (uint64_t)info.me_mapsize;
	if ((uint64_t)sb.st_size >= want) {
		if (__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
			log_info("queue: reserve restored, accepting mail again");
		__atomic_store_n(&q->space_low, 0, __ATOMIC_RELAXED);
		return;
	}
	rc = posix_fallocate(fd, sb.st_size, (off_t)(want - (uint64_t)sb.st_size));
	if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
		if (!__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
			log_warn("queue: cannot keep %llu bytes in reserve (%s): "
			    "refusing new mail", (unsigned long long)
			    queue_prealloc_bytes(q), strerror(rc));
		__atomic_store_n(&q->space_low, 1, __ATOMIC_RELAXED);
		return;
	}
	if (__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
		log_info("queue: reserve restored, accepting mail again");
	__atomic_store_n(&q->space_low, 0, __ATOMIC_RELAXED);
}

/* Free bytes on the queue's file system for unprivileged use. */
static uint64_t queue_fs_avail(const struct queue *q)
{
	struct statvfs vfs;

	if (q->dir == NULL || statvfs(q->dir, &vfs) < 0)
		return UINT64_MAX;
	return (uint64_t)vfs.f_bavail * vfs.f_frsize;
}

/*
 * Room for `need` octets of new mail: free pages inside the data file
 * (what a drain left) count as well as the file system's free space; the
 * reserve and queue_min_free must remain after it.
 */
static int fs_has_room(struct queue *q, MDB_txn *txn, uint64_t need)
{
	uint64_t avail = queue_fs_avail(q), used = map_used_bytes(q, txn);
	struct stat sb;
	int fd;

	if (__atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
		return 0;
	if (avail == UINT64_MAX)
		return 1;
	if (mdb_env_get_fd(q->env, &fd) == 0 && fstat(fd, &sb) == 0 &&
	    (uint64_t)sb.st_size > used)
		avail += (uint64_t)sb.st_size - used;
	/* LMDB stores a body in whole pages plus its indexes: some slack. */
	need += need / 8 + 16384 + queue_prealloc_bytes(q);
	return avail >= need + q->min_free;
}

static int job_commit(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env = j->env;
	size_t i, k;
	int rc;

	if (j->put->wr_failed)
		return j->put->wr_failed;
	if (!map_has_room(q, txn, env->size) || !fs_has_room(q, txn, env->size))
		return QUEUE_EFULL;
	if (j->len > 0) {
		rc = body_put(q, txn, env->id, j->chunkno, j->data, j->len);
		if (rc != 0)
			return rc;
	}
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		struct queue_domain_stats st = { 0, 0 };
		char kbuf[QUEUE_DOMAIN_MAX + 1];
		MDB_val key, d;

		if (r->state != QUEUE_RCPT_QUEUED || !rcpt_first_in_domain(env, i))
			continue;
		for (k = 0; k < j->nquotas; k++)
			if (strcasecmp(j->quotas[k].domain, r->domain) == 0)
				break;
		if (k == j->nquotas || j->quotas[k].max == 0)
			continue;
		key.mv_data = kbuf;
		key.mv_size = domain_key(r->domain, kbuf);
		rc = mdb_get(txn, q->db_count, &key, &d);
		if (rc == 0 && d.mv_size == 16)
			st.bytes = be64_get((const unsigned char *)d.mv_data + 8);
		else if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
		if (st.bytes + env->size > j->quotas[k].max)
			return QUEUE_EQUOTA;
	}
	rc = msg_store(q, txn, env, 0);
	if (rc == 0)
		rc = marker_set(q, txn, env->id, 0);
	return rc;
}

static int job_update(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env, *bounce = j->bounce;
	uint32_t nchunks;
	size_t i, queued = 0, applied = 0;
	int rc;

	rc = msg_load(q, txn, j->id, &env, &nchunks);
	if (rc != 0)
		return rc;
	rc = index_env(q, txn, env, -1);
	for (i = 0; rc == 0 && i < j->nupdates; i++) {
		const struct queue_rcpt_update *u = &j->updates[i];
		struct queue_rcpt *r;
		int attempt;

		if (u->index >= env->nrcpts) {
			log_error("%s: update of recipient %zu of %zu ignored",
			    env->id, u->index, env->nrcpts);
			continue;
		}
		r = &env->rcpts[u->index];
		/* Settled meanwhile (an expiry, an administrator): an update
		 * made from an older snapshot must not revive it. */
		if (r->state != QUEUE_RCPT_QUEUED) {
			log_debug("%s: recipient %zu already settled, update ignored",
			    env->id, u->index);
			continue;
		}
		/* Warned meanwhile: a second notice from an older snapshot. */
		if (u->state == QUEUE_RCPT_QUEUED && u->delay_warned &&
		    r->delay_warned)
			continue;
		applied++;
		/* Newly setting the delay flag is bookkeeping, not an attempt. */
		attempt = !(u->state == QUEUE_RCPT_QUEUED && u->delay_warned &&
		    !r->delay_warned);
		r->state = u->state;
		if (u->reply != NULL) {
			free(r->last_reply);
			r->last_reply = xstrdup(u->reply);
		}
		r->next_attempt = u->state == QUEUE_RCPT_QUEUED ? u->next_attempt : 0;
		if (u->delay_warned)
			r->delay_warned = 1;
		if (attempt) {
			r->attempts++;
			r->last_attempt = time(NULL);
		}
	}
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED)
			queued++;
	if (rc == 0) {
		if (queued == 0) {
			MDB_val k = { QUEUE_ID_LEN, env->id };

			rc = mdb_del(txn, q->db_msg, &k, NULL);
			if (rc == 0)
				rc = body_delete(q, txn, env->id);
			if (rc == 0) {
				rc = mdb_del(txn, q->db_lease, &k, NULL);
				if (rc == MDB_NOTFOUND)
					rc = 0;
			}
		} else {
			rc = msg_store(q, txn, env, 1);
		}
	}
	/* No notice about recipients that were settled already. */
	if (rc == 0 && bounce != NULL && (applied > 0 || j->nupdates == 0)) {
		for (i = 0; rc == 0 && (uint64_t)i * QUEUE_CHUNK_SIZE < bounce->size; i++) {
			size_t off = i * (size_t)QUEUE_CHUNK_SIZE;
			size_t n = bounce->size - off;

			if (n > QUEUE_CHUNK_SIZE)
				n = QUEUE_CHUNK_SIZE;
			rc = body_put(q, txn, bounce->id, (uint32_t)i, j->data + off, n);
		}
		if (rc == 0)
			rc = msg_store(q, txn, bounce, 0);
	}
	queue_envelope_free(&env);
	return rc;
}

static int job_delete(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env;
	int rc;

	rc = msg_load(q, txn, j->id, &env, NULL);
	if (rc == QUEUE_EIO) {
		/* Corrupt: remove what we can without its indexes. */
		MDB_val k = { QUEUE_ID_LEN, j->id };

		rc = mdb_del(txn, q->db_msg, &k, NULL);
		if (rc == 0)
			rc = body_delete(q, txn, j->id);
		return rc;
	}
	if (rc != 0)
		return rc;
	rc = msg_remove(q, txn, env);
	queue_envelope_free(&env);
	return rc;
}

static int job_release(struct queue *q, MDB_txn *txn, struct job *j)
{
	struct queue_envelope *env;
	time_t now = time(NULL);
	size_t i;
	int rc;

	rc = msg_load(q, txn, j->id, &env, NULL);
	if (rc == MDB_NOTFOUND)
		return QUEUE_ENOTFOUND;
	if (rc != 0)
		return rc;
	if (!(env->flags & QUEUE_F_QUARANTINE)) {
		queue_envelope_free(&env);
		return QUEUE_ENOTFOUND;
	}
	env->flags &= ~(unsigned)QUEUE_F_QUARANTINE;
	/* non-held recipients are due now; held ones wait for their turn */
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].next_attempt > 0)
			env->rcpts[i].next_attempt = now;
	rc = msg_store(q, txn, env, 1);
	queue_envelope_free(&env);
	return rc;
}

static int job_apply(struct queue *q, MDB_txn *txn, struct job *j)
{
	MDB_val k = { QUEUE_ID_LEN, j->id }, d;
	int rc;

	switch (j->type) {
	case JOB_CHUNK:
		if (j->put->wr_failed)
			return j->put->wr_failed;
		rc = body_put(q, txn, j->id, j->chunkno, j->data, j->len);
		if (rc == 0 && j->chunkno == 0)
			rc = marker_set(q, txn, j->id, 1);
		return rc;
	case JOB_COMMIT:
		return job_commit(q, txn, j);
	case JOB_ABORT:
		rc = body_delete(q, txn, j->id);
		if (rc == 0)
			rc = marker_set(q, txn, j->id, 0);
		return rc;
	case JOB_UPDATE:
		return job_update(q, txn, j);
	case JOB_DELETE:
		return job_delete(q, txn, j);
	case JOB_RELEASE:
		return job_release(q, txn, j);
	case JOB_LEASE:
		d.mv_data = j->owner;
		d.mv_size = strlen(j->owner);
		return mdb_put(txn, q->db_lease, &k, &d, 0);
	case JOB_UNLEASE:
		rc = mdb_del(txn, q->db_lease, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	case JOB_BARRIER:
	case JOB_COMPACT:	/* never in a batch: see writer_main */
		return 0;
	case JOB_EXT:
		return j->ext_apply(txn, j->ext_arg);
	}
	return EINVAL;
}

/* Map a job's raw return (LMDB code or QUEUE_E*) to a QUEUE_* result. */
static int job_result(int rc)
{
	if (rc == QUEUE_EQUOTA || rc == QUEUE_EIO || rc == QUEUE_EFULL ||
	    rc == QUEUE_ENOTFOUND || rc == QUEUE_EBUSY)
		return rc;
	return queue_code(rc);
}

/*
 * Chunk and lease writes need no durability of their own: the commit that
 * makes a message visible syncs everything. MDB_NOMETASYNC (not NOSYNC)
 * keeps the database intact across a power failure.
 */
static void writer_set_sync(struct queue *q, struct job *list)
{
	struct job *j;
	int light = 1;

	for (j = list; j != NULL; j = j->next)
		if (j->type != JOB_CHUNK && j->type != JOB_LEASE &&
		    j->type != JOB_UNLEASE && j->type != JOB_EXT)
			light = 0;
	if (light != q->nosync_mode) {
		mdb_env_set_flags(q->env, MDB_NOMETASYNC, light);
		q->nosync_mode = light;
	}
}

static int txn_run(struct queue *q, struct job *list, int single, struct job **failed_r)
{
	MDB_txn *txn;
	struct job *j;
	int rc;

	*failed_r = NULL;
	rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc != 0)
		return rc;
	for (j = list; j != NULL; j = j->next) {
		rc = job_apply(q, txn, j);
		if (rc != 0) {
			*failed_r = j;
			mdb_txn_abort(txn);
			return rc;
		}
		if (single)
			break;
	}
	return mdb_txn_commit(txn);
}

/* A put whose commit failed: its chunks must not stay behind. */
static void writer_cleanup_put(struct queue *q, const char *id)
{
	MDB_txn *txn;
	int rc;

	if (mdb_txn_begin(q->env, NULL, 0, &txn) != 0)
		return;
	{
		/* An id that collided with a queued message (a clock stepped
		 * back across a restart) must not take that message's body. */
		MDB_val k = { QUEUE_ID_LEN, (void *)id }, d;

		rc = mdb_get(txn, q->db_msg, &k, &d) == 0 ? 0 :
		    body_delete(q, txn, id);
	}
	if (rc == 0)
		rc = marker_set(q, txn, id, 0);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc != 0)
		log_warn("%s: chunks left for recovery at next start: %s", id,
		    mdb_strerror(rc));
}

/* Run a batch: one transaction, or one per job after a failure. */
static void writer_run_batch(struct queue *q, struct job *list)
{
	struct job *j, *failed;
	int rc, single;

	writer_set_sync(q, list);
	rc = txn_run(q, list, 0, &failed);
	if (rc == 0) {
		for (j = list; j != NULL; j = j->next)
			j->result = QUEUE_OK;
		return;
	}
	single = list->next == NULL;
	if (!single)
		log_debug("queue: batch failed (%s), retrying one by one",
		    rc < 0 && rc > -10 ? queue_strerror(rc) : mdb_strerror(rc));
	for (j = list; j != NULL; j = j->next) {
		struct job *save = j->next;

		j->next = NULL;
		if ((j->type == JOB_CHUNK || j->type == JOB_COMMIT) &&
		    j->put->wr_failed) {
			/* An earlier chunk already failed and was logged. */
			rc = j->put->wr_failed;
		} else {
			if (!single) {
				writer_set_sync(q, j);
				rc = txn_run(q, j, 1, &failed);
			}
			if (rc != 0 && rc != QUEUE_EQUOTA && rc != MDB_NOTFOUND)
				log_error("queue: %s write failed: %s", j->id,
				    rc < 0 && rc > -10 ? queue_strerror(rc) : mdb_strerror(rc));
		}
		j->next = save;
		j->result = job_result(rc);
		if (rc == 0)
			continue;
		if (j->type == JOB_CHUNK || j->type == JOB_COMMIT) {
			if (!j->put->wr_failed)
				j->put->wr_failed = j->result;
			if (j->type == JOB_COMMIT)
				writer_cleanup_put(q, j->id);
		}
	}
}

static int writer_compact(struct queue *q, struct job *j);

static void *writer_main(void *arg)
{
	struct queue *q = arg;
	struct job *list, *tail, *compact, *j, *prev;

	for (;;) {
		pthread_mutex_lock(&q->mu);
		while ((q->pending == NULL || q->test_hold) && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		/* Take the jobs up to a compaction: the ones after it must
		 * be written into the compacted file. */
		list = q->pending;
		compact = NULL;
		for (prev = NULL, j = list; j != NULL && j->type != JOB_COMPACT;
		    prev = j, j = j->next)
			;
		if (j != NULL) {
			compact = j;
			q->pending = j->next;
			if (q->pending == NULL)
				q->pending_tail = NULL;
			j->next = NULL;
			if (prev != NULL)
				prev->next = NULL;
			else
				list = NULL;
		} else {
			q->pending = q->pending_tail = NULL;
		}
		pthread_mutex_unlock(&q->mu);
		if (list == NULL && compact == NULL)
			break;		/* stopping and drained */
		if (list != NULL) {
			writer_run_batch(q, list);
			queue_prealloc(q);
		}
		if (compact != NULL)
			compact->result = writer_compact(q, compact);
		if (list != NULL) {
			for (tail = list; tail->next != NULL; tail = tail->next)
				;
			tail->next = compact;
		} else {
			list = compact;
		}
		for (tail = list; tail->next != NULL; tail = tail->next)
			;
		pthread_mutex_lock(&q->mu);
		if (compact != NULL && compact->result == QUEUE_OK)
			q->swap_wait = 1;
		if (q->finished_tail != NULL)
			q->finished_tail->next = list;
		else
			q->finished = list;
		q->finished_tail = tail;
		event_active(q->done_ev, EV_READ, 0);
		/* The loop swaps the files; nothing is written meanwhile. */
		while (q->swap_wait && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->swap_wait) {
			/* Closing before the swap: keep the old file. */
			q->swap_wait = 0;
			compact->result = QUEUE_EIO;
		}
		pthread_mutex_unlock(&q->mu);
	}
	return NULL;
}

/* Loop thread: run the completions the writer handed back. */
static void queue_drain_finished(struct queue *q)
{
	struct job *list, *j;

	pthread_mutex_lock(&q->mu);
	list = q->finished;
	q->finished = q->finished_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while ((j = list) != NULL) {
		list = j->next;
		j->next = NULL;
		queue_complete(q, j);
	}
}

static void queue_done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	queue_drain_finished(arg);
}

static void queue_submit(struct queue *q, struct job *j)
{
	j->next = NULL;
	if (q->rdonly) {
		j->result = QUEUE_EIO;
		queue_complete(q, j);
		return;
	}
	if (!q->writer_started) {
		/* No loop: the caller's thread is the writer. */
		writer_run_batch(q, j);
		queue_prealloc(q);
		queue_complete(q, j);
		return;
	}
	pthread_mutex_lock(&q->mu);
	if (q->pending_tail != NULL)
		q->pending_tail->next = j;
	else
		q->pending = j;
	q->pending_tail = j;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

/* ---- puts ---- */

static void put_free(struct queue_put *p)
{
	free(p->buf);
	free(p);
}

static void put_maybe_free(struct queue_put *p)
{
	if (p->abandoned && p->refs == 0)
		put_free(p);
}

/* Tell the hook which domains just got mail (each once, lower case). */
static void queue_announce(struct queue *q, const struct queue_envelope *env)
{
	char dom[QUEUE_DOMAIN_MAX + 1];

	if (q->arrival == NULL || env == NULL)
		return;
	for (size_t i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i].state != QUEUE_RCPT_QUEUED ||
		    env->rcpts[i].domain == NULL || !rcpt_first_in_domain(env, i))
			continue;
		domain_key(env->rcpts[i].domain, dom);
		q->arrival(q->arrival_arg, dom);
	}
}

void queue_set_arrival_hook(struct queue *q, queue_arrival_fn *fn, void *arg)
{
	q->arrival = fn;
	q->arrival_arg = arg;
}

static void queue_complete(struct queue *q, struct job *j)
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
		put_maybe_free(p);
		break;
	case JOB_ABORT:
		p->refs--;
		put_maybe_free(p);
		break;
	case JOB_COMMIT:
		p->refs--;
		if (!p->abandoned && j->done != NULL)
			j->done(j->arg, j->result);
		p->abandoned = 1;
		put_maybe_free(p);
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
		if (j->done != NULL)
			j->done(j->arg, j->result);
		break;
	default:
		if (j->done != NULL)
			j->done(j->arg, j->result);
		break;
	}
	job_free(j);
}

static void job_free(struct job *j)
{
	size_t i;

	free(j->data);
	queue_envelope_free(&j->env);
	queue_envelope_free(&j->bounce);
	for (i = 0; i < j->nquotas; i++)
		free(j->quotas[i].domain);
	free(j->quotas);
	for (i = 0; i < j->nupdates; i++)
		free((char *)j->updates[i].reply);
	free(j->updates);
	free(j->owner);
	if (j->ext_free != NULL)
		j->ext_free(j->ext_arg);
	free(j);
}

static struct job *job_new(enum job_type type, const char *id)
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

static void put_send_chunk(struct queue_put *p)
{
	struct job *j = job_new(JOB_CHUNK, p->id);

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
			put_send_chunk(p);
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

	j = job_new(JOB_COMMIT, p->id);
	j->put = p;
	j->done = done;
	j->arg = arg;
	p->committed = 1;
	p->paused = 0;
	/*
	 * Even after a failed chunk the commit goes to the writer: it fails
	 * there (wr_failed) and removes the chunks that did get written.
	 */
	j->env = envelope_copy(env);
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
		    q->quotas[k].max == 0 || !rcpt_first_in_domain(env, i))
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
		put_maybe_free(p);
		return;
	}
	j = job_new(JOB_ABORT, p->id);
	j->put = p;
	p->refs++;
	queue_submit(p->q, j);
}

/* ---- updates, deletes ---- */

/* A job on message id with its completion, or NULL (done already called
 * with QUEUE_ENOTFOUND) when the id is malformed. */
static struct job *job_for_id(enum job_type type, const char *id, queue_done_fn *done,
    void *arg)
{
	struct job *j;

	if (!queue_id_valid(id)) {
		if (done != NULL)
			done(arg, QUEUE_ENOTFOUND);
		return NULL;
	}
	j = job_new(type, id);
	j->done = done;
	j->arg = arg;
	return j;
}

void queue_update(struct queue *q, const char *id,
    const struct queue_rcpt_update *updates, size_t nupdates,
    const struct queue_envelope *bounce, const void *bounce_body,
    size_t bounce_len, queue_done_fn *done, void *arg)
{
	struct job *j = job_for_id(JOB_UPDATE, id, done, arg);
	size_t i;

	if (j == NULL)
		return;
	if (nupdates > 0) {
		j->updates = xcalloc(nupdates, sizeof(*j->updates));
		j->nupdates = nupdates;
		for (i = 0; i < nupdates; i++) {
			j->updates[i] = updates[i];
			j->updates[i].reply = xstrdup_null(updates[i].reply);
		}
	}
	if (bounce != NULL) {
		j->bounce = envelope_copy(bounce);
		queue_new_id(q, j->bounce->id);
		j->bounce->size = bounce_len;
		if (bounce_len > 0) {
			j->data = xmalloc(bounce_len);
			memcpy(j->data, bounce_body, bounce_len);
		}
		log_debug("%s: bounce %s queued with update", id, j->bounce->id);
	}
	queue_submit(q, j);
}

void queue_delete(struct queue *q, const char *id, queue_done_fn *done,
    void *arg)
{
	struct job *j = job_for_id(JOB_DELETE, id, done, arg);

	if (j != NULL)
		queue_submit(q, j);
}

void queue_release(struct queue *q, const char *id, queue_done_fn *done,
    void *arg)
{
	struct job *j = job_for_id(JOB_RELEASE, id, done, arg);

	if (j != NULL)
		queue_submit(q, j);
}

void queue_barrier(struct queue *q, queue_done_fn *done, void *arg)
{
	queue_submit(q, job_for_id(JOB_BARRIER, "0000000000000000", done, arg));
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

static size_t lease_find(struct queue *q, const char *id, int *found)
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
	i = lease_find(q, id, &found);
	if (found)
		return QUEUE_EBUSY;
	q->leases = xreallocarray(q->leases, q->nleases + 1, sizeof(*q->leases));
	memmove(&q->leases[i + 1], &q->leases[i], (q->nleases - i) * sizeof(*q->leases));
	memcpy(q->leases[i].id, id, sizeof(q->leases[i].id));
	q->leases[i].owner = xstrdup(owner ? owner : "");
	q->nleases++;
	j = job_new(JOB_LEASE, id);
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
	i = lease_find(q, id, &found);
	if (!found)
		return;
	free(q->leases[i].owner);
	memmove(&q->leases[i], &q->leases[i + 1], (q->nleases - i - 1) * sizeof(*q->leases));
	q->nleases--;
	queue_submit(q, job_new(JOB_UNLEASE, id));
}

int queue_is_leased(struct queue *q, const char *id)
{
	MDB_txn *txn;
	MDB_val k, d;
	int found, rc;

	if (!queue_id_valid(id))
		return 0;
	if (!q->rdonly) {
		lease_find(q, id, &found);
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

/* ---- reading ---- */

int queue_get(struct queue *q, const char *id, struct queue_envelope **env_r)
{
	MDB_txn *txn;
	int rc;

	*env_r = NULL;
	if (!queue_id_valid(id))
		return 0;
	rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return QUEUE_EIO;
	rc = msg_load(q, txn, id, env_r, NULL);
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return QUEUE_EIO;
	return 1;
}

/*
 * Scans read a batch of keys in a short read transaction and run the
 * callbacks outside it, so a callback may write, and no reader pins old
 * pages for long.
 */
int queue_foreach(struct queue *q,
    int (*cb)(void *arg, const struct queue_envelope *env), void *arg)
{
	struct queue_envelope *batch[QUEUE_SCAN_BATCH];
	char last[QUEUE_ID_LEN + 1] = "";
	int result = QUEUE_OK, stop = 0, end = 0;

	while (!stop && !end) {
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, d;
		size_t n = 0, i;
		int rc;

		if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
			return QUEUE_EIO;
		if (mdb_cursor_open(txn, q->db_msg, &c) != 0) {
			mdb_txn_abort(txn);
			return QUEUE_EIO;
		}
		if (last[0] == '\0') {
			rc = mdb_cursor_get(c, &k, &d, MDB_FIRST);
		} else {
			k.mv_data = last;
			k.mv_size = QUEUE_ID_LEN;
			rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
			if (rc == 0 && k.mv_size == QUEUE_ID_LEN &&
			    memcmp(k.mv_data, last, QUEUE_ID_LEN) == 0)
				rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
		}
		while (rc == 0 && n < QUEUE_SCAN_BATCH) {
			char id[QUEUE_ID_LEN + 1];

			if (k.mv_size == QUEUE_ID_LEN) {
				memcpy(id, k.mv_data, QUEUE_ID_LEN);
				id[QUEUE_ID_LEN] = '\0';
				memcpy(last, id, sizeof(last));
				if (queue_record_decode(id, d.mv_data, d.mv_size,
				    &batch[n], NULL) == QUEUE_OK) {
					n++;
				} else {
					log_error("%s: corrupt queue record skipped", id);
					result = QUEUE_EIO;
				}
			}
			rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
		}
		mdb_cursor_close(c);
		mdb_txn_abort(txn);
		if (rc != 0 && rc != MDB_NOTFOUND)
			result = QUEUE_EIO;
		if (rc != 0)
			end = 1;
		for (i = 0; i < n; i++) {
			if (!stop && cb(arg, batch[i]) != 0)
				stop = 1;
			queue_envelope_free(&batch[i]);
		}
	}
	return result;
}

struct idlist {
	char (*v)[QUEUE_ID_LEN + 1];
	size_t n, cap;
};

static void idlist_add(struct idlist *l, const void *id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xreallocarray(l->v, l->cap, sizeof(*l->v));
	}
	memcpy(l->v[l->n], id, QUEUE_ID_LEN);
	l->v[l->n][QUEUE_ID_LEN] = '\0';
	l->n++;
}

int queue_foreach_domain(struct queue *q, const char *domain,
    int (*cb)(void *arg, const char *id), void *arg)
{
	char prefix[QUEUE_DOMAIN_MAX + 2 + QUEUE_ID_LEN];
	char start[sizeof(prefix)];
	size_t plen = domain_key(domain, prefix) + 1, slen = plen;
	struct idlist l = { NULL, 0, 0 };
	int stop = 0, result = QUEUE_OK;

	memcpy(start, prefix, plen);
	while (!stop) {
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, d;
		size_t i;
		int rc;

		l.n = 0;
		if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0) {
			result = QUEUE_EIO;
			break;
		}
		if (mdb_cursor_open(txn, q->db_dom, &c) != 0) {
			mdb_txn_abort(txn);
			result = QUEUE_EIO;
			break;
		}
		k.mv_data = start;
		k.mv_size = slen;
		rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
		if (rc == 0 && slen > plen && k.mv_size == slen &&
		    memcmp(k.mv_data, start, slen) == 0)
			rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
		while (rc == 0 && l.n < QUEUE_SCAN_BATCH) {
			if (k.mv_size != plen + QUEUE_ID_LEN ||
			    memcmp(k.mv_data, prefix, plen) != 0) {
				rc = MDB_NOTFOUND;
				break;
			}
			idlist_add(&l, (const char *)k.mv_data + plen);
			rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
		}
		mdb_cursor_close(c);
		mdb_txn_abort(txn);
		if (rc != 0 && rc != MDB_NOTFOUND)
			result = QUEUE_EIO;
		if (rc != 0)
			stop = 1;
		if (l.n > 0) {
			memcpy(start + plen, l.v[l.n - 1], QUEUE_ID_LEN);
			slen = plen + QUEUE_ID_LEN;
		}
		for (i = 0; i < l.n; i++)
			if (cb(arg, l.v[i]) != 0) {
				stop = 1;
				break;
			}
	}
	free(l.v);
	return result;
}

static int due_cmp(const void *a, const void *b, void *arg)
{
	const char (*ids)[QUEUE_ID_LEN + 1] = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int c = strcmp(ids[x], ids[y]);

	if (c != 0)
		return c;
	return x < y ? -1 : x > y;
}

int queue_foreach_due(struct queue *q, time_t now,
    int (*cb)(void *arg, const char *id), void *arg)
{
	struct idlist l = { NULL, 0, 0 };
	unsigned char *dup;
	size_t *ord, i;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, d;
	int rc, result = QUEUE_OK;

	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	if (mdb_cursor_open(txn, q->db_sched, &c) != 0) {
		mdb_txn_abort(txn);
		return QUEUE_EIO;
	}
	/* Keys only (16+8 bytes each), the earliest QUEUE_DUE_MAX: a long
	 * backlog is taken over several calls, never in one loop turn. */
	rc = mdb_cursor_get(c, &k, &d, MDB_FIRST);
	while (rc == 0 && l.n < QUEUE_DUE_MAX) {
		if (k.mv_size == SCHED_KEY_LEN) {
			if ((int64_t)be64_get(k.mv_data) > (int64_t)now)
				break;
			idlist_add(&l, (const unsigned char *)k.mv_data + 8);
		}
		rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		result = QUEUE_EIO;
	if (l.n == 0) {
		free(l.v);
		return result;
	}
	/* One call per id, in due order: mark the later duplicates. */
	ord = xcalloc(l.n, sizeof(*ord));
	dup = xcalloc(l.n, 1);
	for (i = 0; i < l.n; i++)
		ord[i] = i;
	qsort_r(ord, l.n, sizeof(*ord), due_cmp, l.v);
	for (i = 1; i < l.n; i++)
		if (strcmp(l.v[ord[i]], l.v[ord[i - 1]]) == 0)
			dup[ord[i]] = 1;
	for (i = 0; i < l.n; i++)
		if (!dup[i] && cb(arg, l.v[i]) != 0)
			break;
	free(ord);
	free(dup);
	free(l.v);
	return result;
}

int queue_domain_stats(struct queue *q, const char *domain,
    struct queue_domain_stats *st_r)
{
	char kbuf[QUEUE_DOMAIN_MAX + 1];
	MDB_txn *txn;
	MDB_val k, d;
	int rc;

	memset(st_r, 0, sizeof(*st_r));
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	k.mv_data = kbuf;
	k.mv_size = domain_key(domain, kbuf);
	rc = mdb_get(txn, q->db_count, &k, &d);
	if (rc == 0 && d.mv_size == 16) {
		st_r->messages = be64_get(d.mv_data);
		st_r->bytes = be64_get((const unsigned char *)d.mv_data + 8);
	}
	mdb_txn_abort(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return QUEUE_EIO;
	return QUEUE_OK;
}

/* Ids are time-ordered, so the first "domain\0ID" key is the oldest
 * message (to the second; a clock stepped back may misorder a few). */
int queue_domain_oldest(struct queue *q, const char *domain, time_t *arrival_r)
{
	char kbuf[QUEUE_DOMAIN_MAX + 2];
	struct queue_envelope *env = NULL;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, d;
	size_t plen;
	int rc;

	*arrival_r = 0;
	plen = domain_key(domain, kbuf);
	kbuf[plen++] = '\0';
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	if (mdb_cursor_open(txn, q->db_dom, &c) != 0) {
		mdb_txn_abort(txn);
		return QUEUE_EIO;
	}
	k.mv_data = kbuf;
	k.mv_size = plen;
	rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
	if (rc == 0 && k.mv_size == plen + QUEUE_ID_LEN &&
	    memcmp(k.mv_data, kbuf, plen) == 0) {
		char id[QUEUE_ID_LEN + 1];

		memcpy(id, (const char *)k.mv_data + plen, QUEUE_ID_LEN);
		id[QUEUE_ID_LEN] = '\0';
		rc = msg_load(q, txn, id, &env, NULL);
		if (rc == 0) {
			*arrival_r = env->arrival;
			queue_envelope_free(&env);
		}
	} else if (rc == 0)
		rc = MDB_NOTFOUND;
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return rc == 0 || rc == MDB_NOTFOUND ? QUEUE_OK : QUEUE_EIO;
}

/* ---- body reader ---- */

int queue_body_open(struct queue *q, const char *id, struct queue_body **b_r)
{
	struct queue_envelope *env;
	struct queue_body *b;
	uint32_t nchunks;
	MDB_txn *txn;
	int rc;

	*b_r = NULL;
	if (!queue_id_valid(id))
		return QUEUE_ENOTFOUND;
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	rc = msg_load(q, txn, id, &env, &nchunks);
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return QUEUE_ENOTFOUND;
	if (rc != 0)
		return QUEUE_EIO;
	queue_envelope_free(&env);
	b = xcalloc(1, sizeof(*b));
	b->q = q;
	memcpy(b->id, id, QUEUE_ID_LEN);
	b->nchunks = nchunks;
	*b_r = b;
	return QUEUE_OK;
}

/*
 * Each chunk is copied out of its own short read transaction: a body is
 * read at network speed, and a long reader would pin pages.
 */
int queue_body_read(struct queue_body *b, const unsigned char **data_r,
    size_t *len_r)
{
	unsigned char key[BODY_KEY_LEN];
	MDB_val k = { sizeof(key), key }, d;
	MDB_txn *txn;
	int rc;

	*data_r = NULL;
	*len_r = 0;
	if (b->next >= b->nchunks)
		return 0;
	body_key(b->id, b->next, key);
	if (mdb_txn_begin(b->q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	rc = mdb_get(txn, b->q->db_body, &k, &d);
	if (rc == 0 && (d.mv_size > QUEUE_CHUNK_SIZE || d.mv_size == 0))
		rc = -1;
	if (rc == 0) {
		if (b->buf == NULL)
			b->buf = xmalloc(QUEUE_CHUNK_SIZE);
		memcpy(b->buf, d.mv_data, d.mv_size);
		b->len = d.mv_size;
	}
	mdb_txn_abort(txn);
	if (rc != 0) {
		/* Deleted while read, or damaged: never a silent truncation. */
		log_error("%s: body chunk %u unreadable", b->id, b->next);
		return QUEUE_EIO;
	}
	b->next++;
	*data_r = b->buf;
	*len_r = b->len;
	return 1;
}

void queue_body_free(struct queue_body **bp)
{
	if (*bp == NULL)
		return;
	free((*bp)->buf);
	free(*bp);
	*bp = NULL;
}

/* ---- space, counters ---- */

void queue_set_min_free(struct queue *q, uint64_t bytes)
{
	q->min_free = bytes;
}

int queue_check_room(struct queue *q, const char *domain, uint64_t size)
{
	MDB_txn *txn;
	int rc = QUEUE_OK;
	size_t k;

	if (q->rdonly)
		return QUEUE_EIO;
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	if (!map_has_room(q, txn, size) || !fs_has_room(q, txn, size))
		rc = QUEUE_EFULL;
	if (rc == QUEUE_OK && domain != NULL &&
	    domhash_get(q->quota_index, domain, &k) && q->quotas[k].max > 0) {
		char kbuf[QUEUE_DOMAIN_MAX + 1];
		MDB_val key, d;
		uint64_t bytes = 0;

		key.mv_data = kbuf;
		key.mv_size = domain_key(domain, kbuf);
		if (mdb_get(txn, q->db_count, &key, &d) == 0 && d.mv_size == 16)
			bytes = be64_get((const unsigned char *)d.mv_data + 8);
		/* Full already, or this message (when announced) would not fit. */
		if (bytes >= q->quotas[k].max || bytes + size > q->quotas[k].max)
			rc = QUEUE_EQUOTA;
	}
	mdb_txn_abort(txn);
	return rc;
}

void queue_space_recheck(struct queue *q)
{
	/* The writer tops the reserve up after every batch: an empty one. */
	if (!q->rdonly && __atomic_load_n(&q->space_low, __ATOMIC_RELAXED))
		queue_barrier(q, NULL, NULL);
}

int queue_totals(struct queue *q, struct queue_totals *t)
{
	MDB_txn *txn;
	MDB_val k = { 6, "totals" }, d;
	MDB_stat st;
	int rc;

	memset(t, 0, sizeof(*t));
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	rc = mdb_get(txn, q->db_meta, &k, &d);
	if (rc == 0 && d.mv_size == 8 * TOTALS_N) {
		const unsigned char *p = d.mv_data;

		t->messages = be64_get(p);
		t->bytes = be64_get(p + 8);
		t->recipients = be64_get(p + 16);
		t->retrying = be64_get(p + 24);
	} else if (rc == MDB_NOTFOUND) {
		/* Empty, or format 1 not upgraded yet (read-only): count. */
		MDB_cursor *c;

		rc = 0;
		if (mdb_cursor_open(txn, q->db_msg, &c) == 0) {
			MDB_cursor_op op = MDB_FIRST;

			for (; mdb_cursor_get(c, &k, &d, op) == 0; op = MDB_NEXT) {
				struct queue_envelope *env;
				char id[QUEUE_ID_LEN + 1];
				int64_t delta[TOTALS_N];

				if (k.mv_size != QUEUE_ID_LEN)
					continue;
				memcpy(id, k.mv_data, QUEUE_ID_LEN);
				id[QUEUE_ID_LEN] = '\0';
				if (queue_record_decode(id, d.mv_data, d.mv_size, &env,
				    NULL) != QUEUE_OK)
					continue;
				totals_of(env, 1, delta);
				t->messages += (uint64_t)delta[0];
				t->bytes += (uint64_t)delta[1];
				t->recipients += (uint64_t)delta[2];
				t->retrying += (uint64_t)delta[3];
				queue_envelope_free(&env);
			}
			mdb_cursor_close(c);
		}
	}
	if (mdb_stat(txn, q->db_lease, &st) == 0)
		t->leased = st.ms_entries;
	mdb_txn_abort(txn);
	return rc == 0 ? QUEUE_OK : QUEUE_EIO;
}

int queue_space(struct queue *q, struct queue_space *sp)
{
	MDB_envinfo info;
	MDB_stat st;
	MDB_txn *txn;
	struct stat sb;
	int fd;

	memset(sp, 0, sizeof(*sp));
	if (mdb_env_info(q->env, &info) != 0 || mdb_env_stat(q->env, &st) != 0)
		return QUEUE_EIO;
	sp->map_size = info.me_mapsize;
	if (mdb_env_get_fd(q->env, &fd) == 0 && fstat(fd, &sb) == 0)
		sp->file_size = (uint64_t)sb.st_size;
	sp->fs_avail = queue_fs_avail(q);
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	sp->map_used = map_used_bytes(q, txn);
	/* Free inside the file: pages deliveries left, and the tail. */
	sp->reserve = sp->file_size > sp->map_used ? sp->file_size - sp->map_used : 0;
	sp->low = !fs_has_room(q, txn, 0) ||
	    sp->map_used > sp->map_size / 100 * QUEUE_MAP_RESERVE_PCT;
	mdb_txn_abort(txn);
	return QUEUE_OK;
}

int queue_foreach_count(struct queue *q,
    int (*cb)(void *arg, const char *domain,
    const struct queue_domain_stats *st), void *arg)
{
	char last[QUEUE_DOMAIN_MAX + 1] = "";
	int end = 0, stop = 0;

	/* Batches in short read transactions; callbacks outside them. */
	while (!end && !stop) {
		struct {
			char name[QUEUE_DOMAIN_MAX + 1];
			struct queue_domain_stats st;
		} *batch = xcalloc(QUEUE_SCAN_BATCH, sizeof(*batch));
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, d;
		size_t n = 0;
		int rc;

		if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0 ||
		    mdb_cursor_open(txn, q->db_count, &c) != 0) {
			free(batch);
			return QUEUE_EIO;
		}
		if (last[0] == '\0') {
			rc = mdb_cursor_get(c, &k, &d, MDB_FIRST);
		} else {
			k.mv_data = last;
			k.mv_size = strlen(last);
			rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
			if (rc == 0 && k.mv_size == strlen(last) &&
			    memcmp(k.mv_data, last, k.mv_size) == 0)
				rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
		}
		for (; rc == 0 && n < QUEUE_SCAN_BATCH;
		    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
			if (k.mv_size == 0 || k.mv_size > QUEUE_DOMAIN_MAX ||
			    d.mv_size != 16)
				continue;
			memcpy(batch[n].name, k.mv_data, k.mv_size);
			batch[n].name[k.mv_size] = '\0';
			batch[n].st.messages = be64_get(d.mv_data);
			batch[n].st.bytes = be64_get((const unsigned char *)d.mv_data + 8);
			n++;
		}
		mdb_cursor_close(c);
		mdb_txn_abort(txn);
		if (rc != 0)
			end = 1;
		for (size_t i = 0; i < n && !stop; i++)
			stop = cb(arg, batch[i].name, &batch[i].st) != 0;
		if (n > 0)
			memcpy(last, batch[n - 1].name, sizeof(last));
		free(batch);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return QUEUE_EIO;
	}
	return QUEUE_OK;
}

int queue_domain_ids(struct queue *q, const char *domain, const char *after,
    char (*ids)[QUEUE_ID_LEN + 1], size_t max)
{
	char key[QUEUE_DOMAIN_MAX + 2 + QUEUE_ID_LEN];
	size_t plen = domain_key(domain, key) + 1, klen = plen, n = 0;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, d;
	int rc;

	if (after != NULL && after[0] != '\0') {
		memcpy(key + plen, after, QUEUE_ID_LEN);
		klen = plen + QUEUE_ID_LEN;
	}
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return QUEUE_EIO;
	if (mdb_cursor_open(txn, q->db_dom, &c) != 0) {
		mdb_txn_abort(txn);
		return QUEUE_EIO;
	}
	k.mv_data = key;
	k.mv_size = klen;
	rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
	if (rc == 0 && klen > plen && k.mv_size == klen &&
	    memcmp(k.mv_data, key, klen) == 0)
		rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
	for (; rc == 0 && n < max; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
		if (k.mv_size != plen + QUEUE_ID_LEN || memcmp(k.mv_data, key, plen) != 0)
			break;
		memcpy(ids[n], (const char *)k.mv_data + plen, QUEUE_ID_LEN);
		ids[n][QUEUE_ID_LEN] = '\0';
		n++;
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return QUEUE_EIO;
	return (int)n;
}

int queue_scan(struct queue *q, char *cursor, time_t until, size_t max,
    int (*cb)(void *arg, const struct queue_envelope *env), void *arg)
{
	char endkey[QUEUE_ID_LEN + 1];
	size_t taken = 0;
	int result = 0;

	if (until < 0)
		return 0;
	/* Ids start with 8 hex digits of their second: the first id after
	 * `until` is the second after it with a zero counter. */
	snprintf(endkey, sizeof(endkey), "%08X%08X",
	    (uint32_t)((uint64_t)until + 1 > 0xffffffffu ? 0xffffffffu : until + 1), 0u);
	while (taken < max) {
		struct queue_envelope *batch[32];
		size_t n = 0, i;
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, d;
		int rc, stop = 0;

		if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
			return QUEUE_EIO;
		if (mdb_cursor_open(txn, q->db_msg, &c) != 0) {
			mdb_txn_abort(txn);
			return QUEUE_EIO;
		}
		if (cursor[0] == '\0') {
			rc = mdb_cursor_get(c, &k, &d, MDB_FIRST);
		} else {
			k.mv_data = cursor;
			k.mv_size = QUEUE_ID_LEN;
			rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
			if (rc == 0 && k.mv_size == QUEUE_ID_LEN &&
			    memcmp(k.mv_data, cursor, QUEUE_ID_LEN) == 0)
				rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
		}
		for (; rc == 0 && n < 32 && taken + n < max;
		    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
			char id[QUEUE_ID_LEN + 1];

			if (k.mv_size != QUEUE_ID_LEN)
				continue;
			if (memcmp(k.mv_data, endkey, QUEUE_ID_LEN) >= 0) {
				rc = MDB_NOTFOUND;
				break;
			}
			memcpy(id, k.mv_data, QUEUE_ID_LEN);
			id[QUEUE_ID_LEN] = '\0';
			if (queue_record_decode(id, d.mv_data, d.mv_size, &batch[n],
			    NULL) == QUEUE_OK) {
				n++;
			} else {
				/* Skipped for good: the cursor moves past it. */
				log_error("%s: corrupt queue record skipped", id);
				memcpy(cursor, id, QUEUE_ID_LEN + 1);
			}
		}
		mdb_cursor_close(c);
		mdb_txn_abort(txn);
		if (rc != 0 && rc != MDB_NOTFOUND)
			result = QUEUE_EIO;
		for (i = 0; i < n; i++) {
			if (!stop && cb(arg, batch[i]) != 0)
				stop = 1;
			if (!stop) {
				memcpy(cursor, batch[i]->id, QUEUE_ID_LEN + 1);
				taken++;
			}
			queue_envelope_free(&batch[i]);
		}
		if (stop || rc != 0 || n == 0)
			break;
	}
	return result < 0 ? result : (int)taken;
}

/* ---- compaction ---- */

/* Writer thread (or inline): the compacting copy into data.mdb.compact. */
static int writer_compact(struct queue *q, struct job *j)
{
	char *tmp = xasprintf("%s/data.mdb.compact", q->dir);
	struct stat sb;
	int fd, dfd, rc;

	if (mdb_env_get_fd(q->env, &dfd) == 0 && fstat(dfd, &sb) == 0 &&
	    j->before_r != NULL)
		*j->before_r = (uint64_t)sb.st_size;
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("compact: %s: %s", tmp, strerror(errno));
		free(tmp);
		return QUEUE_EIO;
	}
	rc = mdb_env_copyfd2(q->env, fd, MDB_CP_COMPACT);
	if (rc == 0 && fsync(fd) < 0)
		rc = errno;
	if (rc == 0 && fstat(fd, &sb) == 0 && j->after_r != NULL)
		*j->after_r = (uint64_t)sb.st_size;
	close(fd);
	if (rc != 0) {
		log_error("compact: copy failed: %s", mdb_strerror(rc));
		(void)unlink(tmp);
	}
	free(tmp);
	return rc == 0 ? QUEUE_OK : rc == ENOSPC ? QUEUE_EFULL : QUEUE_EIO;
}

/*
 * Loop thread, writer waiting: put the compacted copy in place and reopen.
 * No read transaction is open here (they all end inside the calls that
 * begin them). A failure to reopen leaves no usable queue: fatal.
 */
static int queue_swap(struct queue *q)
{
	char *tmp = xasprintf("%s/data.mdb.compact", q->dir);
	char *path = xasprintf("%s/data.mdb", q->dir);
	MDB_txn *txn;
	int rc, dfd;

	mdb_env_close(q->env);
	q->env = NULL;
	if (rename(tmp, path) < 0)
		log_error("compact: rename %s: %s (keeping the old file)", tmp,
		    strerror(errno));
	if ((dfd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	free(tmp);
	free(path);
	rc = mdb_env_create(&q->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(q->env, 16);
	if (rc == 0)
		rc = mdb_env_set_mapsize(q->env, (size_t)q->map_size);
	if (rc == 0)
		rc = mdb_env_open(q->env, q->dir, MDB_NOTLS, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc == 0) {
		rc = open_dbs(q, txn, 0);
		/* Same order as before: the handles other modules hold stay. */
		for (size_t i = 0; rc == 0 && i < q->ext_dbs.n; i++) {
			MDB_dbi dbi;

			rc = mdb_dbi_open(txn, q->ext_dbs.v[i], 0, &dbi);
			if (rc == MDB_NOTFOUND)
				rc = 0;	/* its creation was rolled back */
		}
		if (rc == 0)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	if (rc != 0)
		log_fatal(1, "compact: cannot reopen the queue: %s", mdb_strerror(rc));
	q->nosync_mode = 0;
	queue_prealloc(q);
	return QUEUE_OK;
}

void queue_compact(struct queue *q, uint64_t *before_r, uint64_t *after_r,
    queue_done_fn *done, void *arg)
{
	struct job *j = job_new(JOB_COMPACT, NULL);

	j->before_r = before_r;
	j->after_r = after_r;
	j->done = done;
	j->arg = arg;
	if (q->rdonly) {
		j->result = QUEUE_EIO;
		queue_complete(q, j);
		return;
	}
	if (!q->writer_started) {
		j->result = writer_compact(q, j);
		if (j->result == QUEUE_OK)
			j->result = queue_swap(q);
		queue_complete(q, j);
		return;
	}
	queue_submit(q, j);
}

/* ---- open, recovery, close ---- */

static int open_dbs(struct queue *q, MDB_txn *txn, unsigned flags)
{
	static const char *names[] = { "meta", "msg", "body", "dom", "sched",
	    "count", "lease", "incomplete" };
	MDB_dbi *dbis[] = { &q->db_meta, &q->db_msg, &q->db_body, &q->db_dom,
	    &q->db_sched, &q->db_count, &q->db_lease, &q->db_incomplete };
	size_t i;
	int rc;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		rc = mdb_dbi_open(txn, names[i], flags, dbis[i]);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* 0 ok (or no version yet when *have_r == 0), else fills err. */
static int check_version(struct queue *q, char *err, size_t errlen, int *have_r)
{
	MDB_txn *txn;
	MDB_dbi meta;
	MDB_val k = { 7, "version" }, d;
	int rc;

	*have_r = 0;
	rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0) {
		snprintf(err, errlen, "read transaction: %s", mdb_strerror(rc));
		return QUEUE_EIO;
	}
	rc = mdb_dbi_open(txn, "meta", 0, &meta);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (rc == 0)
		rc = mdb_get(txn, meta, &k, &d);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		snprintf(err, errlen, "reading format version: %s", mdb_strerror(rc));
		return QUEUE_EIO;
	}
	*have_r = 1;
	if (d.mv_size == 4 && be32_get(d.mv_data) == 1) {
		*have_r = 2;	/* format 1: upgraded when opened for writing */
	} else if (d.mv_size != 4 || be32_get(d.mv_data) != QUEUE_FORMAT_VERSION) {
		snprintf(err, errlen, "queue format version %u not supported "
		    "(this program understands version %d); queue left unchanged",
		    d.mv_size == 4 ? (unsigned)be32_get(d.mv_data) : 0u,
		    QUEUE_FORMAT_VERSION);
		mdb_txn_abort(txn);
		return QUEUE_EVERSION;
	}
	mdb_txn_abort(txn);
	return 0;
}

/*
 * Remove chunks of puts that never committed; clear leases. Only the
 * "incomplete" markers are read (a put marks its first chunk in the same
 * transaction), so start-up does not depend on how much mail is held.
 */
static int recover(struct queue *q, MDB_txn *txn, unsigned *orphans_r)
{
	MDB_cursor *c;
	MDB_val k, d;
	struct idlist l = { NULL, 0, 0 };
	size_t i;
	int rc;

	*orphans_r = 0;
	rc = mdb_cursor_open(txn, q->db_incomplete, &c);
	if (rc != 0)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT))
		if (k.mv_size == QUEUE_ID_LEN)
			idlist_add(&l, k.mv_data);
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		goto out;
	rc = 0;
	for (i = 0; rc == 0 && i < l.n; i++) {
		MDB_val mk = { QUEUE_ID_LEN, l.v[i] }, md;

		if (mdb_get(txn, q->db_msg, &mk, &md) == MDB_NOTFOUND) {
			rc = body_delete(q, txn, l.v[i]);
			(*orphans_r)++;
		}
		if (rc == 0)
			rc = marker_set(q, txn, l.v[i], 0);
	}
	if (rc == 0)
		rc = mdb_drop(txn, q->db_lease, 0);
out:
	free(l.v);
	return rc;
}

/*
 * Format 1 had no totals: count them once (the only whole-queue read at
 * start, done when upgrading), then mark the queue as format 2.
 */
static int migrate_v1(struct queue *q, MDB_txn *txn, uint64_t *nmsgs_r)
{
	MDB_cursor *c;
	MDB_val k, d;
	int64_t sum[TOTALS_N] = { 0, 0, 0, 0 };
	unsigned char vbuf[4];
	int rc;

	*nmsgs_r = 0;
	rc = mdb_cursor_open(txn, q->db_msg, &c);
	if (rc != 0)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
		struct queue_envelope *env;
		char id[QUEUE_ID_LEN + 1];
		int64_t delta[TOTALS_N];

		if (k.mv_size != QUEUE_ID_LEN)
			continue;
		memcpy(id, k.mv_data, QUEUE_ID_LEN);
		id[QUEUE_ID_LEN] = '\0';
		if (queue_record_decode(id, d.mv_data, d.mv_size, &env, NULL) != QUEUE_OK)
			continue;
		totals_of(env, 1, delta);
		for (int i = 0; i < TOTALS_N; i++)
			sum[i] += delta[i];
		queue_envelope_free(&env);
		(*nmsgs_r)++;
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		return rc;
	{
		MDB_val tk = { 6, "totals" };

		rc = mdb_del(txn, q->db_meta, &tk, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
	}
	rc = totals_adjust(q, txn, sum);
	if (rc == 0) {
		MDB_val vk = { 7, "version" }, vd = { 4, vbuf };

		be32_put(vbuf, QUEUE_FORMAT_VERSION);
		rc = mdb_put(txn, q->db_meta, &vk, &vd, 0);
	}
	return rc;
}

static struct queue *queue_open_env(const char *dir, struct event_base *base,
    uint64_t map_size, int rdonly, char *err, size_t errlen)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	MDB_txn *txn = NULL;
	unsigned char vbuf[4];
	MDB_val k = { 7, "version" }, d = { 4, vbuf };
	unsigned orphans = 0;
	int rc, have_version, vr;

	q->rdonly = rdonly;
	q->base = rdonly ? NULL : base;
	q->dir = xstrdup(dir);
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	if (!rdonly && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
		goto fail;
	}
	q->lock_fd = -1;
	if (!rdonly) {
		/*
		 * Recovery deletes chunks of unfinished puts: it must never
		 * run while another process (a daemon, a tool) is writing.
		 */
		char *path = xasprintf("%s/odrelay.lock", dir);

		q->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		free(path);
		if (q->lock_fd < 0) {
			snprintf(err, errlen, "%s/odrelay.lock: %s", dir, strerror(errno));
			goto fail;
		}
		if (flock(q->lock_fd, LOCK_EX | LOCK_NB) < 0) {
			snprintf(err, errlen, "queue %s is in use by another process%s",
			    dir, errno == EWOULDBLOCK ? "" : " (lock failed)");
			goto fail;
		}
	}
	rc = mdb_env_create(&q->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(q->env, 16);
	/* 0: the configuration's default, not LMDB's tiny 1 MB. */
	if (!rdonly && map_size == 0)
		map_size = QUEUE_DEFAULT_MAP_SIZE;
	if (rc == 0 && !rdonly)
		rc = mdb_env_set_mapsize(q->env, (size_t)map_size);
	q->map_size = map_size;
	if (rc == 0)
		rc = mdb_env_open(q->env, dir, MDB_NOTLS | (rdonly ? MDB_RDONLY : 0), 0600);
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	if (!rdonly) {
		int dead = 0;

		mdb_reader_check(q->env, &dead);
	}
	vr = check_version(q, err, errlen, &have_version);
	if (vr != 0)
		goto fail;
	if (rdonly) {
		if (!have_version) {
			snprintf(err, errlen, "%s: not an odrelay queue (no version)", dir);
			goto fail;
		}
		rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn);
		if (rc == 0)
			rc = open_dbs(q, txn, 0);
		if (rc == 0)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
		if (rc != 0) {
			snprintf(err, errlen, "%s: %s", dir, mdb_strerror(rc));
			goto fail;
		}
		return q;
	}
	rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc == 0)
		rc = open_dbs(q, txn, MDB_CREATE);
	if (rc == 0 && !have_version) {
		be32_put(vbuf, QUEUE_FORMAT_VERSION);
		rc = mdb_put(txn, q->db_meta, &k, &d, 0);
	}
	if (rc == 0)
		rc = recover(q, txn, &orphans);
	if (rc == 0 && have_version == 2) {
		uint64_t nmsgs = 0;

		rc = migrate_v1(q, txn, &nmsgs);
		if (rc == 0)
			log_info("queue: upgraded from format 1 to %d (%llu messages)",
			    QUEUE_FORMAT_VERSION, (unsigned long long)nmsgs);
	}
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc != 0) {
		snprintf(err, errlen, "%s: opening queue: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	if (orphans > 0)
		log_info("queue: removed %u unfinished message bodies", orphans);
	queue_prealloc(q);
	if (base != NULL) {
		q->done_ev = event_new(base, -1, 0, queue_done_cb, q);
		if (q->done_ev == NULL) {
			snprintf(err, errlen, "event_new failed");
			goto fail;
		}
		rc = pthread_create(&q->writer, NULL, writer_main, q);
		if (rc != 0) {
			snprintf(err, errlen, "writer thread: %s", strerror(rc));
			goto fail;
		}
		q->writer_started = 1;
	}
	return q;
fail:
	if (q->done_ev != NULL)
		event_free(q->done_ev);
	if (q->env != NULL)
		mdb_env_close(q->env);
	if (q->lock_fd >= 0)
		close(q->lock_fd);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q->dir);
	free(q);
	return NULL;
}

struct queue *queue_open(const char *dir, struct event_base *base,
    uint64_t map_size, char *err, size_t errlen)
{
	return queue_open_env(dir, base, map_size, 0, err, errlen);
}

struct queue *queue_open_readonly(const char *dir, char *err, size_t errlen)
{
	return queue_open_env(dir, NULL, 0, 1, err, errlen);
}

void queue_close(struct queue **qp)
{
	struct queue *q = *qp;
	size_t i;

	if (q == NULL)
		return;
	*qp = NULL;
	if (q->writer_started) {
		pthread_mutex_lock(&q->mu);
		q->stopping = 1;
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->writer, NULL);
		/* Completions not yet delivered by the loop run now; a job
		 * they submit (an unlease) is written inline, not lost. */
		q->writer_started = 0;
		queue_drain_finished(q);
	}
	if (q->done_ev != NULL)
		event_free(q->done_ev);
	for (i = 0; i < q->nquotas; i++)
		free(q->quotas[i].domain);
	free(q->quotas);
	domhash_free(&q->quota_index);
	strlist_free(&q->ext_dbs);
	for (i = 0; i < q->nleases; i++)
		free(q->leases[i].owner);
	free(q->leases);
	mdb_env_close(q->env);
	if (q->lock_fd >= 0)
		close(q->lock_fd);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q->dir);
	free(q);
}

int queue_delete_domain_step(struct queue *q, const char *domain,
    char *cursor, size_t max, unsigned long *deleted_r,
    unsigned long *partial_r, unsigned long *busy_r)
{
	char ids[256][QUEUE_ID_LEN + 1];
	char lower[QUEUE_DOMAIN_MAX + 1];
	int n, k;

	domain_key(domain, lower);	/* the domain index is in lower case */
	if (max > 256)
		max = 256;
	n = queue_domain_ids(q, lower, cursor, ids, max);
	if (n < 0)
		return n;
	for (k = 0; k < n; k++) {
		struct queue_envelope *env = NULL;
		struct queue_rcpt_update *up;
		size_t nup = 0;
		int others = 0;

		if (queue_is_leased(q, ids[k])) {
			(*busy_r)++;
			continue;
		}
		if (queue_get(q, ids[k], &env) != 1)
			continue;
		up = xcalloc(env->nrcpts, sizeof(*up));
		for (size_t i = 0; i < env->nrcpts; i++) {
			const struct queue_rcpt *r = &env->rcpts[i];

			if (r->state != QUEUE_RCPT_QUEUED)
				continue;
			if (r->domain == NULL || strcasecmp(r->domain, lower) != 0) {
				others = 1;
				continue;
			}
			up[nup].index = i;
			up[nup].state = QUEUE_RCPT_BOUNCED;
			up[nup].reply = "deleted by the administrator";
			nup++;
		}
		if (others) {
			queue_update(q, env->id, up, nup, NULL, NULL, 0, NULL, NULL);
			(*partial_r)++;
		} else {
			queue_delete(q, env->id, NULL, NULL);
			(*deleted_r)++;
		}
		free(up);
		queue_envelope_free(&env);
	}
	if (n > 0)
		memcpy(cursor, ids[n - 1], QUEUE_ID_LEN + 1);
	return (size_t)n == max ? 1 : 0;
}

int queue_delete_domain(struct queue *q, const char *domain,
    unsigned long *deleted_r, unsigned long *partial_r, unsigned long *busy_r)
{
	char cursor[QUEUE_ID_LEN + 1] = "";
	int rc;

	*deleted_r = *partial_r = *busy_r = 0;
	while ((rc = queue_delete_domain_step(q, domain, cursor, 256, deleted_r,
	    partial_r, busy_r)) == 1)
		;
	return rc < 0 ? rc : QUEUE_OK;
}

void queue_test_hold_writer(struct queue *q, int hold)
{
	pthread_mutex_lock(&q->mu);
	q->test_hold = hold;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

/* ---- writes of other queue/ modules (queue_private.h) ---- */

MDB_env *queue_ext_env(struct queue *q)
{
	return q->env;
}

int queue_ext_dbi_open(struct queue *q, MDB_txn *txn, const char *name,
    unsigned flags, MDB_dbi *dbi_r)
{
	int rc = mdb_dbi_open(txn, name, flags, dbi_r);
	size_t i;

	if (rc != 0)
		return rc;
	for (i = 0; i < q->ext_dbs.n; i++)
		if (strcmp(q->ext_dbs.v[i], name) == 0)
			return 0;
	strlist_add(&q->ext_dbs, name);
	return 0;
}

int queue_ext_rdonly(const struct queue *q)
{
	return q->rdonly;
}

void queue_ext_submit(struct queue *q, queue_ext_apply_fn *apply,
    void (*release)(void *), void *arg, queue_done_fn *done, void *darg)
{
	struct job *j = job_new(JOB_EXT, NULL);

	j->ext_apply = apply;
	j->ext_free = release;
	j->ext_arg = arg;
	j->done = done;
	j->arg = darg;
	queue_submit(q, j);
}
