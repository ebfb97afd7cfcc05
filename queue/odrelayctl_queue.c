/*
 * odrelayctl_queue - odrelayctl's reading commands: "queue" (listing,
 * per-domain totals, JSON) and "show" (envelope, headers, body), and the
 * escaped text output every command uses.
 *
 * Trust: everything printed that came from the network is escaped
 * (ctl_put_text): a listing must not drive the administrator's terminal.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ctlclient.h"
#include "domhash.h"
#include "log.h"
#include "passwd.h"
#include "queue.h"
#include "domstate.h"
#include "rcache.h"
#include "util.h"
#include "xmalloc.h"
#include "odrelayctl_private.h"

/* ---- text output ---- */

/*
 * Length of the valid UTF-8 sequence at s (at most n bytes), with its code
 * point in *cp; 0 when the bytes there are not valid UTF-8 (overlong forms,
 * surrogates and values past U+10FFFF are refused).
 */
static size_t ctl_utf8_len(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c;
	size_t len, i;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		c = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		c = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		c = s[0] & 0x07;
	} else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	*cp = c;
	return len;
}

/*
 * Invisible or reordering code points (zero-width, line/paragraph
 * separators, bidirectional controls, BOM): they could make a listing
 * show something other than what is stored.
 */
static int ctl_cp_hidden(uint32_t cp)
{
	return (cp >= 0x200b && cp <= 0x200f) ||
	    (cp >= 0x2028 && cp <= 0x202e) ||
	    (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff;
}

/*
 * Print n bytes of untrusted text for a terminal: valid printable UTF-8
 * passes, C0/C1 controls, DEL, and bytes that are not UTF-8 become \xHH,
 * invisible code points \uHHHH. Tabs pass when keep_tab (header
 * continuation lines).
 */
static void ctl_put_text_n(FILE *fp, const char *s, size_t n, int keep_tab)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		uint32_t cp;
		size_t len = ctl_utf8_len(p + i, n - i, &cp);

		if (len == 0 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0) ||
		    (cp < 0x20 && !(keep_tab && cp == '\t'))) {
			fprintf(fp, "\\x%02x", p[i]);
			i++;
			continue;
		}
		if (ctl_cp_hidden(cp))
			fprintf(fp, "\\u%04x", (unsigned)cp);
		else
			fwrite(p + i, 1, len, fp);
		i += len;
	}
}

void ctl_put_text(FILE *fp, const char *s)
{
	if (s == NULL)
		fputs("-", fp);
	else
		ctl_put_text_n(fp, s, strlen(s), 0);
}

/* Untrusted text escaped, then padded to width columns (a table cell). */
void ctl_put_cell(FILE *fp, const char *s, int width)
{
	char *buf = NULL;
	size_t size = 0;
	const unsigned char *c;
	FILE *mem;

	/* Plain ASCII (every domain name but IDNs): nothing to escape. */
	for (c = (const unsigned char *)s; c != NULL && *c > 0x20 && *c < 0x7f;
	    c++)
		;
	if (c != NULL && *c == '\0') {
		fprintf(fp, "%-*s", width, s);
		return;
	}
	mem = open_memstream(&buf, &size);
	if (mem == NULL) {
		fprintf(fp, "%-*s", width, "?");
		return;
	}
	ctl_put_text(mem, s);
	fclose(mem);
	fprintf(fp, "%-*s", width, buf);
	free(buf);
}

/*
 * A JSON string: quotes, backslash and control characters escaped; valid
 * UTF-8 kept; every byte that is not part of valid UTF-8 becomes \u00HH
 * (its Latin-1 reading), so the output is always valid JSON and no byte is
 * silently lost. NULL prints null.
 */
void ctl_json_str(FILE *fp, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n, i = 0;

	if (s == NULL) {
		fputs("null", fp);
		return;
	}
	n = strlen(s);
	fputc('"', fp);
	while (i < n) {
		uint32_t cp;
		size_t len = ctl_utf8_len(p + i, n - i, &cp);

		if (len == 0) {
			fprintf(fp, "\\u%04x", p[i]);
			i++;
			continue;
		}
		switch (cp) {
		case '"': fputs("\\\"", fp); break;
		case '\\': fputs("\\\\", fp); break;
		case '\n': fputs("\\n", fp); break;
		case '\r': fputs("\\r", fp); break;
		case '\t': fputs("\\t", fp); break;
		default:
			if (cp < 0x20 || cp == 0x7f)
				fprintf(fp, "\\u%04x", (unsigned)cp);
			else if (cp == 0x2028 || cp == 0x2029)
				/* valid JSON, but not valid JavaScript */
				fprintf(fp, "\\u%04x", (unsigned)cp);
			else
				fwrite(p + i, 1, len, fp);
		}
		i += len;
	}
	fputc('"', fp);
}

/* ISO 8601 UTC; "-" for 0 (never). */
static const char *ctl_time(time_t t, char *buf, size_t size)
{
	struct tm tm;

	if (t == 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "-");
	return buf;
}

static void ctl_json_time(FILE *fp, time_t t)
{
	char buf[32];

	if (t == 0)
		fputs("null", fp);
	else
		fprintf(fp, "\"%s\"", ctl_time(t, buf, sizeof(buf)));
}

