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

/* 1 and mark_r (QUEUE_ID_LEN + 1 octets) set when age has a mark. */
int qmarks_get(struct queue *q, long age, char *mark_r);
/* Record mark (a queue id) for age, asynchronously. */
void qmarks_put(struct queue *q, long age, const char *mark);

#endif
