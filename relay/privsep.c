/*
 * privsep - the privileged helper and the auth process; see privsep.h.
 *
 * The helper's channel to the session process carries short records:
 *	'A' + a descriptor	a channel to a (new) auth process
 *	'E' + text		the first start failed (startup only)
 * The helper never acts on what the session process sends: an EOF is all
 * it listens for.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/capability.h>

#include <event2/event.h>

#include "authd.h"
#include "config.h"
#include "log.h"
#include "privsep.h"
#include "sandbox.h"
#include "util.h"
#include "xmalloc.h"

#define PRIVSEP_MSG_MAX		512
#define PRIVSEP_START_WAIT_MS	30000
#define PRIVSEP_BACKOFF_MAX	30

struct privsep {
	pid_t pid;		/* the helper */
	int ctl;
	int first_fd;
	struct event *ev;
	void (*newfd)(void *arg, int fd);
	void *arg;
	void (*tls_done)(void *arg, int cert_fd, int key_fd, const char *err);
	void *tls_arg;
};

/* ---- records with an optional descriptor ---- */

static int privsep_sendv(int sock, char tag, const int *fds, int nfds,
    const char *text)
{
	char buf[PRIVSEP_MSG_MAX];
	char cbuf[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov;
	struct msghdr msg;
	struct cmsghdr *cm;
	size_t len;

	buf[0] = tag;
	len = 1;
	if (text != NULL) {
		len += strlen(text) < sizeof(buf) - 1 ? strlen(text) :
		    sizeof(buf) - 1;
		memcpy(buf + 1, text, len - 1);
	}
	iov.iov_base = buf;
	iov.iov_len = len;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (nfds > 0) {
		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static int privsep_send(int sock, char tag, int fd, const char *text)
{
	return privsep_sendv(sock, tag, &fd, fd >= 0 ? 1 : 0, text);
}

/* Length of the record (0: EOF, -1: error); fds_r[0..1] the descriptors
 * received or -1; text NUL-terminated in buf. */
static ssize_t privsep_recvv(int sock, char *buf, size_t size, int fds_r[2],
    int flags)
{
	char cbuf[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = { buf, size - 1 };
	struct msghdr msg;
	struct cmsghdr *cm;
	size_t nfd;
	ssize_t n;

	fds_r[0] = fds_r[1] = -1;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof(cbuf);
	n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(sizeof(int)))
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (nfd > 2) {
			/* Never more than two: close the rest. */
			int extra;

			for (size_t i = 2; i < nfd; i++) {
				memcpy(&extra, CMSG_DATA(cm) + i * sizeof(int),
				    sizeof(int));
				close(extra);
			}
			nfd = 2;
		}
		memcpy(fds_r, CMSG_DATA(cm), nfd * sizeof(int));
	}
	return n;
}

static ssize_t privsep_recv(int sock, char *buf, size_t size, int *fd_r,
    int flags)
{
	int fds[2];
	ssize_t n = privsep_recvv(sock, buf, size, fds, flags);

	if (fds[1] >= 0)
		close(fds[1]);
	*fd_r = fds[0];
	return n;
}

/* ---- the auth process ---- */

/* Root stays root (the file is root's) but keeps no capability except
 * reading files it does not own (a password file of the old layout, owned
 * by run_as_user). */
static void privsep_drop_caps(void)
{
	struct __user_cap_header_struct h;
	struct __user_cap_data_struct data[2];
	int cap;

	if (geteuid() != 0)
		return;
	for (cap = 0; cap <= 63; cap++)
		if (cap != CAP_DAC_READ_SEARCH)
			(void)prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
	memset(&h, 0, sizeof(h));
	memset(data, 0, sizeof(data));
	h.version = _LINUX_CAPABILITY_VERSION_3;
	data[0].effective = data[0].permitted = 1u << CAP_DAC_READ_SEARCH;
	if (syscall(SYS_capset, &h, data) < 0)
		log_warn("auth: cannot drop capabilities: %s", strerror(errno));
}

static void privsep_auth_gone(void *arg)
{
	event_base_loopbreak(arg);
}

static void privsep_auth_hup(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	log_info("auth: SIGHUP received");
	authd_reload(arg);
}

static void privsep_auth_main(int fd, const char *cfg_path,
    struct config *cfg, pid_t helper)
{
	struct event_base *base;
	struct authd *d;
	struct event *hup;
	char err[512];

	(void)prctl(PR_SET_NAME, "odrelayd-auth", 0, 0, 0);
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != helper)
		_exit(0);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	privsep_drop_caps();
	(void)sandbox_auth();
	base = event_base_new();
	if (base == NULL)
		_exit(1);
	d = authd_new(base, cfg_path, cfg, fd, privsep_auth_gone, base, err,
	    sizeof(err));
	if (d == NULL) {
		log_error("auth: %s", err);
		_exit(2);
	}
	hup = evsignal_new(base, SIGHUP, privsep_auth_hup, d);
	evsignal_add(hup, NULL);
	event_base_dispatch(base);
	/* The session process is gone: so are we. No cleanup to do. */
	_exit(0);
}

/* ---- the privileged helper ---- */

static int privsep_chld_pipe[2] = { -1, -1 };

static void privsep_on_chld(int sig)
{
	int e = errno;

	(void)sig;
	(void)!write(privsep_chld_pipe[1], "c", 1);
	errno = e;
}

static pid_t privsep_spawn(int ctl, const char *cfg_path, struct config *cfg)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("privsep: socketpair: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		log_error("privsep: fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(ctl);
		close(sv[0]);
		close(privsep_chld_pipe[0]);
		close(privsep_chld_pipe[1]);
		privsep_auth_main(sv[1], cfg_path, cfg, getppid());
		_exit(1);
	}
	close(sv[1]);
	if (privsep_send(ctl, 'A', sv[0], NULL) < 0)
		log_error("privsep: cannot pass the auth channel: %s",
		    strerror(errno));
	close(sv[0]);
	log_info("privsep: auth process %ld started", (long)pid);
	return pid;
}

