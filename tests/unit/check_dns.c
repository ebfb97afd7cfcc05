/*
 * check_dns - mx_select ordering, then real lookups through dns.c against
 * a dnsmasq on a random loopback port (skipped only when dnsmasq is
 * missing). dnsmasq is started once per test case and killed by PID.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "dns.h"
#include "mx.h"
#include "util.h"

/* ---- mx_select ---- */

static unsigned rnd_zero(void *arg)
{
	(void)arg;
	return 0;
}

static unsigned rnd_lcg(void *arg)
{
	unsigned *s = arg;

	*s = *s * 1103515245u + 12345u;
	return *s >> 16;
}

static void mx_set(struct mx_entry *e, const char *host, unsigned pref)
{
	snprintf(e->host, sizeof(e->host), "%s", host);
	e->pref = pref;
}

START_TEST(test_mx_sort)
{
	struct mx_entry e[3];

	mx_set(&e[0], "b.test", 20);
	mx_set(&e[1], "a.test", 10);
	mx_set(&e[2], "c.test", 30);
	ck_assert_int_eq(mx_select(e, 3, rnd_zero, NULL), 3);
	ck_assert_str_eq(e[0].host, "a.test");
	ck_assert_uint_eq(e[0].pref, 10);
	ck_assert_str_eq(e[1].host, "b.test");
	ck_assert_str_eq(e[2].host, "c.test");
	ck_assert_uint_eq(e[2].pref, 30);
}
END_TEST

START_TEST(test_mx_shuffle_deterministic)
{
	struct mx_entry e[5];

	mx_set(&e[0], "d.test", 10);
	mx_set(&e[1], "a.test", 10);
	mx_set(&e[2], "low.test", 5);
	mx_set(&e[3], "c.test", 10);
	mx_set(&e[4], "b.test", 10);
	ck_assert_int_eq(mx_select(e, 5, rnd_zero, NULL), 5);
	/* Sorted a b c d, then Fisher-Yates with j = lo every step. */
	ck_assert_str_eq(e[0].host, "low.test");
	ck_assert_str_eq(e[1].host, "b.test");
	ck_assert_str_eq(e[2].host, "c.test");
	ck_assert_str_eq(e[3].host, "d.test");
	ck_assert_str_eq(e[4].host, "a.test");
}
END_TEST

START_TEST(test_mx_shuffle_spread)
{
	static const char *hosts[4] = { "a.test", "b.test", "c.test", "d.test" };
	unsigned seed = 42, first[4] = { 0, 0, 0, 0 };
	struct mx_entry e[6];
	int run, i, j;

	for (run = 0; run < 400; run++) {
		for (i = 0; i < 4; i++)
			mx_set(&e[i], hosts[i], 10);
		mx_set(&e[4], "z.test", 1);
		mx_set(&e[5], "y.test", 50);
		ck_assert_int_eq(mx_select(e, 6, rnd_lcg, &seed), 6);
		/* Preferences never mix. */
		ck_assert_str_eq(e[0].host, "z.test");
		ck_assert_str_eq(e[5].host, "y.test");
		for (i = 1; i < 5; i++) {
			ck_assert_uint_eq(e[i].pref, 10);
			for (j = i + 1; j < 5; j++)
				ck_assert_str_ne(e[i].host, e[j].host);
		}
		for (j = 0; j < 4; j++)
			if (strcmp(e[1].host, hosts[j]) == 0)
				first[j]++;
	}
	for (j = 0; j < 4; j++)
		ck_assert_uint_gt(first[j], 50);	/* ~100 each */
}
END_TEST

START_TEST(test_mx_default_rnd)
{
	struct mx_entry e[3];

	mx_set(&e[0], "b.test", 10);
	mx_set(&e[1], "a.test", 10);
	mx_set(&e[2], "c.test", 5);
	ck_assert_int_eq(mx_select(e, 3, NULL, NULL), 3);
	ck_assert_str_eq(e[0].host, "c.test");
}
END_TEST

START_TEST(test_mx_duplicates)
{
	struct mx_entry e[5];

	mx_set(&e[0], "A.Test.", 20);
	mx_set(&e[1], "a.test", 10);
	mx_set(&e[2], "b.test", 15);
	mx_set(&e[3], "b.test", 15);
	mx_set(&e[4], "a.test", 30);
	ck_assert_int_eq(mx_select(e, 5, rnd_zero, NULL), 2);
	ck_assert_str_eq(e[0].host, "a.test");
	ck_assert_uint_eq(e[0].pref, 10);
	ck_assert_str_eq(e[1].host, "b.test");
	ck_assert_uint_eq(e[1].pref, 15);
}
END_TEST

