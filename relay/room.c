/*
 * room - early 452 replies from the queue's space and quota checks.
 */
#include <stdio.h>
#include <string.h>

#include "queue.h"
#include "room.h"

int room_check(struct queue *q, const char *domain, uint64_t size,
    char *reply, size_t replylen, const char **reason_r)
{
	int rc = queue_check_room(q, domain, size);

	if (rc == QUEUE_OK || rc == QUEUE_EIO) {
		/* A read error is no reason to refuse here: the commit,
		 * which is authoritative, reports it. */
		return 0;
	}
	if (rc == QUEUE_EQUOTA && domain != NULL) {
		snprintf(reply, replylen, "452 4.2.2 Mail held for %.255s is "
		    "over its quota; try again later", domain);
		if (reason_r != NULL)
			*reason_r = "quota";
	} else {
		snprintf(reply, replylen, "452 4.3.1 Insufficient system storage");
		if (reason_r != NULL)
			*reason_r = "queue-full";
	}
	return 1;
}

void room_quota_reply(struct queue *q, const char *const *domains, size_t n,
    uint64_t size, char *reply, size_t replylen)
{
	for (size_t i = 0; i < n; i++) {
		if (domains[i] == NULL)
			continue;
		if (queue_check_room(q, domains[i], size) == QUEUE_EQUOTA) {
			room_check(q, domains[i], size, reply, replylen, NULL);
			return;
		}
	}
	snprintf(reply, replylen, "452 4.2.2 Mail queue quota of a recipient "
	    "domain exceeded; try again later");
}