static void privsep_quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/*
 * SIGHUP: open the TLS files the configuration names now, for the session
 * process, which may not read the key as run_as_user. Only the names in
 * the file are opened, never a path the session process sends.
 */
static void privsep_tls_open(int ctl, const char *cfg_path)
{
	struct config *cfg = config_load(cfg_path, privsep_quiet, NULL);
	char msg[PRIVSEP_MSG_MAX];
	int fds[2] = { -1, -1 };

	if (cfg == NULL) {
		(void)privsep_send(ctl, 'K', -1, "configuration has errors");
		return;
	}
	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL) {
		(void)privsep_send(ctl, 'K', -1, NULL);
		config_free(&cfg);
		return;
	}
	fds[0] = open(cfg->tls_cert_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fds[0] >= 0)
		fds[1] = open(cfg->tls_key_file, O_RDONLY | O_CLOEXEC |
		    O_NOCTTY);
	if (fds[0] < 0 || fds[1] < 0) {
		snprintf(msg, sizeof(msg), "%s: %s", fds[0] < 0 ?
		    cfg->tls_cert_file : cfg->tls_key_file, strerror(errno));
		(void)privsep_send(ctl, 'K', -1, msg);
	} else
		(void)privsep_sendv(ctl, 'K', fds, 2, NULL);
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	config_free(&cfg);
}

struct privsep_errctx {
	char msg[PRIVSEP_MSG_MAX];
	int n;
};

static void privsep_errfn(void *arg, const char *msg)
{
	struct privsep_errctx *e = arg;

	if (e->n++ == 0)
		util_strlcpy(e->msg, msg, sizeof(e->msg));
	log_error("%s", msg);
}

