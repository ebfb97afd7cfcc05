/*
 * odrelayctl - the administration tool: queue listing, message display,
 * flush, bounce, delete, statistics.
 *
 * Reading commands (queue, show, stats) open the LMDB queue read-only and
 * work whether or not odrelayd runs. Acting commands (flush, bounce) go
 * through the daemon's control socket. delete goes through the daemon when
 * it runs and opens the queue for writing only when its control socket is
 * provably dead (nothing listening), since a second writer doing open-time
 * recovery would disturb a live daemon.
 *
 * Everything printed that came from the network (addresses, replies,
 * headers) is escaped: a queue listing must not be able to drive the
 * administrator's terminal.
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
#include "control.h"
#include "domhash.h"
#include "log.h"
#include "passwd.h"
#include "queue.h"
#include "domstate.h"
#include "rcache.h"
#include "util.h"
#include "xmalloc.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#ifndef OD_VERSION
#define OD_VERSION "unknown"
#endif

#define CTL_DEFAULT_CONFIG SYSCONFDIR "/odrelay/odrelay.conf"
#define CTL_MAX_HEADERS	(256 * 1024)	/* header block shown by "show" */
#define CTL_REPLY_MAX	1024

/* Exit status (spec.md). */
#define CTL_EXIT_OK		0
#define CTL_EXIT_FAIL		1
#define CTL_EXIT_USAGE		2

static const char *ctl_progname = "odrelayctl";

static void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void ctl_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", ctl_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int ctl_usage_to(FILE *out, int status)
{
	fprintf(out,
	    "usage: %s [-c FILE] command [arguments]\n"
	    "  queue [--json] [DOMAIN]      list queued messages (mailq style)\n"
	    "  show ID [--body|--json]      envelope and headers of one message\n"
	    "  flush DOMAIN                 deliver a domain's mail now (like ETRN)\n"
	    "  delete ID | --domain DOMAIN  remove mail without delivery\n"
	    "  bounce ID                    return a message to its sender now\n"
	    "  quarantine [--json]          list messages a milter held aside\n"
	    "  release ID                   deliver a quarantined message\n"
	    "  stats [--json]               per-domain queue sizes and totals\n"
	    "  compact                      give unused queue space back to the disk\n"
	    "  recipients [--json] DOMAIN   what the relay knows of a domain's recipients\n"
	    "  recipients forget DOMAIN [ADDRESS]  clear it (one address or all)\n"
	    "  passwd add [--no-cram] NAME DOMAIN...\n"
	    "                               add or change an ATRN user (password on stdin)\n"
	    "  passwd del NAME              remove an ATRN user\n"
	    "  passwd list [--json]         list ATRN users\n"
	    "options: -c FILE (default " CTL_DEFAULT_CONFIG "), -h/--help help, -V version\n"
	    "See odrelayctl(8) for the exit codes.\n",
	    ctl_progname);
	return status;
}

static int ctl_usage(void)
{
	return ctl_usage_to(stderr, CTL_EXIT_USAGE);
}

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

static void ctl_put_text(FILE *fp, const char *s)
{
	if (s == NULL)
		fputs("-", fp);
	else
		ctl_put_text_n(fp, s, strlen(s), 0);
}

/* Untrusted text escaped, then padded to width columns (a table cell). */
static void ctl_put_cell(FILE *fp, const char *s, int width)
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
static void ctl_json_str(FILE *fp, const char *s)
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
static int ctl_finish_output(int status)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ctl_err("error writing output: %s", strerror(errno));
		return CTL_EXIT_FAIL;
	}
	return status;
}

/* ---- argument checks ---- */

/*
 * A domain given on the command line: it goes into a control line, so no
 * white space or control characters, and a sane length.
 */