START_TEST(test_mx_null)
{
	struct mx_entry e[3];

	mx_set(&e[0], "", 0);
	ck_assert_int_eq(mx_select(e, 1, rnd_zero, NULL), -1);
	mx_set(&e[0], ".", 0);
	ck_assert_int_eq(mx_select(e, 1, rnd_zero, NULL), -1);
	/* "." beside a real MX is no null MX: the empty one is dropped. */
	mx_set(&e[0], ".", 0);
	mx_set(&e[1], "mx.test", 10);
	ck_assert_int_eq(mx_select(e, 2, rnd_zero, NULL), 1);
	ck_assert_str_eq(e[0].host, "mx.test");
	mx_set(&e[0], "", 0);
	mx_set(&e[1], "", 0);
	ck_assert_int_eq(mx_select(e, 2, rnd_zero, NULL), 0);
	ck_assert_int_eq(mx_select(e, 0, rnd_zero, NULL), 0);
}
END_TEST

/* ---- dnsmasq ---- */

static pid_t dnsmasq_pid = -1;
static int dnsmasq_port;
static char dnsmasq_path[256];

static int find_dnsmasq(void)
{
	static const char *dirs[] = { "/usr/sbin", "/usr/local/sbin", "/sbin",
	    "/usr/bin", "/bin", NULL };
	const char *path = getenv("PATH");
	char buf[1024], *p, *save = NULL;
	int i;

	for (i = 0; dirs[i] != NULL; i++) {
		snprintf(dnsmasq_path, sizeof(dnsmasq_path), "%s/dnsmasq",
		    dirs[i]);
		if (access(dnsmasq_path, X_OK) == 0)
			return 1;
	}
	if (path == NULL || strlen(path) >= sizeof(buf))
		return 0;
	strcpy(buf, path);
	for (p = strtok_r(buf, ":", &save); p != NULL;
	    p = strtok_r(NULL, ":", &save)) {
		snprintf(dnsmasq_path, sizeof(dnsmasq_path), "%s/dnsmasq", p);
		if (access(dnsmasq_path, X_OK) == 0)
			return 1;
	}
	return 0;
}

/* 1 when something holds UDP 127.0.0.1:port. */
static int udp_port_busy(int port)
{
	struct sockaddr_in sin;
	int fd, r;

	if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0)
		return 0;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r = bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	close(fd);
	return r < 0 && errno == EADDRINUSE;
}

static void dnsmasq_start(void)
{
	char portarg[32];
	int attempt, i, status;
	pid_t pid;

	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	for (attempt = 0; attempt < 10; attempt++) {
		dnsmasq_port = 20000 + rand() % 40000;
		if (udp_port_busy(dnsmasq_port))
			continue;
		snprintf(portarg, sizeof(portarg), "--port=%d", dnsmasq_port);
		if ((pid = fork()) < 0)
			ck_abort_msg("fork: %s", strerror(errno));
		if (pid == 0) {
			if (freopen("/dev/null", "w", stdout) == NULL ||
			    freopen("/dev/null", "w", stderr) == NULL)
				_exit(126);
			execl(dnsmasq_path, "dnsmasq", "-C", "/dev/null",
			    "--keep-in-foreground", "--pid-file=",
			    "--no-resolv", "--no-hosts", portarg,
			    "--listen-address=127.0.0.1", "--bind-interfaces",
			    /* Answer only from local data: unknown .test
			     * names get NXDOMAIN (others get REFUSED). */
			    "--local=/test/", "--local-ttl=300",
			    "--mx-host=example.test,mx1.example.test,10",
			    "--mx-host=example.test,mx2.example.test,20",
			    "--host-record=mx1.example.test,127.0.0.2",
			    "--host-record=mx2.example.test,127.0.0.3,::1",
			    "--host-record=nomx.test,127.0.0.4",
			    "--mx-host=nullmx.test,.,0",
			    "--mx-host=noaddr.test,ghost.noaddr.test,10",
			    "--mx-host=partial.test,ghost.partial.test,5",
			    "--mx-host=partial.test,mx1.example.test,10",
			    "--mx-host=eq.test,mx1.example.test,10",
			    "--mx-host=eq.test,mx2.example.test,10",
			    (char *)NULL);
			_exit(127);
		}
		for (i = 0; i < 100; i++) {
			if (waitpid(pid, &status, WNOHANG) == pid)
				break;	/* died (port taken?): try again */
			if (udp_port_busy(dnsmasq_port)) {
				dnsmasq_pid = pid;
				return;
			}
			usleep(30000);
		}
		if (i == 100) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
		}
	}
	ck_abort_msg("cannot start dnsmasq");
}