static const char *ctl_rcpt_state_name(enum queue_rcpt_state st)
{
	switch (st) {
	case QUEUE_RCPT_QUEUED: return "queued";
	case QUEUE_RCPT_SENT: return "sent";
	case QUEUE_RCPT_BOUNCED: return "bounced";
	}
	return "unknown";
}

/* Flush stdout and report a write error (full disk, closed pipe). */
int ctl_finish_output(int status)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ctl_err("error writing output: %s", strerror(errno));
		return CTL_EXIT_FAIL;
	}
	return status;
}

/* ---- message state ---- */

const char *ctl_state_names[CTL_NSTATES] = {
	"held", "deferred", "delivering", "quarantined"
};
/* "quarantine": list only messages a milter held aside */
int ctl_only_quarantined;

static int ctl_rcpt_held(const struct queue_rcpt *r)
{
	/*
	 * Only the domain's mode says "held": next_attempt == 0 also marks
	 * mail due now (bounces to other domains), which is not held.
	 */
	return r->domain != NULL && ctl_domain_mode(r->domain) == CTL_MODE_HOLD;
}

static enum ctl_state ctl_msg_state(struct queue *q,
    const struct queue_envelope *env)
{
	size_t i;

	if (env->flags & QUEUE_F_QUARANTINE)
		return CTL_QUARANTINED;
	if (queue_is_leased(q, env->id) == 1)
		return CTL_DELIVERING;
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED &&
		    ctl_rcpt_held(&env->rcpts[i]))
			return CTL_HELD;
	return CTL_DEFERRED;
}

/* Highest attempt count among queued recipients (all, if none queued). */
static unsigned ctl_msg_attempts(const struct queue_envelope *env)
{
	unsigned a = 0;
	size_t i;
	int any = 0;

	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED) {
			any = 1;
			if (env->rcpts[i].attempts > a)
				a = env->rcpts[i].attempts;
		}
	if (!any)
		for (i = 0; i < env->nrcpts; i++)
			if (env->rcpts[i].attempts > a)
				a = env->rcpts[i].attempts;
	return a;
}

/* The most recent reply stored for a queued recipient, or NULL. */
static const char *ctl_msg_last_error(const struct queue_envelope *env)
{
	const struct queue_rcpt *best = NULL;
	size_t i;

	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		if (r->state != QUEUE_RCPT_QUEUED || r->last_reply == NULL)
			continue;
		if (best == NULL || r->last_attempt > best->last_attempt)
			best = r;
	}
	return best ? best->last_reply : NULL;
}

static int ctl_msg_has_domain(const struct queue_envelope *env,
    const char *domain)
{
	size_t i;

	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED &&
		    env->rcpts[i].domain != NULL &&
		    strcasecmp(env->rcpts[i].domain, domain) == 0)
			return 1;
	return 0;
}

/* ---- per-domain totals ---- */

static int ctl_dom_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct ctl_dom *)elem)->name);
}

/* The entry for name, or NULL: by the index, or (stats' rows, built in
 * name order without one) by a binary search. */
static struct ctl_dom *ctl_doms_find(struct ctl_doms *ds, const char *name)
{
	size_t i;

	if (ds->idx == NULL)
		return ds->n > 0 ? bsearch(name, ds->v, ds->n, sizeof(*ds->v),
		    ctl_dom_key_cmp) : NULL;
	if (domhash_get(ds->idx, name, &i))
		return &ds->v[i];
	return NULL;
}

struct ctl_dom *ctl_doms_get(struct ctl_doms *ds, const char *name)
{
	struct ctl_dom *d = ctl_doms_find(ds, name);

	if (d != NULL)
		return d;
	if (ds->idx == NULL)
		ds->idx = domhash_new();
	domhash_put(ds->idx, name, ds->n);
	if (ds->n == ds->cap) {
		ds->cap = ds->cap ? ds->cap * 2 : 16;
		ds->v = xreallocarray(ds->v, ds->cap, sizeof(*ds->v));
	}
	memset(&ds->v[ds->n], 0, sizeof(ds->v[0]));
	ds->v[ds->n].name = xstrdup(name);
	ds->v[ds->n].oldest_unknown = 1;
	return &ds->v[ds->n++];
}

/* Count env once for each distinct domain with a queued recipient. */
static void ctl_doms_count(struct ctl_doms *ds,
    const struct queue_envelope *env)
{
	size_t i, j;

	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		struct ctl_dom *d;
		int seen = 0;

		if (r->state != QUEUE_RCPT_QUEUED || r->domain == NULL)
			continue;
		for (j = 0; j < i && !seen; j++)
			if (env->rcpts[j].state == QUEUE_RCPT_QUEUED &&
			    env->rcpts[j].domain != NULL &&
			    strcasecmp(env->rcpts[j].domain, r->domain) == 0)
				seen = 1;
		if (seen)
			continue;
		d = ctl_doms_get(ds, r->domain);
		d->messages++;
		d->bytes += env->size;
	}
}

int ctl_dom_cmp(const void *a, const void *b)
{
	return strcasecmp(((const struct ctl_dom *)a)->name,
	    ((const struct ctl_dom *)b)->name);
}