static int ctl_domain_arg_ok(const char *d)
{
	const unsigned char *p;

	if (*d == '\0' || strlen(d) > 255)
		return 0;
	for (p = (const unsigned char *)d; *p != '\0'; p++)
		if (*p <= 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* ---- configuration and queue ---- */

static void ctl_config_error(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "%s: %s\n", ctl_progname, msg);
}

/*
 * The configuration, loaded on first use: commands check their arguments
 * first, so that a usage error is reported as one (exit 2) even when the
 * configuration is missing.
 */
static const char *ctl_cfgpath = CTL_DEFAULT_CONFIG;
static struct config *ctl_cfg_loaded;

static const struct config *ctl_config(void)
{
	if (ctl_cfg_loaded == NULL) {
		ctl_cfg_loaded = config_load(ctl_cfgpath, ctl_config_error,
		    NULL);
		if (ctl_cfg_loaded == NULL)
			ctl_err("%s: configuration not usable", ctl_cfgpath);
	}
	return ctl_cfg_loaded;
}

static const char *ctl_control_path(const struct config *cfg, char *buf,
    size_t size)
{
	if (cfg->control_socket != NULL && cfg->control_socket[0] != '\0')
		return cfg->control_socket;
	snprintf(buf, size, "%s/control.sock", cfg->queue_dir);
	return buf;
}

static struct queue *ctl_open_ro(const struct config *cfg)
{
	struct queue *q;
	char err[512] = "";

	q = queue_open_readonly(cfg->queue_dir, err, sizeof(err));
	if (q == NULL)
		ctl_err("cannot open the queue: %s",
		    err[0] != '\0' ? err : "unknown error");
	return q;
}

/* ---- message state ---- */

enum ctl_state { CTL_HELD, CTL_DEFERRED, CTL_DELIVERING, CTL_QUARANTINED,
	CTL_NSTATES };
static const char *ctl_state_names[CTL_NSTATES] = {
	"held", "deferred", "delivering", "quarantined"
};
/* "quarantine": list only messages a milter held aside */
static int ctl_only_quarantined;

static int ctl_rcpt_held(const struct config *cfg, const struct queue_rcpt *r)
{
	const struct config_domain *d;

	/*
	 * Only the domain's mode says "held": next_attempt == 0 also marks
	 * mail due now (bounces to other domains), which is not held.
	 */
	return r->domain != NULL &&
	    (d = config_domain_by_name(cfg, r->domain)) != NULL && d->hold;
}

static enum ctl_state ctl_msg_state(struct queue *q, const struct config *cfg,
    const struct queue_envelope *env)
{
	size_t i;

	if (env->flags & QUEUE_F_QUARANTINE)
		return CTL_QUARANTINED;
	if (queue_is_leased(q, env->id) == 1)
		return CTL_DELIVERING;
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_QUEUED &&
		    ctl_rcpt_held(cfg, &env->rcpts[i]))
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

struct ctl_dom {
	char *name;
	int configured, hold;
	uint64_t messages, bytes;
	time_t oldest;		/* arrival of the oldest queued message, 0 none */
	time_t last_atrn;	/* last successful ATRN pull, 0 never */
	time_t last_etrn;	/* last accepted ETRN, 0 never */
};

struct ctl_doms {
	struct ctl_dom *v;
	size_t n, cap;
	struct domhash *idx;	/* name -> index: 50,000 domains stay fast */
	/* With cfg, v[0..nconf) are its sections in order, found through
	 * the configuration's own index; idx holds only the others. */
	const struct config *cfg;
	size_t nconf;
};

/* The entry for name, or NULL. */
static struct ctl_dom *ctl_doms_find(struct ctl_doms *ds, const char *name)
{
	const struct config_domain *cd;
	size_t i;

	if (ds->cfg != NULL &&
	    (cd = config_domain_by_name(ds->cfg, name)) != NULL &&
	    (size_t)(cd - ds->cfg->domains) < ds->nconf)
		return &ds->v[cd - ds->cfg->domains];
	if (ds->idx != NULL && domhash_get(ds->idx, name, &i))
		return &ds->v[i];
	return NULL;
}

/* Every configured domain first, in the file's order, without hashing
 * 50,000 names again. */
static void ctl_doms_configured(struct ctl_doms *ds, const struct config *cfg)
{
	ds->cap = cfg->ndomains + 16;
	ds->v = xcalloc(ds->cap, sizeof(*ds->v));
	for (size_t k = 0; k < cfg->ndomains; k++) {
		ds->v[k].name = xstrdup(cfg->domains[k].name);
		ds->v[k].configured = 1;
		ds->v[k].hold = cfg->domains[k].hold;
	}
	ds->n = ds->nconf = cfg->ndomains;
	ds->cfg = cfg;
}

static struct ctl_dom *ctl_doms_get(struct ctl_doms *ds, const char *name)
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

static int ctl_dom_cmp(const void *a, const void *b)
{
	return strcasecmp(((const struct ctl_dom *)a)->name,
	    ((const struct ctl_dom *)b)->name);
}

static void ctl_doms_free(struct ctl_doms *ds)
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
 * the oldest only where the counters show mail, the times in one walk of
 * the records there are (50,000 domains mostly have neither). */
static void ctl_doms_facts(struct queue *q, struct ctl_doms *ds)
{
	char err[256];
	struct domstate *st = domstate_open(q, err, sizeof(err));

	for (size_t k = 0; k < ds->n; k++)
		if (ds->v[k].messages > 0)
			(void)queue_domain_oldest(q, ds->v[k].name,
			    &ds->v[k].oldest);
	if (st != NULL)
		(void)domstate_foreach(st, ctl_doms_state, ds);
	domstate_close(&st);
}

/* An age as a short word: 45s, 12m, 5h, 3d; "-" for none. */
static const char *ctl_age(time_t t, time_t now, char *buf, size_t size)
{
	long long a = (long long)(now - t);

	if (t == 0)
		snprintf(buf, size, "-");
	else if (a < 0)
		snprintf(buf, size, "0s");
	else if (a < 120)
		snprintf(buf, size, "%llds", a);
	else if (a < 2 * 3600)
		snprintf(buf, size, "%lldm", a / 60);
	else if (a < 2 * 86400)
		snprintf(buf, size, "%lldh", a / 3600);
	else
		snprintf(buf, size, "%lldd", a / 86400);
	return buf;
}

/* The facts of one domain as JSON members (after other members). */
static void ctl_dom_facts_json(const struct ctl_dom *d, time_t now)
{
	printf(",\"oldest\":");
	ctl_json_time(stdout, d->oldest);
	printf(",\"oldest_age\":%lld,\"last_atrn\":",
	    d->oldest ? (long long)(now > d->oldest ? now - d->oldest : 0) : 0LL);
	ctl_json_time(stdout, d->last_atrn);
	printf(",\"last_etrn\":");
	ctl_json_time(stdout, d->last_etrn);
}

/* The facts as table cells: OLDEST, LAST ATRN, LAST ETRN (ages). */
static void ctl_dom_facts_cells(const struct ctl_dom *d, time_t now)
{
	char a[3][32];

	printf(" %8s %10s %10s", ctl_age(d->oldest, now, a[0], sizeof(a[0])),
	    ctl_age(d->last_atrn, now, a[1], sizeof(a[1])),
	    ctl_age(d->last_etrn, now, a[2], sizeof(a[2])));
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
	struct ctl_doms ds = { NULL, 0, 0, NULL, NULL, 0 };
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
	ctl_doms_free(&ds);
	printf("],\"recipients\":[");
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
	st = ctl_msg_state(w->q, w->cfg, env);
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
 * daemon's "waiting" control answer "250 DOMAIN=N ...". Nothing when the
 * daemon is not running. filter: only that domain, or NULL.
 */
static void ctl_queue_waiting(const struct config *cfg, const char *filter,
    int json)
{
	char reply[8192], err[512], pbuf[512], *p, *w, *save = NULL;
	const char *path = ctl_control_path(cfg, pbuf, sizeof(pbuf));
	int n = 0;

	if (control_request(path, "waiting", reply, sizeof(reply), err,
	    sizeof(err)) < 0 || strncmp(reply, "250", 3) != 0)
		reply[3] = '\0';
	p = reply + 3;
	if (json)
		printf(",\n \"waiting\":[");
	for (w = strtok_r(p, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save)) {
		char *eq = strrchr(w, '=');

		if (eq == NULL)
			continue;
		*eq = '\0';
		if (filter != NULL && strcasecmp(filter, w) != 0)
			continue;
		if (json) {
			printf("%s{\"domain\":", n ? "," : "");
			ctl_json_str(stdout, w);
			printf(",\"sessions\":%lu}", strtoul(eq + 1, NULL, 10));
		} else {
			printf("%s", n ? ", " : "Customers waiting now (XWAIT): ");
			ctl_put_text(stdout, w);
			printf(" (%lu)", strtoul(eq + 1, NULL, 10));
		}
		n++;
	}
	if (json)
		printf("]");
	else if (n > 0)
		printf("\n");
}

static int ctl_cmd_queue(int argc, char **argv)
{
	const struct config *cfg;
	struct ctl_doms ds = { NULL, 0, 0, NULL, NULL, 0 };
	const char *domain = NULL;
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
	if (domain != NULL && !ctl_domain_arg_ok(domain)) {
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
			printf("%s\n    {\"domain\":", firstd ? "" : ",");
			firstd = 0;
			ctl_json_str(stdout, ds.v[k].name);
			printf(",\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64,
			    ds.v[k].messages, ds.v[k].bytes);
			ctl_dom_facts_json(&ds.v[k], now);
			printf("}");
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
			ctl_put_cell(stdout, ds.v[k].name, 32);
			printf(" %8" PRIu64 " %12" PRIu64, ds.v[k].messages,
			    ds.v[k].bytes);
			ctl_dom_facts_cells(&ds.v[k], now);
			printf("\n");
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

static int ctl_cmd_show(int argc, char **argv)
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

		ctl_queue_json(env, ctl_msg_state(q, cfg, env), &first);
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
	    ctl_state_names[ctl_msg_state(q, cfg, env)]);
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

/* ---- control socket commands ---- */

/*
 * 1 when nothing listens on the control socket (no socket file, or
 * connection refused), so the daemon is not running; 0 otherwise.
 */
static int ctl_daemon_absent(const char *path)
{
	struct sockaddr_un sun;
	int fd, absent = 0;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return 0;
	memcpy(sun.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 &&
	    (errno == ENOENT || errno == ECONNREFUSED))
		absent = 1;
	close(fd);
	return absent;
}

/*
 * Send line; print the reply. Returns CTL_EXIT_OK for 2xx, CTL_EXIT_FAIL otherwise;
 * -1 (nothing printed) when the daemon is not running and the caller
 * wants to fall back (quiet_absent).
 */
static int ctl_control(const char *line, int quiet_absent)
{
	char reply[CTL_REPLY_MAX], err[512], pbuf[512];
	const struct config *cfg = ctl_config();
	const char *path;

	if (cfg == NULL)
		return CTL_EXIT_FAIL;
	path = ctl_control_path(cfg, pbuf, sizeof(pbuf));

	if (control_request(path, line, reply, sizeof(reply), err,
	    sizeof(err)) < 0) {
		if (quiet_absent && ctl_daemon_absent(path))
			return -1;
		ctl_err("%s", err);
		return CTL_EXIT_FAIL;
	}
	ctl_put_text(stdout, reply);
	putchar('\n');
	return ctl_finish_output(reply[0] == '2' ? CTL_EXIT_OK : CTL_EXIT_FAIL);
}

static int ctl_cmd_flush(int argc, char **argv)
{
	char *line;
	int rc;

	if (argc != 2 || argv[1][0] == '-')
		return ctl_usage();
	if (!ctl_domain_arg_ok(argv[1])) {
		ctl_err("invalid domain");
		return CTL_EXIT_USAGE;
	}
	line = xasprintf("flush %s", argv[1]);
	rc = ctl_control(line, 0);
	free(line);
	return rc;
}

/* Messages held aside by a milter: "queue" restricted to them. */
static int ctl_cmd_quarantine(int argc, char **argv)
{
	ctl_only_quarantined = 1;
	return ctl_cmd_queue(argc, argv);
}

static int ctl_cmd_release(int argc, char **argv)
{
	char *line;
	int rc;

	if (argc != 2 || argv[1][0] == '-')
		return ctl_usage();
	if (!queue_id_valid(argv[1])) {
		ctl_err("invalid queue id");
		return CTL_EXIT_USAGE;
	}
	line = xasprintf("release %s", argv[1]);
	rc = ctl_control(line, 0);
	free(line);
	return rc;
}

static int ctl_cmd_bounce(int argc, char **argv)
{
	char *line;
	int rc;

	if (argc != 2 || argv[1][0] == '-')
		return ctl_usage();
	if (!queue_id_valid(argv[1])) {
		ctl_err("invalid queue id");
		return CTL_EXIT_USAGE;
	}
	line = xasprintf("bounce %s", argv[1]);
	rc = ctl_control(line, 0);
	free(line);
	return rc;
}

/* ---- delete (direct, daemon stopped) ---- */

static void ctl_done(void *arg, int result)
{
	*(int *)arg = result;
}

/*
 * Delete mail for one domain with the queue open for writing. A message
 * whose queued recipients are all in the domain is removed; in a message
 * that also waits for other domains only this domain's recipients are
 * closed (marked returned, with no DSN sent), so other customers' mail
 * stays.
 */
static int ctl_delete_domain_direct(struct queue *q, const char *domain,
    unsigned long *ndel_r, unsigned long *npart_r)
{
	unsigned long busy;
	int rc = queue_delete_domain(q, domain, ndel_r, npart_r, &busy);

	if (rc < 0) {
		ctl_err("reading queue: %s", queue_strerror(rc));
		return CTL_EXIT_FAIL;
	}
	return CTL_EXIT_OK;
}

static int ctl_cmd_delete(int argc, char **argv)
{
	const struct config *cfg;
	const char *id = NULL, *domain = NULL;
	struct queue *q;
	char *line, err[512] = "";
	unsigned long ndel = 0, npart = 0;
	struct stat st;
	int rc, result = QUEUE_EIO;

	if (argc == 2 && argv[1][0] != '-')
		id = argv[1];
	else if (argc == 3 && strcmp(argv[1], "--domain") == 0)
		domain = argv[2];
	else
		return ctl_usage();
	if (id != NULL && !queue_id_valid(id)) {
		ctl_err("invalid queue id");
		return CTL_EXIT_USAGE;
	}
	if (domain != NULL && !ctl_domain_arg_ok(domain)) {
		ctl_err("invalid domain");
		return CTL_EXIT_USAGE;
	}

	if (id != NULL) {
		/* The daemon's delete does not say whether the id existed. */
		if ((cfg = ctl_config()) == NULL)
			return CTL_EXIT_FAIL;
		if ((q = queue_open_readonly(cfg->queue_dir, err,
		    sizeof(err))) != NULL) {
			struct queue_envelope *env = NULL;

			rc = queue_get(q, id, &env);
			queue_envelope_free(&env);
			queue_close(&q);
			if (rc == 0) {
				ctl_err("%s: no such message", id);
				return CTL_EXIT_FAIL;
			}
		}
	}
	line = id ? xasprintf("delete %s", id) :
	    xasprintf("delete-domain %s", domain);
	rc = ctl_control(line, 1);
	free(line);
	if (rc >= 0)
		return rc;

	/*
	 * The daemon is not running: change the queue ourselves. Never
	 * create a queue here: files made by root would lock the daemon's
	 * user out of it.
	 */
	if ((cfg = ctl_config()) == NULL)
		return CTL_EXIT_FAIL;
	line = xasprintf("%s/data.mdb", cfg->queue_dir);
	rc = stat(line, &st);
	free(line);
	if (rc < 0 && errno == ENOENT) {
		if (id != NULL) {
			ctl_err("%s: no such message", id);
			return CTL_EXIT_FAIL;
		}
		printf("%s: 0 messages deleted\n", domain);
		return ctl_finish_output(CTL_EXIT_OK);
	}
	/*
	 * Run as the queue's owner (the daemon's run_as_user), so that any
	 * file the queue creates (its lock file) stays usable by the daemon.
	 */
	if (rc == 0 && geteuid() == 0 && st.st_uid != 0 &&
	    (setegid(st.st_gid) < 0 || seteuid(st.st_uid) < 0)) {
		ctl_err("cannot act as the queue's owner (uid %lu): %s",
		    (unsigned long)st.st_uid, strerror(errno));
		return CTL_EXIT_FAIL;
	}
	q = queue_open(cfg->queue_dir, NULL, cfg->queue_map_size, err,
	    sizeof(err));
	if (q == NULL) {
		ctl_err("cannot open the queue: %s", err);
		return CTL_EXIT_FAIL;
	}
	if (id != NULL) {
		struct queue_envelope *env = NULL;

		rc = queue_get(q, id, &env);
		if (rc == 0) {
			ctl_err("%s: no such message", id);
			queue_close(&q);
			return CTL_EXIT_FAIL;
		}
		queue_envelope_free(&env);
		queue_delete(q, id, ctl_done, &result);
		queue_close(&q);
		if (result == QUEUE_ENOTFOUND) {
			ctl_err("%s: no such message", id);
			return CTL_EXIT_FAIL;
		}
		if (result != QUEUE_OK) {
			ctl_err("%s: %s", id, queue_strerror(result));
			return CTL_EXIT_FAIL;
		}
		printf("%s: deleted\n", id);
		return ctl_finish_output(CTL_EXIT_OK);
	}
	rc = ctl_delete_domain_direct(q, domain, &ndel, &npart);
	queue_close(&q);
	printf("%s: %lu message%s deleted", domain, ndel, ndel == 1 ? "" : "s");
	if (npart > 0)
		printf(", %lu more kept for other domains' recipients", npart);
	printf("\n");
	return ctl_finish_output(rc);
}

/* ---- stats ---- */

#define CTL_STATS_REPLY_MAX	16384

/*
 * The daemon's counters: its "stats" control answer is "250 " and words
 * name{label="v"}=N. Returns the words (after the code) in buf, or NULL
 * when the daemon is not running or gave no 2xx.
 */
static const char *ctl_daemon_counters(const struct config *cfg, char *buf,
    size_t size)
{
	char err[512], pbuf[512];
	const char *path = ctl_control_path(cfg, pbuf, sizeof(pbuf));

	if (control_request(path, "stats", buf, size, err, sizeof(err)) < 0 ||
	    buf[0] != '2' || strlen(buf) < 3)
		return NULL;
	return buf[3] == ' ' ? buf + 4 : buf + 3;
}

/* Next counter word of a stats line: name in *name_r (cut at its last
 * '='), value in *val_r. Returns the rest, or NULL at the end. */
static char *ctl_next_counter(char *p, const char **name_r, uint64_t *val_r)
{
	char *w, *eq, *end;

	for (;;) {
		p += strspn(p, " ");
		if (*p == '\0')
			return NULL;
		w = p;
		p += strcspn(p, " ");
		if (*p != '\0')
			*p++ = '\0';
		if ((eq = strrchr(w, '=')) == NULL || eq == w)
			continue;
		*eq = '\0';
		errno = 0;
		*val_r = strtoull(eq + 1, &end, 10);
		if (errno != 0 || *end != '\0')
			continue;
		*name_r = w;
		return p;
	}
}

/* ---- queue space (stats, compact) ---- */

static void ctl_compact_done(void *arg, int result)
{
	int *res = arg;

	res[0] = 1;
	res[1] = result;
}

static void ctl_space_human(const struct queue_space *sp)
{
	printf("\nqueue map:  %" PRIu64 " of %" PRIu64 " bytes in use\n"
	    "queue file: %" PRIu64 " bytes (%" PRIu64 " kept in reserve)\n"
	    "disk free:  %" PRIu64 " bytes%s\n", sp->map_used, sp->map_size,
	    sp->file_size, sp->reserve, sp->fs_avail,
	    sp->low ? " (low: new mail refused)" : "");
}

/* A member of the top object, with its comma. */
static void ctl_space_json(const struct queue_space *sp)
{
	printf("\"space\":{\"map_size\":%" PRIu64 ",\"map_used\":%" PRIu64
	    ",\"file_size\":%" PRIu64 ",\"reserve\":%" PRIu64
	    ",\"fs_free\":%" PRIu64 ",\"low\":%s},\n ",
	    sp->map_size, sp->map_used,
	    sp->file_size, sp->reserve, sp->fs_avail, sp->low ? "true" : "false");
}

static int ctl_stats_domain(void *arg, const char *domain,
    const struct queue_domain_stats *st)
{
	struct ctl_dom *d = ctl_doms_get(arg, domain);

	d->messages = st->messages;
	d->bytes = st->bytes;
	return 0;
}

static int ctl_cmd_stats(int argc, char **argv)
{
	const struct config *cfg;
	struct queue_space space = { 0, 0, 0, 0, 0, 0 };
	struct ctl_doms ds = { NULL, 0, 0, NULL, NULL, 0 };
	uint64_t states[CTL_NSTATES] = { 0, 0, 0 };
	uint64_t total_msgs = 0, total_bytes = 0, rcpts = 0, val;
	char *counters = xmalloc(CTL_STATS_REPLY_MAX), *p;
	const char *name;
	struct queue *q;
	int json = 0, rc, i, status = CTL_EXIT_OK, any;
	time_t now = time(NULL);
	size_t k;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else {
			free(counters);
			return ctl_usage();
		}
	}
	if ((cfg = ctl_config()) == NULL || (q = ctl_open_ro(cfg)) == NULL) {
		free(counters);
		return CTL_EXIT_FAIL;
	}
	/* So that "low" means what the daemon would do. */
	queue_set_min_free(q, cfg->queue_min_free);
	ctl_doms_configured(&ds, cfg);
	/* From the queue's counters, not a walk of every message: O(1) for
	 * the totals and the states, O(domains with mail) for the table. */
	{
		struct queue_totals t;

		rc = queue_totals(q, &t);
		if (rc == QUEUE_OK)
			rc = queue_foreach_count(q, ctl_stats_domain, &ds);
		if (rc == QUEUE_OK)
			rc = queue_space(q, &space);
		if (rc < 0) {
			ctl_err("reading queue: %s", queue_strerror(rc));
			status = CTL_EXIT_FAIL;
		}
		total_msgs = t.messages;
		total_bytes = t.bytes;
		rcpts = t.recipients;
		/* Held: waiting for ETRN/ATRN (no retry time); deferred: on the
		 * retry index; delivering: leased. */
		states[CTL_DELIVERING] = t.leased;
		states[CTL_DEFERRED] = t.retrying;
		states[CTL_HELD] = t.messages > t.retrying + t.leased ?
		    t.messages - t.retrying - t.leased : 0;
	}
	ctl_doms_facts(q, &ds);
	queue_close(&q);
	if (ds.n > 1)
		qsort(ds.v, ds.n, sizeof(ds.v[0]), ctl_dom_cmp);
	/* Counters only when the daemon runs; the queue view works anyway. */
	p = (char *)ctl_daemon_counters(cfg, counters, CTL_STATS_REPLY_MAX);

	if (json) {
		printf("{\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64
		    ",\"recipients\":%" PRIu64 ",\n \"states\":{", total_msgs,
		    total_bytes, rcpts);
		for (i = 0; i < CTL_NSTATES; i++)
			printf("%s\"%s\":%" PRIu64, i ? "," : "",
			    ctl_state_names[i], states[i]);
		printf("},\n ");
		ctl_space_json(&space);
		printf("\"domains\":[");
		for (k = 0; k < ds.n; k++) {
			printf("%s\n    {\"domain\":", k ? "," : "");
			ctl_json_str(stdout, ds.v[k].name);
			printf(",\"configured\":%s,\"hold\":%s,\"messages\":%"
			    PRIu64 ",\"bytes\":%" PRIu64,
			    ds.v[k].configured ? "true" : "false",
			    ds.v[k].hold ? "true" : "false",
			    ds.v[k].messages, ds.v[k].bytes);
			ctl_dom_facts_json(&ds.v[k], now);
			printf("}");
		}
		printf("],\n \"daemon\":");
		if (p == NULL)
			printf("null");
		else {
			printf("{");
			for (any = 0; (p = ctl_next_counter(p, &name, &val)) != NULL;
			    any = 1) {
				printf("%s\n    ", any ? "," : "");
				ctl_json_str(stdout, name);
				printf(":%" PRIu64, val);
			}
			printf("}");
		}
		printf("}\n");
	} else {
		printf("%-32s %-12s %8s %12s %8s %10s %10s\n", "DOMAIN", "MODE",
		    "MESSAGES", "BYTES", "OLDEST", "LAST ATRN", "LAST ETRN");
		for (k = 0; k < ds.n; k++) {
			ctl_put_cell(stdout, ds.v[k].name, 32);
			printf(" %-12s %8" PRIu64 " %12" PRIu64,
			    !ds.v[k].configured ? "unconfigured" :
			    ds.v[k].hold ? "hold" : "relay",
			    ds.v[k].messages, ds.v[k].bytes);
			ctl_dom_facts_cells(&ds.v[k], now);
			printf("\n");
		}
		printf("\nmessages:   %" PRIu64 "\nrecipients: %" PRIu64
		    "\nbytes:      %" PRIu64 "\n", total_msgs, rcpts,
		    total_bytes);
		for (i = 0; i < CTL_NSTATES; i++)
			printf("%-11s %" PRIu64 "\n", ctl_state_names[i],
			    states[i]);
		ctl_space_human(&space);
		if (p == NULL)
			printf("\ndaemon counters: odrelayd not running\n");
		else {
			printf("\ndaemon counters:\n");
			for (any = 0; (p = ctl_next_counter(p, &name, &val)) != NULL;
			    any = 1) {
				printf("  ");
				ctl_put_text(stdout, name);
				printf(" %" PRIu64 "\n", val);
			}
			if (!any)
				printf("  (none yet)\n");
		}
	}
	free(counters);
	ctl_doms_free(&ds);
	return ctl_finish_output(status);
}

/*
 * compact: LMDB's compacting copy. With the daemon running it does the
 * work (writes wait during the copy) and is polled until done; without
 * it, the queue is opened here.
 */
static int ctl_cmd_compact(int argc, char **argv)
{
	const struct config *cfg;
	char reply[512], err[512], pbuf[512];
	const char *path;

	(void)argv;
	if (argc != 1)
		return ctl_usage();
	if ((cfg = ctl_config()) == NULL)
		return CTL_EXIT_FAIL;
	path = ctl_control_path(cfg, pbuf, sizeof(pbuf));
	if (control_request(path, "compact", reply, sizeof(reply), err,
	    sizeof(err)) == 0) {
		if (reply[0] != '2') {
			ctl_err("%s", reply);
			return CTL_EXIT_FAIL;
		}
		for (;;) {
			struct timespec ts = { 0, 100 * 1000 * 1000 };

			nanosleep(&ts, NULL);
			if (control_request(path, "compact-status", reply,
			    sizeof(reply), err, sizeof(err)) < 0) {
				ctl_err("%s", err);
				return CTL_EXIT_FAIL;
			}
			if (strcmp(reply, "250 running") != 0)
				break;
		}
		if (strncmp(reply, "250 done", 8) != 0) {
			ctl_err("%s", reply);
			return CTL_EXIT_FAIL;
		}
		printf("compacted (by odrelayd): %s\n", reply + 9);
		return ctl_finish_output(CTL_EXIT_OK);
	}
	if (!ctl_daemon_absent(path)) {
		ctl_err("%s", err);
		return CTL_EXIT_FAIL;
	}
	{
		struct queue *q;
		int res[2] = { 0, QUEUE_EIO };
		uint64_t before = 0, after = 0;

		q = queue_open(cfg->queue_dir, NULL, cfg->queue_map_size, err,
		    sizeof(err));
		if (q == NULL) {
			ctl_err("cannot open the queue: %s", err);
			return CTL_EXIT_FAIL;
		}
		queue_compact(q, &before, &after, ctl_compact_done, res);
		queue_close(&q);
		if (res[1] != QUEUE_OK) {
			ctl_err("compaction failed: %s", queue_strerror(res[1]));
			return CTL_EXIT_FAIL;
		}
		printf("compacted: before=%" PRIu64 " after=%" PRIu64 "\n",
		    before, after);
	}
	return ctl_finish_output(CTL_EXIT_OK);
}

/* ---- passwd ---- */

/*
 * The password: from a terminal, asked twice without echo; otherwise the
 * first line of stdin (CRLF or LF stripped). 0, or -1 after a message.
 */
static int ctl_read_password(char *buf, size_t size)
{
	int tty = isatty(STDIN_FILENO);
	size_t len;

	if (tty) {
		struct termios old, noecho;
		char again[PASSWD_PASSWORD_MAX + 2];
		int ok = 1;

		if (tcgetattr(STDIN_FILENO, &old) < 0) {
			ctl_err("terminal: %s", strerror(errno));
			return -1;
		}
		noecho = old;
		noecho.c_lflag &= ~(tcflag_t)ECHO;
		fprintf(stderr, "Password: ");
		fflush(stderr);
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
		if (fgets(buf, (int)size, stdin) == NULL)
			ok = 0;
		fprintf(stderr, "\nRetype password: ");
		fflush(stderr);
		if (ok && fgets(again, sizeof(again), stdin) == NULL)
			ok = 0;
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
		if (!ok) {
			ctl_err("no password given");
			return -1;
		}
		if (strcmp(buf, again) != 0) {
			explicit_bzero(again, sizeof(again));
			ctl_err("passwords do not match");
			return -1;
		}
		explicit_bzero(again, sizeof(again));
	} else if (fgets(buf, (int)size, stdin) == NULL) {
		ctl_err("no password on standard input");
		return -1;
	}
	len = strlen(buf);
	if (len > 0 && buf[len - 1] != '\n' && !feof(stdin)) {
		ctl_err("password too long (at most %d bytes)",
		    PASSWD_PASSWORD_MAX);
		return -1;
	}
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		ctl_err("empty password");
		return -1;
	}
	return 0;
}

/*
 * passwd list --json: the text listing ("NAME DOM,DOM MECH,MECH" per
 * line, names and domains without spaces) as
 * [{"user":..,"domains":[..],"mechanisms":[..]}].
 */
static int ctl_passwd_list_json(const char *path)
{
	char err[512], *buf = NULL, *line, *save = NULL;
	size_t size = 0;
	FILE *mem = open_memstream(&buf, &size);
	int first = 1;

	if (mem == NULL) {
		ctl_err("out of memory");
		return CTL_EXIT_FAIL;
	}
	if (passwd_file_list(path, mem, err, sizeof(err)) < 0) {
		fclose(mem);
		free(buf);
		ctl_err("%s", err);
		return CTL_EXIT_FAIL;
	}
	fclose(mem);
	printf("[");
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		char *f[3] = { NULL, NULL, NULL }, *fs = NULL, *w, *ws = NULL;
		int n = 0;

		for (w = strtok_r(line, " ", &fs); w != NULL && n < 3;
		    w = strtok_r(NULL, " ", &fs))
			f[n++] = w;
		if (n < 1)
			continue;
		printf("%s\n  {\"user\":", first ? "" : ",");
		first = 0;
		ctl_json_str(stdout, f[0]);
		for (int k = 1; k < 3; k++) {
			int firstw = 1;

			printf(k == 1 ? ",\"domains\":[" : ",\"mechanisms\":[");
			for (w = f[k] ? strtok_r(f[k], ",", &ws) : NULL; w != NULL;
			    w = strtok_r(NULL, ",", &ws)) {
				printf("%s", firstw ? "" : ",");
				firstw = 0;
				ctl_json_str(stdout, w);
			}
			printf("]");
		}
		printf("}");
	}
	printf("%s]\n", first ? "" : "\n");
	free(buf);
	return ctl_finish_output(CTL_EXIT_OK);
}

