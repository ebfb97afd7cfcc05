/*
 * queue - the durable mail queue (LMDB), with one writer thread doing group
 * commit.
 *
 * Threading: every function here is called on the daemon's event-loop thread
 * (or in a tool with no loop). Write operations are asynchronous: they are
 * handed to the writer thread, which commits many at once (one fsync per
 * batch) and runs the completion callbacks back on the loop thread. Reads use
 * short LMDB read transactions and are synchronous.
 *
 * Ownership: every struct returned here is owned by the caller and freed
 * with its *_free(). Strings inside are owned by the struct.
 *
 * No MDB_* type or code leaves this module. The queue never logs: it
 * returns errors, and reports what it met (recovery at open, corrupt
 * records, failed writes) through queue_open_info, queue_stats and the
 * notice hook; the daemon or odrelayctl decides what to log.
 */
#ifndef OD_QUEUE_H
#define OD_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct event_base;

#define QUEUE_ID_LEN 16		/* hex digits; time-ordered, unique */
#define QUEUE_CHUNK_SIZE (256 * 1024)	/* body bytes per LMDB record */

/* Result codes (completion callbacks and functions returning int). */
#define QUEUE_OK	0
#define QUEUE_EFULL	-2	/* map or disk full (ENOSPC, EIO...): 452 4.3.1 */
#define QUEUE_EQUOTA	-3	/* per-domain max_queue_size: 452 4.3.1 */
#define QUEUE_EIO	-4	/* any other storage error: 451 4.3.0 */
#define QUEUE_ENOTFOUND	-5
#define QUEUE_EBUSY	-6	/* leased by another delivery */
#define QUEUE_EVERSION	-7	/* queue format not understood */
#define QUEUE_ELOST	-8	/* reopen after compaction failed: unusable */

/* DSN NOTIFY bits (RFC 3461 4.1); 0 = not given. */
#define QUEUE_NOTIFY_NEVER	0x1
#define QUEUE_NOTIFY_SUCCESS	0x2
#define QUEUE_NOTIFY_FAILURE	0x4
#define QUEUE_NOTIFY_DELAY	0x8

/* RET (RFC 3461 4.3). */
#define QUEUE_RET_NONE	0
#define QUEUE_RET_FULL	1
#define QUEUE_RET_HDRS	2

/* Envelope flags. */
#define QUEUE_F_8BITMIME	0x1	/* BODY=8BITMIME */
#define QUEUE_F_SMTPUTF8	0x2	/* SMTPUTF8 */
#define QUEUE_F_DSN		0x4	/* this message is a bounce we made */
/* Held aside by a milter (quarantine): stored without index entries, so
 * no delivery, ETRN, ATRN or expiry finds it; queue_release puts it back. */
#define QUEUE_F_QUARANTINE	0x8

enum queue_rcpt_state {
	QUEUE_RCPT_QUEUED = 0,	/* still to deliver */
	QUEUE_RCPT_SENT,	/* delivered (kept only while others remain) */
	QUEUE_RCPT_BOUNCED	/* returned to the sender */
};

struct queue_rcpt {
	char *addr;		/* forward path without <>, case as received */
	char *domain;		/* the configured domain it was accepted for */
	char *orcpt;		/* DSN ORCPT "type;xtext", or NULL */
	unsigned notify;	/* QUEUE_NOTIFY_* */
	enum queue_rcpt_state state;
	unsigned attempts;
	time_t last_attempt;
	time_t next_attempt;	/* non-held retries; 0 = now / on demand */
	char *last_reply;	/* last remote reply or error text, or NULL */
	int delay_warned;	/* a "delayed" DSN was sent */
};

struct queue_envelope {
	char id[QUEUE_ID_LEN + 1];
	char *sender;		/* reverse path without <>; "" = null sender */
	char *envid;		/* DSN ENVID xtext, or NULL */
	int ret;		/* QUEUE_RET_* */
	unsigned flags;		/* QUEUE_F_* */
	time_t arrival;
	uint64_t size;		/* body octets as stored (CRLF, unstuffed) */
	char *helo;		/* client's EHLO name, or NULL */
	char *client_addr;	/* client IP, or NULL */
	struct queue_rcpt *rcpts;
	size_t nrcpts;
};

struct queue;
struct queue_put;
struct queue_body;

/* Completion on the loop thread. result: QUEUE_OK or a QUEUE_E* code. */
typedef void queue_done_fn(void *arg, int result);

