/*
 * milter_msg - the message side of a milter session (see milter.h): the
 * header section kept in memory, the body spooled (memory, then a file),
 * sent to the filters in chunks with backpressure, and the end of message:
 * the filters' verdicts and modifications (headers, body, recipients,
 * quarantine) applied to the message that goes to the queue.
 *
 * Trust: filters are local but their answers are still parsed strictly
 * and bounded (MS_MODS_MAX per filter).
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "milter.h"
#include "milter_proto.h"
#include "queue.h"
#include "util.h"
#include "xmalloc.h"
#include "milter_private.h"

/* ---- message text ---- */

/* Append what fits of (*data, *len) to buf, filled *fill of cap; move
 * *data and *len past it. */
static void ms_append(void *buf, size_t *fill, size_t cap,
    const char **data, size_t *len)
{
	size_t n = cap - *fill;

	if (n > *len)
		n = *len;
	memcpy((char *)buf + *fill, *data, n);
	*fill += n;
	*data += n;
	*len -= n;
}

static void ms_spool(struct milter_sess *ms, const void *data, size_t len)
{
	const char *p = data;
	ssize_t w;

	if (ms->spoollen + len > ms->spoolcap && ms->spoolcap < MS_SPOOL_MEM) {
		size_t cap = ms->spoolcap ? ms->spoolcap : 16 * 1024;

		while (cap < ms->spoollen + len && cap < MS_SPOOL_MEM)
			cap *= 2;
		if (cap > MS_SPOOL_MEM)
			cap = MS_SPOOL_MEM;
		ms->spool = xreallocarray(ms->spool, cap, 1);
		ms->spoolcap = cap;
	}
	ms_append(ms->spool, &ms->spoollen, ms->spoolcap, &p, &len);
	if (len == 0 || ms->spoolerr)
		return;
	if (ms->spoolfd < 0) {
		/* unlinked from the start: nothing to clean up after a crash */
		ms->spoolfd = open(ms->cfg->queue_dir, O_TMPFILE | O_RDWR |
		    O_CLOEXEC, 0600);
		if (ms->spoolfd < 0) {
			log_warn("%s: milter spool in %s: %s", ms_qid(ms),
			    ms->cfg->queue_dir, strerror(errno));
			ms->spoolerr = 1;
			return;
		}
	}
	while (len > 0) {
		w = write(ms->spoolfd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			log_warn("%s: milter spool write: %s", ms_qid(ms),
			    strerror(errno));
			ms->spoolerr = 1;
			return;
		}
		p += w;
		len -= (size_t)w;
		ms->spoolfile += (uint64_t)w;
	}
}

static void ms_body_flush(struct milter_sess *ms)
{
	size_t i;

	if (ms->chunklen == 0)
		return;
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (!mc_active(c) || c->skip_body || (c->proto & SMFIP_NOBODY))
			continue;
		milter_put_body(mc_push(c, ST_BODY,
		    !(c->proto & SMFIP_NR_BODY)), ms->chunk, ms->chunklen);
		mc_pushed(c);
		mc_pump(c);
	}
	ms->chunklen = 0;
}

static void ms_body(struct milter_sess *ms, const char *data, size_t len)
{
	ms_spool(ms, data, len);
	while (len > 0) {
		ms_append(ms->chunk, &ms->chunklen, MILTER_CHUNK_MAX, &data,
		    &len);
		if (ms->chunklen == MILTER_CHUNK_MAX)
			ms_body_flush(ms);
	}
}

/* The value of raw header bytes for a filter: after the colon, CRLF
 * folds as LF, the final CRLF gone. */
static char *ms_hvalue(const unsigned char *raw, size_t len, int leadspc)
{
	const unsigned char *colon = memchr(raw, ':', len);
	char *v = xmalloc(len + 1);
	size_t i, o = 0;

	i = (size_t)(colon - raw) + 1;
	if (!leadspc)
		while (i < len && (raw[i] == ' ' || raw[i] == '\t'))
			i++;
	while (len > i && (raw[len - 1] == '\n' || raw[len - 1] == '\r'))
		len--;
	for (; i < len; i++) {
		if (raw[i] == '\r' && i + 1 < len && raw[i + 1] == '\n')
			continue;
		v[o++] = raw[i] == '\0' ? ' ' : (char)raw[i];
	}
	v[o] = '\0';
	return v;
}

