/*
 * odrelayctl_admin - odrelayctl's maintenance commands: delete (through
 * the daemon, or directly when it is provably stopped), stats, compact,
 * passwd (the password file) and recipients (the recipient cache).
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

int ctl_cmd_delete(int argc, char **argv)
{
	const struct config *cfg;
	const char *id = NULL;
	char *domain = NULL;
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
	if (domain != NULL && !ctl_domain_arg(domain)) {
		ctl_err("invalid domain");
		return CTL_EXIT_USAGE;
	}

	if (id != NULL) {
		/* The daemon's delete does not say whether the id existed. */
		if ((cfg = ctl_config()) == NULL)
			return CTL_EXIT_FAIL;
		if ((q = ctl_queue_open(cfg, 1, err, sizeof(err))) != NULL) {
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
	q = ctl_queue_open(cfg, 0, err, sizeof(err));
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
 * name{label="v"}=N. Asked first (the socket, or -1 when the daemon does
 * not run), read at the end: the daemon answers while the queue is read.
 * Returns the words (after the code) in buf, or NULL when the daemon is
 * not running or gave no 2xx.
 */
static int ctl_daemon_counters_ask(const struct config *cfg)
{
	char err[512], pbuf[512];

	return ctlclient_stream_send(ctl_control_path(cfg, pbuf, sizeof(pbuf)),
	    "stats", err, sizeof(err));
}

static const char *ctl_daemon_counters(const struct config *cfg, int fd,
    char *buf, size_t size)
{
	char err[512], pbuf[512];
	const char *path = ctl_control_path(cfg, pbuf, sizeof(pbuf));

	if (fd < 0 || ctlclient_request_read(fd, path, buf, size, err,
	    sizeof(err)) < 0 || buf[0] != '2' || strlen(buf) < 3)
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

/*
 * The table's rows, streamed: the configured domains come sorted
 * (ctl_configured_load), the queue's counters in key order (both lower
 * case, strcmp order), so one merge gives every row in order, and rows
 * are printed a batch at a time as the counters are read; the oldest
 * message where the counters do not tell it and the last ATRN/ETRN
 * (a sorted list of the few domains that have them) are added per batch.
 * Nothing is kept per domain but the configured list: 50,000 rows cost
 * no arrays of 50,000 (their page faults were a fifth of the time).
 */
#define CTL_STATS_BATCH	256

struct ctl_stamp {
	char *name;
	time_t last_atrn, last_etrn;
};

struct ctl_stats_out {
	struct queue *q;
	int json;
	time_t now;
	size_t conf, nconf;	/* next configured domain, their number */
	size_t printed;		/* rows so far (JSON commas) */
	struct ctl_dom rows[CTL_STATS_BATCH];
	char names[CTL_STATS_BATCH][256];	/* a domain name and its NUL */
	size_t n;
	struct ctl_stamp *st;	/* last ATRN/ETRN, sorted by name */
	size_t nst, stpos, stcap;
};

static int ctl_stamp_add(void *arg, const char *domain,
    const struct domstate_rec *r)
{
	struct ctl_stats_out *o = arg;

	if (o->nst == o->stcap) {
		o->stcap = o->stcap ? o->stcap * 2 : 64;
		o->st = xreallocarray(o->st, o->stcap, sizeof(*o->st));
	}
	o->st[o->nst].name = xstrdup(domain);
	o->st[o->nst].last_atrn = r->last[DOMSTATE_ATRN];
	o->st[o->nst++].last_etrn = r->last[DOMSTATE_ETRN];
	return 0;
}

static int ctl_stamp_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ctl_stamp *)a)->name,
	    ((const struct ctl_stamp *)b)->name);
}

/* The rows gathered so far: their facts, then printed. */
static void ctl_stats_flush(struct ctl_stats_out *o)
{
	const char *names[CTL_STATS_BATCH];
	time_t t[CTL_STATS_BATCH];
	size_t at[CTL_STATS_BATCH], m = 0, k;

	for (k = 0; k < o->n; k++)
		if (o->rows[k].messages > 0 && o->rows[k].oldest_unknown) {
			names[m] = o->rows[k].name;
			at[m++] = k;
		}
	if (m > 0 && queue_domains_oldest(o->q, names, m, t) == QUEUE_OK)
		for (k = 0; k < m; k++)
			o->rows[at[k]].oldest = t[k];
	for (k = 0; k < o->n; k++) {
		struct ctl_dom *d = &o->rows[k];
		int c = 1;

		/* rows and stamps both in name order */
		while (o->stpos < o->nst &&
		    (c = strcmp(o->st[o->stpos].name, d->name)) < 0)
			o->stpos++;
		if (o->stpos < o->nst && c == 0) {
			d->last_atrn = o->st[o->stpos].last_atrn;
			d->last_etrn = o->st[o->stpos].last_etrn;
		}
		if (o->json)
			ctl_dom_json(d, 1, o->printed++ == 0, o->now);
		else
			ctl_dom_row(d, !d->configured ? "unconfigured" :
			    d->hold ? "hold" : "relay", o->now);
	}
	o->n = 0;
}

