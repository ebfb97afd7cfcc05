/*
 * queue_record - the on-disk record format of the queue (queue_private.h):
 * envelope and recipients encoded with explicit lengths and big-endian
 * integers, decoded with bounds checks (a corrupt record is QUEUE_EIO,
 * never a crash), and the byte and key helpers the other files use.
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

/* ---- small helpers ---- */

void queue_be32_put(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

uint32_t queue_be32_get(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

void queue_be64_put(unsigned char *p, uint64_t v)
{
	queue_be32_put(p, v >> 32);
	queue_be32_put(p + 4, (uint32_t)v);
}

uint64_t queue_be64_get(const unsigned char *p)
{
	return (uint64_t)queue_be32_get(p) << 32 | queue_be32_get(p + 4);
}

int queue_txn_end(MDB_txn *txn, int rc)
{
	if (rc == 0)
		return mdb_txn_commit(txn);
	mdb_txn_abort(txn);
	return rc;
}

int queue_code(int rc)
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
	case QUEUE_ELOST:
		return "queue lost: cannot reopen it after compaction";
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
void queue_new_id(struct queue *q, char *id)
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
size_t queue_domain_key(const char *domain, char *buf)
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

static void queue_wb_reserve(struct wbuf *b, size_t n)
{
	if (b->len + n > b->cap) {
		while (b->len + n > b->cap)
			b->cap = b->cap ? b->cap * 2 : 256;
		b->p = xreallocarray(b->p, b->cap, 1);
	}
}

static void queue_wb_u8(struct wbuf *b, unsigned v)
{
	queue_wb_reserve(b, 1);
	b->p[b->len++] = (unsigned char)v;
}

static void queue_wb_u32(struct wbuf *b, uint32_t v)
{
	queue_wb_reserve(b, 4);
	queue_be32_put(b->p + b->len, v);
	b->len += 4;
}

static void queue_wb_u64(struct wbuf *b, uint64_t v)
{
	queue_wb_reserve(b, 8);
	queue_be64_put(b->p + b->len, v);
	b->len += 8;
}

static void queue_wb_str(struct wbuf *b, const char *s)
{
	size_t n;

	if (s == NULL) {
		queue_wb_u32(b, 0xffffffffu);
		return;
	}
	n = strlen(s);
	queue_wb_u32(b, (uint32_t)n);
	queue_wb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

unsigned char *queue_record_encode(const struct queue_envelope *env,
    uint32_t nchunks, size_t *len_r)
{
	struct wbuf b = { NULL, 0, 0 };
	size_t i;

	queue_wb_u8(&b, QUEUE_RECORD_VERSION);
	queue_wb_u32(&b, env->flags);
	queue_wb_u8(&b, (unsigned)env->ret);
	queue_wb_u64(&b, (uint64_t)(int64_t)env->arrival);
	queue_wb_u64(&b, env->size);
	queue_wb_u32(&b, nchunks);
	queue_wb_str(&b, env->sender ? env->sender : "");
	queue_wb_str(&b, env->envid);
	queue_wb_str(&b, env->helo);
	queue_wb_str(&b, env->client_addr);
	queue_wb_u32(&b, (uint32_t)env->nrcpts);
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		queue_wb_str(&b, r->addr ? r->addr : "");
		queue_wb_str(&b, r->domain ? r->domain : "");
		queue_wb_str(&b, r->orcpt);
		queue_wb_u32(&b, r->notify);
		queue_wb_u8(&b, (unsigned)r->state);
		queue_wb_u32(&b, r->attempts);
		queue_wb_u64(&b, (uint64_t)(int64_t)r->last_attempt);
		queue_wb_u64(&b, (uint64_t)(int64_t)r->next_attempt);
		queue_wb_str(&b, r->last_reply);
		queue_wb_u8(&b, r->delay_warned ? 1 : 0);
	}
	*len_r = b.len;
	return b.p;
}

struct rbuf {
	const unsigned char *p;
	size_t len, off;
	int bad;
};

static uint64_t queue_rb_uint(struct rbuf *b, size_t n)
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

static char *queue_rb_str(struct rbuf *b, int nullable)
{
	uint32_t n = (uint32_t)queue_rb_uint(b, 4);
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

int queue_record_arrival(const void *data, size_t len, time_t *arrival_r)
{
	struct rbuf b = { data, len, 0, 0 };

	if (queue_rb_uint(&b, 1) != QUEUE_RECORD_VERSION)
		return QUEUE_EIO;
	(void)queue_rb_uint(&b, 4);	/* flags */
	(void)queue_rb_uint(&b, 1);	/* ret */
	*arrival_r = (time_t)(int64_t)queue_rb_uint(&b, 8);
	return b.bad ? QUEUE_EIO : QUEUE_OK;
}

int queue_record_decode(const char *id, const void *data, size_t len,
    struct queue_envelope **env_r, uint32_t *nchunks_r)
{
	struct rbuf b = { data, len, 0, 0 };
	struct queue_envelope *env;
	uint64_t n;
	uint32_t nchunks;
	size_t i;

	*env_r = NULL;
	if (queue_rb_uint(&b, 1) != QUEUE_RECORD_VERSION || b.bad)
		return QUEUE_EIO;
	env = xcalloc(1, sizeof(*env));
	util_strlcpy(env->id, id, sizeof(env->id));
	env->flags = (unsigned)queue_rb_uint(&b, 4);
	env->ret = (int)queue_rb_uint(&b, 1);
	env->arrival = (time_t)(int64_t)queue_rb_uint(&b, 8);
	env->size = queue_rb_uint(&b, 8);
	nchunks = (uint32_t)queue_rb_uint(&b, 4);
	env->sender = queue_rb_str(&b, 0);
	env->envid = queue_rb_str(&b, 1);
	env->helo = queue_rb_str(&b, 1);
	env->client_addr = queue_rb_str(&b, 1);
	n = queue_rb_uint(&b, 4);
	if (!b.bad && n > (b.len - b.off) / RCPT_MIN_LEN)
		b.bad = 1;
	if (!b.bad && n > 0) {
		env->rcpts = xcalloc((size_t)n, sizeof(*env->rcpts));
		env->nrcpts = (size_t)n;
	}
	for (i = 0; !b.bad && i < env->nrcpts; i++) {
		struct queue_rcpt *r = &env->rcpts[i];
		uint64_t st;

		r->addr = queue_rb_str(&b, 0);
		r->domain = queue_rb_str(&b, 0);
		r->orcpt = queue_rb_str(&b, 1);
		r->notify = (unsigned)queue_rb_uint(&b, 4);
		st = queue_rb_uint(&b, 1);
		if (st > QUEUE_RCPT_BOUNCED)
			b.bad = 1;
		r->state = (enum queue_rcpt_state)st;
		r->attempts = (unsigned)queue_rb_uint(&b, 4);
		r->last_attempt = (time_t)(int64_t)queue_rb_uint(&b, 8);
		r->next_attempt = (time_t)(int64_t)queue_rb_uint(&b, 8);
		r->last_reply = queue_rb_str(&b, 1);
		st = queue_rb_uint(&b, 1);	/* the encoder writes 0 or 1 only */
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

static void queue_rcpt_clear(struct queue_rcpt *r)
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
		queue_rcpt_clear(&env->rcpts[i]);
	free(env->rcpts);
	free(env->sender);
	free(env->envid);
	free(env->helo);
	free(env->client_addr);
	free(env);
	*envp = NULL;
}

char *queue_xstrdup_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

struct queue_envelope *queue_envelope_copy(const struct queue_envelope *src)
{
	struct queue_envelope *env = xcalloc(1, sizeof(*env));
	size_t i;

	memcpy(env->id, src->id, sizeof(env->id));
	env->id[QUEUE_ID_LEN] = '\0';
	env->sender = xstrdup(src->sender ? src->sender : "");
	env->envid = queue_xstrdup_null(src->envid);
	env->ret = src->ret;
	env->flags = src->flags;
	env->arrival = src->arrival;
	env->size = src->size;
	env->helo = queue_xstrdup_null(src->helo);
	env->client_addr = queue_xstrdup_null(src->client_addr);
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
		r->orcpt = queue_xstrdup_null(s->orcpt);
		r->last_reply = queue_xstrdup_null(s->last_reply);
	}
	return env;
}

int queue_msg_decode(const MDB_val *k, const MDB_val *d, char *id,
    struct queue_envelope **env_r)
{
	if (k->mv_size != QUEUE_ID_LEN)
		return 0;
	memcpy(id, k->mv_data, QUEUE_ID_LEN);
	id[QUEUE_ID_LEN] = '\0';
	return queue_record_decode(id, d->mv_data, d->mv_size, env_r, NULL) ==
	    QUEUE_OK ? 1 : -1;
}
