/*
 * odrelayctl - the administration tool: command line, configuration and
 * queue opening, the commands that go through the daemon's control socket
 * (flush, quarantine, release, bounce) and main. Listing and display are
 * in odrelayctl_queue.c; delete, stats, compact, passwd and recipients in
 * odrelayctl_admin.c.
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
#include <stdint.h>
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

static const char *ctl_progname = "odrelayctl";

void ctl_err(const char *fmt, ...)
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
	    "  flush [@|#]DOMAIN           deliver a domain's mail now (as ETRN)\n"
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

int ctl_usage(void)
{
	return ctl_usage_to(stderr, CTL_EXIT_USAGE);
}

/* ---- argument checks ---- */

/* An argument that goes into a control line: no white space or control
 * characters, and a sane length. */
int ctl_word_arg_ok(const char *d)
{
	const unsigned char *p;

	if (*d == '\0' || strlen(d) > 255)
		return 0;
	for (p = (const unsigned char *)d; *p != '\0'; p++)
		if (*p <= 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/*
 * A domain given on the command line: a domain's syntax (one trailing dot
 * allowed), which also makes it such a word. A malformed one is a usage
 * error (odrelayctl(8), exit 2), not a domain that merely has no mail.
 */
int ctl_domain_arg_ok(const char *d)
{
	return util_domain_valid_dot(d);
}

/* ctl_domain_arg_ok, and a final dot dropped in place: the queue and the
 * daemon name domains without one. */
int ctl_domain_arg(char *d)
{
	size_t n;

	if (!ctl_domain_arg_ok(d))
		return 0;
	n = strlen(d);
	if (n > 1 && d[n - 1] == '.')
		d[n - 1] = '\0';
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
 * configuration is missing. Most commands need only its global part (the
 * queue directory, the control socket, the password file): with 50,000
 * domain sections that is read in well under a millisecond instead of
 * about 50 ms for the whole file. The sections are read only when the
 * domains are needed and the daemon cannot tell them (ctl_domain_mode).
 */
static const char *ctl_cfgpath = CTL_DEFAULT_CONFIG;
static struct config *ctl_cfg_loaded, *ctl_cfg_full;

const struct config *ctl_config(void)
{
	if (ctl_cfg_full != NULL)
		return ctl_cfg_full;
	if (ctl_cfg_loaded == NULL) {
		ctl_cfg_loaded = config_load_global(ctl_cfgpath,
		    ctl_config_error, NULL);
		if (ctl_cfg_loaded == NULL)
			ctl_err("%s: configuration not usable", ctl_cfgpath);
	}
	return ctl_cfg_loaded;
}

const struct config *ctl_config_full(void)
{
	if (ctl_cfg_full == NULL) {
		ctl_cfg_full = config_load(ctl_cfgpath, ctl_config_error, NULL);
		if (ctl_cfg_full == NULL)
			ctl_err("%s: configuration not usable", ctl_cfgpath);
	}
	return ctl_cfg_full;
}

/* ---- configured domains and their modes ---- */

/*
 * When odrelayd runs, the domains and modes are the ones it runs with,
 * asked through the control socket ("domain NAME" for a few, the
 * streamed "domains" for all); otherwise (or from an odrelayd that does
 * not know these commands) they are read from the file.
 */
#define CTL_MODE_ASK_MAX 64	/* single questions before the whole list */

struct ctl_mode_ent {
	const char *name;
	int mode;
};

static struct {
	int daemon;		/* 0 not asked yet, 1 answers, -1 use the file */
	int have_all;
	struct ctl_mode_ent *v;	/* with have_all: every domain, by name */
	size_t n, cap;
	char *arena;		/* the names of v */
	size_t alen, acap;
	struct ctl_mode_ent asked[CTL_MODE_ASK_MAX];
	size_t nasked;
	int prefetch_fd;	/* "domains" asked ahead, or -1 */
} ctl_modes = { .prefetch_fd = -1 };

/* Ask the daemon for every domain now and read the answer when needed
 * (ctl_configured_load): it is made while the caller reads the queue. */
void ctl_configured_prefetch(void)
{
	char err[512], pbuf[512];
	const struct config *cfg = ctl_config();

	if (cfg == NULL || ctl_modes.have_all || ctl_modes.daemon < 0 ||
	    ctl_modes.prefetch_fd >= 0)
		return;
	ctl_modes.prefetch_fd = ctlclient_stream_send(ctl_control_path(cfg,
	    pbuf, sizeof(pbuf)), "domains", err, sizeof(err));
}

static int ctl_mode_ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ctl_mode_ent *)a)->name,
	    ((const struct ctl_mode_ent *)b)->name);
}