/* The header's text: the original bytes or its replacement. */
static const char *ms_hdr_text(const struct milter_sess *ms,
    const struct mhdr *h)
{
	return h->raw != NULL ? h->raw : (const char *)ms->hdrbuf + h->off;
}

/* Is h's field name `name` (case-insensitive)? */
static int ms_hdr_is(const struct milter_sess *ms, const struct mhdr *h,
    const char *name)
{
	return strlen(name) == h->namelen &&
	    strncasecmp(ms_hdr_text(ms, h), name, h->namelen) == 0;
}

static void ms_hdr_send(struct milter_sess *ms, size_t h)
{
	const struct mhdr *hd = &ms->hdrs[h];
	char name[256];
	size_t i;

	memcpy(name, ms->hdrbuf + hd->off, hd->namelen);
	name[hd->namelen] = '\0';
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];
		char *value;

		if (!mc_active(c) || (c->proto & SMFIP_NOHDRS))
			continue;
		value = ms_hvalue(ms->hdrbuf + hd->off, hd->len,
		    (c->proto & SMFIP_HDR_LEADSPC) != 0);
		milter_put_header(mc_push(c, ST_HEADER,
		    !(c->proto & SMFIP_NR_HDR)), name, value);
		mc_pushed(c);
		free(value);
		mc_pump(c);
	}
}

static void ms_eoh(struct milter_sess *ms)
{
	size_t i;

	if (ms->cur_hdr >= 0) {
		ms_hdr_send(ms, (size_t)ms->cur_hdr);
		ms->cur_hdr = -1;
	}
	ms->in_headers = 0;
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (!mc_active(c) || (c->proto & SMFIP_NOEOH))
			continue;
		milter_put_cmd(mc_push(c, ST_EOH, !(c->proto & SMFIP_NR_EOH)),
		    SMFIC_EOH);
		mc_pushed(c);
		mc_pump(c);
	}
}

static struct mhdr *ms_hdr_insert(struct milter_sess *ms, size_t at)
{
	if (ms->nhdrs == ms->hcap) {
		ms->hcap = ms->hcap ? ms->hcap * 2 : 32;
		ms->hdrs = xreallocarray(ms->hdrs, ms->hcap, sizeof(*ms->hdrs));
	}
	memmove(&ms->hdrs[at + 1], &ms->hdrs[at],
	    (ms->nhdrs - at) * sizeof(*ms->hdrs));
	ms->nhdrs++;
	memset(&ms->hdrs[at], 0, sizeof(ms->hdrs[at]));
	return &ms->hdrs[at];
}

/* "Name:" at the start of a line (RFC 5322 field name). */
static size_t ms_field_name(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && i < 255; i++) {
		if (p[i] == ':')
			return i;
		if (p[i] <= 32 || p[i] >= 127)
			return 0;
	}
	return 0;
}

/* A complete header-section line hdrbuf[linestart..hdrlen). */
static void ms_header_line(struct milter_sess *ms)
{
	const unsigned char *line = ms->hdrbuf + ms->linestart;
	size_t n = ms->hdrlen - ms->linestart, nl;
	struct mhdr *h;

	if (n == 2 && line[0] == '\r') {
		/* the blank line: kept apart, written back at the end */
		ms->hdrlen = ms->linestart;
		ms->blank = 1;
		ms_eoh(ms);
		return;
	}
	if ((line[0] == ' ' || line[0] == '\t') && ms->cur_hdr >= 0) {
		ms->hdrs[ms->cur_hdr].len += n;
		ms->linestart = ms->hdrlen;
		return;
	}
	nl = ms_field_name(line, n);
	if (nl == 0 || ms->nhdrs >= MS_HDRS_MAX) {
		/* not a header: the body starts here, without blank line */
		ms->hdrlen = ms->linestart;
		ms_eoh(ms);
		ms_body(ms, (const char *)line, n);
		return;
	}
	if (ms->cur_hdr >= 0)
		ms_hdr_send(ms, (size_t)ms->cur_hdr);
	h = ms_hdr_insert(ms, ms->nhdrs);
	h->off = ms->linestart;
	h->len = n;
	h->namelen = nl;
	ms->cur_hdr = (int)(ms->nhdrs - 1);
	ms->linestart = ms->hdrlen;
}