static void dnsmasq_stop(void)
{
	int status;

	if (dnsmasq_pid <= 0)
		return;
	kill(dnsmasq_pid, SIGCONT);
	kill(dnsmasq_pid, SIGTERM);
	waitpid(dnsmasq_pid, &status, 0);
	dnsmasq_pid = -1;
}

/* ---- loop helpers ---- */

struct waitres {
	int ncalls;
	struct dns_result *res;
};

static void done_cb(void *arg, struct dns_result *res)
{
	struct waitres *w = arg;

	w->ncalls++;
	dns_result_free(&w->res);
	w->res = res;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Run the loop until *counter >= target or secs pass. Returns seconds used. */
static double loop_until(struct event_base *base, const int *counter,
    int target, double secs)
{
	struct timeval tv = { 0, 20000 };
	struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	double start = util_now();

	event_add(tick, &tv);
	while (*counter < target && util_now() - start < secs)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(tick);
	return util_now() - start;
}

static struct event_base *base;
static struct dns *dns;

static struct dns *dns_for_port(int port, int timeout_ms)
{
	char server[64], err[256] = "";
	const char *servers[1] = { server };
	struct dns *d;

	snprintf(server, sizeof(server), "127.0.0.1:%d", port);
	d = dns_new(base, servers, 1, timeout_ms, err, sizeof(err));
	ck_assert_msg(d != NULL, "dns_new: %s", err);
	return d;
}

static void setup(void)
{
	/* A failed test_dns_cache may have left it frozen. */
	kill(dnsmasq_pid, SIGCONT);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	dns = dns_for_port(dnsmasq_port, 1000);
}

static void teardown(void)
{
	dns_free(&dns);
	event_base_free(base);
	base = NULL;
}

/* Resolve and wait; asserts that the callback did not run synchronously. */
static struct dns_result *lookup(struct dns *d, int mx, const char *name,
    int port)
{
	struct waitres w = { 0, NULL };
	struct dns_req *req;

	req = mx ? dns_resolve_mx(d, name, port, done_cb, &w) :
	    dns_resolve_host(d, name, port, done_cb, &w);
	ck_assert_ptr_nonnull(req);
	ck_assert_int_eq(w.ncalls, 0);
	loop_until(base, &w.ncalls, 1, 10);
	ck_assert_int_eq(w.ncalls, 1);
	ck_assert_ptr_nonnull(w.res);
	return w.res;
}

static void check_addr(const struct sockaddr_storage *ss, const char *ip,
    int port)
{
	char buf[64];

	ck_assert_str_eq(util_sockaddr_ip((const struct sockaddr *)ss, buf,
	    sizeof(buf)), ip);
	if (ss->ss_family == AF_INET)
		ck_assert_int_eq(ntohs(((const struct sockaddr_in *)ss)->sin_port),
		    port);
	else
		ck_assert_int_eq(ntohs(((const struct sockaddr_in6 *)ss)->sin6_port),
		    port);
}

static void check_example_test(const struct dns_result *r, int port)
{
	ck_assert_int_eq(r->status, DNS_OK);
	ck_assert_uint_eq(r->ntargets, 2);
	ck_assert_str_eq(r->targets[0].host, "mx1.example.test");
	ck_assert_uint_eq(r->targets[0].pref, 10);
	ck_assert_uint_eq(r->targets[0].naddrs, 1);
	check_addr(&r->targets[0].addrs[0], "127.0.0.2", port);
	ck_assert_str_eq(r->targets[1].host, "mx2.example.test");
	ck_assert_uint_eq(r->targets[1].pref, 20);
	ck_assert_uint_eq(r->targets[1].naddrs, 2);
	check_addr(&r->targets[1].addrs[0], "::1", port);	/* v6 first */
	check_addr(&r->targets[1].addrs[1], "127.0.0.3", port);
}

START_TEST(test_dns_mx_order)
{
	struct dns_result *r = lookup(dns, 1, "Example.Test.", 2525);

	check_example_test(r, 2525);
	dns_result_free(&r);
	ck_assert_ptr_null(r);
}
END_TEST

START_TEST(test_dns_mx_equal_pref)
{
	int run, seen1 = 0, seen2 = 0;

	/* The MX set comes from the cache after the first lookup; the
	 * shuffle is per request. */
	for (run = 0; run < 16; run++) {
		struct dns_result *r = lookup(dns, 1, "eq.test", 25);

		ck_assert_int_eq(r->status, DNS_OK);
		ck_assert_uint_eq(r->ntargets, 2);
		if (strcmp(r->targets[0].host, "mx1.example.test") == 0)
			seen1++;
		else
			seen2++;
		dns_result_free(&r);
	}
	/* 2^-15 chance of a false failure. */
	ck_assert_int_gt(seen1, 0);
	ck_assert_int_gt(seen2, 0);
}
END_TEST

START_TEST(test_dns_implicit_mx)
{
	struct dns_result *r = lookup(dns, 1, "nomx.test", 25);

	ck_assert_int_eq(r->status, DNS_OK);
	ck_assert_uint_eq(r->ntargets, 1);
	ck_assert_str_eq(r->targets[0].host, "nomx.test");
	ck_assert_uint_eq(r->targets[0].pref, 0);
	ck_assert_uint_eq(r->targets[0].naddrs, 1);
	check_addr(&r->targets[0].addrs[0], "127.0.0.4", 25);
	dns_result_free(&r);
}
END_TEST

START_TEST(test_dns_nxdomain)
{
	struct dns_result *r = lookup(dns, 1, "nx.test", 25);

	ck_assert_int_eq(r->status, DNS_NXDOMAIN);
	ck_assert_uint_eq(r->ntargets, 0);
	dns_result_free(&r);
	r = lookup(dns, 0, "nx.test", 25);
	ck_assert_int_eq(r->status, DNS_NXDOMAIN);
	dns_result_free(&r);
	/* Not a valid name: permanent, without asking. */
	r = lookup(dns, 1, "bad..name", 25);
	ck_assert_int_eq(r->status, DNS_NXDOMAIN);
	dns_result_free(&r);
}
END_TEST

START_TEST(test_dns_nullmx)
{
	struct dns_result *r = lookup(dns, 1, "nullmx.test", 25);

	ck_assert_int_eq(r->status, DNS_NULLMX);
	ck_assert_uint_eq(r->ntargets, 0);
	ck_assert_str_eq(dns_status_str(r->status), "nullmx");
	dns_result_free(&r);
}
END_TEST

START_TEST(test_dns_mx_without_address)
{
	struct dns_result *r = lookup(dns, 1, "noaddr.test", 25);

	/* The MX host is NXDOMAIN: permanent, and no fallback to A. */
	ck_assert_int_eq(r->status, DNS_NXDOMAIN);
	dns_result_free(&r);
	r = lookup(dns, 1, "partial.test", 25);
	ck_assert_int_eq(r->status, DNS_OK);
	ck_assert_uint_eq(r->ntargets, 1);
	ck_assert_str_eq(r->targets[0].host, "mx1.example.test");
	dns_result_free(&r);
}
END_TEST

START_TEST(test_dns_refused)
{
	/* dnsmasq answers REFUSED outside its local domain: temporary. */
	struct dns_result *r = lookup(dns, 1, "example.invalid", 25);

	ck_assert_int_eq(r->status, DNS_TEMPFAIL);
	dns_result_free(&r);
}
END_TEST

/* Whether /etc/hosts has a line naming localhost. */
static int hosts_has_localhost(void)
{
	char line[512];
	FILE *f = fopen("/etc/hosts", "r");
	int found = 0;

	if (f == NULL)
		return 0;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *hash = strchr(line, '#');

		if (hash != NULL)
			*hash = '\0';
		for (char *w = strtok(line, " \t\n"); w != NULL && !found;
		    w = strtok(NULL, " \t\n"))
			found = strcmp(w, "localhost") == 0;
	}
	fclose(f);
	return found;
}