static void privsep_helper(int ctl, const char *cfg_path, struct config *cfg,
    int need_passwd)
{
	struct privsep_errctx ec;
	struct pollfd pfd[2];
	struct sigaction sa;
	pid_t pid = -1, w;
	time_t started = 0, restart_at = 0, now;
	unsigned backoff = 1;
	char buf[PRIVSEP_MSG_MAX];
	int st, timeout, fd;
	ssize_t n;

	(void)prctl(PR_SET_NAME, "odrelayd-priv", 0, 0, 0);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if (pipe2(privsep_chld_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		_exit(1);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = privsep_on_chld;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);

	/* A broken file stops the start (exit 2), as before the split. */
	memset(&ec, 0, sizeof(ec));
	if (authd_check_passwd(cfg, privsep_errfn, &ec, !need_passwd) < 0 &&
	    need_passwd) {
		(void)privsep_send(ctl, 'E', -1, ec.n ? ec.msg :
		    "password file cannot be loaded");
		_exit(2);
	}
	(void)sandbox_auth();
	pid = privsep_spawn(ctl, cfg_path, cfg);
	started = time(NULL);
	for (;;) {
		now = time(NULL);
		if (pid < 0 && restart_at <= now) {
			pid = privsep_spawn(ctl, cfg_path, cfg);
			started = now;
			if (pid < 0)
				restart_at = now + PRIVSEP_BACKOFF_MAX;
		}
		timeout = pid >= 0 ? -1 : restart_at > now ?
		    (int)(restart_at - now) * 1000 : 0;
		pfd[0].fd = ctl;
		pfd[0].events = POLLIN;
		pfd[1].fd = privsep_chld_pipe[0];
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, timeout) < 0) {
			if (errno != EINTR)
				_exit(1);
			/* SIGCHLD: the pipe says so on the next round. */
			continue;
		}
		if (pfd[0].revents != 0) {
			n = privsep_recv(ctl, buf, sizeof(buf), &fd,
			    MSG_DONTWAIT);
			if (fd >= 0)
				close(fd);
			if (n > 0 && buf[0] == 'T')
				privsep_tls_open(ctl, cfg_path);
			if (n == 0 || (n < 0 && errno != EAGAIN &&
			    errno != EINTR)) {
				/* The session process ended: so do we. */
				if (pid > 0) {
					kill(pid, SIGKILL);
					(void)waitpid(pid, &st, 0);
				}
				_exit(0);
			}
		}
		if (pfd[1].revents != 0)
			while (read(privsep_chld_pipe[0], buf, sizeof(buf)) > 0)
				;
		while (pid > 0 && (w = waitpid(-1, &st, WNOHANG)) > 0) {
			if (w != pid)
				continue;
			now = time(NULL);
			if (WIFSIGNALED(st))
				log_error("privsep: auth process %ld killed by "
				    "signal %d", (long)pid, WTERMSIG(st));
			else
				log_error("privsep: auth process %ld exited "
				    "with status %d", (long)pid,
				    WEXITSTATUS(st));
			/* Dying at once again and again: slow down. */
			if (now - started < 10)
				backoff = backoff * 2 > PRIVSEP_BACKOFF_MAX ?
				    PRIVSEP_BACKOFF_MAX : backoff * 2;
			else
				backoff = 1;
			restart_at = now + (now - started < 10 ? backoff : 1);
			log_info("privsep: restarting the auth process in "
			    "%ld s", (long)(restart_at - now));
			pid = -1;
		}
	}
}

/* ---- the session process's side ---- */

struct privsep *privsep_start(const char *cfg_path, struct config *cfg,
    int need_passwd, int *status_r, char *err, size_t errlen)
{
	struct privsep *p;
	struct pollfd pfd;
	char buf[PRIVSEP_MSG_MAX];
	int sv[2], fd = -1, rc;
	pid_t pid;
	ssize_t n;

	*status_r = 1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return NULL;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	if (pid == 0) {
		close(sv[0]);
		privsep_helper(sv[1], cfg_path, cfg, need_passwd);
		_exit(1);
	}
	close(sv[1]);
	pfd.fd = sv[0];
	pfd.events = POLLIN;
	do
		rc = poll(&pfd, 1, PRIVSEP_START_WAIT_MS);
	while (rc < 0 && errno == EINTR);
	n = rc > 0 ? privsep_recv(sv[0], buf, sizeof(buf), &fd, 0) : -1;
	if (n > 0 && buf[0] == 'A' && fd >= 0) {
		p = xcalloc(1, sizeof(*p));
		p->pid = pid;
		p->ctl = sv[0];
		p->first_fd = fd;
		return p;
	}
	if (fd >= 0)
		close(fd);
	if (n > 0 && buf[0] == 'E') {
		*status_r = 2;
		snprintf(err, errlen, "%s", buf + 1);
	} else
		snprintf(err, errlen, "the privileged helper did not start "
		    "the auth process");
	close(sv[0]);
	(void)waitpid(pid, NULL, 0);
	return NULL;
}

int privsep_first_auth_fd(struct privsep *p)
{
	int fd = p->first_fd;

	p->first_fd = -1;
	return fd;
}