void ctl_doms_free(struct ctl_doms *ds)
{
	size_t i;

	for (i = 0; i < ds->n; i++)
		free(ds->v[i].name);
	domhash_free(&ds->idx);
	free(ds->v);
	ds->v = NULL;
	ds->n = ds->cap = 0;
}

static int ctl_doms_state(void *arg, const char *domain,
    const struct domstate_rec *r)
{
	struct ctl_dom *d = ctl_doms_find(arg, domain);

	if (d != NULL) {
		d->last_atrn = r->last[DOMSTATE_ATRN];
		d->last_etrn = r->last[DOMSTATE_ETRN];
	}
	return 0;
}

/* The per-domain facts an operator watches (issue: oldest held message,
 * last ATRN pull, last ETRN), read from the queue and its domstate db:
 * the oldest only where the counters show mail and did not already say
 * it, the times in one walk of the records there are (50,000 domains
 * mostly have neither). */
void ctl_doms_facts(struct queue *q, struct ctl_doms *ds)
{
	const char **names = xcalloc(ds->n + 1, sizeof(*names));
	time_t *t = xcalloc(ds->n + 1, sizeof(*t));
	size_t *at = xcalloc(ds->n + 1, sizeof(*at));
	size_t k, m = 0;
	char err[256];
	struct domstate *st;

	for (k = 0; k < ds->n; k++)
		if (ds->v[k].messages > 0 && ds->v[k].oldest_unknown) {
			names[m] = ds->v[k].name;
			at[m++] = k;
		}
	if (queue_domains_oldest(q, names, m, t) == QUEUE_OK)
		for (k = 0; k < m; k++)
			ds->v[at[k]].oldest = t[k];
	free(names);
	free(t);
	free(at);
	st = domstate_open(q, err, sizeof(err));
	if (st != NULL)
		(void)domstate_foreach(st, ctl_doms_state, ds);
	domstate_close(&st);
}

/* v in decimal, right-aligned in width columns at p; returns the end.
 * (Tables of 50,000 rows: printf cost more than reading the queue.) */
static char *ctl_fmt_u64(char *p, uint64_t v, int width)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (width-- > n)
		*p++ = ' ';
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* s left-aligned in width columns at p; returns the end. */
static char *ctl_fmt_str(char *p, const char *s, size_t len, int width)
{
	memcpy(p, s, len);
	p += len;
	while (width-- > (int)len)
		*p++ = ' ';
	return p;
}

/* An age as a short word: 45s, 12m, 5h, 3d; "-" for none. */
static const char *ctl_age(time_t t, time_t now, char *buf, size_t size)
{
	long long a = (long long)(now - t);
	char *p = buf;

	if (size < 24)
		return "?";
	if (t == 0) {
		*p++ = '-';
	} else if (a < 0) {
		*p++ = '0';
		*p++ = 's';
	} else {
		char unit = a < 120 ? 's' : a < 2 * 3600 ? 'm' :
		    a < 2 * 86400 ? 'h' : 'd';
		long long div = unit == 's' ? 1 : unit == 'm' ? 60 :
		    unit == 'h' ? 3600 : 86400;

		p = ctl_fmt_u64(p, (uint64_t)(a / div), 0);
		*p++ = unit;
	}
	*p = '\0';
	return buf;
}

/* An age (ctl_age) right-aligned in width columns at p; returns the end.
 * Most rows have no ATRN or ETRN: "-" without the general path. */
static char *ctl_fmt_age(char *p, time_t t, time_t now, int width)
{
	char a[24];
	size_t len;

	if (t == 0) {
		p = ctl_fmt_str(p, "", 0, width - 1);
		*p++ = '-';
		return p;
	}
	len = strlen(ctl_age(t, now, a, sizeof(a)));
	p = ctl_fmt_str(p, "", 0, width - (int)len);
	return ctl_fmt_str(p, a, len, 0);
}

/*
 * A row of the per-domain tables of stats (with mode) and queue (mode
 * NULL): DOMAIN [MODE] MESSAGES BYTES OLDEST LAST-ATRN LAST-ETRN, in the
 * columns of their headers.
 */
void ctl_dom_row(const struct ctl_dom *d, const char *mode, time_t now)
{
	char row[512], *p = row;
	const unsigned char *c;
	size_t len = strlen(d->name);

	/* Plain ASCII (every domain name but IDNs): nothing to escape. */
	for (c = (const unsigned char *)d->name; *c > 0x20 && *c < 0x7f; c++)
		;
	if (*c != '\0' || len > 255) {
		ctl_put_cell(stdout, d->name, 32);
	} else
		p = ctl_fmt_str(p, d->name, len, 32);
	if (mode != NULL) {
		*p++ = ' ';
		p = ctl_fmt_str(p, mode, strlen(mode), 12);
	}
	*p++ = ' ';
	p = ctl_fmt_u64(p, d->messages, 8);
	*p++ = ' ';
	p = ctl_fmt_u64(p, d->bytes, 12);
	*p++ = ' ';
	p = ctl_fmt_age(p, d->oldest, now, 8);
	*p++ = ' ';
	p = ctl_fmt_age(p, d->last_atrn, now, 10);
	*p++ = ' ';
	p = ctl_fmt_age(p, d->last_etrn, now, 10);
	*p++ = '\n';
	fwrite(row, 1, (size_t)(p - row), stdout);
}

