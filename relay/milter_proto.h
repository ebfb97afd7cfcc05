/*
 * milter_proto - the Sendmail milter protocol (version 6, as Postfix
 * speaks it), MTA side: command packets out, filter replies in.
 *
 * A packet is a 32-bit length in network order (counting the command
 * byte), one command byte and its data. This module only encodes and
 * decodes; it does no I/O and keeps no state, so the fuzz target can drive
 * the reply parser directly.
 */
#ifndef OD_MILTER_PROTO_H
#define OD_MILTER_PROTO_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define MILTER_PROTO_VERSION	6
#define MILTER_CHUNK_MAX	65535	/* body bytes per BODY command */
#define MILTER_REPLY_MAX	(1024 * 1024)	/* longest reply we accept */

/* Commands (MTA -> filter). */
#define SMFIC_ABORT	'A'
#define SMFIC_BODY	'B'
#define SMFIC_CONNECT	'C'
#define SMFIC_MACRO	'D'
#define SMFIC_BODYEOB	'E'
#define SMFIC_HELO	'H'
#define SMFIC_QUIT_NC	'K'	/* quit, a new connection follows */
#define SMFIC_HEADER	'L'
#define SMFIC_MAIL	'M'
#define SMFIC_EOH	'N'
#define SMFIC_OPTNEG	'O'
#define SMFIC_QUIT	'Q'
#define SMFIC_RCPT	'R'
#define SMFIC_DATA	'T'
#define SMFIC_UNKNOWN	'U'

/* Actions a filter may take at end of message (SMFIF_*). */
#define SMFIF_ADDHDRS		0x001
#define SMFIF_CHGBODY		0x002
#define SMFIF_ADDRCPT		0x004
#define SMFIF_DELRCPT		0x008
#define SMFIF_CHGHDRS		0x010
#define SMFIF_QUARANTINE	0x020
#define SMFIF_CHGFROM		0x040
#define SMFIF_ADDRCPT_PAR	0x080
#define SMFIF_SETSYMLIST	0x100
#define SMFIF_ALL		0x1ff

/* Protocol steps a filter may skip or not answer (SMFIP_*). */
#define SMFIP_NOCONNECT		0x000001
#define SMFIP_NOHELO		0x000002
#define SMFIP_NOMAIL		0x000004
#define SMFIP_NORCPT		0x000008
#define SMFIP_NOBODY		0x000010
#define SMFIP_NOHDRS		0x000020
#define SMFIP_NOEOH		0x000040
#define SMFIP_NR_HDR		0x000080
#define SMFIP_NOUNKNOWN		0x000100
#define SMFIP_NODATA		0x000200
#define SMFIP_SKIP		0x000400
#define SMFIP_RCPT_REJ		0x000800
#define SMFIP_NR_CONN		0x001000
#define SMFIP_NR_HELO		0x002000
#define SMFIP_NR_MAIL		0x004000
#define SMFIP_NR_RCPT		0x008000
#define SMFIP_NR_DATA		0x010000
#define SMFIP_NR_UNKN		0x020000
#define SMFIP_NR_EOH		0x040000
#define SMFIP_NR_BODY		0x080000
#define SMFIP_HDR_LEADSPC	0x100000
/* What odrelay offers: every step may be skipped or left unanswered;
 * no rejected recipients are shown (RCPT_REJ) and chunks stay 64 KiB. */
#define MILTER_PROTO_OFFER	(0x1fffff & ~SMFIP_RCPT_REJ)

enum milter_rtype {
	MILTER_R_ACCEPT,	/* 'a' accept, stop filtering */
	MILTER_R_CONTINUE,	/* 'c' */
	MILTER_R_REJECT,	/* 'r' */
	MILTER_R_TEMPFAIL,	/* 't' */
	MILTER_R_DISCARD,	/* 'd' accept and drop the message */
	MILTER_R_REPLYCODE,	/* 'y' text: "550 5.7.1 why" */
	MILTER_R_SKIP,		/* 's' no more body chunks */
	MILTER_R_PROGRESS,	/* 'p' still working: restart the timer */
	MILTER_R_OPTNEG,	/* 'O' version, actions, protocol */
	MILTER_R_ADDHEADER,	/* 'h' name, value */
	MILTER_R_INSHEADER,	/* 'i' index, name, value */
	MILTER_R_CHGHEADER,	/* 'm' index, name, value ("" deletes) */
	MILTER_R_DELRCPT,	/* '-' text: the recipient */
	MILTER_R_ADDRCPT,	/* '+' / '2' text: recipient, args */
	MILTER_R_CHGFROM,	/* 'e' text: sender, args */
	MILTER_R_REPLBODY,	/* 'b' data */
	MILTER_R_QUARANTINE,	/* 'q' text: reason */
	MILTER_R_SETSYMLIST,	/* 'l' (ignored) */
	MILTER_R_SHUTDOWN,	/* '4' */
	MILTER_R_CONNFAIL	/* 'f' */
};

/* A decoded reply; strings point into the packet given to the parser. */
struct milter_reply {
	enum milter_rtype type;
	uint32_t version, actions, protocol;	/* OPTNEG */
	uint32_t index;				/* INSHEADER, CHGHEADER */
	const char *name, *value;		/* headers */
	const char *text;			/* see enum */
	const char *args;			/* ADDRCPT_PAR, CHGFROM */
	const unsigned char *data;		/* REPLBODY */
	size_t datalen;
};

/*
 * Framing: 1 with *len_r set (command byte + data, the 4 length bytes not
 * included) when the buffer starts with a packet header; 0 when fewer
 * than 4 bytes are there; -1 when the length is 0 or over
 * MILTER_REPLY_MAX (garbage: the connection must be dropped).
 */
int milter_frame(const unsigned char *buf, size_t len, uint32_t *len_r);
/*
 * Decode one packet (pkt[0] is the command byte, len bytes in all). The
 * parser may write NULs into pkt. 0, or -1 for anything malformed (unknown
 * code, missing NUL, bad reply code text).
 */
int milter_reply_parse(unsigned char *pkt, size_t len,
    struct milter_reply *r);
const char *milter_rtype_name(enum milter_rtype t);
/*
 * A filter's SMTP reply text ("550 5.7.1 no", or multi-line with CRLF and
 * "550-" continuations) is usable: 4xx or 5xx, every line with the same
 * code, no other control characters. 1 or 0.
 */
int milter_replycode_ok(const char *text);

/* ---- encoding (append one packet to out) ---- */
void milter_put_optneg(struct evbuffer *out, uint32_t actions,
    uint32_t protocol);
/* cmd with no data (ABORT, QUIT, EOH, DATA, BODYEOB). */
void milter_put_cmd(struct evbuffer *out, char cmd);
/* MACRO for stage cmd: names[i] = values[i], n pairs (NULL values skip). */
void milter_put_macros(struct evbuffer *out, char cmd,
    const char *const *names, const char *const *values, size_t n);
/* CONNECT: host name, address family '4'/'6', port, address text. */
void milter_put_connect(struct evbuffer *out, const char *host, char family,
    uint16_t port, const char *addr);
/* A command whose data is NUL-terminated strings (HELO, MAIL, RCPT). */
void milter_put_strings(struct evbuffer *out, char cmd,
    const char *const *v, size_t n);
void milter_put_header(struct evbuffer *out, const char *name,
    const char *value);
void milter_put_body(struct evbuffer *out, const void *data, size_t len);

#endif