/*
 * Open (creating if needed) the queue in dir. base: the loop that receives
 * completions (NULL for synchronous tools: then writes are done inline).
 * map_size: LMDB map size in bytes. On error returns NULL and writes a
 * message into err. Recovers at open: removes body chunks of messages that
 * never committed, clears leases. Refuses (QUEUE_EVERSION message) a queue
 * of an unknown format version.
 */
struct queue *queue_open(const char *dir, struct event_base *base,
    uint64_t map_size, char *err, size_t errlen);
/* Read-only open for odrelayctl while the daemon runs. */
struct queue *queue_open_readonly(const char *dir, char *err, size_t errlen);
/* Waits for the writer to finish every pending job, then closes. */
void queue_close(struct queue **q);
const char *queue_strerror(int code);

/* What queue_open found and repaired (all zero for a read-only open). */
struct queue_open_info {
	int upgraded_from;	/* format version upgraded from, 0 = none */
	int upgraded_to;
	uint64_t upgraded_messages;	/* messages converted by the upgrade */
	unsigned orphans_removed;	/* bodies of never-committed messages */
	/* The oldest-message records could not be made: odrelayctl stats
	 * reads the domain index instead; why in oldest_error. */
	int oldest_missing;
	char oldest_error[128];
};
void queue_open_info(const struct queue *q, struct queue_open_info *info_r);

/* Counters of trouble met since open (for metrics). */
struct queue_stats {
	uint64_t corrupt_records;	/* records refused or skipped as corrupt */
	uint64_t body_unreadable;	/* body chunks that could not be read */
	uint64_t write_failures;	/* jobs whose write failed */
	uint64_t notices_dropped;	/* notices lost: too many undelivered */
};
void queue_stats(struct queue *q, struct queue_stats *st_r);

/*
 * Notices: what the queue met that its caller may want to log, one line of
 * text each (a corrupt record skipped in a scan, a failed write, the disk
 * reserve lost or restored, a compaction error). They are kept (a bounded
 * number; more are counted in notices_dropped) and handed to fn on the
 * caller's thread: after writes complete, in queue_space_recheck and
 * queue_notices_flush. Those of the open (the facts of queue_open_info,
 * as text) wait for the first flush after the hook is set; without a hook
 * notices are discarded at each flush.
 */
/* In the order of syslog's severities (and of common/log.h's levels). */
enum queue_notice_level {
	QUEUE_NOTICE_ERROR = 0, QUEUE_NOTICE_WARN, QUEUE_NOTICE_INFO,
	QUEUE_NOTICE_DEBUG
};
typedef void queue_notice_fn(void *arg, enum queue_notice_level level,
    const char *text);
void queue_set_notice_hook(struct queue *q, queue_notice_fn *fn, void *arg);
void queue_notices_flush(struct queue *q);

/* Per-domain quota used by commit (0 = none). */
void queue_set_quota(struct queue *q, const char *domain, uint64_t max_bytes);

/* ---- receiving a message ---- */

/*
 * Start a new message; assigns its id (queue_put_id). The body is appended
 * with queue_put_write (bytes exactly as stored: CRLF lines, dot-unstuffed)
 * and streamed to LMDB in QUEUE_CHUNK_SIZE records by the writer thread, so
 * memory stays bounded.
 */
struct queue_put *queue_put_begin(struct queue *q);
const char *queue_put_id(const struct queue_put *p);
/*
 * Append body bytes. Returns 0, or 1 when the caller should stop reading
 * its peer until `resume` is called (too much data in flight to the
 * writer), or a QUEUE_E* code once a chunk write has failed (the message
 * can then only be aborted).
 */
int queue_put_write(struct queue_put *p, const void *data, size_t len);
void queue_put_set_resume(struct queue_put *p, void (*resume)(void *arg),
    void *arg);
/*
 * Commit: writes the envelope, recipient records and per-domain index
 * entries in one transaction with the last chunk, fsyncs, then calls
 * done(arg, result) on the loop thread. env->id and env->size are filled in
 * by the queue. env is copied; the caller keeps ownership. After commit the
 * put handle belongs to the queue until done runs (then it is freed).
 */
void queue_put_commit(struct queue_put *p, const struct queue_envelope *env,
    queue_done_fn *done, void *arg);
/*
 * The session is going away: abort an uncommitted put (its chunks are
 * removed), or, if commit is in flight, suppress the callback. *p is NULL
 * afterwards.
 */
void queue_put_abandon(struct queue_put **p);