/* Names are kept as offsets while the arena grows, pointers after. */
static void ctl_modes_add(const char *name, size_t len, int mode)
{
	if (ctl_modes.n == ctl_modes.cap) {
		ctl_modes.cap = ctl_modes.cap ? ctl_modes.cap * 2 : 1024;
		ctl_modes.v = xreallocarray(ctl_modes.v, ctl_modes.cap,
		    sizeof(*ctl_modes.v));
	}
	if (ctl_modes.alen + len + 1 > ctl_modes.acap) {
		ctl_modes.acap = (ctl_modes.alen + len + 1) * 2;
		ctl_modes.arena = xreallocarray(ctl_modes.arena, ctl_modes.acap, 1);
	}
	memcpy(ctl_modes.arena + ctl_modes.alen, name, len);
	ctl_modes.arena[ctl_modes.alen + len] = '\0';
	ctl_modes.v[ctl_modes.n].name = (const char *)(uintptr_t)ctl_modes.alen;
	ctl_modes.v[ctl_modes.n++].mode = mode;
	ctl_modes.alen += len + 1;
}

/* One "NAME hold|relay" line of the daemon's "domains". */
static int ctl_modes_line(void *arg, const char *text)
{
	const char *sp = strchr(text, ' ');
	int hold;

	(void)arg;
	if (sp == NULL || sp == text || sp - text > 255)
		return -1;
	hold = strcmp(sp + 1, "hold") == 0;
	if (!hold && strcmp(sp + 1, "relay") != 0)
		return -1;
	ctl_modes_add(text, (size_t)(sp - text),
	    hold ? CTL_MODE_HOLD : CTL_MODE_RELAY);
	return 0;
}

/* From the daemon: 1 done, 0 it cannot tell (use the file). */
static int ctl_modes_from_daemon(void)
{
	char final[256], err[512], pbuf[512];
	const struct config *cfg = ctl_config();
	const char *path;

	if (cfg == NULL || ctl_modes.daemon < 0)
		return 0;
	path = ctl_control_path(cfg, pbuf, sizeof(pbuf));
	final[0] = '\0';
	/* A reload during the answer: ask again (twice at most). */
	for (int tries = 0; tries < 3; tries++) {
		int fd = ctl_modes.prefetch_fd;

		ctl_modes.prefetch_fd = -1;
		ctl_modes.n = ctl_modes.alen = 0;
		if (fd < 0 && (fd = ctlclient_stream_send(path, "domains", err,
		    sizeof(err))) < 0)
			break;
		if (ctlclient_stream_read(fd, path, ctl_modes_line, NULL,
		    final, sizeof(final), err, sizeof(err)) < 0 ||
		    strncmp(final, "451", 3) != 0)
			break;
	}
	if (final[0] == '2') {
		ctl_modes.daemon = 1;
		return 1;
	}
	ctl_modes.n = ctl_modes.alen = 0;
	ctl_modes.daemon = -1;
	return 0;
}

/* Every configured domain with its mode, sorted by name (strcmp: the
 * names are in lower case). 0, or -1 (reported). */
