/*
 * bounce - builds RFC 3464 / RFC 6522 delivery status notifications.
 *
 * Input is our own queue data (already validated at RCPT time), but remote
 * reply texts end up in Diagnostic-Code: they are stripped of control
 * characters and cut to keep the report well formed.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounce.h"
#include "config.h"
#include "queue.h"
#include "util.h"
#include "xmalloc.h"

struct bounce_buf {
	char *p;
	size_t len, cap;
};

static void bounce_buf_add(struct bounce_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = xreallocarray(b->p, cap, 1);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void bounce_buf_printf(struct bounce_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void bounce_buf_printf(struct bounce_buf *b, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	bounce_buf_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

int bounce_wanted(const struct queue_envelope *orig, const struct queue_rcpt *r,
    enum bounce_action action)
{
	/* RFC 5321 4.5.5 / 6.1: never a notice to the null sender, never a
	 * DSN about a DSN. */
	if (orig->sender[0] == '\0' || (orig->flags & QUEUE_F_DSN))
		return 0;
	if (r->notify & QUEUE_NOTIFY_NEVER)
		return 0;
	switch (action) {
	case BOUNCE_FAILED:
		return r->notify == 0 || (r->notify & QUEUE_NOTIFY_FAILURE);
	case BOUNCE_DELAYED:
		/* RFC 3461 4.1: without NOTIFY, delay notices are optional; we
		 * send them (traditional behaviour) unless NOTIFY excludes them. */
		return r->notify == 0 || (r->notify & QUEUE_NOTIFY_DELAY);
	case BOUNCE_DELIVERED:
	case BOUNCE_RELAYED:
		return (r->notify & QUEUE_NOTIFY_SUCCESS) != 0;
	}
	return 0;
}

const char *bounce_addr_domain(const char *addr, char *buf, size_t size)
{
	const char *at = strrchr(addr, '@');

	if (at == NULL || util_strlcpy(buf, at + 1, size) < 0) {
		if (size > 0)
			buf[0] = '\0';
		return buf;
	}
	util_lowercase(buf);
	return buf;
}