static int ctl_cmd_passwd(int argc, char **argv)
{
	const struct config *cfg;
	char err[512] = "";
	int rc, i;

	if (argc < 2)
		return ctl_usage();
	if (strcmp(argv[1], "add") == 0) {
		char pw[PASSWD_PASSWORD_MAX + 2];
		const char **doms;
		unsigned flags = 0;

		/* --no-cram: keep nothing password-equivalent for the user. */
		if (argc > 2 && strcmp(argv[2], "--no-cram") == 0) {
			flags |= PASSWD_NO_CRAM;
			argv++;
			argc--;
		}
		if (argc < 4)
			return ctl_usage();
		if (strlen(argv[2]) > PASSWD_NAME_MAX) {
			ctl_err("user name longer than %d bytes", PASSWD_NAME_MAX);
			return CTL_EXIT_USAGE;
		}
		if (!passwd_name_valid(argv[2])) {
			ctl_err("invalid user name");
			return CTL_EXIT_USAGE;
		}
		for (i = 3; i < argc; i++)
			if (!passwd_domain_valid(argv[i])) {
				ctl_err("invalid domain: %s", argv[i]);
				return CTL_EXIT_USAGE;
			}
		if ((cfg = ctl_config()) == NULL)
			return CTL_EXIT_FAIL;
		if (ctl_read_password(pw, sizeof(pw)) < 0) {
			explicit_bzero(pw, sizeof(pw));
			return CTL_EXIT_FAIL;
		}
		doms = xcalloc((size_t)argc - 3, sizeof(*doms));
		for (i = 3; i < argc; i++)
			doms[i - 3] = argv[i];
		rc = passwd_file_add_flags(cfg->passwd_file, argv[2], pw, doms,
		    (size_t)argc - 3, flags, err, sizeof(err));
		explicit_bzero(pw, sizeof(pw));
		free(doms);
		if (rc < 0) {
			ctl_err("%s", err);
			return CTL_EXIT_FAIL;
		}
		printf("%s: user %s %s\n", cfg->passwd_file, argv[2],
		    rc == 1 ? "changed" : "added");
		return ctl_finish_output(CTL_EXIT_OK);
	}
	if (strcmp(argv[1], "del") == 0) {
		if (argc != 3)
			return ctl_usage();
		if ((cfg = ctl_config()) == NULL)
			return CTL_EXIT_FAIL;
		rc = passwd_file_del(cfg->passwd_file, argv[2], err,
		    sizeof(err));
		if (rc < 0) {
			ctl_err("%s", err);
			return CTL_EXIT_FAIL;
		}
		if (rc == 1) {
			ctl_err("%s: no such user", argv[2]);
			return CTL_EXIT_FAIL;
		}
		printf("%s: user %s deleted\n", cfg->passwd_file, argv[2]);
		return ctl_finish_output(CTL_EXIT_OK);
	}
	if (strcmp(argv[1], "list") == 0) {
		int json = argc == 3 && strcmp(argv[2], "--json") == 0;

		if (argc != 2 && !json)
			return ctl_usage();
		if ((cfg = ctl_config()) == NULL)
			return CTL_EXIT_FAIL;
		if (json)
			return ctl_passwd_list_json(cfg->passwd_file);
		if (passwd_file_list(cfg->passwd_file, stdout, err,
		    sizeof(err)) < 0) {
			ctl_err("%s", err);
			return CTL_EXIT_FAIL;
		}
		return ctl_finish_output(CTL_EXIT_OK);
	}
	return ctl_usage();
}