int milter_sess_write(struct milter_sess *ms, const char *data, size_t len)
{
	size_t i;

	if (ms == NULL || !ms->filtering)
		return 0;
	for (i = 0; i < len && ms->in_headers; i++) {
		if (ms->hdrlen == MS_HDR_MAX) {
			/* header section too large: the rest is body */
			const unsigned char *line = ms->hdrbuf + ms->linestart;
			size_t n = ms->hdrlen - ms->linestart;

			ms->hdrlen = ms->linestart;
			ms_eoh(ms);
			ms_body(ms, (const char *)line, n);
			break;
		}
		if (ms->hdrlen == ms->hdrcap) {
			ms->hdrcap *= 2;
			ms->hdrbuf = xreallocarray(ms->hdrbuf, ms->hdrcap, 1);
		}
		ms->hdrbuf[ms->hdrlen++] = (unsigned char)data[i];
		if (data[i] == '\n')
			ms_header_line(ms);
	}
	if (i < len)
		ms_body(ms, data + i, len - i);
	if (ms_backlog(ms) > MS_HIWAT) {
		if (!ms->paused)
			log_debug("%s: milter: pause, %zu bytes queued",
			    ms_qid(ms), ms_backlog(ms));
		ms->paused = 1;
		return 1;
	}
	return 0;
}

void milter_sess_set_resume(struct milter_sess *ms, void (*fn)(void *arg),
    void *arg)
{
	if (ms == NULL)
		return;
	ms->resume_fn = fn;
	ms->resume_arg = arg;
}

/* ---- end of message ---- */

static void ms_eom_send(struct milter_sess *ms)
{
	const char *names[] = { "i" };
	const char *values[1] = { ms->id };
	size_t i;

	if (ms->in_headers) {
		/* no blank line and no body: what is left is header text */
		if (ms->linestart < ms->hdrlen) {
			const unsigned char *line = ms->hdrbuf + ms->linestart;
			size_t n = ms->hdrlen - ms->linestart;

			ms->hdrlen = ms->linestart;
			ms_eoh(ms);
			ms_body(ms, (const char *)line, n);
		} else
			ms_eoh(ms);
	}
	ms_body_flush(ms);
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (!mc_active(c))
			continue;
		mc_macros(c, SMFIC_BODYEOB, names, values, 1);
		milter_put_cmd(mc_push(c, ST_EOM, 1), SMFIC_BODYEOB);
		mc_pushed(c);
		c->eom_sent = 1;
		mc_pump(c);
	}
}

/* The index of the n-th (1-based) live header named name, or nhdrs. */
static size_t ms_find_hdr(struct milter_sess *ms, const char *name,
    uint32_t n)
{
	size_t i;

	for (i = 0; i < ms->nhdrs; i++)
		if (!ms->hdrs[i].deleted &&
		    ms_hdr_is(ms, &ms->hdrs[i], name) && --n == 0)
			return i;
	return ms->nhdrs;
}

/* "Name: value\r\n" from a filter's name and value (LF folds). */
static char *ms_hraw(const char *name, const char *value, int leadspc)
{
	size_t n = strlen(name) + 2 + strlen(value) * 2 + 3, o;
	char *raw = xmalloc(n);
	const char *p;

	o = (size_t)snprintf(raw, n, "%s:%s", name, leadspc ? "" : " ");
	for (p = value; *p != '\0'; p++) {
		if (*p == '\r')
			continue;
		if (*p == '\n')
			raw[o++] = '\r';
		raw[o++] = *p;
	}
	raw[o++] = '\r';
	raw[o++] = '\n';
	raw[o] = '\0';
	return raw;
}

static void ms_hdr_new(struct milter_sess *ms, size_t at, const char *name,
    const char *value, int leadspc)
{
	struct mhdr *h;

	if (ms->nhdrs >= MS_HDRS_MAX)
		return;
	h = ms_hdr_insert(ms, at > ms->nhdrs ? ms->nhdrs : at);
	h->raw = ms_hraw(name, value, leadspc);
	h->namelen = strlen(name);
}

/* Live header position to array index (INSHEADER counts live ones). */
static size_t ms_live_pos(struct milter_sess *ms, uint32_t pos)
{
	size_t i;

	for (i = 0; i < ms->nhdrs; i++)
		if (!ms->hdrs[i].deleted && pos-- == 0)
			return i;
	return ms->nhdrs;
}