/*
 * t as ISO 8601 UTC at p (room for 32), as ctl_time writes it; returns
 * the end. The last one is remembered: a table's rows often share one.
 */
static char *ctl_fmt_time(char *p, time_t t)
{
	static time_t last_t;
	static char last[32];
	static size_t last_len;
	struct tm tm;

	if (last_len == 0 || t != last_t) {
		if (gmtime_r(&t, &tm) == NULL)
			last_len = (size_t)snprintf(last, sizeof(last), "-");
		else if (tm.tm_year >= 1000 - 1900 && tm.tm_year <= 9999 - 1900) {
			/* strftime's "%Y-%m-%dT%H:%M:%SZ", digit by digit */
			int v[6] = { tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			    tm.tm_hour, tm.tm_min, tm.tm_sec };
			static const char sep[6] = { '-', '-', 'T', ':', ':', 'Z' };
			char *q = last;

			q = ctl_fmt_u64(q, (uint64_t)v[0], 4);
			*q++ = sep[0];
			for (int i = 1; i < 6; i++) {
				*q++ = (char)('0' + v[i] / 10);
				*q++ = (char)('0' + v[i] % 10);
				*q++ = sep[i];
			}
			last_len = (size_t)(q - last);
		} else {
			char buf[32];

			last_len = strlen(ctl_time(t, buf, sizeof(buf)));
			memcpy(last, buf, last_len);
		}
		last_t = t;
	}
	memcpy(p, last, last_len);
	return p + last_len;
}

/* A time member's value at p: null, or the time quoted. */
static char *ctl_fmt_json_time(char *p, time_t t)
{
	if (t == 0) {
		memcpy(p, "null", 4);
		return p + 4;
	}
	*p++ = '"';
	p = ctl_fmt_time(p, t);
	*p++ = '"';
	return p;
}

/* The facts of one domain as JSON members at p; returns the end. */
static char *ctl_fmt_facts_json(char *p, const struct ctl_dom *d, time_t now)
{
	static const char o[] = ",\"oldest\":", oa[] = ",\"oldest_age\":",
	    la[] = ",\"last_atrn\":", le[] = ",\"last_etrn\":";

	memcpy(p, o, sizeof(o) - 1);
	p = ctl_fmt_json_time(p + sizeof(o) - 1, d->oldest);
	memcpy(p, oa, sizeof(oa) - 1);
	p = ctl_fmt_u64(p + sizeof(oa) - 1, d->oldest && now > d->oldest ?
	    (uint64_t)(now - d->oldest) : 0, 0);
	memcpy(p, la, sizeof(la) - 1);
	p = ctl_fmt_json_time(p + sizeof(la) - 1, d->last_atrn);
	memcpy(p, le, sizeof(le) - 1);
	return ctl_fmt_json_time(p + sizeof(le) - 1, d->last_etrn);
}

/* The facts of one domain as JSON members (after other members). */
void ctl_dom_facts_json(const struct ctl_dom *d, time_t now)
{
	char buf[256];

	fwrite(buf, 1, (size_t)(ctl_fmt_facts_json(buf, d, now) - buf), stdout);
}

/*
 * An element of the "domains" array of stats --json (modes: with
 * "configured" and "hold") and queue --json: {"domain":..,"messages":..,
 * "bytes":.., facts}, after a comma unless first. Built in a buffer, as
 * ctl_dom_row: printf for 50,000 of them cost more than reading them.
 */
void ctl_dom_json(const struct ctl_dom *d, int modes, int first, time_t now)
{
	static const char head[] = ",\n    {\"domain\":\"";
	char row[512], *p = row;
	const unsigned char *c;
	size_t len;

	memcpy(p, head + first, sizeof(head) - 1 - first);
	p += sizeof(head) - 1 - first;
	/* Plain ASCII without '"' or '\' (every domain name but IDNs):
	 * nothing to escape. */
	for (c = (const unsigned char *)d->name; *c >= 0x20 && *c < 0x7f &&
	    *c != '"' && *c != '\\'; c++)
		;
	len = (size_t)(c - (const unsigned char *)d->name);
	if (*c != '\0' || len > 255) {
		/* the row so far but its opening quote, then the name
		 * escaped (ctl_json_str quotes it) */
		fwrite(row, 1, (size_t)(p - row) - 1, stdout);
		ctl_json_str(stdout, d->name);
		p = row;
	} else {
		memcpy(p, d->name, len);
		p += len;
		*p++ = '"';
	}
	if (modes) {
		static const char ct[] = ",\"configured\":true",
		    cf[] = ",\"configured\":false", ht[] = ",\"hold\":true",
		    hf[] = ",\"hold\":false";

		memcpy(p, d->configured ? ct : cf, d->configured ? sizeof(ct) - 1 :
		    sizeof(cf) - 1);
		p += d->configured ? sizeof(ct) - 1 : sizeof(cf) - 1;
		memcpy(p, d->hold ? ht : hf, d->hold ? sizeof(ht) - 1 :
		    sizeof(hf) - 1);
		p += d->hold ? sizeof(ht) - 1 : sizeof(hf) - 1;
	}
	memcpy(p, ",\"messages\":", 12);
	p = ctl_fmt_u64(p + 12, d->messages, 0);
	memcpy(p, ",\"bytes\":", 9);
	p = ctl_fmt_u64(p + 9, d->bytes, 0);
	p = ctl_fmt_facts_json(p, d, now);
	*p++ = '}';
	fwrite(row, 1, (size_t)(p - row), stdout);
}