/* A new row (its name copied: the counters' are the walk's), flushed
 * when the batch is full. */
static struct ctl_dom *ctl_stats_row(struct ctl_stats_out *o, const char *name)
{
	struct ctl_dom *d;

	if (o->n == CTL_STATS_BATCH)
		ctl_stats_flush(o);
	d = &o->rows[o->n];
	memset(d, 0, sizeof(*d));
	util_strlcpy(o->names[o->n], name, sizeof(o->names[0]));
	d->name = o->names[o->n++];
	return d;
}

/* The configured domains before `name` (all of them: NULL), no mail. */
static void ctl_stats_conf_until(struct ctl_stats_out *o, const char *name)
{
	for (; o->conf < o->nconf && (name == NULL ||
	    strcmp(ctl_configured_name(o->conf), name) < 0); o->conf++) {
		struct ctl_dom *d = ctl_stats_row(o, ctl_configured_name(o->conf));

		d->configured = 1;
		d->hold = ctl_configured_mode(o->conf) == CTL_MODE_HOLD;
	}
}

static int ctl_stats_count(void *arg, const char *domain,
    const struct queue_domain_stats *st)
{
	struct ctl_stats_out *o = arg;
	struct ctl_dom *d;
	int conf;

	ctl_stats_conf_until(o, domain);
	conf = o->conf < o->nconf &&
	    strcmp(ctl_configured_name(o->conf), domain) == 0;
	d = ctl_stats_row(o, domain);
	if (conf) {
		d->configured = 1;
		d->hold = ctl_configured_mode(o->conf++) == CTL_MODE_HOLD;
	}
	d->messages = st->messages;
	d->bytes = st->bytes;
	d->oldest = st->oldest;
	/* not known from the counters: looked up at the flush */
	d->oldest_unknown = !st->oldest_known;
	return 0;
}

int ctl_cmd_stats(int argc, char **argv)
{
	static char obuf[1 << 16];
	const struct config *cfg;
	struct queue_space space = { 0, 0, 0, 0, 0, 0 };
	struct ctl_stats_out *o;
	struct queue_totals t;
	struct domstate *dst;
	uint64_t states[CTL_NSTATES] = { 0, 0, 0 };
	uint64_t total_msgs = 0, total_bytes = 0, rcpts = 0, val;
	char *counters, *p, err[256];
	const char *name;
	struct queue *q;
	int json = 0, rc, i, status = CTL_EXIT_OK, any, cfd;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else
			return ctl_usage();
	}
	if ((cfg = ctl_config()) == NULL || (q = ctl_open_ro(cfg)) == NULL)
		return CTL_EXIT_FAIL;
	/* So that "low" means what the daemon would do. */
	queue_set_min_free(q, cfg->queue_min_free);
	/* The daemon lists the domains while the counters are read. */
	ctl_configured_prefetch();
	cfd = ctl_daemon_counters_ask(cfg);
	/* From the queue's counters, not a walk of every message: O(1) for
	 * the totals and the states, O(domains) for the table. */
	rc = queue_totals(q, &t);
	if (rc == QUEUE_OK)
		rc = queue_space(q, &space);
	if (rc < 0) {
		ctl_err("reading queue: %s", queue_strerror(rc));
		status = CTL_EXIT_FAIL;
	} else {
		total_msgs = t.messages;
		total_bytes = t.bytes;
		rcpts = t.recipients;
		/* Held: waiting for ETRN/ATRN (no retry time); deferred: on
		 * the retry index; delivering: leased. */
		states[CTL_DELIVERING] = t.leased;
		states[CTL_DEFERRED] = t.retrying;
		states[CTL_HELD] = t.messages > t.retrying + t.leased ?
		    t.messages - t.retrying - t.leased : 0;
	}
	o = xcalloc(1, sizeof(*o));
	o->q = q;
	o->json = json;
	o->now = time(NULL);
	if (ctl_configured_load(&o->nconf) < 0) {
		queue_close(&q);
		free(o);
		if (cfd >= 0)
			close(cfd);
		return CTL_EXIT_FAIL;
	}
	dst = domstate_open(q, err, sizeof(err));
	if (dst != NULL)
		(void)domstate_foreach(dst, ctl_stamp_add, o);
	domstate_close(&dst);
	if (o->nst > 1)
		qsort(o->st, o->nst, sizeof(*o->st), ctl_stamp_cmp);
	/* 50,000 rows: a few large writes, not a thousand small ones. */
	if (!isatty(STDOUT_FILENO))
		setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));

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
	} else
		printf("%-32s %-12s %8s %12s %8s %10s %10s\n", "DOMAIN", "MODE",
		    "MESSAGES", "BYTES", "OLDEST", "LAST ATRN", "LAST ETRN");
	if (rc == QUEUE_OK &&
	    (rc = queue_foreach_count(q, ctl_stats_count, o)) < 0) {
		ctl_err("reading queue: %s", queue_strerror(rc));
		status = CTL_EXIT_FAIL;
	}
	ctl_stats_conf_until(o, NULL);
	ctl_stats_flush(o);
	queue_close(&q);
	for (size_t k = 0; k < o->nst; k++)
		free(o->st[k].name);
	free(o->st);
	free(o);

	/* Counters only when the daemon runs; the queue view works anyway. */
	counters = xmalloc(CTL_STATS_REPLY_MAX);
	p = (char *)ctl_daemon_counters(cfg, cfd, counters, CTL_STATS_REPLY_MAX);
	if (json) {
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
	status = ctl_finish_output(status);
	free(counters);
	return status;
}