static void ms_apply_mods(struct milter_sess *ms, struct mconn *c)
{
	struct milter_result *res = &ms->res;
	int lead = (c->proto & SMFIP_HDR_LEADSPC) != 0;
	char sbuf[300];
	struct mmod *m;
	size_t h;

	for (m = c->mods; m != NULL; m = m->next) {
		const struct milter_reply *r = &m->r;

		switch (r->type) {
		case MILTER_R_ADDHEADER:
			ms_hdr_new(ms, ms->nhdrs, r->name, r->value, lead);
			log_info("%s: milter %s: header added: %s", ms->id,
			    c->spec, r->name);
			break;
		case MILTER_R_INSHEADER:
			ms_hdr_new(ms, ms_live_pos(ms, r->index), r->name,
			    r->value, lead);
			log_info("%s: milter %s: header inserted: %s", ms->id,
			    c->spec, r->name);
			break;
		case MILTER_R_CHGHEADER:
			h = ms_find_hdr(ms, r->name, r->index ? r->index : 1);
			if (h == ms->nhdrs) {
				if (r->value[0] != '\0')
					ms_hdr_new(ms, ms->nhdrs, r->name,
					    r->value, lead);
			} else if (r->value[0] == '\0') {
				ms->hdrs[h].deleted = 1;
			} else {
				free(ms->hdrs[h].raw);
				ms->hdrs[h].raw = ms_hraw(r->name, r->value,
				    lead);
			}
			log_info("%s: milter %s: header %s: %s", ms->id,
			    c->spec, r->value[0] ? "changed" : "deleted",
			    r->name);
			break;
		case MILTER_R_DELRCPT:
			if (res->ndeleted < MILTER_DEL_MAX) {
				const char *a = r->text;
				size_t n = strlen(a);

				if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
					res->deleted[res->ndeleted++] =
					    xstrndup(a + 1, n - 2);
				else
					res->deleted[res->ndeleted++] =
					    xstrdup(a);
			}
			log_info("%s: milter %s: recipient deleted: %s",
			    ms->id, c->spec, log_sanitize(sbuf, sizeof(sbuf),
			    r->text, 256));
			break;
		case MILTER_R_QUARANTINE:
			res->quarantine = 1;
			util_strlcpy(res->qreason, r->text,
			    sizeof(res->qreason));
			log_info("%s: milter %s: quarantine: %s", ms->id,
			    c->spec, log_sanitize(sbuf, sizeof(sbuf), r->text,
			    200));
			break;
		case MILTER_R_CHGFROM: {
			const char *a = r->text;
			size_t n = strlen(a), k;

			if (n >= 2 && a[0] == '<' && a[n - 1] == '>') {
				a++;
				n -= 2;
			}
			/* it goes into MAIL FROM at delivery: one word */
			for (k = 0; k < n; k++)
				if ((unsigned char)a[k] <= 32 || a[k] == 127 ||
				    a[k] == '<' || a[k] == '>')
					break;
			if (k < n || n > 256) {
				log_warn("%s: milter %s: unusable new sender "
				    "ignored", ms->id, c->spec);
				break;
			}
			free(res->sender);
			res->sender = xstrndup(a, n);
			log_info("%s: milter %s: sender changed to <%s>",
			    ms->id, c->spec, log_sanitize(sbuf, sizeof(sbuf),
			    res->sender, 256));
			break;
		}
		case MILTER_R_ADDRCPT:
		case MILTER_R_REPLBODY:
			log_warn("%s: milter %s: %s not supported, ignored",
			    ms->id, c->spec, milter_rtype_name(r->type));
			break;
		default:
			break;
		}
	}
}

static void ms_copy(struct milter_sess *ms);

static void ms_copy_resume(void *arg)
{
	struct milter_sess *ms = arg;

	ms_copy(ms);
}

static void ms_eom_done(struct milter_sess *ms)
{
	milter_eom_fn *fn = ms->eom_fn;
	struct milter_result res = ms->res;
	size_t i;

	ms->copying = 0;
	ms->wait = W_NONE;
	ms->eom_fn = NULL;
	if (ms->put != NULL)
		queue_put_set_resume(ms->put, NULL, NULL);
	ms->put = NULL;
	memset(&ms->res, 0, sizeof(ms->res));
	/* the session may be gone after the call: only the copy is used */
	fn(ms->eom_arg, &res);
	for (i = 0; i < res.ndeleted; i++)
		free(res.deleted[i]);
	free(res.sender);
}