/* ---- queue ---- */

/* A mark after the id as Postfix mailq has: '*' being delivered, '!'
 * held for its customer, '#' quarantined by a milter. */
static char ctl_state_mark(enum ctl_state st)
{
	switch (st) {
	case CTL_DELIVERING: return '*';
	case CTL_HELD: return '!';
	case CTL_QUARANTINED: return '#';
	default: return ' ';
	}
}

static void ctl_queue_human(const struct queue_envelope *env,
    enum ctl_state st, int *first)
{
	const char *err;
	char tbuf[32];
	struct tm tm;
	time_t t = env->arrival;
	size_t i;

	if (*first) {
		printf("%-17s %9s %-19s %-10s %s\n", "-Queue ID-", "--Size--",
		    "---Arrival (UTC)---", "-State-", "-Sender/Recipient-------");
		*first = 0;
	}
	if (t == 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(tbuf, sizeof(tbuf), "%a %b %e %H:%M:%S", &tm) == 0)
		snprintf(tbuf, sizeof(tbuf), "-");
	printf("%s%c %9" PRIu64 " %-19s %-10s ", env->id, ctl_state_mark(st),
	    env->size, tbuf, ctl_state_names[st]);
	ctl_put_text(stdout, env->sender[0] != '\0' ? env->sender :
	    "MAILER-DAEMON");
	printf("\n");
	if ((err = ctl_msg_last_error(env)) != NULL) {
		printf("%59s(", "");
		ctl_put_text(stdout, err);
		printf(", %u attempt%s)\n", ctl_msg_attempts(env),
		    ctl_msg_attempts(env) == 1 ? "" : "s");
	}
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		if (r->state != QUEUE_RCPT_QUEUED)
			continue;
		printf("%59s", "");
		ctl_put_text(stdout, r->addr);
		printf("\n");
	}
	printf("\n");
}

static void ctl_queue_json(const struct queue_envelope *env,
    enum ctl_state st, int *first)
{
	struct ctl_doms ds = { NULL, 0, 0, NULL };
	size_t i;

	printf("%s\n    {\"id\":", *first ? "" : ",");
	*first = 0;
	ctl_json_str(stdout, env->id);
	printf(",\"arrival\":");
	ctl_json_time(stdout, env->arrival);
	printf(",\"size\":%" PRIu64 ",\"sender\":", env->size);
	ctl_json_str(stdout, env->sender);
	printf(",\"state\":\"%s\",\"domains\":[", ctl_state_names[st]);
	ctl_doms_count(&ds, env);
	for (i = 0; i < ds.n; i++) {
		if (i > 0)
			putchar(',');
		ctl_json_str(stdout, ds.v[i].name);
	}
	/* spec.md lists one domain per message: the first (for most
	 * messages the only one); "domains" has them all. */
	printf("],\"domain\":");
	if (ds.n > 0)
		ctl_json_str(stdout, ds.v[0].name);
	else
		printf("null");
	ctl_doms_free(&ds);
	printf(",\"recipients\":[");
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];

		printf("%s\n      {\"address\":", i ? "," : "");
		ctl_json_str(stdout, r->addr);
		printf(",\"domain\":");
		ctl_json_str(stdout, r->domain);
		printf(",\"state\":\"%s\",\"attempts\":%u,\"last_attempt\":",
		    ctl_rcpt_state_name(r->state), r->attempts);
		ctl_json_time(stdout, r->last_attempt);
		printf(",\"next_attempt\":");
		ctl_json_time(stdout, r->next_attempt);
		printf(",\"last_reply\":");
		ctl_json_str(stdout, r->last_reply);
		printf("}");
	}
	printf("],\n     \"attempts\":%u,\"last_error\":", ctl_msg_attempts(env));
	ctl_json_str(stdout, ctl_msg_last_error(env));
	printf("}");
}

/* One message of "queue": printed as it is read (constant memory). */
struct ctl_walk {
	struct queue *q;
	const struct config *cfg;
	const char *domain;
	struct ctl_doms *ds;
	int json, first, status;
	uint64_t msgs, bytes;
};

static int ctl_queue_visit(void *arg, const struct queue_envelope *env)
{
	struct ctl_walk *w = arg;
	enum ctl_state st;

	if ((w->domain != NULL && !ctl_msg_has_domain(env, w->domain)) ||
	    (ctl_only_quarantined && !(env->flags & QUEUE_F_QUARANTINE)))
		return 0;
	st = ctl_msg_state(w->q, env);
	if (w->json)
		ctl_queue_json(env, st, &w->first);
	else
		ctl_queue_human(env, st, &w->first);
	ctl_doms_count(w->ds, env);
	w->msgs++;
	w->bytes += env->size;
	return 0;
}