static void privsep_ctl_cb(evutil_socket_t sock, short what, void *arg)
{
	struct privsep *p = arg;
	char buf[PRIVSEP_MSG_MAX];
	int fds[2], fd;
	ssize_t n;

	(void)what;
	n = privsep_recvv(sock, buf, sizeof(buf), fds, MSG_DONTWAIT);
	fd = fds[0];
	if (n > 0 && buf[0] == 'K' && p->tls_done != NULL) {
		void (*done)(void *, int, int, const char *) = p->tls_done;

		p->tls_done = NULL;
		if (fds[0] >= 0 && fds[1] >= 0)
			done(p->tls_arg, fds[0], fds[1], NULL);
		else {
			if (fds[0] >= 0)
				close(fds[0]);
			done(p->tls_arg, -1, -1, buf[1] ? buf + 1 : NULL);
		}
		return;
	}
	if (fds[1] >= 0)
		close(fds[1]);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		log_error("privsep: the privileged helper is gone: a dead auth "
		    "process will not be restarted");
		event_del(p->ev);
		return;
	}
	if (buf[0] == 'A' && fd >= 0) {
		log_info("privsep: new auth process channel");
		p->newfd(p->arg, fd);
		return;
	}
	if (fd >= 0)
		close(fd);
}

void privsep_attach(struct privsep *p, struct event_base *base,
    void (*newfd)(void *arg, int fd), void *arg)
{
	p->newfd = newfd;
	p->arg = arg;
	p->ev = event_new(base, p->ctl, EV_READ | EV_PERSIST, privsep_ctl_cb,
	    p);
	event_add(p->ev, NULL);
}

int privsep_tls_files(struct privsep *p,
    void (*done)(void *arg, int cert_fd, int key_fd, const char *err),
    void *arg)
{
	if (p->tls_done != NULL || p->ev == NULL)
		return -1;	/* one at a time; a new SIGHUP waits for it */
	if (privsep_send(p->ctl, 'T', -1, NULL) < 0)
		return -1;
	p->tls_done = done;
	p->tls_arg = arg;
	return 0;
}

void privsep_free(struct privsep **pp)
{
	struct privsep *p = *pp;
	int i;

	if (p == NULL)
		return;
	if (p->ev != NULL)
		event_free(p->ev);
	if (p->first_fd >= 0)
		close(p->first_fd);
	close(p->ctl);
	/* The helper sees the end-of-file, ends the auth process and exits:
	 * reap it (a container's init may not), killing it if it lingers. */
	for (i = 0; i < 200; i++) {
		if (waitpid(p->pid, NULL, WNOHANG) != 0)
			break;
		if (i == 199) {
			kill(p->pid, SIGKILL);
			(void)waitpid(p->pid, NULL, 0);
		}
		usleep(10000);
	}
	free(p);
	*pp = NULL;
}

/* ---- odrelayd -n ---- */

int privsep_check_layout(const struct config *cfg,
    void (*errfn)(void *arg, const char *msg), void *arg)
{
	struct passwd *pw;
	struct stat st;
	char msg[1024];
	int problems = 0, by_user;

	if (stat(cfg->passwd_file, &st) < 0)
		return 0;	/* missing: no users yet (said elsewhere) */
	if (st.st_mode & 007) {
		snprintf(msg, sizeof(msg), "%s: readable or writable by every "
		    "user (mode %03o); its secrets are password-equivalent: "
		    "chmod 0600 %s", cfg->passwd_file,
		    (unsigned)(st.st_mode & 0777), cfg->passwd_file);
		errfn(arg, msg);
		problems++;
	}
	if (geteuid() != 0 || (pw = getpwnam(cfg->run_as_user)) == NULL ||
	    pw->pw_uid == 0)
		return problems;
	by_user = (st.st_uid == pw->pw_uid && (st.st_mode & 0400)) ||
	    (st.st_gid == pw->pw_gid && (st.st_mode & 0040));
	if (by_user)
		fprintf(stderr, "warning: %s: readable by run_as_user %s: the "
		    "process that serves the network could read every "
		    "secret; only odrelayd's auth process (root) needs it: "
		    "chown root:root %s; chmod 0600 %s\n", cfg->passwd_file,
		    cfg->run_as_user, cfg->passwd_file, cfg->passwd_file);
	return problems;
}
