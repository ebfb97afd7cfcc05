/*
 * check_config - odrelay.conf parsing, validation, domain lookup; and the
 * util helpers (host:port, sockaddr, base64).
 */
#include <check.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "domtree.h"
#include "log.h"
#include "tls.h"
#include "tlspolicy.h"
#include "util.h"
#include "xmalloc.h"

/* ---- helpers ---- */

static char tmpdir[256];

struct errs {
	char *msg[64];
	int n;
};

static void errs_collect(void *arg, const char *msg)
{
	struct errs *e = arg;

	if (e->n < 64)
		e->msg[e->n] = xstrdup(msg);
	e->n++;
}

static void errs_free(struct errs *e)
{
	int i;

	for (i = 0; i < e->n && i < 64; i++)
		free(e->msg[i]);
	e->n = 0;
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_config.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
}

/* Write name in tmpdir with the given content; returns a static path. */
static const char *write_file(const char *name, const char *content)
{
	static char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(content, fp);
	fclose(fp);
	return path;
}

static struct config *load(const char *content, struct errs *e)
{
	const char *path = write_file("odrelay.conf", content);

	memset(e, 0, sizeof(*e));
	return config_load(path, errs_collect, e);
}

/* Loading content fails with exactly one error: ".../odrelay.conf:LINE: msg". */
static void expect_error(const char *content, int line, const char *msg)
{
	struct errs e;
	struct config *cfg;
	char want[1024];

	cfg = load(content, &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 1);
	snprintf(want, sizeof(want), "%s/odrelay.conf:%d: %s", tmpdir, line,
	    msg);
	ck_assert_str_eq(e.msg[0], want);
	errs_free(&e);
}

/* Loading content fails, first error at line with a message starting so. */
static void expect_error_prefix(const char *content, int line,
    const char *prefix)
{
	struct errs e;
	struct config *cfg;
	char want[1024];

	cfg = load(content, &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_ge(e.n, 1);
	snprintf(want, sizeof(want), "%s/odrelay.conf:%d: %s", tmpdir, line,
	    prefix);
	ck_assert_msg(strncmp(e.msg[0], want, strlen(want)) == 0,
	    "got '%s', want prefix '%s'", e.msg[0], want);
	errs_free(&e);
}

/* The global part only (odrelayctl): the sections are not read, so an
 * error in them does not matter; one in the global part still does. */
START_TEST(test_load_global)
{
	struct errs e;
	struct config *cfg;
	const char *path;

	path = write_file("odrelay.conf",
	    "queue_dir = q\ncontrol_socket = /run/x.sock\n"
	    "passwd_file = pw\n\n"
	    "  [domain a.example]\nhold = yes\n[domain a.example]\n"
	    "no_such_key = 1\n");
	memset(&e, 0, sizeof(e));
	cfg = config_load_global(path, errs_collect, &e);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(e.n, 0);
	ck_assert_uint_eq(cfg->ndomains, 0);
	ck_assert_str_eq(cfg->control_socket, "/run/x.sock");
	ck_assert(strstr(cfg->queue_dir, tmpdir) == cfg->queue_dir);
	ck_assert(strstr(cfg->passwd_file, "/pw") != NULL);
	config_free(&cfg);
	/* The whole file has the two errors. */
	cfg = config_load(path, errs_collect, &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 2);
	errs_free(&e);

	path = write_file("odrelay.conf", "queue_dir = q\nbogus = 1\n"
	    "[domain a.example]\n");
	memset(&e, 0, sizeof(e));
	cfg = config_load_global(path, errs_collect, &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 1);
	errs_free(&e);
}
END_TEST

/* ---- defaults ---- */

START_TEST(test_defaults)
{
	struct config *cfg = config_defaults();

	ck_assert_int_eq(cfg->refs, 1);
	ck_assert_ptr_nonnull(cfg->hostname);
	ck_assert_str_eq(cfg->queue_dir, "/var/spool/odrelay");
	ck_assert_uint_eq(cfg->smtp_listen.n, 2);
	ck_assert_str_eq(cfg->smtp_listen.v[0], "0.0.0.0:25");
	ck_assert_str_eq(cfg->smtp_listen.v[1], "[::]:25");
	ck_assert_uint_eq(cfg->odmr_listen.n, 2);
	ck_assert_str_eq(cfg->odmr_listen.v[0], "0.0.0.0:366");
	ck_assert_str_eq(cfg->odmr_listen.v[1], "[::]:366");
	ck_assert_uint_eq(cfg->odmrs_listen.n, 0);
	ck_assert_uint_eq(cfg->metrics_listen.n, 0);
	ck_assert_str_eq(cfg->control_socket, "/var/spool/odrelay/control.sock");
	ck_assert_ptr_null(cfg->tls_cert_file);
	ck_assert_ptr_null(cfg->tls_key_file);
	ck_assert_int_eq(cfg->auth_requires_tls, 1);
	ck_assert_str_eq(cfg->passwd_file, SYSCONFDIR "/odrelay/passwd");
	ck_assert_uint_eq(cfg->max_message_size, 50 * 1024 * 1024);
	ck_assert_uint_eq(cfg->max_recipients, 1000);
	ck_assert_uint_eq(cfg->max_connections, 1000);
	ck_assert_uint_eq(cfg->max_connections_per_ip, 20);
	ck_assert_int_eq(cfg->smtp_timeout, 300);
	ck_assert_int_eq(cfg->queue_lifetime, 30 * 86400);
	ck_assert_int_eq(cfg->delay_warning, 4 * 3600);
	ck_assert_int_eq(cfg->retry_min, 300);
	ck_assert_int_eq(cfg->retry_max, 3600);
	ck_assert_uint_eq(cfg->dns_servers.n, 0);
	ck_assert_int_eq(cfg->delivery_port, 25);
	ck_assert_str_eq(cfg->run_as_user, "odrelay");
	ck_assert_int_eq(cfg->log_level, LOG_LEVEL_INFO);
	ck_assert_uint_eq(cfg->queue_map_size, 4ULL << 30);
	ck_assert_uint_eq(cfg->max_received, 100);
	ck_assert_uint_eq(cfg->max_errors, 20);
	ck_assert_uint_eq(cfg->etrn_rate, 10);
	ck_assert_uint_eq(cfg->atrn_rate, 10);
	ck_assert_uint_eq(cfg->max_deliveries, 20);
	ck_assert_uint_eq(cfg->max_deliveries_per_dest, 4);
	/* the rest of the key table's defaults */
	ck_assert_int_eq(cfg->auth_delay_max, 16);
	ck_assert_int_eq(cfg->verify_unknown, 0);
	ck_assert_int_eq(cfg->verify_timeout, 10);
	ck_assert_int_eq(cfg->verify_positive_ttl, 30L * 86400);
	ck_assert_int_eq(cfg->verify_negative_ttl, 3L * 3600);
	ck_assert_int_eq(cfg->learn_ttl, 180L * 86400);
	ck_assert_int_eq(cfg->learn_negative_ttl, 30L * 86400);
	ck_assert_uint_eq(cfg->verify_cache_size, 100000);
	ck_assert_uint_eq(cfg->queue_min_free, 64ULL << 20);
	ck_assert_int_eq(cfg->delivery_timeout, 300);
	ck_assert_int_eq(cfg->delivery_session_limit, 3600);
	ck_assert_int_eq(cfg->smtp_session_limit, 3600);
	ck_assert_int_eq(cfg->odmr_wait_timeout, 25 * 60);
	ck_assert_uint_eq(cfg->max_waiting, 10000);
	ck_assert_uint_eq(cfg->max_waiting_per_user, 20);
	ck_assert_int_eq(cfg->notify_interval, 60);
	ck_assert_ptr_null(cfg->notify_url);
	ck_assert_int_eq(cfg->dnsbl_timeout, 5);
	ck_assert_int_eq(cfg->dnsbl_action, 0);
	ck_assert_uint_eq(cfg->milters.n, 0);
	ck_assert_int_eq(cfg->milter_default_action, 0);
	ck_assert_int_eq(cfg->milter_connect_timeout, 30);
	ck_assert_int_eq(cfg->milter_command_timeout, 30);
	ck_assert_int_eq(cfg->milter_content_timeout, 300);
	ck_assert_int_eq(cfg->milter_reuse, 0);
	ck_assert_int_eq(cfg->tls, TLSPOLICY_MAY);
	ck_assert_int_eq(cfg->mta_sts_port, 443);
	ck_assert_uint_eq(cfg->ndomains, 0);
	config_free(&cfg);
	ck_assert_ptr_null(cfg);
}
END_TEST

START_TEST(test_empty_file)
{
	struct errs e;
	struct config *cfg = load("# nothing\n\n   \n", &e);
	char want[512];

	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(e.n, 0);
	ck_assert_str_eq(cfg->queue_dir, "/var/spool/odrelay");
	ck_assert_str_eq(cfg->control_socket, "/var/spool/odrelay/control.sock");
	snprintf(want, sizeof(want), "%s/odrelay.conf", tmpdir);
	ck_assert_str_eq(cfg->path, want);
	ck_assert_int_eq(cfg->max_recipients, 1000);
	config_free(&cfg);
}
END_TEST

START_TEST(test_refcount)
{
	struct config *cfg = config_defaults(), *r;

	r = config_ref(cfg);
	ck_assert_ptr_eq(r, cfg);
	ck_assert_int_eq(cfg->refs, 2);
	config_unref(&r);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(cfg->refs, 1);
	config_free(&cfg);
	config_free(&cfg);	/* NULL: no-op */
}
END_TEST

/* ---- every key ---- */

static const char all_keys[] =
    "# full configuration\n"
    "hostname = MX.Example.NET.\n"
    "postmaster = Hostmaster@Example.NET.\n"
    "queue_dir = /srv/q   # trailing comment\n"
    "smtp_listen = 127.0.0.1:2525, [::1]:2526 127.0.0.2\n"
    "odmr_listen = 127.0.0.1:3366\n"
    "odmrs_listen = 127.0.0.1:3367\n"
    "metrics_listen = 127.0.0.1:9100\n"
    "tls_cert_file = /etc/cert.pem\n"
    "tls_key_file = /etc/key.pem\n"
    "auth_requires_tls = no\n"
    "passwd_file = /etc/pw\n"
    "max_message_size = 10M\n"
    "max_recipients = 50\n"
    "max_connections = 7\n"
    "max_connections_per_ip = 3\n"
    "smtp_timeout = 2m\n"
    "queue_lifetime = 5d\n"
    "delay_warning = 0\n"
    "retry_min = 30s\n"
    "retry_max = 2h\n"
    "dns_servers = 127.0.0.1:5353 ::1 10.0.0.1\n"
    "delivery_port = 2526\n"
    "run_as_user = nobody\n"
    "log_level = debug\n"
    "queue_map_size = 1G\n"
    "max_received = 30\n"
    "max_errors = 5\n"
    "etrn_rate = 2\n"
    "atrn_rate = 3\n"
    "max_deliveries = 8\n"
    "max_deliveries_per_dest = 2\n";

START_TEST(test_all_keys)
{
	struct errs e;
	struct config *cfg = load(all_keys, &e);

	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->hostname, "mx.example.net");
	ck_assert_str_eq(cfg->queue_dir, "/srv/q");
	ck_assert_uint_eq(cfg->smtp_listen.n, 3);
	ck_assert_str_eq(cfg->smtp_listen.v[0], "127.0.0.1:2525");
	ck_assert_str_eq(cfg->smtp_listen.v[1], "[::1]:2526");
	ck_assert_str_eq(cfg->smtp_listen.v[2], "127.0.0.2:25");
	ck_assert_uint_eq(cfg->odmr_listen.n, 1);
	ck_assert_str_eq(cfg->odmr_listen.v[0], "127.0.0.1:3366");
	ck_assert_str_eq(cfg->odmrs_listen.v[0], "127.0.0.1:3367");
	ck_assert_str_eq(cfg->metrics_listen.v[0], "127.0.0.1:9100");
	ck_assert_str_eq(cfg->control_socket, "/srv/q/control.sock");
	ck_assert_str_eq(cfg->tls_cert_file, "/etc/cert.pem");
	ck_assert_str_eq(cfg->tls_key_file, "/etc/key.pem");
	ck_assert_int_eq(cfg->auth_requires_tls, 0);
	ck_assert_str_eq(cfg->passwd_file, "/etc/pw");
	ck_assert_uint_eq(cfg->max_message_size, 10 * 1024 * 1024);
	ck_assert_uint_eq(cfg->max_recipients, 50);
	ck_assert_uint_eq(cfg->max_connections, 7);
	ck_assert_uint_eq(cfg->max_connections_per_ip, 3);
	ck_assert_int_eq(cfg->smtp_timeout, 120);
	ck_assert_int_eq(cfg->queue_lifetime, 5 * 86400);
	ck_assert_int_eq(cfg->delay_warning, 0);
	ck_assert_int_eq(cfg->retry_min, 30);
	ck_assert_int_eq(cfg->retry_max, 7200);
	ck_assert_uint_eq(cfg->dns_servers.n, 3);
	ck_assert_str_eq(cfg->dns_servers.v[0], "127.0.0.1:5353");
	ck_assert_str_eq(cfg->dns_servers.v[1], "[::1]:53");
	ck_assert_str_eq(cfg->dns_servers.v[2], "10.0.0.1:53");
	ck_assert_int_eq(cfg->delivery_port, 2526);
	ck_assert_str_eq(cfg->run_as_user, "nobody");
	ck_assert_int_eq(cfg->log_level, LOG_LEVEL_DEBUG);
	ck_assert_uint_eq(cfg->queue_map_size, 1ULL << 30);
	ck_assert_uint_eq(cfg->max_received, 30);
	ck_assert_uint_eq(cfg->max_errors, 5);
	ck_assert_uint_eq(cfg->etrn_rate, 2);
	ck_assert_str_eq(cfg->postmaster, "Hostmaster@example.net");
	ck_assert_uint_eq(cfg->atrn_rate, 3);
	ck_assert_uint_eq(cfg->max_deliveries, 8);
	ck_assert_uint_eq(cfg->max_deliveries_per_dest, 2);
	config_free(&cfg);
}
END_TEST