/* ---- main ---- */

/* ---- recipients (the recipient cache) ---- */

struct ctl_recip_list {
	const struct config_domain *dom;
	int json;
	unsigned long n;
	time_t now;
};

static int ctl_recip_entry(void *arg, const struct rcache_entry *e)
{
	struct ctl_recip_list *l = arg;
	char when[32];
	struct tm tm;
	time_t t = e->expires;

	/* A listed address is judged by the list alone. */
	if (e->source != RCACHE_SRC_LIST && l->dom->has_recipient_list &&
	    config_recipient_allowed(l->dom, e->addr))
		return 0;
	if (l->json) {
		fputs(l->n == 0 ? "\n  {\"address\": " : ",\n  {\"address\": ",
		    stdout);
		ctl_json_str(stdout, e->addr);
		printf(", \"state\": \"%s\", \"source\": \"%s\", \"expires\": %lld",
		    rcache_state_name(e->state), rcache_source_name(e->source),
		    (long long)e->expires);
		if (e->text[0] != '\0') {
			fputs(", \"reply\": ", stdout);
			ctl_json_str(stdout, e->text);
		}
		fputs("}", stdout);
	} else {
		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
		ctl_put_text(stdout, e->addr);
		printf("  %s  %s  expires %s%s\n", rcache_state_name(e->state),
		    rcache_source_name(e->source), when,
		    e->expires <= l->now ? " (expired)" : "");
	}
	l->n++;
	return 0;
}

