/*
 * room - refuse mail early when the queue cannot take it: at MAIL (the
 * announced SIZE, map and file system) and at RCPT (the recipient
 * domain's max_queue_size), with the replies spec.md asks for, so that a
 * sender is not made to send a whole message only to be told 452 at the
 * end of DATA. Loop thread; each check is a few LMDB reads and a statvfs.
 */
#ifndef OD_ROOM_H
#define OD_ROOM_H

#include <stddef.h>
#include <stdint.h>

struct queue;

/*
 * 0 when a message of `size` octets (0: not announced) fits, for `domain`
 * (NULL at MAIL); else 1 with the reply line in reply (no CRLF):
 * "452 4.3.1" for the map or disk, "452 4.2.2" naming the domain's quota.
 * *reason_r (may be NULL) gets the metrics label.
 */
int room_check(struct queue *q, const char *domain, uint64_t size,
    char *reply, size_t replylen, const char **reason_r);
/* The reply after a commit refused with QUEUE_EQUOTA: names the first of
 * the domains that is over its quota (one check per distinct domain). */
void room_quota_reply(struct queue *q, const char *const *domains, size_t n,
    uint64_t size, char *reply, size_t replylen);

#endif