START_TEST(test_control_socket_and_empty_lists)
{
	struct errs e;
	char want[1024];
	struct config *cfg = load(
	    "queue_dir = ./q\n"
	    "control_socket = /run/odrelay.sock\n"
	    "odmr_listen =\n"
	    "smtp_listen = 127.0.0.1:25,,127.0.0.1:26,\n", &e);

	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->control_socket, "/run/odrelay.sock");
	ck_assert_uint_eq(cfg->odmr_listen.n, 0);
	ck_assert_uint_eq(cfg->smtp_listen.n, 2);
	config_free(&cfg);

	cfg = load("queue_dir = ./q\nodmr_listen = # off\n", &e);
	ck_assert_ptr_nonnull(cfg);
	snprintf(want, sizeof(want), "%s/./q/control.sock", tmpdir);
	ck_assert_str_eq(cfg->control_socket, want);
	ck_assert_uint_eq(cfg->odmr_listen.n, 0);
	config_free(&cfg);
}
END_TEST

/* metrics_listen: a bare port is loopback; written addresses are kept. */
START_TEST(test_metrics_listen_loopback)
{
	struct errs e;
	struct config *cfg = load("metrics_listen = 9366, [::1]:9367 "
	    "0.0.0.0:9368\n", &e);

	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->metrics_listen.n, 3);
	ck_assert_str_eq(cfg->metrics_listen.v[0], "127.0.0.1:9366");
	ck_assert_str_eq(cfg->metrics_listen.v[1], "[::1]:9367");
	ck_assert_str_eq(cfg->metrics_listen.v[2], "0.0.0.0:9368");
	config_free(&cfg);
	expect_error_prefix("metrics_listen = localhost:9366\n", 1,
	    "bad value for 'metrics_listen'");
}
END_TEST

/* Relative paths follow the configuration file's directory, never the
 * working directory; absolute ones are kept. */
START_TEST(test_relative_paths)
{
	struct errs e;
	char want[1024];
	struct config *cfg = load(
	    "queue_dir = spool\n"
	    "passwd_file = secrets/passwd\n"
	    "control_socket = run/ctl.sock\n"
	    "tls_cert_file = /etc/ssl/c.pem\n"
	    "tls_key_file = k.pem\n"
	    "odmr_listen =\n", &e);

	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);
	snprintf(want, sizeof(want), "%s/spool", tmpdir);
	ck_assert_str_eq(cfg->queue_dir, want);
	snprintf(want, sizeof(want), "%s/secrets/passwd", tmpdir);
	ck_assert_str_eq(cfg->passwd_file, want);
	snprintf(want, sizeof(want), "%s/run/ctl.sock", tmpdir);
	ck_assert_str_eq(cfg->control_socket, want);
	ck_assert_str_eq(cfg->tls_cert_file, "/etc/ssl/c.pem");
	snprintf(want, sizeof(want), "%s/k.pem", tmpdir);
	ck_assert_str_eq(cfg->tls_key_file, want);
	config_free(&cfg);
}
END_TEST

START_TEST(test_comments_and_spacing)
{
	struct errs e;
	struct config *cfg = load(
	    "   # indented comment\n"
	    "\thostname=relay.example.com\r\n"
	    "run_as_user = a#b\n"
	    "passwd_file = /etc/pw\t# tab comment\n", &e);

	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->hostname, "relay.example.com");
	/* '#' not after white space is part of the value. */
	ck_assert_str_eq(cfg->run_as_user, "a#b");
	ck_assert_str_eq(cfg->passwd_file, "/etc/pw");
	config_free(&cfg);
}
END_TEST

/* ---- sizes, durations, booleans ---- */

