/*
 * milter_private - what the milter client's files share: the filter
 * connection (struct mconn), the session (struct milter_sess), their
 * states and limits. Only relay/milter.c and relay/milter_msg.c include
 * it; everyone else uses milter.h.
 */
#ifndef OD_MILTER_PRIVATE_H
#define OD_MILTER_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <event2/util.h>

#include "milter.h"
#include "milter_proto.h"
#include "queue.h"

struct config;
struct evbuffer;

#define MS_HDR_MAX	(256 * 1024)	/* header section kept in memory */
#define MS_HDRS_MAX	2000		/* header fields, with additions */
#define MS_SPOOL_MEM	(256 * 1024)	/* body in memory before a file */
#define MS_HIWAT	(256 * 1024)	/* bytes queued to filters: pause */
#define MS_LOWAT	(64 * 1024)	/* resume below */
#define MS_COPY_CHUNK	(64 * 1024)
#define MS_MODS_MAX	(4 * 1024 * 1024)	/* modification bytes per filter */
#define MC_CORK		(16 * 1024)	/* unanswered packet bytes held */

enum mc_state {
	MC_OFF,			/* not connected */
	MC_OPEN,		/* connected (or connecting), negotiating */
	MC_BROKEN		/* failed: default action, reconnect next tx */
};

/* What an answer is for: where its verdict applies. */
enum mc_stage {
	ST_OPTNEG, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA,
	ST_HEADER, ST_EOH, ST_BODY, ST_EOM, ST_NONE
};

/* A packet in the FIFO; its bytes wait in mconn.pend until written. */
struct mcmd {
	struct mcmd *next;
	enum mc_stage stage;
	int want;			/* an answer is expected */
	int tx;				/* part of the transaction */
	size_t start, len;		/* len 0 once written */
};

/* A header modification kept until the end of the message. */
struct mmod {
	struct mmod *next;
	struct milter_reply r;
	unsigned char *pkt;		/* r's strings point here */
};

struct milter_sess;
struct mconn;
struct event;

/*
 * A socket to a filter, written and read directly (no bufferevent: read
 * interest stays registered for the link's life and a packet is written
 * as soon as it may go, so a round trip costs one write and one read).
 * It outlives its session when kept for the next one (milter_reuse) or
 * while a QUIT drains.
 */
struct mlink {
	struct mlink *next;		/* idle pool or closing list */
	int fd;
	struct event *rev;		/* EV_READ|EV_PERSIST, always added */
	struct event *wev;		/* added while out is not empty */
	struct event *idle;		/* pool idle time, QUIT linger */
	struct evbuffer *out;		/* bytes the socket did not take yet */
	unsigned char *in;		/* reply bytes read, not handled */
	size_t inlen, incap;		/* incap grows to a packet's size */
	struct mconn *c;		/* owner; NULL idle or closing */
	int connecting;
	int closing;			/* QUIT written: close when drained */
	char spec[128];			/* kept in the pool: for whom */
	uint32_t actions, proto;
};

struct mconn {
	struct milter_sess *ms;
	size_t idx;
	char spec[128];
	enum mc_state st;
	struct mlink *ml;		/* NULL when not connected */
	struct event *timer;
	uint32_t actions, proto;
	int negotiated;
	struct mcmd *head, *tail;
	struct mcmd *spare;		/* freed packets, reused */
	struct evbuffer *pend;		/* bytes of the packets not written */
	size_t queued;			/* packet bytes in the FIFO */
	int awaiting;			/* head is on the wire */
	size_t nwant;			/* packets in the FIFO that want an answer */
	int flush;			/* write what is held (mc_flush) */
	double sent_at;
	/* session level */
	int conn_done;			/* accepted at CONNECT/HELO */
	enum milter_action conn_action;	/* refused at CONNECT/HELO */
	char conn_reply[512];
	/* transaction level */
	int mail_sent;
	int tx_done;			/* accepted: no more for this tx */
	enum milter_action tx_action;
	char tx_reply[1024];
	int rcpt_pending;		/* answer for the last RCPT */
	char *pending_rcpt;		/* RCPT waiting for the negotiation */
	enum milter_action rcpt_action;
	char rcpt_reply[1024];
	int skip_body;
	int failed_tx;			/* broke during this tx */
	int eom_sent, eom_done;
	struct mmod *mods, *mods_tail;
	size_t nmods, modbytes;
	char fail_why[64];
};