/* The addresses of a domain's recipient list (source "list"). */
static void ctl_recip_list_static(struct ctl_recip_list *l,
    const struct config_domain *dom)
{
	struct rcache_entry e;

	for (size_t i = 0; i < dom->recipients.n; i++) {
		if (dom->recipients.v[i][0] == '@' ||
		    strlen(dom->recipients.v[i]) > RCACHE_ADDR_MAX)
			continue;
		memset(&e, 0, sizeof(e));
		util_strlcpy(e.domain, dom->name, sizeof(e.domain));
		util_strlcpy(e.addr, dom->recipients.v[i], sizeof(e.addr));
		e.state = RCACHE_VALID;
		e.source = RCACHE_SRC_LIST;
		e.expires = 0;
		ctl_recip_entry(l, &e);
	}
}

static int ctl_recip_show(const char *domain, int json)
{
	const struct config *cfg = ctl_config();
	const struct config_domain *dom;
	struct ctl_recip_list l = { NULL, json, 0, time(NULL) };
	struct queue *q;
	struct rcache *rc;
	char err[512] = "", dbuf[300];
	int r;

	if (cfg == NULL)
		return CTL_EXIT_FAIL;
	if ((dom = config_domain_by_name(cfg, domain)) == NULL) {
		ctl_err("%s: not a configured domain", domain);
		return CTL_EXIT_FAIL;
	}
	util_strlcpy(dbuf, dom->name, sizeof(dbuf));
	l.dom = dom;
	if (json)
		fputs("[", stdout);
	ctl_recip_list_static(&l, dom);
	q = queue_open_readonly(cfg->queue_dir, err, sizeof(err));
	if (q != NULL) {
		rc = rcache_open(q, cfg->verify_cache_size, err, sizeof(err));
		if (rc == NULL) {
			queue_close(&q);
			ctl_err("%s", err);
			return CTL_EXIT_FAIL;
		}
		r = rcache_foreach(rc, dbuf, ctl_recip_entry, &l);
		rcache_close(&rc);
		queue_close(&q);
		if (r != QUEUE_OK) {
			ctl_err("reading the recipient cache: %s", queue_strerror(r));
			return CTL_EXIT_FAIL;
		}
	}
	if (json)
		fputs(l.n > 0 ? "\n]\n" : "]\n", stdout);
	else if (l.n == 0)
		printf("%s: no recipients known\n", dbuf);
	return ctl_finish_output(CTL_EXIT_OK);
}