/* queue DOMAIN: through the domain index, a page of ids at a time. */
static int ctl_queue_domain(struct ctl_walk *w)
{
	char ids[256][QUEUE_ID_LEN + 1], after[QUEUE_ID_LEN + 1] = "";
	int n, rc = QUEUE_OK;

	while ((n = queue_domain_ids(w->q, w->domain, after, ids, 256)) > 0) {
		for (int k = 0; k < n; k++) {
			struct queue_envelope *env = NULL;
			int r = queue_get(w->q, ids[k], &env);

			if (r < 0) {
				ctl_err("%s: %s", ids[k], queue_strerror(r));
				w->status = CTL_EXIT_FAIL;
			}
			if (r != 1)
				continue;	/* delivered or removed meanwhile */
			ctl_queue_visit(w, env);
			queue_envelope_free(&env);
		}
		memcpy(after, ids[n - 1], sizeof(after));
	}
	if (n < 0)
		rc = n;
	return rc;
}

/*
 * Push delivery: which domains a customer waits for now (XWAIT), from the
 * daemon's "waiting" control answer: "250-DOMAIN=N" lines, then "250 N
 * domains" (an odrelayd before that answered one line "250 DOMAIN=N
 * ..."; both are read). Nothing when the daemon is not running.
 */
struct ctl_waiter {
	char *name;
	unsigned long sessions;
};

struct ctl_waiting {
	const char *filter;	/* only that domain, or NULL */
	struct ctl_waiter *v;
	size_t n, cap;
};

static int ctl_waiter_cmp(const void *a, const void *b)
{
	return strcasecmp(((const struct ctl_waiter *)a)->name,
	    ((const struct ctl_waiter *)b)->name);
}

/* The "DOMAIN=N" words of one line. */
static int ctl_waiting_line(void *arg, const char *text)
{
	struct ctl_waiting *cw = arg;
	char *copy = xstrdup(text), *w, *save = NULL;

	for (w = strtok_r(copy, " ", &save); w != NULL;
	    w = strtok_r(NULL, " ", &save)) {
		char *eq = strrchr(w, '=');

		if (eq == NULL || eq == w)
			continue;
		*eq = '\0';
		if (cw->filter != NULL && strcasecmp(cw->filter, w) != 0)
			continue;
		if (cw->n == cw->cap) {
			cw->cap = cw->cap ? cw->cap * 2 : 16;
			cw->v = xreallocarray(cw->v, cw->cap, sizeof(*cw->v));
		}
		cw->v[cw->n].name = xstrdup(w);
		cw->v[cw->n++].sessions = strtoul(eq + 1, NULL, 10);
	}
	free(copy);
	return 0;
}

static void ctl_queue_waiting(const struct config *cfg, const char *filter,
    int json)
{
	char final[8192], err[512], pbuf[512];
	const char *path = ctl_control_path(cfg, pbuf, sizeof(pbuf));
	struct ctl_waiting cw = { filter, NULL, 0, 0 };

	if (ctlclient_stream(path, "waiting", ctl_waiting_line, &cw, final,
	    sizeof(final), err, sizeof(err)) == 0 &&
	    strncmp(final, "250 ", 4) == 0)
		(void)ctl_waiting_line(&cw, final + 4);
	else	/* not running, or cut short: say nothing */
		for (; cw.n > 0; cw.n--)
			free(cw.v[cw.n - 1].name);
	/* By name: the daemon lists them in its own order. */
	if (cw.n > 1)
		qsort(cw.v, cw.n, sizeof(*cw.v), ctl_waiter_cmp);
	if (json)
		printf(",\n \"waiting\":[");
	for (size_t i = 0; i < cw.n; i++) {
		if (json) {
			printf("%s{\"domain\":", i ? "," : "");
			ctl_json_str(stdout, cw.v[i].name);
			printf(",\"sessions\":%lu}", cw.v[i].sessions);
		} else {
			printf("%s", i ? ", " : "Customers waiting now (XWAIT): ");
			ctl_put_text(stdout, cw.v[i].name);
			printf(" (%lu)", cw.v[i].sessions);
		}
	}
	if (json)
		printf("]");
	else if (cw.n > 0)
		printf("\n");
	for (size_t i = 0; i < cw.n; i++)
		free(cw.v[i].name);
	free(cw.v);
}