/* ---- reading ---- */

/* 1 found (*env_r set), 0 not found, or a QUEUE_E* code. */
int queue_get(struct queue *q, const char *id, struct queue_envelope **env_r);
void queue_envelope_free(struct queue_envelope **env);

/* Calls cb for every message (in id order); cb returns 0 to go on. */
int queue_foreach(struct queue *q,
    int (*cb)(void *arg, const struct queue_envelope *env), void *arg);
/* Ids with at least one QUEUED recipient in exactly `domain`. */
int queue_foreach_domain(struct queue *q, const char *domain,
    int (*cb)(void *arg, const char *id), void *arg);
/* Ids of non-held mail due at or before `now` (the retry index), the
 * earliest 1024 at most per call. */
int queue_foreach_due(struct queue *q, time_t now,
    int (*cb)(void *arg, const char *id), void *arg);

struct queue_domain_stats {
	uint64_t messages;	/* messages with queued recipients there */
	uint64_t bytes;
	/* queue_foreach_count only: the oldest message's arrival, when
	 * oldest_known (else a queue from before: queue_domains_oldest) */
	time_t oldest;
	int oldest_known;
};
int queue_domain_stats(struct queue *q, const char *domain,
    struct queue_domain_stats *st_r);

/*
 * Body reader: each queue_body_read returns the next chunk (borrowed until
 * the next call or queue_body_free), length in *len_r; returns 1 with data,
 * 0 at the end, or a QUEUE_E* code.
 */
int queue_body_open(struct queue *q, const char *id, struct queue_body **b_r);
int queue_body_read(struct queue_body *b, const unsigned char **data_r,
    size_t *len_r);
void queue_body_free(struct queue_body **b);

/* ---- delivery bookkeeping ---- */

/* One recipient's new state after an attempt. */
struct queue_rcpt_update {
	size_t index;		/* into env->rcpts */
	enum queue_rcpt_state state;
	const char *reply;	/* text to store as last_reply, or NULL */
	time_t next_attempt;	/* for still-QUEUED ones */
	int delay_warned;	/* set the flag */
};

/*
 * Apply updates to message id in one transaction; when `bounce` is not
 * NULL, the bounce message (envelope + body bytes) is created in the same
 * transaction. The message is deleted when no recipient is left QUEUED.
 * done may be NULL.
 */
void queue_update(struct queue *q, const char *id,
    const struct queue_rcpt_update *updates, size_t nupdates,
    const struct queue_envelope *bounce, const void *bounce_body,
    size_t bounce_len, queue_done_fn *done, void *arg);
/*
 * Take a message out of quarantine (odrelayctl release): clear the flag and
 * index it like a new arrival. QUEUE_ENOTFOUND if it is not there or not
 * quarantined.
 */
void queue_release(struct queue *q, const char *id, queue_done_fn *done,
    void *arg);
/* Remove a message whatever its state (odrelayctl delete). */
void queue_delete(struct queue *q, const char *id, queue_done_fn *done,
    void *arg);

/*
 * done runs once every write handed to the queue before this call has
 * completed (writes are committed in order), e.g. so that an odrelayctl
 * command is answered only when its effect is visible.
 */
void queue_barrier(struct queue *q, queue_done_fn *done, void *arg);

/*
 * Remove the mail waiting for one domain (odrelayctl delete --domain): a
 * message whose queued recipients are all in domain is deleted; in one
 * that also waits for other domains only this domain's recipients are
 * closed (no DSN), so other customers' mail stays. Leased messages are
 * skipped and counted in *busy_r. Returns QUEUE_OK or a QUEUE_E* code from
 * reading the index; the writes themselves are asynchronous.
 */
int queue_delete_domain(struct queue *q, const char *domain,
    unsigned long *deleted_r, unsigned long *partial_r, unsigned long *busy_r);
/*
 * The same a piece at a time (the daemon, one piece per loop turn): up
 * to max (at most 256) messages after *cursor ("" first; updated), the
 * counts added to. 1 when there may be more, 0 done, or a QUEUE_E* code.
 */
int queue_delete_domain_step(struct queue *q, const char *domain,
    char *cursor, size_t max, unsigned long *deleted_r,
    unsigned long *partial_r, unsigned long *busy_r);

/*
 * Leases: a message being delivered is leased so no second delivery starts
 * at once. Held in memory (the daemon is the only deliverer) and mirrored
 * into the queue for odrelayctl's "delivering" state; all cleared at open.
 * Returns QUEUE_OK or QUEUE_EBUSY.
 */