static int ctl_modes_all(void)
{
	if (ctl_modes.have_all)
		return 0;
	if (!ctl_modes_from_daemon()) {
		const struct config *cfg = ctl_config_full();

		if (cfg == NULL)
			return -1;
		/* in name order, as the daemon sends them */
		for (size_t k = 0; k < cfg->ndomains; k++) {
			const struct config_domain *cd =
			    config_domain_sorted(cfg, k);

			ctl_modes_add(cd->name, strlen(cd->name), cd->hold ?
			    CTL_MODE_HOLD : CTL_MODE_RELAY);
		}
	}
	for (size_t k = 0; k < ctl_modes.n; k++)
		ctl_modes.v[k].name = ctl_modes.arena +
		    (uintptr_t)ctl_modes.v[k].name;
	/* An odrelayd of now sends them sorted: checked, not sorted again
	 * (50,000 names were a sixth of odrelayctl stats). */
	for (size_t k = 1; k < ctl_modes.n; k++)
		if (strcmp(ctl_modes.v[k - 1].name, ctl_modes.v[k].name) >= 0) {
			qsort(ctl_modes.v, ctl_modes.n, sizeof(*ctl_modes.v),
			    ctl_mode_ent_cmp);
			break;
		}
	ctl_modes.have_all = 1;
	return 0;
}

/* The i-th configured domain (sorted) after ctl_configured_load. */
const char *ctl_configured_name(size_t i)
{
	return ctl_modes.v[i].name;
}

int ctl_configured_mode(size_t i)
{
	return ctl_modes.v[i].mode;
}

int ctl_configured_load(size_t *n_r)
{
	if (ctl_modes_all() < 0)
		return -1;
	*n_r = ctl_modes.n;
	return 0;
}

int ctl_domain_mode(const char *domain)
{
	char name[300], reply[256], err[512], pbuf[512], *line;
	const struct config *cfg;
	const struct config_domain *cd;
	size_t len;
	int mode;

	/* As the daemon looks it up: lower case, one trailing dot. */
	/* (util_strlcpy returns 0 or -1, not a length) */
	if (util_strlcpy(name, domain, sizeof(name)) < 0)
		return CTL_MODE_NONE;
	len = strlen(name);
	if (len > 1 && name[len - 1] == '.')
		name[--len] = '\0';
	util_lowercase(name);
	/* No configured domain has blanks or control characters. */
	if (!ctl_domain_arg_ok(name))
		return CTL_MODE_NONE;
	if (ctl_modes.have_all) {
		struct ctl_mode_ent key = { name, 0 }, *e;

		e = bsearch(&key, ctl_modes.v, ctl_modes.n,
		    sizeof(*ctl_modes.v), ctl_mode_ent_cmp);
		return e != NULL ? e->mode : CTL_MODE_NONE;
	}
	for (size_t k = 0; k < ctl_modes.nasked; k++)
		if (strcmp(ctl_modes.asked[k].name, name) == 0)
			return ctl_modes.asked[k].mode;
	if (ctl_modes.daemon >= 0 && ctl_modes.nasked < CTL_MODE_ASK_MAX &&
	    (cfg = ctl_config()) != NULL) {
		line = xasprintf("domain %s", name);
		if (ctlclient_request(ctl_control_path(cfg, pbuf, sizeof(pbuf)),
		    line, reply, sizeof(reply), err, sizeof(err)) < 0)
			reply[0] = '\0';
		free(line);
		if (strcmp(reply, "250 hold") == 0 ||
		    strcmp(reply, "250 relay") == 0 ||
		    strncmp(reply, "550", 3) == 0) {
			mode = reply[0] == '5' ? CTL_MODE_NONE :
			    reply[4] == 'h' ? CTL_MODE_HOLD : CTL_MODE_RELAY;
			ctl_modes.daemon = 1;
			ctl_modes.asked[ctl_modes.nasked].name = xstrdup(name);
			ctl_modes.asked[ctl_modes.nasked++].mode = mode;
			return mode;
		}
		ctl_modes.daemon = -1;
	}
	if (ctl_modes.daemon > 0) {
		/* Many domains: the whole list in one answer. */
		if (ctl_modes_all() < 0)
			return CTL_MODE_NONE;
		return ctl_domain_mode(name);
	}
	if ((cfg = ctl_config_full()) == NULL)
		return CTL_MODE_NONE;
	cd = config_domain_by_name(cfg, name);
	return cd == NULL ? CTL_MODE_NONE : cd->hold ? CTL_MODE_HOLD :
	    CTL_MODE_RELAY;
}