int ctl_cmd_queue(int argc, char **argv)
{
	const struct config *cfg;
	struct ctl_doms ds = { NULL, 0, 0, NULL };
	char *domain = NULL;
	struct queue *q;
	uint64_t total_msgs = 0, total_bytes = 0;
	int json = 0, first = 1, rc, i, status = CTL_EXIT_OK;
	time_t now = time(NULL);
	size_t k;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (argv[i][0] == '-' || domain != NULL)
			return ctl_usage();
		else
			domain = argv[i];
	}
	if (domain != NULL && !ctl_domain_arg(domain)) {
		ctl_err("invalid domain");
		return CTL_EXIT_USAGE;
	}
	if ((cfg = ctl_config()) == NULL || (q = ctl_open_ro(cfg)) == NULL)
		return CTL_EXIT_FAIL;
	/* Streamed: each message printed as it is read; with a DOMAIN only
	 * that domain's index is read. On an error (a corrupt record) list
	 * what could be read, exit 1. */
	if (json)
		printf("{\"messages\":[");
	{
		struct ctl_walk w = { q, cfg, domain, &ds, json, 1, status, 0, 0 };

		rc = domain != NULL ? ctl_queue_domain(&w) :
		    queue_foreach(q, ctl_queue_visit, &w);
		if (rc < 0) {
			ctl_err("reading queue: %s", queue_strerror(rc));
			w.status = CTL_EXIT_FAIL;
		}
		first = w.first;
		status = w.status;
		total_msgs = w.msgs;
		total_bytes = w.bytes;
	}
	ctl_doms_facts(q, &ds);
	queue_close(&q);

	/* With a DOMAIN filter, only that domain's totals. */
	if (domain != NULL) {
		for (k = 0; k < ds.n; k++)
			if (strcasecmp(ds.v[k].name, domain) != 0)
				ds.v[k].messages = 0;
	}
	if (ds.n > 1)
		qsort(ds.v, ds.n, sizeof(ds.v[0]), ctl_dom_cmp);

	if (json) {
		int firstd = 1;

		printf("%s],\n \"domains\":[", first ? "" : "\n  ");
		for (k = 0; k < ds.n; k++) {
			if (ds.v[k].messages == 0)
				continue;
			ctl_dom_json(&ds.v[k], 0, firstd, now);
			firstd = 0;
		}
		printf("],\n \"total\":{\"messages\":%" PRIu64
		    ",\"bytes\":%" PRIu64 "}", total_msgs, total_bytes);
		ctl_queue_waiting(cfg, domain, 1);
		printf("}\n");
	} else if (total_msgs == 0) {
		if (domain != NULL) {
			printf("No mail queued for ");
			ctl_put_text(stdout, domain);
			printf("\n");
		} else
			printf("Mail queue is empty\n");
	} else {
		printf("-- %" PRIu64 " Kbytes in %" PRIu64 " Request%s. "
		    "(%" PRIu64 " bytes)\n\n", (total_bytes + 1023) / 1024,
		    total_msgs, total_msgs == 1 ? "" : "s", total_bytes);
		printf("%-32s %8s %12s %8s %10s %10s\n", "DOMAIN", "MESSAGES",
		    "BYTES", "OLDEST", "LAST ATRN", "LAST ETRN");
		for (k = 0; k < ds.n; k++) {
			if (ds.v[k].messages == 0)
				continue;
			ctl_dom_row(&ds.v[k], NULL, now);
		}
	}
	if (!json)
		ctl_queue_waiting(cfg, domain, 0);
	ctl_doms_free(&ds);
	return ctl_finish_output(status);
}

/* ---- show ---- */

static void ctl_show_notify(unsigned n)
{
	const char *sep = "";

	if (n == 0) {
		printf("-");
		return;
	}
	if (n & QUEUE_NOTIFY_NEVER) {
		printf("%sNEVER", sep);
		sep = ",";
	}
	if (n & QUEUE_NOTIFY_SUCCESS) {
		printf("%sSUCCESS", sep);
		sep = ",";
	}
	if (n & QUEUE_NOTIFY_FAILURE) {
		printf("%sFAILURE", sep);
		sep = ",";
	}
	if (n & QUEUE_NOTIFY_DELAY)
		printf("%sDELAY", sep);
}

/* Print the stored message bytes exactly. */
static int ctl_show_body(struct queue *q, const char *id)
{
	struct queue_body *b = NULL;
	const unsigned char *data;
	size_t len;
	int rc;

	if ((rc = queue_body_open(q, id, &b)) < 0) {
		ctl_err("%s: body: %s", id, queue_strerror(rc));
		return CTL_EXIT_FAIL;
	}
	while ((rc = queue_body_read(b, &data, &len)) == 1) {
		if (len > 0 && fwrite(data, 1, len, stdout) != len)
			break;
	}
	queue_body_free(&b);
	if (rc < 0) {
		ctl_err("%s: body: %s", id, queue_strerror(rc));
		return CTL_EXIT_FAIL;
	}
	return ctl_finish_output(CTL_EXIT_OK);
}

/*
 * The header block: body bytes up to the first empty line (bounded), each
 * line printed escaped with LF line ends.
 */