static void ms_copy_fail(struct milter_sess *ms, int err)
{
	ms->res.v.action = MILTER_TEMPFAIL;
	if (err == QUEUE_EFULL || err == QUEUE_EQUOTA)
		util_strlcpy(ms->res.v.reply, "452 4.3.1 Insufficient system "
		    "storage", sizeof(ms->res.v.reply));
	else
		util_strlcpy(ms->res.v.reply, "451 4.3.0 Local error in "
		    "processing", sizeof(ms->res.v.reply));
	ms_eom_done(ms);
}

/* After a queue_put_write: 1 when the copy stops here (failed, or
 * paused until ms_copy_resume), 0 to go on. */
static int ms_copy_stopped(struct milter_sess *ms, int r)
{
	if (r < 0) {
		ms_copy_fail(ms, r);
		return 1;
	}
	return r == 1;
}

/* Write the (changed) header section and the spooled body into the put,
 * as fast as the queue takes it. */
static void ms_copy(struct milter_sess *ms)
{
	unsigned char buf[MS_COPY_CHUNK];
	int r = 0;

	while (ms->copy_hdr < ms->nhdrs) {
		struct mhdr *h = &ms->hdrs[ms->copy_hdr++];

		if (h->deleted)
			continue;
		if (h->raw != NULL)
			r = queue_put_write(ms->put, h->raw, strlen(h->raw));
		else
			r = queue_put_write(ms->put, ms->hdrbuf + h->off,
			    h->len);
		if (ms_copy_stopped(ms, r))
			return;		/* ms_copy_resume */
	}
	if (!ms->copy_blank) {
		ms->copy_blank = 1;
		/* the header section's own unparsed tail, then the blank */
		if (ms->cur_hdr < 0 && ms->linestart < ms->hdrlen)
			r = queue_put_write(ms->put, ms->hdrbuf +
			    ms->linestart, ms->hdrlen - ms->linestart);
		if (r >= 0 && ms->blank)
			r = queue_put_write(ms->put, "\r\n", 2);
		if (ms_copy_stopped(ms, r))
			return;
	}
	while (ms->copy_mem < ms->spoollen) {
		size_t n = ms->spoollen - ms->copy_mem;

		if (n > MS_COPY_CHUNK)
			n = MS_COPY_CHUNK;
		r = queue_put_write(ms->put, ms->spool + ms->copy_mem, n);
		ms->copy_mem += n;
		if (ms_copy_stopped(ms, r))
			return;
	}
	while (ms->copy_file < ms->spoolfile) {
		uint64_t left = ms->spoolfile - ms->copy_file;
		size_t n = left > sizeof(buf) ? sizeof(buf) : (size_t)left;
		ssize_t got = pread(ms->spoolfd, buf, n, (off_t)ms->copy_file);

		if (got <= 0) {
			log_warn("%s: milter spool read: %s", ms->id,
			    got < 0 ? strerror(errno) : "short file");
			return ms_copy_fail(ms, QUEUE_EIO);
		}
		ms->copy_file += (uint64_t)got;
		r = queue_put_write(ms->put, buf, (size_t)got);
		if (ms_copy_stopped(ms, r))
			return;
	}
	ms_eom_done(ms);
}

/* Every filter answered the end of message: decide, then write. */
void ms_eom_finish(struct milter_sess *ms)
{
	struct milter_result *res = &ms->res;
	enum milter_action dflt_a;
	const char *dflt = ms_default_reply(ms->cfg, &dflt_a);
	size_t i;

	memset(res, 0, sizeof(*res));
	ms->wait = W_NONE;
	for (i = 0; i < ms->nc && res->v.action == MILTER_CONTINUE; i++) {
		struct mconn *c = &ms->c[i];
		enum milter_action a = MILTER_CONTINUE;
		const char *reply = "";

		if (c->failed_tx) {
			a = dflt_a;
			reply = dflt;
		} else if (c->conn_action != MILTER_CONTINUE) {
			a = c->conn_action;
			reply = c->conn_reply;
		} else if (c->tx_action != MILTER_CONTINUE) {
			a = c->tx_action;
			reply = c->tx_reply;
		}
		if (a != MILTER_CONTINUE) {
			res->v.action = a;
			util_strlcpy(res->v.reply, reply, sizeof(res->v.reply));
			util_strlcpy(res->v.milter, c->spec,
			    sizeof(res->v.milter));
		}
	}
	if (res->v.action == MILTER_CONTINUE && ms->spoolerr) {
		ms_copy_fail(ms, QUEUE_EIO);
		return;
	}
	if (res->v.action != MILTER_CONTINUE) {
		ms_eom_done(ms);
		return;
	}
	for (i = 0; i < ms->nc; i++)
		if (ms->c[i].eom_done && !ms->c[i].failed_tx)
			ms_apply_mods(ms, &ms->c[i]);
	ms->copying = 1;
	ms->copy_hdr = 0;
	ms->copy_mem = 0;
	ms->copy_file = 0;
	ms->copy_blank = 0;
	queue_put_set_resume(ms->put, ms_copy_resume, ms);
	ms_copy(ms);
}

