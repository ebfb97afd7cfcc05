/*
 * fuzz_smtpd - libFuzzer target for a whole inbound SMTP session of
 * relay/smtpd: command lines, pipelining, the DATA scanner (dot-unstuffing,
 * bare CR/LF/NUL, size and Received-header limits, overlong lines) and the
 * queue commit, with the input as the byte stream a client sends.
 *
 * smtpd.c is compiled into this file (#include) so the harness sees the
 * session; smtpd_adopt takes one end of a socketpair: no network, no
 * listener. The
 * other end writes the input, reads and drops the replies and, once the
 * session has consumed everything and is not waiting for a commit, shuts
 * its write side (EOF). A run ends when the session is freed. The real
 * queue runs on /dev/shm (or $TMPDIR): its files are unlinked right after
 * opening, so nothing is left behind, and it is reopened every
 * FUZZ_RECYCLE runs so it never fills up.
 */
#include "smtpd.c"

#include <dirent.h>
#include <signal.h>

#include <event2/thread.h>
#include <sys/ioctl.h>

#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define FUZZ_RECYCLE 2000
#define FUZZ_STALL_MS 50

static struct event_base *fz_base;
static struct config *fz_cfg;
static struct queue *fz_q;
static struct smtpd *fz_s;
static unsigned long fz_runs;
static int fz_stalled;		/* the last loop turn ended by the stall timer */
static int fz_debug;		/* FUZZ_SMTPD_DEBUG=1: replies to stderr */

static const char fz_conf[] =
	"hostname = mx.example.net\n"
	"queue_dir = /nonexistent/unused\n"
	"smtp_listen = 127.0.0.1:2525\n"
	"odmr_listen =\n"
	"max_message_size = 32K\n"
	"max_recipients = 8\n"
	"max_received = 5\n"
	"max_errors = 10\n"
	"smtp_timeout = 60s\n"
	"queue_map_size = 64M\n"
	"log_level = error\n"
	"[domain example.org]\n"
	"hold = yes\n"
	"[domain example.com]\n"
	"hold = no\n"
	"subdomains = yes\n"
	"route = [127.0.0.1]:9\n"
	"[domain list.example]\n"
	"hold = yes\n"
	"recipients = alice@list.example, bob@list.example\n";

static void
fz_etrn(void *arg, const char *client_ip, const char *arg_text, char *reply,
    size_t replylen)
{
	(void)arg;
	CHECK(client_ip != NULL && arg_text != NULL);
	snprintf(reply, replylen, "250 2.0.0 Queuing for node %s started",
	    arg_text);
}

/* A fresh queue in a directory that is gone again once LMDB has it open. */
static void
fz_queue_open(void)
{
	char dir[4096], path[4200], err[512];
	const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" :
	    fuzz_tmpdir();
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/odrelay-fuzz-q-XXXXXX", tmp);
	if (mkdtemp(dir) == NULL) {
		perror("fuzz_smtpd: mkdtemp");
		abort();
	}
	fz_q = queue_open(dir, fz_base, 64ull << 20, err, sizeof(err));
	if (fz_q == NULL) {
		fprintf(stderr, "fuzz_smtpd: queue_open: %s\n", err);
		abort();
	}
	if ((d = opendir(dir)) == NULL)
		abort();
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
	fz_s = smtpd_new(fz_base, fz_cfg, fz_q, NULL);
	smtpd_set_etrn_handler(fz_s, fz_etrn, NULL);
}

static void
fz_errfn(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "fuzz_smtpd: config: %s\n", msg);
}

static void
fz_setup(void)
{
	struct fuzz_file ff;

	fuzz_log_quiet();
	fz_debug = getenv("FUZZ_SMTPD_DEBUG") != NULL;
	signal(SIGPIPE, SIG_IGN);
	/* the queue's writer thread wakes the loop with event_active() */
	CHECK(evthread_use_pthreads() == 0);
	fz_base = event_base_new();
	CHECK(fz_base != NULL);
	fuzz_file_init(&ff);
	fuzz_file_set(&ff, fz_conf, sizeof(fz_conf) - 1);
	fz_cfg = config_load(ff.path, fz_errfn, NULL);
	CHECK(fz_cfg != NULL);
	close(ff.fd);
	log_set_level(LOG_LEVEL_ERROR);
	fz_queue_open();
}