static int ctl_show_headers(struct queue *q, const char *id)
{
	struct queue_body *b = NULL;
	const unsigned char *data;
	size_t len, have = 0, end = 0, start, k;
	char *buf = xmalloc(CTL_MAX_HEADERS);
	int rc, found = 0;

	if ((rc = queue_body_open(q, id, &b)) < 0) {
		ctl_err("%s: body: %s", id, queue_strerror(rc));
		free(buf);
		return CTL_EXIT_FAIL;
	}
	while (!found && have < CTL_MAX_HEADERS &&
	    (rc = queue_body_read(b, &data, &len)) == 1) {
		size_t take = len;

		if (take > CTL_MAX_HEADERS - have)
			take = CTL_MAX_HEADERS - have;
		memcpy(buf + have, data, take);
		have += take;
		/* An empty line: CRLF at the start, or CRLF CRLF. */
		if (have >= 2 && buf[0] == '\r' && buf[1] == '\n') {
			found = 1;
			end = 0;
			break;
		}
		for (k = 0; k + 3 < have; k++)
			if (memcmp(buf + k, "\r\n\r\n", 4) == 0) {
				found = 1;
				end = k + 2;
				break;
			}
	}
	queue_body_free(&b);
	if (rc < 0) {
		ctl_err("%s: body: %s", id, queue_strerror(rc));
		free(buf);
		return CTL_EXIT_FAIL;
	}
	if (!found)
		end = have;	/* no body, or header block too long */
	printf("\nheaders:\n");
	for (start = 0; start < end; ) {
		size_t eol = start;

		while (eol < end && buf[eol] != '\n')
			eol++;
		len = eol - start;
		if (len > 0 && buf[start + len - 1] == '\r')
			len--;
		ctl_put_text_n(stdout, buf + start, len, 1);
		putchar('\n');
		start = eol + 1;
	}
	if (!found && have >= CTL_MAX_HEADERS)
		printf("(header block longer than %d bytes, cut)\n",
		    CTL_MAX_HEADERS);
	free(buf);
	return CTL_EXIT_OK;
}

int ctl_cmd_show(int argc, char **argv)
{
	const struct config *cfg;
	struct queue_envelope *env = NULL;
	const char *id = NULL;
	struct queue *q;
	char tbuf[32];
	int body = 0, json = 0, rc, i;
	size_t k;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--body") == 0)
			body = 1;
		else if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (argv[i][0] == '-' || id != NULL)
			return ctl_usage();
		else
			id = argv[i];
	}
	if (id == NULL)
		return ctl_usage();
	if (!queue_id_valid(id)) {
		ctl_err("invalid queue id");
		return CTL_EXIT_USAGE;
	}
	if ((cfg = ctl_config()) == NULL || (q = ctl_open_ro(cfg)) == NULL)
		return CTL_EXIT_FAIL;
	rc = queue_get(q, id, &env);
	if (rc <= 0) {
		if (rc == 0)
			ctl_err("%s: no such message", id);
		else
			ctl_err("%s: %s", id, queue_strerror(rc));
		queue_close(&q);
		return CTL_EXIT_FAIL;
	}
	if (body) {
		rc = ctl_show_body(q, id);
		queue_envelope_free(&env);
		queue_close(&q);
		return rc;
	}
	if (json) {
		/* The same object as one entry of queue --json. */
		int first = 1;

		ctl_queue_json(env, ctl_msg_state(q, env), &first);
		printf("\n");
		queue_envelope_free(&env);
		queue_close(&q);
		return ctl_finish_output(CTL_EXIT_OK);
	}

	printf("id:           %s\n", env->id);
	printf("arrival:      %s\n", ctl_time(env->arrival, tbuf, sizeof(tbuf)));
	printf("size:         %" PRIu64 "\n", env->size);
	printf("sender:       <");
	ctl_put_text(stdout, env->sender);
	printf(">\nstate:        %s\n",
	    ctl_state_names[ctl_msg_state(q, env)]);
	printf("envid:        ");
	ctl_put_text(stdout, env->envid);
	printf("\nret:          %s\n", env->ret == QUEUE_RET_FULL ? "FULL" :
	    env->ret == QUEUE_RET_HDRS ? "HDRS" : "-");
	printf("flags:       %s%s%s%s\n",
	    env->flags & QUEUE_F_8BITMIME ? " 8BITMIME" : "",
	    env->flags & QUEUE_F_SMTPUTF8 ? " SMTPUTF8" : "",
	    env->flags & QUEUE_F_DSN ? " DSN-REPORT" : "",
	    (env->flags & (QUEUE_F_8BITMIME | QUEUE_F_SMTPUTF8 | QUEUE_F_DSN))
	    == 0 ? " -" : "");
	printf("helo:         ");
	ctl_put_text(stdout, env->helo);
	printf("\nclient:       ");
	ctl_put_text(stdout, env->client_addr);
	printf("\n");
	for (k = 0; k < env->nrcpts; k++) {
		const struct queue_rcpt *r = &env->rcpts[k];

		printf("recipient:    <");
		ctl_put_text(stdout, r->addr);
		printf(">\n  domain:       ");
		ctl_put_text(stdout, r->domain);
		printf("\n  state:        %s\n", ctl_rcpt_state_name(r->state));
		printf("  attempts:     %u\n", r->attempts);
		printf("  last attempt: %s\n",
		    ctl_time(r->last_attempt, tbuf, sizeof(tbuf)));
		if (r->state == QUEUE_RCPT_QUEUED)
			printf("  next attempt: %s\n", r->next_attempt == 0 ?
			    "on demand (ETRN, ATRN, flush)" :
			    ctl_time(r->next_attempt, tbuf, sizeof(tbuf)));
		printf("  last reply:   ");
		ctl_put_text(stdout, r->last_reply);
		printf("\n  notify:       ");
		ctl_show_notify(r->notify);
		printf("\n  orcpt:        ");
		ctl_put_text(stdout, r->orcpt);
		printf("\n");
		if (r->delay_warned)
			printf("  delay warning sent\n");
	}
	rc = ctl_show_headers(q, id);
	queue_envelope_free(&env);
	queue_close(&q);
	return ctl_finish_output(rc);
}