START_TEST(test_dns_host)
{
	struct dns_result *r;

	r = lookup(dns, 0, "mx2.example.test", 587);
	ck_assert_int_eq(r->status, DNS_OK);
	ck_assert_uint_eq(r->ntargets, 1);
	ck_assert_str_eq(r->targets[0].host, "mx2.example.test");
	ck_assert_uint_eq(r->targets[0].naddrs, 2);
	check_addr(&r->targets[0].addrs[0], "::1", 587);
	check_addr(&r->targets[0].addrs[1], "127.0.0.3", 587);
	dns_result_free(&r);

	r = lookup(dns, 0, "[127.0.0.9]", 26);
	ck_assert_int_eq(r->status, DNS_OK);
	ck_assert_uint_eq(r->targets[0].naddrs, 1);
	check_addr(&r->targets[0].addrs[0], "127.0.0.9", 26);
	dns_result_free(&r);

	r = lookup(dns, 0, "127.0.0.8", 27);
	check_addr(&r->targets[0].addrs[0], "127.0.0.8", 27);
	dns_result_free(&r);

	r = lookup(dns, 0, "::1", 28);
	check_addr(&r->targets[0].addrs[0], "::1", 28);
	dns_result_free(&r);

	r = lookup(dns, 0, "[IPv6:::1]", 29);
	ck_assert_int_eq(r->status, DNS_OK);
	check_addr(&r->targets[0].addrs[0], "::1", 29);
	dns_result_free(&r);

	/* Domain literal in an MX lookup: no DNS. */
	r = lookup(dns, 1, "[127.0.0.7]", 30);
	ck_assert_int_eq(r->status, DNS_OK);
	check_addr(&r->targets[0].addrs[0], "127.0.0.7", 30);
	dns_result_free(&r);

	/* /etc/hosts, when there is one that names localhost: a container
	 * or chroot may have none (c-ares 1.18 reads no other file here). */
	if (hosts_has_localhost()) {
		r = lookup(dns, 0, "localhost", 31);
		ck_assert_int_eq(r->status, DNS_OK);
		ck_assert_uint_ge(r->targets[0].naddrs, 1);
		dns_result_free(&r);
	} else {
		fprintf(stderr, "check_dns: no localhost in /etc/hosts, "
		    "hosts-file lookup not tested\n");
	}
}
END_TEST

