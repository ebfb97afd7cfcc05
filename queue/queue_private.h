/*
 * queue_private.h - on-disk record format of the queue, shared by queue.c
 * and its unit test (which checks that corrupt records are refused).
 * Nothing outside queue/ and tests/unit/check_queue.c includes this.
 */
#ifndef OD_QUEUE_PRIVATE_H
#define OD_QUEUE_PRIVATE_H

#include <stddef.h>
#include <time.h>
#include <stdint.h>

#include <lmdb.h>

#include "queue.h"

/* meta "version" (uint32 big-endian). 2 added meta "totals"; a format 1
 * queue is upgraded when opened for writing. */
#define QUEUE_FORMAT_VERSION	2
#define QUEUE_RECORD_VERSION	1	/* first byte of every msg record */

/*
 * Serialize env (with its body chunk count) into a malloc'ed buffer.
 * Strings are u32 big-endian length + bytes (0xffffffff = NULL); integers
 * are big-endian.
 */
unsigned char *queue_record_encode(const struct queue_envelope *env,
    uint32_t nchunks, size_t *len_r);
/*
 * Decode a record into a newly allocated envelope (id from `id`).
 * Bounds-checked: returns QUEUE_OK, or QUEUE_EIO for anything malformed.
 */
int queue_record_decode(const char *id, const void *data, size_t len,
    struct queue_envelope **env_r, uint32_t *nchunks_r);
/* Only the arrival time of an encoded envelope (no allocation). */
int queue_record_arrival(const void *data, size_t len, time_t *arrival_r);

/* Big-endian integers, as every record in the environment stores them. */
void queue_be32_put(unsigned char *p, uint32_t v);
uint32_t queue_be32_get(const unsigned char *p);
void queue_be64_put(unsigned char *p, uint64_t v);
uint64_t queue_be64_get(const unsigned char *p);
/* End txn: commit when rc is 0, else abort. The resulting LMDB code. */
int queue_txn_end(MDB_txn *txn, int rc);

/*
 * Test hook: while held, the writer thread takes no job, so a test can
 * queue many commits and check that they go out in one transaction
 * (group commit) without depending on timing.
 */
void queue_test_hold_writer(struct queue *q, int hold);

/*
 * Other queue/ modules (the recipient cache) keep their own named
 * databases in the queue's environment and write them through the queue's
 * writer thread, so there is still one writer and one fsync per batch.
 * apply runs on the writer thread inside the batch transaction (it may run
 * twice if the batch is replayed, so it must be idempotent within a txn
 * that is aborted) and returns 0 or an LMDB code; release frees arg (on the
 * loop thread, after done). These writes are not synced on their own: a
 * cache loses at most its last writes on a power failure.
 */
typedef int queue_ext_apply_fn(MDB_txn *txn, void *arg);
void queue_ext_submit(struct queue *q, queue_ext_apply_fn *apply,
    void (*release)(void *), void *arg, queue_done_fn *done, void *darg);
/* The environment changes when the queue is compacted: ask each time. */
MDB_env *queue_ext_env(struct queue *q);
/* mdb_dbi_open, remembered so that a compaction reopens the database
 * with the same handle. */
int queue_ext_dbi_open(struct queue *q, MDB_txn *txn, const char *name,
    unsigned flags, MDB_dbi *dbi_r);
int queue_ext_rdonly(const struct queue *q);
/*
 * A module's start-up transaction on its databases: fn opens them with
 * queue_ext_dbi_open (flags: MDB_CREATE on a writable queue, else 0) and
 * may read them; an LMDB code. Committed when fn returns 0. Returns 0,
 * 1 when a read-only queue does not have them (never written), or -1
 * with "WHAT: reason" in err.
 */
typedef int queue_ext_setup_fn(MDB_txn *txn, unsigned flags, void *arg);
int queue_ext_setup(struct queue *q, queue_ext_setup_fn *fn, void *arg,
    const char *what, char *err, size_t errlen);

#endif
