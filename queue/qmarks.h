/*
 * qmarks - where the expiry and delay scans stopped, kept in the queue so
 * that a restart does not read every held message again (issue 16). One
 * record per age (seconds): the id of the last message read for it.
 * Writes go through the queue's writer thread; a lost write only means
 * some messages are read again.
 */
#ifndef OD_QMARKS_H
#define OD_QMARKS_H

#include "queue.h"

struct qmarks;

/*
 * Open the marks' database (created when the queue is writable), once,
 * at start-up on the loop thread. LMDB allows only one transaction at a
 * time to open a database handle, and a handle opened in a read
 * transaction that is then aborted is closed again: so the open is done
 * here, in a write transaction (serialised by LMDB with the writer
 * thread's), and the handle kept; gets and puts only use it. NULL and
 * err on failure.
 */
struct qmarks *qmarks_open(struct queue *q, char *err, size_t errlen);
void qmarks_close(struct qmarks **m);
/* 1 and mark_r (QUEUE_ID_LEN + 1 octets) set when age has a mark. */
int qmarks_get(struct qmarks *m, long age, char *mark_r);
/* Record mark (a queue id) for age, asynchronously. */
void qmarks_put(struct qmarks *m, long age, const char *mark);

#endif