START_TEST(test_dns_cache)
{
	struct dns_result *r;
	double t;
	struct waitres w = { 0, NULL };

	r = lookup(dns, 1, "example.test", 25);
	check_example_test(r, 25);
	dns_result_free(&r);
	r = lookup(dns, 1, "nx.test", 25);
	ck_assert_int_eq(r->status, DNS_NXDOMAIN);
	dns_result_free(&r);

	/* With the server frozen only the cache can answer. */
	ck_assert_int_eq(kill(dnsmasq_pid, SIGSTOP), 0);
	r = lookup(dns, 1, "example.test", 2525);
	check_example_test(r, 2525);	/* port from this request */
	dns_result_free(&r);
	r = lookup(dns, 0, "mx1.example.test", 26);
	ck_assert_int_eq(r->status, DNS_OK);
	check_addr(&r->targets[0].addrs[0], "127.0.0.2", 26);
	dns_result_free(&r);
	r = lookup(dns, 1, "nx.test", 25);	/* negative cache */
	ck_assert_int_eq(r->status, DNS_NXDOMAIN);
	dns_result_free(&r);

	/* A cache hit cancelled before the loop runs never calls back. */
	{
		struct dns_req *req = dns_resolve_mx(dns, "example.test", 25,
		    done_cb, &w);

		dns_req_cancel(&req);
		ck_assert_ptr_null(req);
		t = loop_until(base, &w.ncalls, 1, 0.2);
		ck_assert_int_eq(w.ncalls, 0);
		ck_assert(t >= 0.19);
	}
	/* Not cached: times out against the frozen server. */
	r = lookup(dns, 1, "nomx.test", 25);
	ck_assert_int_eq(r->status, DNS_TEMPFAIL);
	dns_result_free(&r);
	kill(dnsmasq_pid, SIGCONT);
	/* A temporary failure is not cached. */
	r = lookup(dns, 1, "nomx.test", 25);
	ck_assert_int_eq(r->status, DNS_OK);
	dns_result_free(&r);
}
END_TEST

START_TEST(test_dns_cancel)
{
	struct waitres w = { 0, NULL }, w2 = { 0, NULL };
	struct dns_req *req, *req2;

	req = dns_resolve_mx(dns, "example.test", 25, done_cb, &w);
	req2 = dns_resolve_mx(dns, "partial.test", 25, done_cb, &w2);
	ck_assert_ptr_nonnull(req);
	dns_req_cancel(&req);
	ck_assert_ptr_null(req);
	dns_req_cancel(&req);	/* no-op on NULL */
	loop_until(base, &w2.ncalls, 1, 5);
	ck_assert_int_eq(w2.ncalls, 1);
	ck_assert_int_eq(w2.res->status, DNS_OK);
	/* Let any late c-ares answer for the cancelled one arrive. */
	loop_until(base, &w.ncalls, 1, 0.3);
	ck_assert_int_eq(w.ncalls, 0);
	ck_assert_ptr_null(w.res);
	dns_result_free(&w2.res);
	(void)req2;
}
END_TEST