static void bounce_date(time_t t, char *buf, size_t size)
{
	struct tm tm;

	localtime_r(&t, &tm);
	/* RFC 5322 3.3: numeric zone. */
	strftime(buf, size, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* Remote text goes into a header field: printable ASCII only, bounded. */
static void bounce_clean(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; in != NULL && *in != '\0' && o + 1 < size; in++) {
		unsigned char c = (unsigned char)*in;

		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : ' ';
	}
	out[o] = '\0';
}

/*
 * Our own envelope data (addresses, ENVID, ORCPT, HELO) was checked by the
 * SMTP parser, but a header line is only safe if it cannot hold a line
 * break whatever the queue contains: control characters become '?'
 * (UTF-8 addresses of SMTPUTF8 mail are kept).
 */
static const char *bounce_field(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; in != NULL && *in != '\0' && o + 1 < size; in++) {
		unsigned char c = (unsigned char)*in;

		out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[o] = '\0';
	return out;
}

/*
 * ENVID and ORCPT travel as xtext (RFC 3461 4); the report carries their
 * decoded value (RFC 3461 6.3), "+2B" as "+". A value that would decode
 * to a control or 8-bit octet is kept as it came (still safe ASCII).
 */
static const char *bounce_xtext(const char *in, char *out, size_t size)
{
	size_t o = 0;
	const char *p;

	for (p = in; *p != '\0' && o + 1 < size; p++) {
		unsigned v;

		if (*p != '+') {
			out[o++] = *p;
			continue;
		}
		if (!isxdigit((unsigned char)p[1]) ||
		    !isxdigit((unsigned char)p[2]) ||
		    sscanf(p + 1, "%2x", &v) != 1 || v < 0x20 || v >= 0x7f)
			return bounce_field(in, out, size);
		out[o++] = (char)v;
		p += 2;
	}
	out[o] = '\0';
	return bounce_field(out, out, size);
}

static int bounce_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

static int bounce_has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

static const char *bounce_action_name(enum bounce_action a)
{
	static const char *names[] = { "failed", "delayed", "delivered", "relayed" };

	return names[a];
}

static const char *bounce_default_status(enum bounce_action a)
{
	switch (a) {
	case BOUNCE_FAILED: return "5.0.0";
	case BOUNCE_DELAYED: return "4.0.0";
	default: return "2.0.0";
	}
}

/* Copy the original (or only its header) into the report. */
static void bounce_add_original(struct bounce_buf *b, struct queue *q,
    const char *id, int headers_only, size_t max_return)
{
	static const char sep[] = "\r\n\r\n";
	struct queue_body *body = NULL;
	const unsigned char *data;
	size_t len, copied = 0;
	/* Matched prefix of CRLF CRLF; start as if after a CRLF, so a message
	 * that begins with an empty line has an empty header. */
	int matched = 2;

	if (q == NULL || queue_body_open(q, id, &body) != QUEUE_OK)
		return;
	while (copied < max_return && queue_body_read(body, &data, &len) == 1) {
		size_t i, n = len;
		int done = 0;

		if (headers_only) {
			for (i = 0; i < len; i++) {
				if (data[i] == (unsigned char)sep[matched])
					matched++;
				else
					matched = data[i] == '\r' ? 1 : 0;
				if (matched == 4) {
					n = i + 1;
					done = 1;
					break;
				}
			}
		}
		if (n > max_return - copied)
			n = max_return - copied;
		bounce_buf_add(b, (const char *)data, n);
		copied += n;
		if (done || n < len)
			break;
	}
	queue_body_free(&body);
	/* A cut between CR and LF must not leave a bare CR. */
	if (b->len >= 1 && b->p[b->len - 1] == '\r')
		bounce_buf_add(b, "\n", 1);
	else if (b->len >= 2 && memcmp(b->p + b->len - 2, "\r\n", 2) != 0)
		bounce_buf_add(b, "\r\n", 2);
}

int bounce_build(const char *hostname, const struct queue_envelope *orig,
    const struct bounce_rcpt *rcpts, size_t nrcpts, struct queue *q,
    size_t max_return, time_t now, struct queue_envelope *env_r,
    char **body_r, size_t *len_r)
{
	struct bounce_buf b = { 0 };
	char boundary[64], date[64], adate[64], clean[600], dom[256], fld[600];
	unsigned char rnd[8];
	size_t i, nwanted = 0;
	int any_failed = 0, headers_only;
	/* A message sent with SMTPUTF8 may have UTF-8 addresses and headers:
	 * its report is the RFC 6533 kind (global-delivery-status, utf-8
	 * address type, message/global), since rfc822 types are ASCII. */
	int utf8 = (orig->flags & QUEUE_F_SMTPUTF8) != 0;

	for (i = 0; i < nrcpts; i++) {
		if (rcpts[i].index < orig->nrcpts &&
		    bounce_wanted(orig, &orig->rcpts[rcpts[i].index], rcpts[i].action)) {
			nwanted++;
			if (rcpts[i].action == BOUNCE_FAILED)
				any_failed = 1;
		}
	}
	/* Never a notice to an address that could not be written safely. */
	if (nwanted == 0 || bounce_has_ctl(orig->sender))
		return -1;

	memset(rnd, 0, sizeof(rnd));
	util_random(rnd, sizeof(rnd));
	snprintf(boundary, sizeof(boundary), "%s/%02x%02x%02x%02x%02x%02x%02x%02x",
	    orig->id, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	bounce_date(now, date, sizeof(date));
	bounce_date(orig->arrival, adate, sizeof(adate));

	bounce_buf_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname);
	bounce_buf_printf(&b, "To: <%s>\r\n", bounce_field(orig->sender, fld, sizeof(fld)));
	bounce_buf_printf(&b, "Subject: %s\r\n", any_failed ?
	    "Undelivered Mail Returned to Sender" : "Delivery Status Notification");
	bounce_buf_printf(&b, "Date: %s\r\n", date);
	bounce_buf_printf(&b, "Message-ID: <%s.%02x%02x%02x%02x@%s>\r\n", orig->id,
	    rnd[0], rnd[1], rnd[2], rnd[3], hostname);
	bounce_buf_printf(&b, "Auto-Submitted: auto-replied\r\n");
	bounce_buf_printf(&b, "MIME-Version: 1.0\r\n");
	bounce_buf_printf(&b, "Content-Type: multipart/report; report-type=%s;\r\n"
	    "\tboundary=\"%s\"\r\n\r\n", utf8 ? "global-delivery-status" :
	    "delivery-status", boundary);
	bounce_buf_printf(&b, "This is a MIME-encapsulated message.\r\n\r\n");

	/* 1. Human-readable part. */
	bounce_buf_printf(&b, "--%s\r\nContent-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=%s\r\n\r\n", boundary,
	    utf8 ? "utf-8" : "us-ascii");
	bounce_buf_printf(&b, "This is the mail system at host %s.\r\n\r\n", hostname);
	if (any_failed)
		bounce_buf_printf(&b, "Your message could not be delivered to one or more\r\n"
		    "recipients. It is attached below.\r\n\r\n");
	else
		bounce_buf_printf(&b, "This is a status report about your message.\r\n\r\n");
	for (i = 0; i < nrcpts; i++) {
		const struct queue_rcpt *r;

		if (rcpts[i].index >= orig->nrcpts)
			continue;
		r = &orig->rcpts[rcpts[i].index];
		if (!bounce_wanted(orig, r, rcpts[i].action))
			continue;
		bounce_clean(rcpts[i].diagnostic, clean, sizeof(clean));
		bounce_buf_printf(&b, "<%s>: %s%s%s\r\n",
		    bounce_field(r->addr, fld, sizeof(fld)),
		    bounce_action_name(rcpts[i].action), clean[0] ? ": " : "", clean);
	}
	bounce_buf_printf(&b, "\r\n");

	/* 2. message/delivery-status (RFC 3464 2.2, 2.3). */
	bounce_buf_printf(&b, "--%s\r\nContent-Description: Delivery report\r\n"
	    "Content-Type: message/%sdelivery-status\r\n\r\n", boundary,
	    utf8 ? "global-" : "");
	bounce_buf_printf(&b, "Reporting-MTA: dns; %s\r\n", hostname);
	if (orig->envid != NULL)
		bounce_buf_printf(&b, "Original-Envelope-Id: %s\r\n",
		    bounce_xtext(orig->envid, fld, sizeof(fld)));
	if (orig->helo != NULL)
		bounce_buf_printf(&b, "Received-From-MTA: dns; %s\r\n",
		    bounce_field(orig->helo, fld, sizeof(fld)));
	bounce_buf_printf(&b, "Arrival-Date: %s\r\n", adate);
	for (i = 0; i < nrcpts; i++) {
		const struct queue_rcpt *r;
		const char *status;

		if (rcpts[i].index >= orig->nrcpts)
			continue;
		r = &orig->rcpts[rcpts[i].index];
		if (!bounce_wanted(orig, r, rcpts[i].action))
			continue;
		status = rcpts[i].status ? rcpts[i].status : bounce_default_status(rcpts[i].action);
		bounce_buf_printf(&b, "\r\nFinal-Recipient: %s; %s\r\n",
		    bounce_ascii(r->addr) ? "rfc822" : "utf-8",
		    bounce_field(r->addr, fld, sizeof(fld)));
		if (r->orcpt != NULL) {
			/* addr-type ";" xtext: the type as it came. */
			const char *semi = strchr(r->orcpt, ';');
			char val[600];

			if (semi != NULL)
				bounce_buf_printf(&b, "Original-Recipient: %.*s;%s\r\n",
				    (int)(semi - r->orcpt), bounce_field(r->orcpt,
				    fld, sizeof(fld)), bounce_xtext(semi + 1, val,
				    sizeof(val)));
			else
				bounce_buf_printf(&b, "Original-Recipient: %s\r\n",
				    bounce_field(r->orcpt, fld, sizeof(fld)));
		}
		bounce_buf_printf(&b, "Action: %s\r\n", bounce_action_name(rcpts[i].action));
		bounce_buf_printf(&b, "Status: %s\r\n", status);
		if (rcpts[i].remote_mta != NULL) {
			bounce_clean(rcpts[i].remote_mta, clean, 256);
			bounce_buf_printf(&b, "Remote-MTA: dns; %s\r\n", clean);
		}
		if (rcpts[i].diagnostic != NULL) {
			bounce_clean(rcpts[i].diagnostic, clean, sizeof(clean));
			bounce_buf_printf(&b, "Diagnostic-Code: smtp; %s\r\n", clean);
		}
		bounce_buf_printf(&b, "Last-Attempt-Date: %s\r\n", date);
	}
	bounce_buf_printf(&b, "\r\n");

	/* 3. The original: whole (RET=FULL) or headers (RET=HDRS, and by
	 * default for failures, to keep bounces small). */
	headers_only = orig->ret != QUEUE_RET_FULL;
	bounce_buf_printf(&b, "--%s\r\nContent-Description: %s\r\nContent-Type: %s\r\n\r\n",
	    boundary, headers_only ? "Undelivered Message Headers" : "Undelivered Message",
	    headers_only ? (utf8 ? "message/global-headers" :
	    "text/rfc822-headers") : (utf8 ? "message/global" :
	    "message/rfc822"));
	bounce_add_original(&b, q, orig->id, headers_only, max_return);
	bounce_buf_printf(&b, "\r\n--%s--\r\n", boundary);

	memset(env_r, 0, sizeof(*env_r));
	env_r->sender = xstrdup("");
	/* A UTF-8 sender can only be reached with SMTPUTF8. */
	env_r->flags = QUEUE_F_DSN |
	    (orig->flags & (QUEUE_F_8BITMIME | QUEUE_F_SMTPUTF8));
	env_r->ret = QUEUE_RET_NONE;
	env_r->arrival = now;
	env_r->rcpts = xcalloc(1, sizeof(*env_r->rcpts));
	env_r->nrcpts = 1;
	env_r->rcpts[0].addr = xstrdup(orig->sender);
	env_r->rcpts[0].domain = xstrdup(bounce_addr_domain(orig->sender, dom, sizeof(dom)));
	env_r->rcpts[0].state = QUEUE_RCPT_QUEUED;
	/* Due now: bounces go out by the retry index like backup-MX mail. */
	env_r->rcpts[0].next_attempt = now;
	*body_r = b.p;
	*len_r = b.len;
	return 0;
}

void bounce_envelope_clear(struct queue_envelope *env)
{
	size_t i;

	for (i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].addr);
		free(env->rcpts[i].domain);
	}
	free(env->rcpts);
	free(env->sender);
	memset(env, 0, sizeof(*env));
}

void bounce_route(struct queue_envelope *benv, const struct config *cfg)
{
	const struct config_domain *cd;
	struct queue_rcpt *r;

	if (benv->nrcpts != 1 || cfg == NULL)
		return;
	r = &benv->rcpts[0];
	cd = config_find_domain(cfg, r->domain);
	if (cd == NULL)
		return;
	free(r->domain);
	r->domain = xstrdup(cd->name);
	if (cd->hold)
		r->next_attempt = 0;
}