static int ctl_recip_forget(const char *domain, const char *addr)
{
	const struct config *cfg;
	struct queue *q;
	struct rcache *rc;
	struct stat st;
	char *line, err[512] = "";
	int rc2, result = QUEUE_EIO, switched = 0;

	line = addr ? xasprintf("recipients-forget %s %s", domain, addr) :
	    xasprintf("recipients-forget %s", domain);
	rc2 = ctl_control(line, 1);
	free(line);
	if (rc2 >= 0)
		return rc2;
	/* The daemon is not running: change the cache ourselves (never
	 * creating a queue, acting as its owner; see delete). */
	if ((cfg = ctl_config()) == NULL)
		return CTL_EXIT_FAIL;
	if (config_domain_by_name(cfg, domain) == NULL) {
		ctl_err("%s: not a configured domain", domain);
		return CTL_EXIT_FAIL;
	}
	line = xasprintf("%s/data.mdb", cfg->queue_dir);
	rc2 = stat(line, &st);
	free(line);
	if (rc2 < 0) {
		printf("%s: nothing known\n", domain);
		return ctl_finish_output(CTL_EXIT_OK);
	}
	if (geteuid() == 0 && st.st_uid != 0) {
		if (setegid(st.st_gid) < 0 || seteuid(st.st_uid) < 0) {
			ctl_err("cannot act as the queue's owner (uid %lu): %s",
			    (unsigned long)st.st_uid, strerror(errno));
			return CTL_EXIT_FAIL;
		}
		switched = 1;
	}
	q = queue_open(cfg->queue_dir, NULL, cfg->queue_map_size, err,
	    sizeof(err));
	if (q == NULL || (rc = rcache_open(q, cfg->verify_cache_size, err,
	    sizeof(err))) == NULL) {
		ctl_err("cannot open the queue: %s", err);
		queue_close(&q);
		return CTL_EXIT_FAIL;
	}
	rcache_forget(rc, domain, addr, ctl_done, &result);
	rcache_close(&rc);
	queue_close(&q);
	/* Back to root: exiting with mixed ids upsets LeakSanitizer. */
	if (switched && (seteuid(0) < 0 || setegid(0) < 0))
		ctl_err("seteuid(0): %s", strerror(errno));
	if (result != QUEUE_OK) {
		ctl_err("forget: %s", queue_strerror(result));
		return CTL_EXIT_FAIL;
	}
	printf("%s: %s forgotten\n", domain, addr ? "address" : "every address");
	return ctl_finish_output(CTL_EXIT_OK);
}