/* The session has taken all input there is and waits for more. */
static int
fz_idle(int fd)
{
	struct server_conn *c = server_first(fz_s->srv);
	struct smtpd_session *ss = c != NULL ? server_conn_owner(c) : NULL;
	int pending = 0;

	if (ss == NULL)
		return 1;
	if (ss->state == SMTPD_ST_COMMIT || ss->paused)
		return 0;
	/* a complete line (or message text) not yet taken; a partial
	 * command line waits for its end, which only EOF will bring */
	if (ss->bev != NULL && ss->state != SMTPD_ST_CLOSING) {
		struct evbuffer *in = bufferevent_get_input(ss->bev);
		if (evbuffer_get_length(in) > 0 &&
		    (ss->state == SMTPD_ST_DATA ||
		    evbuffer_search(in, "\n", 1, NULL).pos >= 0))
			return 0;
	}
	/* replies not yet written would be lost with the EOF */
	if (ss->bev != NULL &&
	    evbuffer_get_length(bufferevent_get_output(ss->bev)) > 0)
		return 0;
	if (ioctl(fd, FIONREAD, &pending) == 0 && pending > 0)
		return 0;
	return 1;
}

/* Drop (or, when debugging, show) the server's replies. */
static void
fz_client_read(evutil_socket_t fd, short what, void *arg)
{
	char buf[16384];
	ssize_t n;

	(void)what;
	(void)arg;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (fz_debug)
			fwrite(buf, 1, (size_t)n, stderr);
}

static void
fz_stall_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fz_stalled = 1;
}

static void
fz_client_write(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/*
 * Where the next segment of input ends: after a "DATA" command line, a
 * client waits for 354 before it sends the text (pipelining it is a
 * synchronisation error, RFC 2920 3.1), so the harness does the same.
 */
static size_t
fz_segment_end(const uint8_t *data, size_t size, size_t off)
{
	const uint8_t *nl;
	size_t len;

	while (off < size) {
		nl = memchr(data + off, '\n', size - off);
		if (nl == NULL)
			return size;
		len = (size_t)(nl - (data + off));
		if (len > 0 && data[off + len - 1] == '\r')
			len--;
		if (len == 4 && strncasecmp((const char *)data + off, "DATA",
		    4) == 0)
			return (size_t)(nl - data) + 1;
		off = (size_t)(nl - data) + 1;
	}
	return size;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_in sin;
	struct timeval stall = { 0, FUZZ_STALL_MS * 1000 };
	struct event *rev, *wev, *tev;
	size_t off = 0, end;
	ssize_t n;
	int sv[2], shut = 0;

	if (fz_base == NULL)
		fz_setup();
	if (++fz_runs % FUZZ_RECYCLE == 0) {
		smtpd_free(&fz_s);
		queue_close(&fz_q);
		fz_queue_open();
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    sv) < 0) {
		perror("fuzz_smtpd: socketpair");
		abort();
	}
	rev = event_new(fz_base, sv[1], EV_READ | EV_PERSIST, fz_client_read,
	    NULL);
	wev = event_new(fz_base, sv[1], EV_WRITE, fz_client_write, NULL);
	tev = evtimer_new(fz_base, fz_stall_cb, NULL);
	CHECK(rev != NULL && wev != NULL && tev != NULL);
	event_add(rev, NULL);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(40000);
	sin.sin_addr.s_addr = htonl(0x7f000001);
	smtpd_adopt(fz_s, sv[0], (struct sockaddr *)&sin);
	end = fz_segment_end(data, size, 0);
	while (smtpd_session_count(fz_s) > 0) {
		if (off < end) {
			n = write(sv[1], data + off, end - off);
			if (n > 0)
				off += (size_t)n;
			if (off < end)
				event_add(wev, NULL);
		} else if (!shut && (fz_idle(sv[0]) || fz_stalled)) {
			/* a stall (no event for FUZZ_STALL_MS) counts as
			 * idle, so an input can never hang the harness */
			if (off < size) {
				/* the session waits for the next segment */
				end = fz_segment_end(data, size, off);
				continue;
			}
			shutdown(sv[1], SHUT_WR);
			shut = 1;
		}
		/* every wait ends with an event; the timer only guards a stall */
		fz_stalled = 0;
		evtimer_add(tev, &stall);
		event_base_loop(fz_base, EVLOOP_ONCE);
		evtimer_del(tev);
		if (fz_debug && fz_stalled)
			fprintf(stderr, "fuzz_smtpd: stalled in state %s\n",
			    server_first(fz_s->srv) != NULL ?
			    smtpd_state_names[((struct smtpd_session *)
			    server_conn_owner(server_first(fz_s->srv)))->state] :
			    "-");
	}
	fz_client_read(sv[1], EV_READ, NULL);
	event_free(rev);
	event_free(wev);
	event_free(tev);
	close(sv[1]);
	return 0;
}