struct mhdr {
	size_t off, len;		/* raw bytes in hdrbuf (len 0: new) */
	char *raw;			/* replacement/new text, or NULL */
	size_t namelen;			/* field name: the text before ':' */
	int deleted;
};

enum ms_wait { W_NONE, W_RCPT, W_EOM };

struct milter_sess {
	struct event_base *base;
	struct config *cfg;		/* referenced */
	struct mconn *c;
	size_t nc;
	char ip[64];
	int v6;
	unsigned port;
	char helo[256];
	char tls_version[32], cipher[128];
	char user[256];
	char *sender;
	char id[QUEUE_ID_LEN + 1];
	int filtering;			/* this transaction is filtered */
	unsigned naccepted;		/* recipients accepted while filtering */
	int data_sent;
	/* waiting for the filters */
	enum ms_wait wait;
	milter_verdict_fn *rcpt_fn;
	void *rcpt_arg;
	milter_eom_fn *eom_fn;
	void *eom_arg;
	struct event *kick;		/* zero timer: re-check the wait */
	/* message text */
	int in_headers;
	unsigned char *hdrbuf;
	size_t hdrcap;			/* grows up to MS_HDR_MAX */
	size_t hdrlen, linestart;
	struct mhdr *hdrs;
	size_t nhdrs, hcap;
	int cur_hdr;			/* index of the header being read, -1 */
	int blank;			/* the header section ended with a blank line */
	unsigned char *chunk;		/* body bytes not yet sent */
	size_t chunklen;
	unsigned char *spool;		/* body in memory */
	size_t spoollen, spoolcap;	/* grows up to MS_SPOOL_MEM */
	int spoolfd;			/* rest of the body, or -1 */
	uint64_t spoolfile;		/* bytes in the file */
	int spoolerr;
	int paused;
	void (*resume_fn)(void *arg);
	void *resume_arg;
	/* end of message: writing the put */
	struct queue_put *put;
	struct milter_result res;
	int copying;
	size_t copy_hdr;		/* next header to write */
	size_t copy_mem;		/* spool memory written */
	uint64_t copy_file;		/* spool file written */
	int copy_blank;
	int freeing;
};

/* Shared between the milter files (internal, not an interface). */
const char *ms_default_reply(const struct config *cfg,
    enum milter_action *a);
const char *ms_qid(const struct milter_sess *ms);
void mc_clear_mods(struct mconn *c);
size_t ms_backlog(const struct milter_sess *ms);
int mc_active(const struct mconn *c);
int mc_busy(const struct mconn *c);
struct evbuffer *mc_push(struct mconn *c, enum mc_stage stage,
    int want);
void mc_pushed(struct mconn *c);
void mc_pump(struct mconn *c);
void mc_flush(struct mconn *c);
void mc_drop_tx_packets(struct mconn *c);
void mc_close(struct mconn *c);
void mc_macros(struct mconn *c, char stage, const char *const *names,
    const char *const *values, size_t n);
int mp_put(struct mconn *c);
void mp_drop(struct mlink *ml);
/* milter.c: filter sockets and connections */
struct mlink *ml_new(struct event_base *base, int fd);
void ml_free(struct mlink *ml);
void ml_unlink(struct mlink **head, struct mlink *ml);
void ml_quit(struct mlink *ml);
void ml_quit_done(struct mlink *ml);
void ml_quit_all(void);
void ml_writecb(evutil_socket_t fd, short what, void *arg);
void mc_timer_cb(evutil_socket_t fd, short what, void *arg);
void mc_fail(struct mconn *c, const char *why);
void ms_kick(struct milter_sess *ms);
void ms_eom_finish(struct milter_sess *ms);

#endif