static int ctl_cmd_recipients(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "forget") == 0) {
		if (argc < 3 || argc > 4 || !ctl_domain_arg_ok(argv[2]) ||
		    (argc == 4 && (!ctl_domain_arg_ok(argv[3]) ||
		    strchr(argv[3], '@') == NULL))) {
			ctl_err("usage: recipients forget DOMAIN [ADDRESS]");
			return CTL_EXIT_USAGE;
		}
		return ctl_recip_forget(argv[2], argc == 4 ? argv[3] : NULL);
	}
	if (argc == 3 && strcmp(argv[1], "--json") == 0 &&
	    ctl_domain_arg_ok(argv[2]))
		return ctl_recip_show(argv[2], 1);
	if (argc == 2 && argv[1][0] != '-' && ctl_domain_arg_ok(argv[1]))
		return ctl_recip_show(argv[1], 0);
	return ctl_usage();
}


static const struct {
	const char *name;
	int (*fn)(int, char **);
} ctl_cmds[] = {
	{ "queue", ctl_cmd_queue },
	{ "mailq", ctl_cmd_queue },
	{ "show", ctl_cmd_show },
	{ "flush", ctl_cmd_flush },
	{ "delete", ctl_cmd_delete },
	{ "bounce", ctl_cmd_bounce },
	{ "quarantine", ctl_cmd_quarantine },
	{ "release", ctl_cmd_release },
	{ "stats", ctl_cmd_stats },
	{ "compact", ctl_cmd_compact },
	{ "passwd", ctl_cmd_passwd },
	{ "recipients", ctl_cmd_recipients },
};

