/*
 * precheck - start-up checks shared by `odrelayd -n` and the daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "authd.h"
#include "config.h"
#include "odmr.h"
#include "precheck.h"
#include "queue.h"
#include "tls.h"
#include "util.h"

static int precheck_readable(const char *path, char *err, size_t errlen,
    const char *what);

struct precheck_ctx {
	const struct config *cfg;
	precheck_error_fn *errfn;
	void *arg;
	int nerrors;
};

/* Whether line p is the header of section [domain name]. */
static int precheck_is_section(const char *p, const char *name)
{
	size_t nl = strlen(name);

	if (strncmp(p, "[domain", 7) != 0)
		return 0;
	p += 7;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, name, nl) != 0)
		return 0;
	p += nl;
	if (*p == '.')
		p++;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == ']';
}

/*
 * The line that sets key in the configuration file, globally (section
 * NULL) or in [domain section]; 0 when none does (the default is in use)
 * or the file cannot be read again. Config errors are "FILE:LINE:
 * message"; the parsed config keeps no lines.
 */
static int precheck_key_line(const char *path, const char *section,
    const char *key)
{
	char buf[4096];
	size_t klen = strlen(key);
	int n = 0, found = 0, in = section == NULL;
	FILE *f;

	if (path == NULL || (f = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(buf, sizeof(buf), f) != NULL) {
		const char *p = buf;

		n++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '[') {
			if (section == NULL)
				break;	/* global keys come first */
			in = precheck_is_section(p, section);
			continue;
		}
		if (in && strncmp(p, key, klen) == 0 && (p[klen] == ' ' ||
		    p[klen] == '\t' || p[klen] == '=')) {
			found = n;
			break;
		}
	}
	fclose(f);
	return found;
}

static void precheck_error_in(struct precheck_ctx *c, const char *section,
    const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* One problem with the value of key ("FILE:LINE: ..."; "FILE: ..." for a
 * default), or, key NULL, a message that names its own file. */
static void precheck_error_in(struct precheck_ctx *c, const char *section,
    const char *key, const char *fmt, ...)
{
	char msg[1024], where[600] = "";
	va_list ap;

	if (key != NULL && c->cfg != NULL && c->cfg->path != NULL) {
		int line = precheck_key_line(c->cfg->path, section, key);

		if (line > 0)
			snprintf(where, sizeof(where), "%.500s:%d: ",
			    c->cfg->path, line);
		else
			snprintf(where, sizeof(where), "%.500s: ",
			    c->cfg->path);
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->nerrors++;
	if (c->errfn != NULL) {
		char line[sizeof(where) + sizeof(msg)];

		snprintf(line, sizeof(line), "%s%s", where, msg);
		c->errfn(c->arg, line);
	}
}

#define precheck_error(c, key, ...) \
	precheck_error_in((c), NULL, (key), __VA_ARGS__)

/*
 * CA files are read at each delivery or webhook, not at start: a missing
 * one would only show as every verified delivery deferred (4.7.5).
 */
static void precheck_ca_file(struct precheck_ctx *c, const char *section,
    const char *key, const char *path)
{
	char err[600];

	if (path != NULL && precheck_readable(path, err, sizeof(err), key) < 0)
		precheck_error_in(c, section, key, "%s", err);
}

/* Open for reading (as the daemon will), so permissions are really tested. */
static int precheck_readable(const char *path, char *err, size_t errlen,
    const char *what)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

int precheck_tls(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char terr[512];

	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL)
		return 0;
	if (precheck_readable(cfg->tls_cert_file, err, errlen,
	    "tls_cert_file") < 0 ||
	    precheck_readable(cfg->tls_key_file, err, errlen,
	    "tls_key_file") < 0)
		return -1;
	ctx = tls_server_ctx(cfg->tls_cert_file, cfg->tls_key_file, terr,
	    sizeof(terr));
	if (ctx == NULL) {
		snprintf(err, errlen, "tls: %s", terr);
		return -1;
	}
	SSL_CTX_free(ctx);
	return 0;
}

/* The directory part of path ("." when there is none). */
static void precheck_dirname(const char *path, char *buf, size_t size)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL) {
		util_strlcpy(buf, ".", size);
		return;
	}
	if (slash == path)
		slash++;
	snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

static void precheck_dir(struct precheck_ctx *c, const char *key,
    const char *dir)
{
	struct stat st;

	if (stat(dir, &st) < 0)
		precheck_error(c, key, "%s: directory %s: %s", key, dir,
		    strerror(errno));
	else if (!S_ISDIR(st.st_mode))
		precheck_error(c, key, "%s: %s is not a directory", key, dir);
}

/*
 * The daemon makes the control socket after it dropped to run_as_user:
 * the directory must let that user create (and remove) it. As root, ask
 * in a child that became the user, so groups and ACLs count as the
 * kernel counts them. 0, or an errno.
 */