const char *ctl_control_path(const struct config *cfg, char *buf,
    size_t size)
{
	if (cfg->control_socket != NULL && cfg->control_socket[0] != '\0')
		return cfg->control_socket;
	snprintf(buf, size, "%s/control.sock", cfg->queue_dir);
	return buf;
}

/* The queue reports what it met (it never logs); the tool logs it. */
static void ctl_queue_notice(void *arg, enum queue_notice_level level,
    const char *text)
{
	(void)arg;
	log_at((enum log_level)level, "%s", text);
}

struct queue *ctl_queue_open(const struct config *cfg, int rdonly,
    char *err, size_t errlen)
{
	struct queue *q;

	q = rdonly ? queue_open_readonly(cfg->queue_dir, err, errlen) :
	    queue_open(cfg->queue_dir, NULL, cfg->queue_map_size, err, errlen);
	if (q != NULL) {
		queue_set_notice_hook(q, ctl_queue_notice, NULL);
		queue_notices_flush(q);
	}
	return q;
}

struct queue *ctl_open_ro(const struct config *cfg)
{
	struct queue *q;
	char err[512] = "";

	q = ctl_queue_open(cfg, 1, err, sizeof(err));
	if (q == NULL)
		ctl_err("cannot open the queue: %s",
		    err[0] != '\0' ? err : "unknown error");
	return q;
}

/* ---- control socket commands ---- */

/*
 * 1 when nothing listens on the control socket (no socket file, or
 * connection refused), so the daemon is not running; 0 otherwise.
 */
int ctl_daemon_absent(const char *path)
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
int ctl_control(const char *line, int quiet_absent)
{
	char reply[CTL_REPLY_MAX], err[512], pbuf[512];
	const struct config *cfg = ctl_config();
	const char *path;

	if (cfg == NULL)
		return CTL_EXIT_FAIL;
	path = ctl_control_path(cfg, pbuf, sizeof(pbuf));

	if (ctlclient_request(path, line, reply, sizeof(reply), err,
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
	/* ETRN's node forms (RFC 1985): domain, @domain (and its
	 * subdomains), #queue */
	if (!ctl_domain_arg(argv[1] + (argv[1][0] == '@' || argv[1][0] == '#'))) {
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

/* A control command on one queue id (release, bounce). */
static int ctl_id_command(const char *verb, int argc, char **argv)
{
	char *line;
	int rc;

	if (argc != 2 || argv[1][0] == '-')
		return ctl_usage();
	if (!queue_id_valid(argv[1])) {
		ctl_err("invalid queue id");
		return CTL_EXIT_USAGE;
	}
	line = xasprintf("%s %s", verb, argv[1]);
	rc = ctl_control(line, 0);
	free(line);
	return rc;
}

static int ctl_cmd_release(int argc, char **argv)
{
	return ctl_id_command("release", argc, argv);
}

static int ctl_cmd_bounce(int argc, char **argv)
{
	return ctl_id_command("bounce", argc, argv);
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

	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};

	log_init(ctl_progname, 1, LOG_LEVEL_WARNING);
	/* --help and --version anywhere before the command, as -h and -V
	 * ("-c FILE --help" was an invalid option). */
	while ((ch = getopt_long(argc, argv, "+c:hV", longopts, NULL)) != -1) {
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
	 * of free()); it stays reachable from ctl_cfg_full. So are the
	 * domain modes. */
	config_free(&ctl_cfg_loaded);
	if (ctl_cfg_full != NULL && ctl_cfg_full->ndomains < CONFIG_REAP_MIN)
		config_free(&ctl_cfg_full);
	return rc;
}