int main(int argc, char **argv)
{
	size_t i;
	int ch, rc;

	log_init(ctl_progname, 1, LOG_LEVEL_WARNING);
	if (argc > 1 && strcmp(argv[1], "--help") == 0)
		return ctl_usage_to(stdout, CTL_EXIT_OK);
	while ((ch = getopt(argc, argv, "+c:hV")) != -1) {
		switch (ch) {
		case 'c':
			ctl_cfgpath = optarg;
			break;
		case 'V':
			printf("odrelayctl %s\n", OD_VERSION);
			return ctl_finish_output(CTL_EXIT_OK);
		case 'h':
			return ctl_usage_to(stdout, CTL_EXIT_OK);
		default:
			return ctl_usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		return ctl_usage();
	for (i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
		if (strcmp(argv[0], ctl_cmds[i].name) == 0)
			break;
	if (i == sizeof(ctl_cmds) / sizeof(ctl_cmds[0])) {
		ctl_err("unknown command: %s", argv[0]);
		return ctl_usage();
	}
	rc = ctl_cmds[i].fn(argc, argv);
	/* A big configuration is left to exit (50,000 sections are ~10 ms
	 * of free()); it stays reachable from ctl_cfg_loaded. */
	if (ctl_cfg_loaded != NULL && ctl_cfg_loaded->ndomains < CONFIG_REAP_MIN)
		config_free(&ctl_cfg_loaded);
	return rc;
}