START_TEST(test_sizes)
{
	uint64_t v;

	ck_assert_int_eq(config_parse_size("0", &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(config_parse_size("12345", &v), 0);
	ck_assert_uint_eq(v, 12345);
	ck_assert_int_eq(config_parse_size("10K", &v), 0);
	ck_assert_uint_eq(v, 10240);
	ck_assert_int_eq(config_parse_size("10k", &v), 0);
	ck_assert_uint_eq(v, 10240);
	ck_assert_int_eq(config_parse_size("50M", &v), 0);
	ck_assert_uint_eq(v, 50ULL << 20);
	ck_assert_int_eq(config_parse_size("50MB", &v), 0);
	ck_assert_uint_eq(v, 50ULL << 20);
	ck_assert_int_eq(config_parse_size("4G", &v), 0);
	ck_assert_uint_eq(v, 4ULL << 30);
	ck_assert_int_eq(config_parse_size("", &v), -1);
	ck_assert_int_eq(config_parse_size("M", &v), -1);
	ck_assert_int_eq(config_parse_size("10X", &v), -1);
	ck_assert_int_eq(config_parse_size("10 M", &v), -1);
	ck_assert_int_eq(config_parse_size("10MM", &v), -1);
	ck_assert_int_eq(config_parse_size("-1", &v), -1);
	ck_assert_int_eq(config_parse_size("1.5M", &v), -1);
	ck_assert_int_eq(config_parse_size("99999999999999999999", &v), -1);
	ck_assert_int_eq(config_parse_size("99999999999G", &v), -1);
}
END_TEST

START_TEST(test_durations)
{
	long v;

	ck_assert_int_eq(config_parse_duration("0", &v), 0);
	ck_assert_int_eq(v, 0);
	ck_assert_int_eq(config_parse_duration("300", &v), 0);
	ck_assert_int_eq(v, 300);
	ck_assert_int_eq(config_parse_duration("300s", &v), 0);
	ck_assert_int_eq(v, 300);
	ck_assert_int_eq(config_parse_duration("5m", &v), 0);
	ck_assert_int_eq(v, 300);
	ck_assert_int_eq(config_parse_duration("4h", &v), 0);
	ck_assert_int_eq(v, 14400);
	ck_assert_int_eq(config_parse_duration("30d", &v), 0);
	ck_assert_int_eq(v, 2592000);
	ck_assert_int_eq(config_parse_duration("", &v), -1);
	ck_assert_int_eq(config_parse_duration("d", &v), -1);
	ck_assert_int_eq(config_parse_duration("5x", &v), -1);
	ck_assert_int_eq(config_parse_duration("5mm", &v), -1);
	ck_assert_int_eq(config_parse_duration("-5", &v), -1);
	ck_assert_int_eq(config_parse_duration("5 m", &v), -1);
	ck_assert_int_eq(config_parse_duration("999999999999999999999d", &v), -1);
}
END_TEST

START_TEST(test_bools)
{
	int b;

	ck_assert_int_eq(config_parse_bool("yes", &b), 0);
	ck_assert_int_eq(b, 1);
	ck_assert_int_eq(config_parse_bool("On", &b), 0);
	ck_assert_int_eq(b, 1);
	ck_assert_int_eq(config_parse_bool("true", &b), 0);
	ck_assert_int_eq(b, 1);
	ck_assert_int_eq(config_parse_bool("NO", &b), 0);
	ck_assert_int_eq(b, 0);
	ck_assert_int_eq(config_parse_bool("0", &b), 0);
	ck_assert_int_eq(b, 0);
	ck_assert_int_eq(config_parse_bool("off", &b), 0);
	ck_assert_int_eq(b, 0);
	ck_assert_int_eq(config_parse_bool("maybe", &b), -1);
	ck_assert_int_eq(config_parse_bool("", &b), -1);
}
END_TEST

START_TEST(test_bad_values)
{
	expect_error("max_message_size = 10X\n", 1,
	    "bad value for 'max_message_size': '10X' (expected a size such "
	    "as 50M: bytes or K/M/G)");
	expect_error("\nsmtp_timeout = 5y\n", 2,
	    "bad value for 'smtp_timeout': '5y' (expected a duration such as "
	    "30s, 5m, 4h, 30d)");
	expect_error("auth_requires_tls = perhaps\n", 1,
	    "bad value for 'auth_requires_tls': 'perhaps' (expected yes or no)");
	expect_error("log_level = loud\n", 1,
	    "bad value for 'log_level': 'loud' (expected error, warning, info "
	    "or debug)");
	expect_error("delivery_port = 70000\n", 1,
	    "bad value for 'delivery_port': '70000' (expected a port number "
	    "1-65535)");
	expect_error("max_recipients = 0\n", 1,
	    "bad value for 'max_recipients': '0' (expected a positive integer)");
	expect_error_prefix("max_connections = -3\n", 1,
	    "bad value for 'max_connections'");
	expect_error_prefix("smtp_listen = 127.0.0.1:25 localhost:25\n", 1,
	    "bad value for 'smtp_listen': 'localhost:25'");
	expect_error_prefix("smtp_listen = 127.0.0.1:99999\n", 1,
	    "bad value for 'smtp_listen'");
	expect_error_prefix("metrics_listen = 127.0.0.1\n", 1,
	    "bad value for 'metrics_listen': '127.0.0.1'");
	expect_error_prefix("dns_servers = 1.2.3\n", 1,
	    "bad value for 'dns_servers'");
	expect_error_prefix("hostname = bad_host\n", 1,
	    "bad value for 'hostname'");
	expect_error("queue_dir =\n", 1, "empty value for 'queue_dir'");
	expect_error_prefix("queue_map_size = 100K\n", 1,
	    "bad value for 'queue_map_size'");
	expect_error_prefix("max_message_size = 0\n", 1,
	    "bad value for 'max_message_size'");
	expect_error_prefix("queue_lifetime = 0\n", 1,
	    "bad value for 'queue_lifetime'");
	expect_error_prefix("control_socket = /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 1,
	    "bad value for 'control_socket'");
}
END_TEST

START_TEST(test_cross_checks)
{
	expect_error("retry_min = 2h\nretry_max = 1h\n", 2,
	    "retry_max (3600s) is less than retry_min (7200s)");
	expect_error("\ntls_key_file = /k.pem\n", 2,
	    "tls_cert_file and tls_key_file must be set together");
	expect_error("odmrs_listen = 127.0.0.1:3367\n", 1,
	    "odmrs_listen needs tls_cert_file and tls_key_file");
}
END_TEST

/* ---- errors ---- */

/* A key given twice: the last value counts (spec.md names only a
 * duplicate section as an error; Postfix's main.cf works so too). */
START_TEST(test_repeated_key_last_wins)
{
	struct errs e;
	struct config *cfg;
	const struct config_domain *d;

	cfg = load("max_errors = 3\nsmtp_listen = 127.0.0.1:2525\n"
	    "max_errors = 4\nsmtp_listen = 127.0.0.1:2526\n"
	    "[domain a.org]\nhold = yes\nhold = no\n", &e);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(e.n, 0);
	ck_assert_uint_eq(cfg->max_errors, 4);
	ck_assert_uint_eq(cfg->smtp_listen.n, 1);
	ck_assert_str_eq(cfg->smtp_listen.v[0], "127.0.0.1:2526");
	d = config_find_domain(cfg, "a.org");
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(d->hold, 0);
	config_free(&cfg);
	errs_free(&e);
}
END_TEST

START_TEST(test_error_kinds)
{
	expect_error("hostname = a.b\n\nfoo = 1\n", 3, "unknown key 'foo'");
	expect_error("hostname\n", 1, "missing '=' (expected 'key = value')");
	expect_error(" = x\n", 1, "missing key before '='");
	expect_error("postmaster = nobody\n", 1, "bad value for 'postmaster': "
	    "'nobody' (expected an address such as admin@example.net)");
	expect_error("hold = yes\n", 1,
	    "key 'hold' is only allowed in a [domain] section");
	expect_error("[domain a.org]\nsmtp_timeout = 5m\n", 2,
	    "global key 'smtp_timeout' inside a [domain] section (global keys "
	    "go before the first section)");
	expect_error("[domain a.org]\nhold = yes\n[domain b.org]\n"
	    "[domain A.ORG.]\n", 4,
	    "duplicate section [domain a.org] (first at line 1)");
	expect_error("[domain a.org]\nrecipients = a@a.org\n"
	    "recipients = b@a.org\n", 3,
	    "duplicate key 'recipients' (first at line 2)");
	expect_error("[domain a.org\n", 1,
	    "bad section header (expected [domain NAME])");
	expect_error("[domain]\n", 1,
	    "bad section header (expected [domain NAME])");
	expect_error("[domain a.org b.org]\n", 1,
	    "bad section header (expected [domain NAME])");
	expect_error("[host a.org]\n", 1,
	    "unknown section type 'host' (expected [domain NAME])");
	expect_error("[domain bad_name.org]\n", 1,
	    "bad domain name 'bad_name.org'");
	expect_error("[domain -a.org]\n", 1, "bad domain name '-a.org'");
	expect_error("[domain a..org]\n", 1, "bad domain name 'a..org'");
}
END_TEST

START_TEST(test_missing_file)
{
	struct errs e;
	struct config *cfg;
	char path[512], want[600];

	memset(&e, 0, sizeof(e));
	snprintf(path, sizeof(path), "%s/nonexistent.conf", tmpdir);
	cfg = config_load(path, errs_collect, &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 1);
	snprintf(want, sizeof(want), "%s:0: cannot open: ", path);
	ck_assert(strncmp(e.msg[0], want, strlen(want)) == 0);
	errs_free(&e);
	/* No error function: still NULL, no crash. */
	ck_assert_ptr_null(config_load(path, NULL, NULL));
}
END_TEST

START_TEST(test_multiple_errors)
{
	struct errs e;
	struct config *cfg;
	char want[512];

	cfg = load(
	    "foo = 1\n"				/* 1 */
	    "max_message_size = big\n"		/* 2 */
	    "hostname = ok.example\n"		/* 3 */
	    "nonsense\n"			/* 4 */
	    "[domain a.org]\n"			/* 5 */
	    "hold = maybe\n"			/* 6 */
	    "route = mx\n"			/* 7 */
	    "[domain a.org]\n"			/* 8 */
	    "hold = perhaps\n"			/* 9: checked in a duplicate */
	    "[domain b.org]\n"			/* 10 */
	    "etrn = x\n", &e);			/* 11 */
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 7);
	snprintf(want, sizeof(want), "%s/odrelay.conf:1: unknown key 'foo'",
	    tmpdir);
	ck_assert_str_eq(e.msg[0], want);
#define AT(i, line) do { \
	snprintf(want, sizeof(want), "%s/odrelay.conf:%d: ", tmpdir, line); \
	ck_assert_msg(strncmp(e.msg[i], want, strlen(want)) == 0, \
	    "error %d: '%s'", i, e.msg[i]); \
} while (0)
	AT(1, 2);
	AT(2, 4);
	AT(3, 6);
	AT(4, 8);
	AT(5, 9);
	AT(6, 11);
#undef AT
	errs_free(&e);
}
END_TEST