/*
 * compact: LMDB's compacting copy. With the daemon running it does the
 * work (writes wait during the copy) and is polled until done; without
 * it, the queue is opened here.
 */
int ctl_cmd_compact(int argc, char **argv)
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
	if (ctlclient_request(path, "compact", reply, sizeof(reply), err,
	    sizeof(err)) == 0) {
		if (reply[0] != '2') {
			ctl_err("%s", reply);
			return CTL_EXIT_FAIL;
		}
		for (;;) {
			struct timespec ts = { 0, 100 * 1000 * 1000 };

			nanosleep(&ts, NULL);
			if (ctlclient_request(path, "compact-status", reply,
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

		q = ctl_queue_open(cfg, 0, err, sizeof(err));
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

int ctl_cmd_passwd(int argc, char **argv)
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
		if (!passwd_name_valid(argv[2])) {
			ctl_err("invalid user name");
			return CTL_EXIT_USAGE;
		}
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
		/* The list's entries hold as long as the list: no date (0
		 * read as one said "1970-01-01 (expired)"). */
		if (e->source == RCACHE_SRC_LIST) {
			util_strlcpy(when, "never", sizeof(when));
		} else {
			gmtime_r(&t, &tm);
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
		}
		ctl_put_text(stdout, e->addr);
		printf("  %s  %s  expires %s%s\n", rcache_state_name(e->state),
		    rcache_source_name(e->source), when,
		    e->source != RCACHE_SRC_LIST && e->expires <= l->now ?
		    " (expired)" : "");
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
	const struct config *cfg = ctl_config_full();
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
	q = ctl_queue_open(cfg, 1, err, sizeof(err));
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
	if ((cfg = ctl_config_full()) == NULL)
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
	q = ctl_queue_open(cfg, 0, err, sizeof(err));
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

int ctl_cmd_recipients(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "forget") == 0) {
		if (argc < 3 || argc > 4 || !ctl_domain_arg(argv[2]) ||
		    (argc == 4 && (!ctl_word_arg_ok(argv[3]) ||
		    strchr(argv[3], '@') == NULL))) {
			ctl_err("usage: recipients forget DOMAIN [ADDRESS]");
			return CTL_EXIT_USAGE;
		}
		return ctl_recip_forget(argv[2], argc == 4 ? argv[3] : NULL);
	}
	if (argc == 3 && strcmp(argv[1], "--json") == 0 &&
	    ctl_domain_arg(argv[2]))
		return ctl_recip_show(argv[2], 1);
	if (argc == 2 && argv[1][0] != '-' && ctl_domain_arg(argv[1]))
		return ctl_recip_show(argv[1], 0);
	return ctl_usage();
}