static int precheck_writable_as(const struct config *cfg, const char *dir)
{
	struct passwd *pw;
	pid_t pid;
	int st;

	if (geteuid() != 0)
		return access(dir, W_OK | X_OK) == 0 ? 0 : errno;
	pw = getpwnam(cfg->run_as_user);
	if (pw == NULL || pw->pw_uid == 0)
		return 0;	/* root, or stays root (odrelayd(8)) */
	pid = fork();
	if (pid < 0)
		return 0;	/* cannot tell: the daemon will say */
	if (pid == 0) {
		if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
		    setuid(pw->pw_uid) < 0)
			_exit(0);
		_exit(access(dir, W_OK | X_OK) == 0 ? 0 : errno & 0xff);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

/* An existing queue must open (a format this version understands, a
 * readable environment); read-only, so a running daemon is not disturbed. */
static void precheck_queue_open(struct precheck_ctx *c, const char *dir)
{
	char path[4096], err[512] = "";
	struct queue *q;

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (access(path, F_OK) != 0)
		return;		/* empty directory: created at start */
	q = queue_open_readonly(dir, err, sizeof(err));
	if (q == NULL)
		precheck_error(c, "queue_dir", "queue_dir %s: %s", dir,
		    err[0] != '\0' ? err : "cannot be opened");
	queue_close(&q);
}

static void precheck_queue(struct precheck_ctx *c, const struct config *cfg)
{
	struct stat st;
	char parent[4096];

	if (stat(cfg->queue_dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			precheck_error(c, "queue_dir",
			    "queue_dir %s is not a directory",
			    cfg->queue_dir);
		/* As root the daemon chowns it to run_as_user itself. */
		else if (geteuid() != 0 &&
		    access(cfg->queue_dir, R_OK | W_OK | X_OK) < 0)
			precheck_error(c, "queue_dir", "queue_dir %s: %s",
			    cfg->queue_dir,
			    strerror(errno));
		else
			precheck_queue_open(c, cfg->queue_dir);
		return;
	}
	if (errno != ENOENT) {
		precheck_error(c, "queue_dir", "queue_dir %s: %s",
		    cfg->queue_dir,
		    strerror(errno));
		return;
	}
	/* The daemon creates the queue directory, not its parents. */
	precheck_dirname(cfg->queue_dir, parent, sizeof(parent));
	precheck_dir(c, "queue_dir", parent);
}

static void precheck_pipe_err(void *arg, const char *msg)
{
	struct precheck_ctx *c = arg;

	precheck_error(c, NULL, "%s", msg);
}

int precheck_all(const struct config *cfg, precheck_error_fn *errfn,
    void *arg)
{
	struct precheck_ctx c = { cfg, errfn, arg, 0 };
	char err[1024], dir[4096];

	if (precheck_tls(cfg, err, sizeof(err)) < 0)
		precheck_error(&c, strncmp(err, "tls_key_file", 12) == 0 ?
		    "tls_key_file" : "tls_cert_file", "%s", err);
	precheck_queue(&c, cfg);
	/* The control socket's directory: the queue's is made at start. */
	precheck_dirname(cfg->control_socket, dir, sizeof(dir));
	if (strcmp(dir, cfg->queue_dir) != 0) {
		int e;

		precheck_dir(&c, "control_socket", dir);
		if (access(dir, F_OK) == 0 &&
		    (e = precheck_writable_as(cfg, dir)) != 0)
			precheck_error(&c, "control_socket",
			    "control_socket %s: run_as_user %s "
			    "cannot create it in %s: %s", cfg->control_socket,
			    geteuid() == 0 ? cfg->run_as_user : "(this user)",
			    dir, strerror(e));
	}
	if (cfg->odmr_listen.n > 0 || cfg->odmrs_listen.n > 0) {
		/* A missing file is allowed (no user can log in yet). */
		if (access(cfg->passwd_file, F_OK) == 0 &&
		    precheck_readable(cfg->passwd_file, err, sizeof(err),
		    "passwd_file") < 0)
			precheck_error(&c, "passwd_file", "%s", err);
		else
			(void)odmr_check_config(cfg, precheck_pipe_err, &c);
	} else if (access(cfg->passwd_file, F_OK) == 0) {
		/* Without ODMR the file, when it exists, still turns on AUTH
		 * on the SMTP port: broken, the auth process could never
		 * start and AUTH would answer 454 for good. */
		if (precheck_readable(cfg->passwd_file, err, sizeof(err),
		    "passwd_file") < 0)
			precheck_error(&c, "passwd_file", "%s", err);
		else
			(void)authd_check_passwd(cfg, precheck_pipe_err, &c, 1);
	}
	/* Not an error (a test or a demo may use one word), but a relay
	 * greets and says EHLO with this name: say what to do. */
	if (strchr(cfg->hostname, '.') == NULL && c.errfn != NULL) {
		char w[512];

		snprintf(w, sizeof(w), "warning: hostname '%.200s' is not fully "
		    "qualified (the system's name, which the resolver could not "
		    "qualify): set hostname in the configuration", cfg->hostname);
		c.errfn(c.arg, w);
	}
	precheck_ca_file(&c, NULL, "tls_ca_file", cfg->tls_ca_file);
	precheck_ca_file(&c, NULL, "notify_ca_file", cfg->notify_ca_file);
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *cd = &cfg->domains[i];

		precheck_ca_file(&c, cd->name, "tls_ca_file", cd->tls_ca_file);
		precheck_ca_file(&c, cd->name, "notify_ca_file",
		    cd->notify_ca_file);
	}
	if (cfg->run_as_user_set && getpwnam(cfg->run_as_user) == NULL)
		precheck_error(&c, "run_as_user", "run_as_user %s: no such user",
		    cfg->run_as_user);
	return c.nerrors;
}