START_TEST(test_long_line)
{
	char *big;
	size_t n = 70000;

	big = xmalloc(n + 32);
	memcpy(big, "run_as_user = ", 14);
	memset(big + 14, 'a', n);
	strcpy(big + 14 + n, "\n");
	expect_error_prefix(big, 1, "line too long");
	free(big);
}
END_TEST

/* ---- domains ---- */

START_TEST(test_domains)
{
	struct errs e;
	struct config *cfg;
	const struct config_domain *d;

	cfg = load(
	    "queue_lifetime = 10d\n"
	    "[domain Example.ORG.]\n"
	    "hold = yes\n"
	    "subdomains = yes\n"
	    "route = mail.Example.org:2526\n"
	    "etrn = no\n"
	    "max_queue_size = 100M\n"
	    "queue_lifetime = 2d\n"
	    "\n"
	    "[domain backup.net]  # trailing comment\n"
	    "hold = no\n"
	    "route = [192.0.2.1]:2525\n"
	    "[domain v6.net]\n"
	    "route = [2001:db8::1]:26\n"
	    "[domain ip.net]\n"
	    "route = 192.0.2.7\n"
	    "[domain mx.net]\n"
	    "route = MX\n"
	    "[domain sub.example.org]\n"
	    "hold = no\n", &e);
	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->ndomains, 6);

	d = &cfg->domains[0];
	ck_assert_str_eq(d->name, "example.org");
	ck_assert_int_eq(d->line, 2);
	ck_assert_int_eq(d->hold, 1);
	ck_assert_int_eq(d->subdomains, 1);
	ck_assert_str_eq(d->route, "mail.Example.org:2526");
	ck_assert_str_eq(d->route_host, "mail.example.org");
	ck_assert_int_eq(d->route_port, 2526);
	ck_assert_int_eq(d->etrn, 0);
	ck_assert_uint_eq(d->max_queue_size, 100ULL << 20);
	ck_assert_int_eq(d->queue_lifetime, 2 * 86400);
	ck_assert_int_eq(d->has_recipient_list, 0);

	d = &cfg->domains[1];
	ck_assert_str_eq(d->name, "backup.net");
	ck_assert_int_eq(d->hold, 0);
	ck_assert_int_eq(d->subdomains, 0);
	ck_assert_int_eq(d->etrn, 1);
	ck_assert_str_eq(d->route_host, "192.0.2.1");
	ck_assert_int_eq(d->route_port, 2525);
	ck_assert_uint_eq(d->max_queue_size, 1ULL << 30);
	ck_assert_int_eq(d->queue_lifetime, 10 * 86400);

	d = &cfg->domains[2];
	ck_assert_str_eq(d->route_host, "2001:db8::1");
	ck_assert_int_eq(d->route_port, 26);
	d = &cfg->domains[3];
	ck_assert_str_eq(d->route_host, "192.0.2.7");
	ck_assert_int_eq(d->route_port, 25);
	d = &cfg->domains[4];
	ck_assert_ptr_null(d->route);
	ck_assert_ptr_null(d->route_host);
	ck_assert_int_eq(d->route_port, 25);
	ck_assert_int_eq(d->hold, 1);

	/* Lookups. */
	ck_assert_ptr_eq(config_find_domain(cfg, "example.org"), &cfg->domains[0]);
	ck_assert_ptr_eq(config_find_domain(cfg, "a.example.org"), &cfg->domains[0]);
	ck_assert_ptr_eq(config_find_domain(cfg, "x.y.example.org"),
	    &cfg->domains[0]);
	/* The nearest section wins, even over a parent with subdomains. */
	ck_assert_ptr_eq(config_find_domain(cfg, "sub.example.org"),
	    &cfg->domains[5]);
	/* sub.example.org has subdomains = no: fall through to example.org. */
	ck_assert_ptr_eq(config_find_domain(cfg, "a.sub.example.org"),
	    &cfg->domains[0]);
	ck_assert_ptr_eq(config_find_domain(cfg, "backup.net"), &cfg->domains[1]);
	ck_assert_ptr_null(config_find_domain(cfg, "a.backup.net"));
	ck_assert_ptr_null(config_find_domain(cfg, "example.com"));
	ck_assert_ptr_null(config_find_domain(cfg, "xexample.org"));
	ck_assert_ptr_null(config_find_domain(cfg, "org"));
	ck_assert_ptr_null(config_find_domain(cfg, ""));
	ck_assert_ptr_eq(config_domain_by_name(cfg, "BACKUP.net"),
	    &cfg->domains[1]);
	ck_assert_ptr_null(config_domain_by_name(cfg, "a.example.org"));
	config_free(&cfg);
}
END_TEST

START_TEST(test_bad_routes)
{
	expect_error("[domain a.org]\nroute = host:0\n", 2,
	    "bad value for 'route': 'host:0' (expected mx, HOST[:PORT] or "
	    "[IP]:PORT)");
	expect_error_prefix("[domain a.org]\nroute = bad_host\n", 2,
	    "bad value for 'route'");
	expect_error_prefix("[domain a.org]\nroute = 2001:db8::1\n", 2,
	    "bad value for 'route'");
	expect_error_prefix("[domain a.org]\nroute = [nothost]:25\n", 2,
	    "bad value for 'route'");
	expect_error_prefix("[domain a.org]\nroute =\n", 2,
	    "bad value for 'route'");
}
END_TEST