int queue_lease(struct queue *q, const char *id, const char *owner);
void queue_unlease(struct queue *q, const char *id);
/* 1 if leased (by this process, or as recorded on disk for tools). */
int queue_is_leased(struct queue *q, const char *id);

/* ---- space, counters, compaction ---- */

/*
 * Bytes the file system must keep free after new mail is stored
 * (queue_min_free). Besides, the data file is kept allocated beyond its
 * last page so that deliveries can always be recorded on a full disk.
 */
void queue_set_min_free(struct queue *q, uint64_t bytes);
/*
 * Could a message of `size` octets (0: not known yet) for `domain` (NULL:
 * no domain check) be stored now? QUEUE_OK, QUEUE_EFULL (map or file
 * system) or QUEUE_EQUOTA (the domain's quota). Cheap: for MAIL and RCPT.
 */
int queue_check_room(struct queue *q, const char *domain, uint64_t size);

/* While new mail is refused because the reserve could not be kept, try
 * again (the writer does it; call it now and then, e.g. every second). */
void queue_space_recheck(struct queue *q);

struct queue_totals {
	uint64_t messages;	/* with at least one queued recipient */
	uint64_t bytes;
	uint64_t recipients;	/* queued recipients */
	uint64_t retrying;	/* messages with a retry time (not held) */
	uint64_t leased;	/* being delivered */
};
/* From counters kept by every write: O(1). */
int queue_totals(struct queue *q, struct queue_totals *t_r);

struct queue_space {
	uint64_t map_size;	/* LMDB map size (queue_map_size) */
	uint64_t map_used;	/* bytes in pages in use */
	uint64_t file_size;	/* data.mdb on disk (with the reserve) */
	uint64_t fs_avail;	/* free on the file system */
	uint64_t reserve;	/* free inside the file (kept >= the reserve) */
	int low;		/* new mail refused for lack of space */
};
int queue_space(struct queue *q, struct queue_space *sp_r);

/* Every domain with queued mail and its counters, in name order. */
int queue_foreach_count(struct queue *q,
    int (*cb)(void *arg, const char *domain,
    const struct queue_domain_stats *st), void *arg);
/*
 * Up to max ids of messages queued for domain, after id `after` (""
 * for the first), in id order: a long list is read piece by piece.
 * Returns how many were stored in ids, or a QUEUE_E* code.
 */
int queue_domain_ids(struct queue *q, const char *domain, const char *after,
    char (*ids)[QUEUE_ID_LEN + 1], size_t max);
/*
 * Messages in id order (ids begin with their arrival second) after
 * *cursor ("" for the first) whose id time is at most `until`, at most max
 * of them. cb returns 0 to go on, 1 to stop before this message (it is
 * then read again next time). *cursor is left on the last message cb
 * took. Returns how many cb took, or a QUEUE_E* code.
 */
int queue_scan(struct queue *q, char *cursor, time_t until, size_t max,
    int (*cb)(void *arg, const struct queue_envelope *env), void *arg);
/*
 * The same for the event loop: it reads only records a thread of the
 * queue has read just before (their pages are then in memory, not on a
 * cold disk), and sets *more_r when it stopped short for that (nothing
 * or not all read ahead yet): call again in a few milliseconds.
 */
int queue_scan_ahead(struct queue *q, char *cursor, time_t until, size_t max,
    int *more_r, int (*cb)(void *arg, const struct queue_envelope *env),
    void *arg);

/*
 * Compact the data file (LMDB's compacting copy), then use the copy.
 * Writes wait during the copy (their completions are delayed, nothing is
 * refused); reads go on. done gets QUEUE_OK or a QUEUE_E* code; sizes of
 * the file before and after in *before_r, *after_r (may be NULL) once
 * done runs. Without a loop it runs at once.
 */
void queue_compact(struct queue *q, uint64_t *before_r, uint64_t *after_r,
    queue_done_fn *done, void *arg);
/*
 * Arrival hook (ODMR XWAIT, webhooks): called on the loop thread right
 * after a message (or a bounce) has committed, once per domain with queued
 * recipients in it (lower case). The hook must not free the queue.
 */
typedef void queue_arrival_fn(void *arg, const char *domain);
void queue_set_arrival_hook(struct queue *q, queue_arrival_fn *fn, void *arg);

/* Check the form of an id from the network, a file or a command. */
int queue_id_valid(const char *id);

#endif