void milter_sess_eom(struct milter_sess *ms, struct queue_put *put,
    milter_eom_fn *done, void *arg)
{
	ms->put = put;
	ms->eom_fn = done;
	ms->eom_arg = arg;
	ms->wait = W_EOM;
	ms_eom_send(ms);
	ms_kick(ms);
}

void milter_sess_end_tx(struct milter_sess *ms)
{
	size_t i;

	if (ms == NULL)
		return;
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (c->st == MC_OPEN && c->mail_sent && !c->eom_done) {
			/* the filter's transaction ends here */
			mc_drop_tx_packets(c);
			if (c->negotiated == 2) {
				milter_put_cmd(mc_push(c, ST_NONE, 0),
				    SMFIC_ABORT);
				mc_pushed(c);
				mc_pump(c);
			} else {
				/* nothing of the tx went out yet */
			}
		}
		c->mail_sent = 0;
		c->tx_done = 0;
		c->tx_action = MILTER_CONTINUE;
		c->tx_reply[0] = '\0';
		c->rcpt_pending = 0;
		free(c->pending_rcpt);
		c->pending_rcpt = NULL;
		c->rcpt_action = MILTER_CONTINUE;
		c->skip_body = 0;
		c->eom_sent = c->eom_done = 0;
		mc_clear_mods(c);
		if (c->st == MC_BROKEN) {
			/* the next transaction tries again */
			c->failed_tx = 0;
			c->st = MC_OFF;
		}
	}
	ms->filtering = 0;
	ms->naccepted = 0;
	ms->data_sent = 0;
	ms->id[0] = '\0';
	ms->wait = W_NONE;
	ms->eom_fn = NULL;
	ms->rcpt_fn = NULL;
	ms->put = NULL;	/* smtpd owns it */
	ms->copying = 0;
	ms->in_headers = 0;
	for (i = 0; i < ms->nhdrs; i++)
		free(ms->hdrs[i].raw);
	ms->nhdrs = 0;
	ms->hdrlen = ms->linestart = 0;
	ms->cur_hdr = -1;
	ms->blank = 0;
	ms->chunklen = 0;
	ms->spoollen = 0;
	if (ms->spoolfd >= 0) {
		close(ms->spoolfd);
		ms->spoolfd = -1;
	}
	ms->spoolfile = 0;
	ms->spoolerr = 0;
	ms->paused = 0;
}

void milter_sess_free(struct milter_sess **msp)
{
	struct milter_sess *ms = *msp;
	struct mcmd *m;
	size_t i;

	if (ms == NULL)
		return;
	*msp = NULL;
	milter_sess_end_tx(ms);
	ms->freeing = 1;
	for (i = 0; i < ms->nc; i++) {
		struct mconn *c = &ms->c[i];

		if (c->st == MC_OPEN && c->ml != NULL)
			mc_flush(c);
		if (mp_put(c)) {
			/* kept for the next session: no QUIT */
		} else if (c->st == MC_OPEN && c->ml != NULL &&
		    c->negotiated == 2 && !c->awaiting && c->head == NULL) {
			/* QUIT goes out on a link that outlives the session
			 * briefly */
			struct mlink *ml = c->ml;

			c->ml = NULL;
			milter_put_cmd(ml->out, SMFIC_QUIT);
			ml_quit(ml);
		}
		mc_close(c);
		while ((m = c->spare) != NULL) {
			c->spare = m->next;
			free(m);
		}
		mc_clear_mods(c);
		event_free(c->timer);
		evbuffer_free(c->pend);
	}
	free(ms->c);
	event_free(ms->kick);
	free(ms->sender);
	free(ms->hdrbuf);
	free(ms->hdrs);
	free(ms->chunk);
	free(ms->spool);
	config_free(&ms->cfg);
	free(ms);
}