START_TEST(test_recipients)
{
	struct errs e;
	struct config *cfg;
	const struct config_domain *d;

	write_file("rcpts",
	    "# customers\n"
	    "Alice@Example.ORG\n"
	    "  bob@example.org   # trailing\n"
	    "\n"
	    "@sales.example.org\n");
	cfg = load(
	    "[domain example.org]\n"
	    "subdomains = yes\n"
	    "recipients = carol@example.org, dave@EXAMPLE.org\n"
	    "recipients_file = rcpts\n"
	    "[domain open.org]\n"
	    "recipients =\n"
	    "[domain all.org]\n"
	    "recipients = @all.org\n", &e);
	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);

	d = config_find_domain(cfg, "example.org");
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(d->has_recipient_list, 1);
	ck_assert_uint_eq(d->recipients.n, 5);
	ck_assert_ptr_nonnull(strstr(d->recipients_file, "/rcpts"));
	ck_assert_int_eq(config_recipient_allowed(d, "alice@example.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(d, "ALICE@example.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(d, "bob@example.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(d, "carol@example.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(d, "Dave@example.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(d, "eve@example.org"), 0);
	ck_assert_int_eq(config_recipient_allowed(d, "alice@other.org"), 0);
	ck_assert_int_eq(config_recipient_allowed(d, "anyone@sales.example.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(d, "x@b.sales.example.org"), 0);
	ck_assert_int_eq(config_recipient_allowed(d, "alice"), 0);

	d = config_find_domain(cfg, "open.org");
	ck_assert_int_eq(d->has_recipient_list, 0);
	ck_assert_int_eq(config_recipient_allowed(d, "anyone@open.org"), 1);

	d = config_find_domain(cfg, "all.org");
	ck_assert_int_eq(config_recipient_allowed(d, "x@all.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(d, "x@sub.all.org"), 0);
	config_free(&cfg);
}
END_TEST

START_TEST(test_recipients_errors)
{
	struct errs e;
	struct config *cfg;
	char want[1024];

	expect_error("[domain a.org]\nrecipients = a@a.org nobody\n", 2,
	    "bad value for 'recipients': 'nobody' (expected local@domain or "
	    "@domain)");
	expect_error_prefix("[domain a.org]\nrecipients = a@bad_dom\n", 2,
	    "bad value for 'recipients': 'a@bad_dom'");

	write_file("bad-rcpts", "ok@a.org\n\nnot-an-address\nx@y..org\n");
	cfg = load("[domain a.org]\nrecipients_file = bad-rcpts\n", &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 2);
	snprintf(want, sizeof(want), "%s/bad-rcpts:3: bad recipient "
	    "'not-an-address' (expected local@domain or @domain)", tmpdir);
	ck_assert_str_eq(e.msg[0], want);
	snprintf(want, sizeof(want), "%s/bad-rcpts:4: ", tmpdir);
	ck_assert(strncmp(e.msg[1], want, strlen(want)) == 0);
	errs_free(&e);

	snprintf(want, sizeof(want), "%s/odrelay.conf:2: cannot open "
	    "recipients_file '%s/missing': ", tmpdir, tmpdir);
	cfg = load("[domain a.org]\nrecipients_file = missing\n", &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 1);
	ck_assert_msg(strncmp(e.msg[0], want, strlen(want)) == 0, "got %s",
	    e.msg[0]);
	errs_free(&e);
}
END_TEST

START_TEST(test_recipients_absolute_path)
{
	struct errs e;
	struct config *cfg;
	char conf[1024];
	const char *path;

	path = write_file("abs-rcpts", "z@a.org\n");
	snprintf(conf, sizeof(conf), "[domain a.org]\nrecipients_file = %s\n",
	    path);
	cfg = load(conf, &e);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(config_recipient_allowed(&cfg->domains[0], "z@a.org"), 1);
	ck_assert_int_eq(config_recipient_allowed(&cfg->domains[0], "y@a.org"), 0);
	config_free(&cfg);
}
END_TEST

START_TEST(test_demo_conf)
{
	struct errs e;
	struct config *cfg;
	char path[1024];
	const char *srcdir = getenv("top_srcdir");

	snprintf(path, sizeof(path), "%s/contrib/demo.conf",
	    srcdir != NULL ? srcdir : ".");
	if (access(path, R_OK) != 0)
		return;
	memset(&e, 0, sizeof(e));
	cfg = config_load(path, errs_collect, &e);
	ck_assert_int_eq(e.n, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->hostname, "relay.demo.test");
	ck_assert_str_eq(cfg->smtp_listen.v[0], "127.0.0.1:2525");
	ck_assert_str_eq(cfg->odmr_listen.v[0], "127.0.0.1:3366");
	ck_assert_ptr_nonnull(config_find_domain(cfg, "example.org"));
	/* The demo's ETRN delivers to its receiving server (README). */
	ck_assert_str_eq(config_find_domain(cfg, "example.org")->route_host,
	    "127.0.0.1");
	ck_assert_int_eq(config_find_domain(cfg, "example.org")->route_port, 2526);
	config_free(&cfg);

	snprintf(path, sizeof(path), "%s/contrib/odrelay.conf.example",
	    srcdir != NULL ? srcdir : ".");
	if (access(path, R_OK) != 0)
		return;
	memset(&e, 0, sizeof(e));
	cfg = config_load(path, errs_collect, &e);
	ck_assert_msg(e.n == 0, "%s", e.n > 0 ? e.msg[0] : "");
	ck_assert_ptr_nonnull(cfg);
	config_free(&cfg);
}
END_TEST

/* ---- util ---- */

START_TEST(test_split_hostport)
{
	char host[64];
	int port;

	ck_assert_int_eq(util_split_hostport("mx.example.org", host,
	    sizeof(host), &port, 25), 0);
	ck_assert_str_eq(host, "mx.example.org");
	ck_assert_int_eq(port, 25);
	ck_assert_int_eq(util_split_hostport("mx.example.org:2525", host,
	    sizeof(host), &port, 25), 0);
	ck_assert_str_eq(host, "mx.example.org");
	ck_assert_int_eq(port, 2525);
	ck_assert_int_eq(util_split_hostport("[::1]:366", host, sizeof(host),
	    &port, 25), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(port, 366);
	ck_assert_int_eq(util_split_hostport("[::1]", host, sizeof(host),
	    &port, 25), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(port, 25);
	ck_assert_int_eq(util_split_hostport("[192.0.2.1]:26", host,
	    sizeof(host), &port, 25), 0);
	ck_assert_str_eq(host, "192.0.2.1");
	ck_assert_int_eq(port, 26);
	ck_assert_int_eq(util_split_hostport("2001:db8::1", host, sizeof(host),
	    &port, 53), 0);
	ck_assert_str_eq(host, "2001:db8::1");
	ck_assert_int_eq(port, 53);
	ck_assert_int_eq(util_split_hostport("h:65535", host, sizeof(host),
	    &port, 25), 0);
	ck_assert_int_eq(port, 65535);

	ck_assert_int_eq(util_split_hostport("", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport(":25", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("h:", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("h:0", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("h:65536", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("h:2x", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("h:-1", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("[::1", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("[::1]x", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("[]:25", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("a]:25", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("1.2.3.4:25:", host, sizeof(host), &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("a:b:c", host, sizeof(host), &port, 25), -1);
	/* No default port and none given. */
	ck_assert_int_eq(util_split_hostport("h", host, sizeof(host), &port, 0), -1);
	/* Host does not fit. */
	ck_assert_int_eq(util_split_hostport("abcdefgh:25", host, 8, &port, 25), -1);
	ck_assert_int_eq(util_split_hostport("abcdefg:25", host, 8, &port, 25), 0);
}
END_TEST

START_TEST(test_domain_valid_dot)
{
	char d[300];

	ck_assert_int_eq(util_domain_valid_dot("example.org"), 1);
	ck_assert_int_eq(util_domain_valid_dot("example.org."), 1);
	ck_assert_int_eq(util_domain_valid_dot("example.org.."), 0);
	ck_assert_int_eq(util_domain_valid_dot("."), 0);
	ck_assert_int_eq(util_domain_valid_dot(""), 0);
	ck_assert_int_eq(util_domain_valid_dot("-x.org."), 0);
	/* 253 octets and a dot: valid; 254 and a dot: not. */
	memset(d, 'a', 63);
	memcpy(d + 63, ".", 1);
	memset(d + 64, 'b', 63);
	memcpy(d + 127, ".", 1);
	memset(d + 128, 'c', 63);
	memcpy(d + 191, ".", 1);
	memset(d + 192, 'd', 61);
	strcpy(d + 253, ".");
	ck_assert_int_eq(util_domain_valid_dot(d), 1);
	strcpy(d + 253, "d.");
	ck_assert_int_eq(util_domain_valid_dot(d), 0);
}
END_TEST

START_TEST(test_tcp_keepalive)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), on = 0;
	socklen_t len = sizeof(on);

	ck_assert_int_ge(fd, 0);
	util_tcp_keepalive(fd);
	ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len), 0);
	ck_assert_int_ne(on, 0);
	close(fd);
	util_tcp_keepalive(-1);		/* no socket: nothing */
}
END_TEST

START_TEST(test_sockaddr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char buf[64];
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	ck_assert_int_eq(util_sockaddr_parse("127.0.0.1:2525", 25, &ss, &len), 0);
	ck_assert_int_eq(ss.ss_family, AF_INET);
	ck_assert_int_eq(len, sizeof(struct sockaddr_in));
	ck_assert_int_eq(ntohs(sin->sin_port), 2525);
	ck_assert_str_eq(util_sockaddr_ip((struct sockaddr *)&ss, buf,
	    sizeof(buf)), "127.0.0.1");

	ck_assert_int_eq(util_sockaddr_parse("[::1]:366", 25, &ss, &len), 0);
	ck_assert_int_eq(ss.ss_family, AF_INET6);
	ck_assert_int_eq(len, sizeof(struct sockaddr_in6));
	ck_assert_int_eq(ntohs(sin6->sin6_port), 366);
	ck_assert_str_eq(util_sockaddr_ip((struct sockaddr *)&ss, buf,
	    sizeof(buf)), "::1");

	ck_assert_int_eq(util_sockaddr_parse("0.0.0.0", 25, &ss, &len), 0);
	ck_assert_int_eq(ntohs(sin->sin_port), 25);
	ck_assert_int_eq(util_sockaddr_parse("[::]:25", 0, &ss, &len), 0);
	ck_assert_int_eq(util_sockaddr_parse("::1", 53, &ss, &len), 0);
	ck_assert_int_eq(ntohs(sin6->sin6_port), 53);

	ck_assert_int_eq(util_sockaddr_parse("localhost:25", 25, &ss, &len), -1);
	ck_assert_int_eq(util_sockaddr_parse("1.2.3:25", 25, &ss, &len), -1);
	ck_assert_int_eq(util_sockaddr_parse("256.1.1.1:25", 25, &ss, &len), -1);
	ck_assert_int_eq(util_sockaddr_parse("127.0.0.1:0", 25, &ss, &len), -1);
	ck_assert_int_eq(util_sockaddr_parse("[127.0.0.1:25", 25, &ss, &len), -1);
	ck_assert_int_eq(util_sockaddr_parse("", 25, &ss, &len), -1);
}
END_TEST

START_TEST(test_strlcpy_lowercase)
{
	char buf[6];

	ck_assert_int_eq(util_strlcpy(buf, "hello", sizeof(buf)), 0);
	ck_assert_str_eq(buf, "hello");
	ck_assert_int_eq(util_strlcpy(buf, "hello!", sizeof(buf)), -1);
	ck_assert_str_eq(buf, "hello");
	ck_assert_int_eq(util_strlcpy(buf, "x", 0), -1);
	util_strlcpy(buf, "AbC-1", sizeof(buf));
	util_lowercase(buf);
	ck_assert_str_eq(buf, "abc-1");
}
END_TEST

/* RFC 4648 section 10. */
static const char *b64_vectors[][2] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

START_TEST(test_base64_vectors)
{
	char enc[32];
	unsigned char dec[32];
	size_t i, n;

	for (i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
		n = strlen(b64_vectors[i][0]);
		ck_assert_int_eq(util_base64_encode(
		    (const unsigned char *)b64_vectors[i][0], n, enc,
		    sizeof(enc)), (int)strlen(b64_vectors[i][1]));
		ck_assert_str_eq(enc, b64_vectors[i][1]);
		ck_assert_int_eq(util_base64_decode(b64_vectors[i][1],
		    strlen(b64_vectors[i][1]), dec, sizeof(dec)), (int)n);
		ck_assert(memcmp(dec, b64_vectors[i][0], n) == 0);
		ck_assert_int_eq(dec[n], 0);
	}
}
END_TEST

START_TEST(test_base64_binary_and_bounds)
{
	unsigned char bin[256], dec[256];
	char enc[400];
	int i, n;

	for (i = 0; i < 256; i++)
		bin[i] = (unsigned char)i;
	n = util_base64_encode(bin, sizeof(bin), enc, sizeof(enc));
	ck_assert_int_eq(n, 344);
	ck_assert_int_eq(util_base64_decode(enc, (size_t)n, dec, sizeof(dec)),
	    256);
	ck_assert(memcmp(bin, dec, 256) == 0);

	/* Exactly enough room (no NUL): fine; one less: -1. */
	ck_assert_int_eq(util_base64_encode((const unsigned char *)"foo", 3,
	    enc, 4), 4);
	ck_assert_int_eq(util_base64_encode((const unsigned char *)"foo", 3,
	    enc, 3), -1);
	ck_assert_int_eq(util_base64_decode("Zm9v", 4, dec, 3), 3);
	ck_assert_int_eq(util_base64_decode("Zm9v", 4, dec, 2), -1);
	ck_assert_int_eq(util_base64_decode("Zg==", 4, dec, 1), 1);
	/* Only the given length is read. */
	ck_assert_int_eq(util_base64_decode("Zm9vYmFy", 4, dec, sizeof(dec)), 3);
}
END_TEST

START_TEST(test_base64_strict)
{
	unsigned char dec[32];
	static const char *bad[] = {
		"Zg", "Zg=", "Zm9", "Z===", "====", "Zg==Zg==", "Zm=v",
		"Zm9v\n", " Zm9v", "Zm9-", "Zm9_", "Zh==", "Zm9=", "Zm9vY",
		"Zm\0v",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(util_base64_decode(bad[i],
		    i == sizeof(bad) / sizeof(bad[0]) - 1 ? 4 : strlen(bad[i]),
		    dec, sizeof(dec)) == -1, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(test_now_random)
{
	double a, b;
	unsigned char r1[32], r2[32];

	a = util_now();
	b = util_now();
	ck_assert(b >= a);
	ck_assert(a > 0);
	ck_assert_int_eq(util_random(r1, sizeof(r1)), 0);
	ck_assert_int_eq(util_random(r2, sizeof(r2)), 0);
	ck_assert(memcmp(r1, r2, sizeof(r1)) != 0);
	ck_assert_int_eq(util_random(r1, 0), 0);
}
END_TEST

/* ---- tls ---- */

static EVP_PKEY *tls_key1, *tls_key2;
static char tls_cert[600], tls_keyf[600], tls_key2f[600];

static void tls_write_key(const char *path, EVP_PKEY *k)
{
	FILE *fp = fopen(path, "w");

	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL,
	    NULL), 1);
	fclose(fp);
}

/* A self-signed certificate for "localhost", and two EC keys. */
static void tls_setup(void)
{
	X509 *x;
	X509_NAME *n;
	X509_EXTENSION *ext;
	X509V3_CTX v3;
	FILE *fp;

	setup();
	tls_key1 = EVP_EC_gen("P-256");
	tls_key2 = EVP_EC_gen("P-256");
	ck_assert_ptr_nonnull(tls_key1);
	ck_assert_ptr_nonnull(tls_key2);
	x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, tls_key1);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
	    "DNS:localhost,IP:127.0.0.1");
	ck_assert_ptr_nonnull(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
	    "critical,CA:TRUE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ck_assert_int_gt(X509_sign(x, tls_key1, EVP_sha256()), 0);
	snprintf(tls_cert, sizeof(tls_cert), "%s/cert.pem", tmpdir);
	snprintf(tls_keyf, sizeof(tls_keyf), "%s/key.pem", tmpdir);
	snprintf(tls_key2f, sizeof(tls_key2f), "%s/key2.pem", tmpdir);
	fp = fopen(tls_cert, "w");
	ck_assert_ptr_nonnull(fp);
	PEM_write_X509(fp, x);
	fclose(fp);
	X509_free(x);
	tls_write_key(tls_keyf, tls_key1);
	tls_write_key(tls_key2f, tls_key2);
}

static void tls_teardown(void)
{
	EVP_PKEY_free(tls_key1);
	EVP_PKEY_free(tls_key2);
	teardown();
}

START_TEST(test_tls_server_ctx)
{
	char err[512];
	SSL_CTX *ctx;

	ctx = tls_server_ctx(tls_cert, tls_keyf, err, sizeof(err));
	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	SSL_CTX_free(ctx);

	ctx = tls_server_ctx(tls_cert, tls_key2f, err, sizeof(err));
	ck_assert_ptr_null(ctx);
	ck_assert_msg(strstr(err, "does not match") != NULL, "%s", err);

	ctx = tls_server_ctx("/nonexistent/cert.pem", tls_keyf, err,
	    sizeof(err));
	ck_assert_ptr_null(ctx);
	ck_assert_msg(strstr(err, "cannot load certificate") != NULL, "%s", err);

	ctx = tls_server_ctx(tls_cert, "/nonexistent/key.pem", err, sizeof(err));
	ck_assert_ptr_null(ctx);
	ck_assert_msg(strstr(err, "cannot load private key") != NULL, "%s", err);

	/* A tiny error buffer is still NUL-terminated. */
	ctx = tls_server_ctx(tls_cert, tls_key2f, err, 8);
	ck_assert_ptr_null(ctx);
	ck_assert_uint_eq(strlen(err), 7);
}
END_TEST

START_TEST(test_tls_client_ctx)
{
	char err[512];
	SSL_CTX *ctx;

	ctx = tls_client_ctx(NULL, 0, err, sizeof(err));
	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
	SSL_CTX_free(ctx);
	ctx = tls_client_ctx(tls_cert, 1, err, sizeof(err));
	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
	SSL_CTX_free(ctx);
	ctx = tls_client_ctx("/nonexistent/ca.pem", 1, err, sizeof(err));
	ck_assert_ptr_null(ctx);
	ck_assert_msg(strstr(err, "cannot load CA file") != NULL, "%s", err);
}
END_TEST

/*
 * Handshake client and server over an in-memory BIO pair; 1 on success.
 * sni_r gets the name the server saw (or "").
 */
static int tls_handshake(const char *host, int verify, char *sni_r,
    size_t snisize)
{
	char err[512];
	SSL_CTX *sctx, *cctx;
	SSL *s, *c;
	BIO *bs, *bc;
	int i, rs = 0, rc = 0, ok;
	const char *sni;

	sctx = tls_server_ctx(tls_cert, tls_keyf, err, sizeof(err));
	cctx = tls_client_ctx(tls_cert, verify, err, sizeof(err));
	ck_assert_ptr_nonnull(sctx);
	ck_assert_ptr_nonnull(cctx);
	s = SSL_new(sctx);
	c = SSL_new(cctx);
	ck_assert_int_eq(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
	SSL_set_bio(s, bs, bs);
	SSL_set_bio(c, bc, bc);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	ck_assert_int_eq(tls_client_set_host(c, host, verify), 0);
	for (i = 0; i < 20 && (rs != 1 || rc != 1); i++) {
		if (rc != 1) {
			rc = SSL_do_handshake(c);
			if (rc <= 0 && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ)
				break;
		}
		if (rs != 1) {
			rs = SSL_do_handshake(s);
			if (rs <= 0 && SSL_get_error(s, rs) != SSL_ERROR_WANT_READ)
				break;
		}
	}
	ok = rs == 1 && rc == 1;
	sni = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
	snprintf(sni_r, snisize, "%s", sni != NULL ? sni : "");
	if (ok)
		ck_assert_int_ge(SSL_version(c), TLS1_2_VERSION);
	SSL_free(s);
	SSL_free(c);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	ERR_clear_error();
	return ok;
}

START_TEST(test_tls_handshake)
{
	char sni[256];

	ck_assert_int_eq(tls_handshake("localhost", 1, sni, sizeof(sni)), 1);
	ck_assert_str_eq(sni, "localhost");
	ck_assert_int_eq(tls_handshake("LocalHost.", 1, sni, sizeof(sni)), 1);
	ck_assert_str_eq(sni, "LocalHost");
	/* IP literal: verified against the IP SAN, and no SNI. */
	ck_assert_int_eq(tls_handshake("127.0.0.1", 1, sni, sizeof(sni)), 1);
	ck_assert_str_eq(sni, "");
	/* Wrong name: verification fails the handshake. */
	ck_assert_int_eq(tls_handshake("mx.example.org", 1, sni, sizeof(sni)), 0);
	/* Without verification any name goes (opportunistic TLS). */
	ck_assert_int_eq(tls_handshake("mx.example.org", 0, sni, sizeof(sni)), 1);
	ck_assert_str_eq(sni, "mx.example.org");
}
END_TEST


/* 50,000 sections: each found by name in any case, a duplicate of the
 * first named with its line, subdomains still resolved. */
/* proxy_interfaces (issue 17): addresses that reach this relay via NAT. */
/* Push delivery keys: defaults, validation, per-domain webhook overrides. */
START_TEST(test_push_keys)
{
	struct errs e;
	struct config *cfg;
	const struct config_domain *d;

	cfg = load("[domain example.org]\n", &e);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(cfg->odmr_wait_timeout, 25 * 60);
	ck_assert_uint_eq(cfg->max_waiting, 10000);
	ck_assert_ptr_null(cfg->notify_url);
	ck_assert_int_eq(cfg->notify_interval, 60);
	config_free(&cfg);
	errs_free(&e);

	cfg = load("odmr_wait_timeout = 30s\nmax_waiting = 5\n"
	    "notify_url = https://hooks.example.net:8443/a?b=c\n"
	    "notify_ca_file = /etc/ca.pem\nnotify_interval = 2m\n"
	    "[domain example.org]\nnotify_url = https://[2001:db8::1]/x\n"
	    "notify_interval = 10s\n"
	    "[domain other.example]\nnotify_url =\n", &e);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(cfg->odmr_wait_timeout, 30);
	ck_assert_uint_eq(cfg->max_waiting, 5);
	ck_assert_str_eq(cfg->notify_url, "https://hooks.example.net:8443/a?b=c");
	ck_assert_int_eq(cfg->notify_interval, 120);
	d = config_domain_by_name(cfg, "example.org");
	ck_assert_str_eq(d->notify_url, "https://[2001:db8::1]/x");
	ck_assert_ptr_null(d->notify_ca_file);
	ck_assert_int_eq(d->notify_interval, 10);
	/* Empty in a section: no webhook for it (not "inherit"). */
	d = config_domain_by_name(cfg, "other.example");
	ck_assert_str_eq(d->notify_url, "");
	config_free(&cfg);
	errs_free(&e);

	expect_error_prefix("notify_url = http://hooks.example.net/\n", 1,
	    "bad value for 'notify_url'");
	expect_error_prefix("notify_url = https:///path\n", 1,
	    "bad value for 'notify_url'");
	expect_error_prefix("[domain a.example]\nnotify_url = ftp://x\n", 2,
	    "bad value for 'notify_url'");
	expect_error_prefix("odmr_wait_timeout = 0\n", 1,
	    "bad value for 'odmr_wait_timeout'");
	expect_error_prefix("max_waiting = 0\n", 1,
	    "bad value for 'max_waiting'");
}
END_TEST

START_TEST(test_proxy_interfaces)
{
	struct errs e;
	struct config *cfg;

	cfg = load("hostname = relay.test\nqueue_dir = /tmp/q\n"
	    "proxy_interfaces = 192.0.2.1 [2001:db8::1]:2525\n", &e);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->proxy_interfaces.n, 2);
	ck_assert_str_eq(cfg->proxy_interfaces.v[0], "192.0.2.1:25");
	ck_assert_str_eq(cfg->proxy_interfaces.v[1], "[2001:db8::1]:2525");
	config_free(&cfg);
	errs_free(&e);
	expect_error_prefix("hostname = relay.test\nqueue_dir = /tmp/q\n"
	    "proxy_interfaces = mx.example.org\n", 3,
	    "bad value for 'proxy_interfaces'");
}
END_TEST

/* ---- the label index (domtree, config_domains_under) ---- */

/* The names under q as a sorted, comma-joined string of names[] entries. */
static const char *under_str(const struct domtree *t, const char *const *names,
    const char *q)
{
	static char out[1024];
	const size_t *v;
	size_t n = domtree_under(t, q, &v), len = 0;
	const char *sorted[64];

	ck_assert_uint_le(n, 64);
	for (size_t i = 0; i < n; i++)
		sorted[i] = names[v[i]];
	for (size_t i = 1; i < n; i++)	/* insertion sort: a few names */
		for (size_t j = i; j > 0 && strcmp(sorted[j - 1], sorted[j]) > 0; j--) {
			const char *x = sorted[j];

			sorted[j] = sorted[j - 1];
			sorted[j - 1] = x;
		}
	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%s",
		    i ? "," : "", sorted[i]);
	return out;
}

START_TEST(test_domtree_labels)
{
	static const char *const names[] = {
		"example.org", "badexample.org", "a.example.org",
		"b.a.example.org", "example.org.uk", "example-x.org",
		"org", "x.example.orgs", "Mixed.Example.ORG.", "example.com",
	};
	struct domtree *t = domtree_new(names, sizeof(names) / sizeof(names[0]));
	const size_t *v;

	ck_assert_uint_eq(domtree_count(t), 10);
	/* whole labels only: not badexample.org, example-x.org, *.orgs */
	ck_assert_str_eq(under_str(t, names, "example.org"),
	    "Mixed.Example.ORG.,a.example.org,b.a.example.org,example.org");
	/* case and one trailing dot ignored, as domhash does */
	ck_assert_str_eq(under_str(t, names, "EXAMPLE.Org."),
	    "Mixed.Example.ORG.,a.example.org,b.a.example.org,example.org");
	ck_assert_str_eq(under_str(t, names, "a.example.org"),
	    "a.example.org,b.a.example.org");
	ck_assert_str_eq(under_str(t, names, "b.a.example.org"),
	    "b.a.example.org");
	ck_assert_str_eq(under_str(t, names, "badexample.org"), "badexample.org");
	ck_assert_str_eq(under_str(t, names, "org"),
	    "Mixed.Example.ORG.,a.example.org,b.a.example.org,badexample.org,"
	    "example-x.org,example.org,org");
	ck_assert_str_eq(under_str(t, names, "uk"), "example.org.uk");
	ck_assert_str_eq(under_str(t, names, "xample.org"), "");
	ck_assert_str_eq(under_str(t, names, "c.example.org"), "");
	ck_assert_str_eq(under_str(t, names, "orgs"), "x.example.orgs");
	/* not names: nothing, not everything */
	ck_assert_uint_eq(domtree_under(t, "", &v), 0);
	ck_assert_uint_eq(domtree_under(t, ".", &v), 0);
	ck_assert_uint_eq(domtree_under(t, ".org", &v), 0);
	ck_assert_uint_eq(domtree_under(t, "example..org", &v), 0);
	ck_assert_uint_eq(domtree_under(t, "example.org..", &v), 0);
	ck_assert_uint_eq(domtree_under(t, "org\001example", &v), 0);
	ck_assert_ptr_null(v);
	domtree_free(&t);
	ck_assert_ptr_null(t);
	ck_assert_uint_eq(domtree_under(NULL, "org", &v), 0);
	t = domtree_new(NULL, 0);
	ck_assert_uint_eq(domtree_under(t, "org", &v), 0);
	domtree_free(&t);
}
END_TEST

static int sort_ref_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* domtree_sort against qsort: random names, many equal ones, long
 * common prefixes, bytes above 0x7f, empty strings; vals move along. */
START_TEST(test_domtree_sort)
{
	enum { N = 20000 };
	static char buf[N][80];
	const char **k = malloc(N * sizeof(*k)), **ref = malloc(N * sizeof(*ref));
	size_t *v = malloc(N * sizeof(*v));
	unsigned seed = 12345;

	ck_assert_ptr_nonnull(k);
	ck_assert_ptr_nonnull(ref);
	ck_assert_ptr_nonnull(v);
	for (int round = 0; round < 4; round++) {
		size_t n = round == 3 ? 40 : N;

		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			switch (round) {
			case 0:	/* domain-like, few distinct */
				snprintf(buf[i], sizeof(buf[i]), "d%u.test",
				    (seed >> 8) % 3000);
				break;
			case 1:	/* a long common prefix, high bytes */
				memset(buf[i], 'x', 60);
				buf[i][60] = (char)(0x80 + (seed >> 9) % 100);
				snprintf(buf[i] + 61, 19, "%u", (seed >> 4) % 50);
				break;
			case 2:	/* sorted input, some empty */
				snprintf(buf[i], sizeof(buf[i]), "%s%08zu",
				    i % 97 == 0 ? "" : "a", i % 97 == 0 ? (size_t)0 : i);
				if (i % 97 == 0)
					buf[i][0] = '\0';
				break;
			default:	/* a small one */
				snprintf(buf[i], sizeof(buf[i]), "%u", seed % 7);
			}
			k[i] = ref[i] = buf[i];
			v[i] = i;
		}
		qsort(ref, n, sizeof(*ref), sort_ref_cmp);
		domtree_sort(k, v, n);
		for (size_t i = 0; i < n; i++) {
			ck_assert_str_eq(k[i], ref[i]);
			ck_assert_ptr_eq(k[i], buf[v[i]]);
		}
	}
	domtree_sort(k, v, 0);
	free(k);
	free(ref);
	free(v);
}
END_TEST

START_TEST(test_domains_under)
{
	size_t cap = 50000 * 48, len = 0, *idx, n, i;
	char *buf = malloc(cap);
	struct config *cfg, hand;
	struct config_domain doms[3];
	struct errs e;

	ck_assert_ptr_nonnull(buf);
	/* 50,000 sections, a few of them under example.org */
	for (int k = 0; k < 50000; k++) {
		if (k == 100)
			len += (size_t)snprintf(buf + len, cap - len,
			    "[domain Example.org]\n");
		else if (k == 30000)
			len += (size_t)snprintf(buf + len, cap - len,
			    "[domain mx.example.org.]\n");
		else if (k == 20000)
			len += (size_t)snprintf(buf + len, cap - len,
			    "[domain badexample.org]\n");
		else if (k == 40000)
			len += (size_t)snprintf(buf + len, cap - len,
			    "[domain a.b.example.org]\n");
		else
			len += (size_t)snprintf(buf + len, cap - len,
			    "[domain d%d.test]\n", k);
	}
	cfg = load(buf, &e);
	free(buf);
	ck_assert_ptr_nonnull(cfg);
	/* the file's order, whatever the index's */
	n = config_domains_under(cfg, "EXAMPLE.ORG.", &idx);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(cfg->domains[idx[0]].name, "example.org");
	ck_assert_str_eq(cfg->domains[idx[1]].name, "mx.example.org");
	ck_assert_str_eq(cfg->domains[idx[2]].name, "a.b.example.org");
	free(idx);
	n = config_domains_under(cfg, "b.example.org", &idx);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(idx[0], 40000);
	free(idx);
	ck_assert_uint_eq(config_domains_under(cfg, "xample.org", &idx), 0);
	ck_assert_ptr_null(idx);
	n = config_domains_under(cfg, "test", &idx);
	ck_assert_uint_eq(n, 49996);
	for (i = 1; i < n; i++)
		ck_assert_uint_lt(idx[i - 1], idx[i]);
	free(idx);
	/* the name order (the daemon's "domains" answer) */
	ck_assert_str_eq(config_domain_sorted(cfg, 0)->name, "a.b.example.org");
	ck_assert_str_eq(config_domain_sorted(cfg, 1)->name, "badexample.org");
	ck_assert_str_eq(config_domain_sorted(cfg, 2)->name, "d0.test");
	ck_assert_str_eq(config_domain_sorted(cfg, 3)->name, "d1.test");
	ck_assert_str_eq(config_domain_sorted(cfg, 4)->name, "d10.test");
	for (i = 1; i < cfg->ndomains; i++)
		ck_assert_int_lt(strcmp(config_domain_sorted(cfg, i - 1)->name,
		    config_domain_sorted(cfg, i)->name), 0);
	ck_assert_str_eq(config_domain_sorted(cfg, 49999)->name,
	    "mx.example.org");
	ck_assert_ptr_null(config_domain_sorted(cfg, 50000));
	config_free(&cfg);
	errs_free(&e);

	/* a list built by hand (no index): the same answers by the walk */
	memset(&hand, 0, sizeof(hand));
	memset(doms, 0, sizeof(doms));
	doms[0].name = "badexample.org";
	doms[1].name = "sub.example.org";
	doms[2].name = "example.org";
	hand.domains = doms;
	hand.ndomains = 3;
	n = config_domains_under(&hand, "Example.Org.", &idx);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(idx[0], 1);
	ck_assert_uint_eq(idx[1], 2);
	free(idx);
	ck_assert_uint_eq(config_domains_under(&hand, "", &idx), 0);
	/* no index: the file's order */
	ck_assert_str_eq(config_domain_sorted(&hand, 0)->name, "badexample.org");
	ck_assert_str_eq(config_domain_sorted(&hand, 2)->name, "example.org");
}
END_TEST

START_TEST(test_many_domains)
{
	size_t cap = 60000 * 40, len = 0;
	char *buf = malloc(cap), want[512], name[64];
	const struct config_domain *d;
	struct config *cfg;
	struct errs e;
	int i;

	ck_assert_ptr_nonnull(buf);
	for (i = 0; i < 50000; i++)
		len += (size_t)snprintf(buf + len, cap - len,
		    "[domain d%d.example]\n%s", i, i == 49999 ? "subdomains = yes\n" : "");
	cfg = load(buf, &e);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->ndomains, 50000);
	d = config_domain_by_name(cfg, "D31337.Example.");
	ck_assert_ptr_nonnull(d);
	ck_assert_str_eq(d->name, "d31337.example");
	ck_assert_ptr_null(config_domain_by_name(cfg, "d50000.example"));
	ck_assert_ptr_null(config_domain_by_name(cfg, "d1.example.."));
	d = config_find_domain(cfg, "mx.d49999.example");
	ck_assert_ptr_nonnull(d);
	ck_assert_str_eq(d->name, "d49999.example");
	ck_assert_ptr_null(config_find_domain(cfg, "mx.d49998.example"));
	for (i = 0; i < 50000; i += 997) {
		snprintf(name, sizeof(name), "D%d.EXAMPLE", i);
		d = config_domain_by_name(cfg, name);
		ck_assert_ptr_nonnull(d);
		ck_assert_int_eq(d->line, i + 1);
	}
	config_free(&cfg);
	errs_free(&e);
	len += (size_t)snprintf(buf + len, cap - len, "[domain D7.example.]\n");
	cfg = load(buf, &e);
	ck_assert_ptr_null(cfg);
	ck_assert_int_eq(e.n, 1);
	snprintf(want, sizeof(want), "%s/odrelay.conf:50002: duplicate section "
	    "[domain d7.example] (first at line 8)", tmpdir);
	ck_assert_str_eq(e.msg[0], want);
	errs_free(&e);
	free(buf);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("config");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_empty_file);
	tcase_add_test(tc, test_refcount);
	tcase_add_test(tc, test_all_keys);
	tcase_add_test(tc, test_control_socket_and_empty_lists);
	tcase_add_test(tc, test_relative_paths);
	tcase_add_test(tc, test_metrics_listen_loopback);
	tcase_add_test(tc, test_comments_and_spacing);
	tcase_add_test(tc, test_sizes);
	tcase_add_test(tc, test_durations);
	tcase_add_test(tc, test_bools);
	tcase_add_test(tc, test_bad_values);
	tcase_add_test(tc, test_cross_checks);
	tcase_add_test(tc, test_error_kinds);
	tcase_add_test(tc, test_repeated_key_last_wins);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_multiple_errors);
	tcase_add_test(tc, test_long_line);
	tcase_add_test(tc, test_domains);
	tcase_add_test(tc, test_bad_routes);
	tcase_add_test(tc, test_recipients);
	tcase_add_test(tc, test_recipients_errors);
	tcase_add_test(tc, test_recipients_absolute_path);
	tcase_add_test(tc, test_demo_conf);
	suite_add_tcase(s, tc);

	tc = tcase_create("util");
	tcase_add_test(tc, test_split_hostport);
	tcase_add_test(tc, test_domain_valid_dot);
	tcase_add_test(tc, test_tcp_keepalive);
	tcase_add_test(tc, test_sockaddr);
	tcase_add_test(tc, test_strlcpy_lowercase);
	tcase_add_test(tc, test_base64_vectors);
	tcase_add_test(tc, test_base64_binary_and_bounds);
	tcase_add_test(tc, test_base64_strict);
	tcase_add_test(tc, test_now_random);
	suite_add_tcase(s, tc);

	tc = tcase_create("tls");
	tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
	tcase_add_test(tc, test_tls_server_ctx);
	tcase_add_test(tc, test_tls_client_ctx);
	tcase_add_test(tc, test_tls_handshake);
	tcase_add_test(tc, test_many_domains);
	tcase_add_test(tc, test_domtree_labels);
	tcase_add_test(tc, test_domtree_sort);
	tcase_add_test(tc, test_domains_under);
	tcase_add_test(tc, test_proxy_interfaces);
	tcase_add_test(tc, test_push_keys);
	tcase_add_test(tc, test_load_global);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	log_init("check_config", 1, LOG_LEVEL_WARNING);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