/* A UDP socket that never answers. */
static int blackhole(int *port_r)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd;

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	ck_assert_int_ge(fd, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port_r = ntohs(sin.sin_port);
	return fd;
}

START_TEST(test_dns_timeout)
{
	struct dns *d;
	struct dns_result *r;
	struct waitres w = { 0, NULL };
	struct dns_req *req;
	double t;
	int fd, port;

	fd = blackhole(&port);
	d = dns_for_port(port, 100);
	t = util_now();
	r = lookup(d, 1, "example.test", 25);
	t = util_now() - t;
	ck_assert_int_eq(r->status, DNS_TEMPFAIL);
	ck_assert_msg(t >= 0.09 && t < 3, "took %.2fs", t);
	dns_result_free(&r);

	/* Cancel while the query is in flight, then free the channel. */
	req = dns_resolve_mx(d, "example.test", 25, done_cb, &w);
	loop_until(base, &w.ncalls, 1, 0.05);
	dns_req_cancel(&req);
	loop_until(base, &w.ncalls, 1, 0.5);
	ck_assert_int_eq(w.ncalls, 0);
	/* An outstanding request at dns_free is dropped silently. */
	req = dns_resolve_host(d, "mx1.example.test", 25, done_cb, &w);
	ck_assert_ptr_nonnull(req);
	dns_free(&d);
	ck_assert_ptr_null(d);
	loop_until(base, &w.ncalls, 1, 0.1);
	ck_assert_int_eq(w.ncalls, 0);
	close(fd);

	/* Nothing listening at all (ICMP port unreachable). */
	close(blackhole(&port));
	d = dns_for_port(port, 100);
	r = lookup(d, 1, "example.test", 25);
	ck_assert_int_eq(r->status, DNS_TEMPFAIL);
	dns_result_free(&r);
	dns_free(&d);
}
END_TEST

START_TEST(test_dns_new_bad)
{
	char err[256] = "";
	const char *bad[] = { "127.0.0.1:53", "not-an-ip" };
	const char *v6[] = { "[::1]:5353", "127.0.0.1", "::1" };
	struct dns *d;

	d = dns_new(base, bad, 2, 100, err, sizeof(err));
	ck_assert_ptr_null(d);
	ck_assert_msg(strstr(err, "not-an-ip") != NULL, "err: %s", err);
	d = dns_new(base, v6, 3, 100, err, sizeof(err));
	ck_assert_msg(d != NULL, "dns_new: %s", err);
	dns_free(&d);
	dns_free(&d);	/* NULL: no-op */
}
END_TEST

static Suite *mx_suite(void)
{
	Suite *s = suite_create("mx");
	TCase *tc = tcase_create("select");

	tcase_add_test(tc, test_mx_sort);
	tcase_add_test(tc, test_mx_shuffle_deterministic);
	tcase_add_test(tc, test_mx_shuffle_spread);
	tcase_add_test(tc, test_mx_default_rnd);
	tcase_add_test(tc, test_mx_duplicates);
	tcase_add_test(tc, test_mx_null);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *dns_suite(void)
{
	Suite *s = suite_create("dns");
	TCase *tc = tcase_create("dnsmasq");

	tcase_add_unchecked_fixture(tc, dnsmasq_start, dnsmasq_stop);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_dns_mx_order);
	tcase_add_test(tc, test_dns_mx_equal_pref);
	tcase_add_test(tc, test_dns_implicit_mx);
	tcase_add_test(tc, test_dns_nxdomain);
	tcase_add_test(tc, test_dns_nullmx);
	tcase_add_test(tc, test_dns_mx_without_address);
	tcase_add_test(tc, test_dns_refused);
	tcase_add_test(tc, test_dns_host);
	tcase_add_test(tc, test_dns_cache);
	tcase_add_test(tc, test_dns_cancel);
	tcase_add_test(tc, test_dns_timeout);
	tcase_add_test(tc, test_dns_new_bad);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed, have = find_dnsmasq();

	sr = srunner_create(mx_suite());
	if (have)
		srunner_add_suite(sr, dns_suite());
	else
		printf("SKIP: dnsmasq not found, DNS lookup tests skipped\n");
	srunner_run_all(sr, CK_ENV);	/* CK_VERBOSITY=verbose for names */
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (failed != 0)
		return EXIT_FAILURE;
	return have ? EXIT_SUCCESS : 77;
}
