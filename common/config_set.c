/*
 * config_set - odrelay.conf(5) values: the parsers of sizes, durations,
 * addresses, host names and lists, and the setters the key table names
 * (one per value type), including the gatekeeper keys (DNS blocklists,
 * milters). Each reports "FILE:LINE: message" through config_error and
 * returns -1 on a bad value.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include "config.h"
#include "domhash.h"
#include "dnsbl_spec.h"
#include "log.h"
#include "tlspolicy.h"
#include "util.h"
#include "xmalloc.h"
#include "config_private.h"

/* ---- value parsers ---- */

static int config_parse_number(const char **sp, uint64_t *v_r)
{
	const char *s = *sp;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*sp = s;
	*v_r = v;
	return 0;
}

int config_parse_size(const char *s, uint64_t *bytes_r)
{
	uint64_t v, mul = 1;

	if (config_parse_number(&s, &v) < 0)
		return -1;
	switch (*s) {
	case '\0':
		break;
	case 'k': case 'K':
		mul = 1024;
		break;
	case 'm': case 'M':
		mul = 1024 * 1024;
		break;
	case 'g': case 'G':
		mul = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*s != '\0') {
		s++;
		/* Accept "50MB" too, since people write it. */
		if (*s == 'b' || *s == 'B')
			s++;
		if (*s != '\0')
			return -1;
	}
	if (v > UINT64_MAX / mul)
		return -1;
	*bytes_r = v * mul;
	return 0;
}

int config_parse_duration(const char *s, long *seconds_r)
{
	uint64_t v, mul = 1;

	if (config_parse_number(&s, &v) < 0)
		return -1;
	switch (*s) {
	case '\0':
	case 's': case 'S':
		break;
	case 'm': case 'M':
		mul = 60;
		break;
	case 'h': case 'H':
		mul = 3600;
		break;
	case 'd': case 'D':
		mul = 86400;
		break;
	default:
		return -1;
	}
	if (*s != '\0' && s[1] != '\0')
		return -1;
	if (v > (uint64_t)LONG_MAX / mul)
		return -1;
	*seconds_r = (long)(v * mul);
	return 0;
}

int config_parse_bool(const char *s, int *b_r)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*b_r = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*b_r = 0;
			return 0;
		}
	}
	return -1;
}

/* Lower-case and drop one trailing dot, in place; 0 if then valid. */
int config_domain_normalize(char *s)
{
	size_t len = strlen(s);

	if (len > 1 && s[len - 1] == '.')
		s[len - 1] = '\0';
	util_lowercase(s);
	return util_domain_valid(s) ? 0 : -1;
}

/* Checks one item of a list value and adds what it stands for to out
 * (opt: the setter's own parameters). 0, or -1 after config_error. */
typedef int config_item_fn(struct config_ctx *ctx, const char *key,
    const char *item, struct strlist *out, const void *opt);

/* Split a list value on spaces, tabs and commas; fn per item, into out. */
static int config_list_each(struct config_ctx *ctx, const char *key,
    const char *value, config_item_fn *fn, struct strlist *out,
    const void *opt)
{
	char *copy, *p, *item;
	int rc = 0;

	copy = xstrdup(value);
	for (p = copy; (item = strsep(&p, " \t,")) != NULL;) {
		if (*item == '\0')
			continue;
		if (fn(ctx, key, item, out, opt) < 0)
			rc = -1;
	}
	free(copy);
	return rc;
}

/* A list key: the value's items replace the list, all or nothing. */
static int config_set_list(struct config_ctx *ctx, void *field,
    const char *key, const char *value, config_item_fn *fn, const void *opt)
{
	struct strlist l = { NULL, 0 };

	if (config_list_each(ctx, key, value, fn, &l, opt) < 0) {
		strlist_free(&l);
		return -1;
	}
	strlist_free(field);
	*(struct strlist *)field = l;
	return 0;
}

/* The usual complaint; returns -1 for the setter to return. */
static int config_bad_value(struct config_ctx *ctx, const char *key,
    const char *value, const char *expected)
{
	config_error(ctx, "bad value for '%s': '%s' (expected %s)", key, value,
	    expected);
	return -1;
}

/* ---- setters: one per value type ---- */

static void config_replace_str(char **field, const char *value)
{
	free(*field);
	*field = xstrdup(value);
}

int config_set_str(struct config_ctx *ctx, void *field, const char *key,
    const char *value)
{
	if (*value == '\0') {
		config_error(ctx, "empty value for '%s'", key);
		return -1;
	}
	config_replace_str(field, value);
	return 0;
}

/* A string that may be empty (meaning unset). */
int config_set_optstr(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	char **f = field;

	free(*f);
	*f = *value == '\0' ? NULL : xstrdup(value);
	return 0;
}

int config_set_hostname(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	char buf[CONFIG_HOST_MAX];

	if (util_strlcpy(buf, value, sizeof(buf)) < 0 ||
	    config_domain_normalize(buf) < 0)
		return config_bad_value(ctx, key, value, "a host name");
	config_replace_str(field, buf);
	return 0;
}

/* LOCAL@DOMAIN (postmaster): a plain local part, the domain as a host. */
int config_set_mailbox(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	char buf[CONFIG_HOST_MAX + 70];
	const char *at = strrchr(value, '@'), *p;

	if (at == NULL || at == value || at - value > 64 ||
	    util_strlcpy(buf, at + 1, CONFIG_HOST_MAX) < 0 ||
	    config_domain_normalize(buf) < 0)
		return config_bad_value(ctx, key, value, "an address such as "
		    "admin@example.net");
	for (p = value; p < at; p++)
		if (!isalnum((unsigned char)*p) && strchr("!#$%&'*+-/=?^_`{|}~.",
		    *p) == NULL)
			return config_bad_value(ctx, key, value, "an address "
			    "such as admin@example.net");
	snprintf(buf, sizeof(buf), "%.*s@", (int)(at - value), value);
	if (util_strlcpy(buf + strlen(buf), at + 1, sizeof(buf) - strlen(buf)) < 0)
		return config_bad_value(ctx, key, value, "a shorter address");
	config_domain_normalize(strchr(buf, '@') + 1);
	config_replace_str(field, buf);
	return 0;
}

int config_set_socket(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	struct sockaddr_un sun;

	if (*value == '\0' || strlen(value) >= sizeof(sun.sun_path)) {
		config_error(ctx, "bad value for '%s': '%s' (expected a socket "
		    "path shorter than %zu bytes)", key, value,
		    sizeof(sun.sun_path));
		return -1;
	}
	config_replace_str(field, value);
	return 0;
}

struct config_addr_arg {
	int port;
	const char *what;
};

/* Check one numeric address and store it as "ip:port" / "[v6]:port". */
static int config_addr_item(struct config_ctx *ctx, const char *key,
    const char *item, struct strlist *out, const void *opt)
{
	const struct config_addr_arg *a = opt;
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[INET6_ADDRSTRLEN + 1], *norm;
	int port;

	if (util_sockaddr_parse(item, a->port > 0 ? a->port : -1, &ss,
	    &len) < 0)
		return config_bad_value(ctx, key, item, a->what);
	util_sockaddr_ip((struct sockaddr *)&ss, ip, sizeof(ip));
	port = ntohs(ss.ss_family == AF_INET ?
	    ((struct sockaddr_in *)&ss)->sin_port :
	    ((struct sockaddr_in6 *)&ss)->sin6_port);
	if (ss.ss_family == AF_INET6)
		norm = xasprintf("[%s]:%d", ip, port);
	else
		norm = xasprintf("%s:%d", ip, port);
	strlist_add(out, norm);
	free(norm);
	return 0;
}

static int config_set_addrlist(struct config_ctx *ctx, void *field,
    const char *key, const char *value, int port, const char *what)
{
	struct config_addr_arg a = { port, what };

	return config_set_list(ctx, field, key, value, config_addr_item, &a);
}

int config_set_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_addrlist(ctx, field, key, value, 0,
	    "numeric IP:PORT or [IPv6]:PORT");
}

/*
 * metrics_listen: the endpoint lists every customer domain, so a bare
 * PORT means loopback (127.0.0.1:PORT); another address must be written.
 */
int config_set_metrics_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	char buf[CONFIG_LINE_MAX + 1], *out = buf;
	const char *p = value;
	int rc;

	while (*p != '\0' && (size_t)(out - buf) < sizeof(buf) - 16) {
		size_t n = strspn(p, "0123456789");

		/* A word of digits only: between separators or the ends. */
		if (n > 0 && n <= 5 && (p == value || strchr(" \t,", p[-1])) &&
		    (p[n] == '\0' || strchr(" \t,#", p[n]) != NULL)) {
			out += snprintf(out, sizeof(buf) - (size_t)(out - buf),
			    "127.0.0.1:%.*s", (int)n, p);
			p += n;
			continue;
		}
		*out++ = *p++;
	}
	*out = '\0';
	if (*p != '\0')
		return config_set_listen(ctx, field, key, value);
	rc = config_set_addrlist(ctx, field, key, buf, 0,
	    "PORT (loopback), numeric IP:PORT or [IPv6]:PORT");
	return rc;
}

/* smtp_listen, and proxy_interfaces: addresses of SMTP servers. */
int config_set_smtp_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_addrlist(ctx, field, key, value, 25,
	    "numeric IP[:PORT] or [IPv6][:PORT]");
}

int config_set_odmr_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_addrlist(ctx, field, key, value, 366,
	    "numeric IP[:PORT] or [IPv6][:PORT]");
}

int config_set_dns_servers(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_addrlist(ctx, field, key, value, 53,
	    "numeric IP[:PORT] or [IPv6][:PORT]");
}

int config_set_size(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	uint64_t v;

	if (config_parse_size(value, &v) < 0 || v == 0)
		return config_bad_value(ctx, key, value,
		    "a size such as 50M: bytes or K/M/G");
	*(uint64_t *)field = v;
	return 0;
}

/* A size where 0 is allowed (queue_min_free = 0: no file system margin). */
int config_set_size0(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	if (strcmp(value, "0") == 0) {
		*(uint64_t *)field = 0;
		return 0;
	}
	return config_set_size(ctx, field, key, value);
}

int config_set_map_size(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	uint64_t v;

	if (config_parse_size(value, &v) < 0 || v < 1024 * 1024)
		return config_bad_value(ctx, key, value,
		    "a size of at least 1M");
	*(uint64_t *)field = v;
	return 0;
}

static int config_set_duration_common(struct config_ctx *ctx, void *field,
    const char *key, const char *value, long min)
{
	long v;

	if (config_parse_duration(value, &v) < 0 || v < min) {
		config_error(ctx, "bad value for '%s': '%s' (expected a "
		    "duration such as 30s, 5m, 4h, 30d%s)", key, value,
		    min == 0 ? ", or 0" : "");
		return -1;
	}
	*(long *)field = v;
	return 0;
}

int config_set_duration(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_duration_common(ctx, field, key, value, 1);
}

int config_set_duration0(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_duration_common(ctx, field, key, value, 0);
}

int config_set_lifetime(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	if (config_set_duration(ctx, field, key, value) < 0)
		return -1;
	if (ctx->cur != NULL)
		ctx->dlifetime_set = 1;
	return 0;
}

int config_set_uint(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	uint64_t v;
	const char *s = value;

	if (config_parse_number(&s, &v) < 0 || *s != '\0' || v == 0 ||
	    v > INT_MAX)
		return config_bad_value(ctx, key, value, "a positive integer");
	*(unsigned *)field = (unsigned)v;
	return 0;
}

int config_set_port(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	uint64_t v;
	const char *s = value;

	if (config_parse_number(&s, &v) < 0 || *s != '\0' || v == 0 ||
	    v > 65535)
		return config_bad_value(ctx, key, value,
		    "a port number 1-65535");
	*(int *)field = (int)v;
	return 0;
}

int config_set_bool(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	if (config_parse_bool(value, field) < 0)
		return config_bad_value(ctx, key, value, "yes or no");
	return 0;
}

int config_set_verify_unknown(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	if (strcmp(value, "accept") == 0)
		*(int *)field = 0;
	else if (strcmp(value, "tempfail") == 0)
		*(int *)field = 1;
	else
		return config_bad_value(ctx, key, value, "accept or tempfail");
	return 0;
}

int config_set_verify(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	if (strcmp(value, "probe") == 0)
		*(int *)field = 1;
	else if (strcmp(value, "no") == 0 || strcmp(value, "none") == 0)
		*(int *)field = 0;
	else
		return config_bad_value(ctx, key, value, "probe or none");
	return 0;
}

int config_set_tls(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	int m = tlspolicy_mode_parse(value);

	if (m < 0)
		return config_bad_value(ctx, key, value,
		    "none, may, encrypt, verify, fingerprint, dane, "
		    "dane-only or sts");
	*(int *)field = m;
	return 0;
}

int config_set_tls_fingerprint(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	struct tlspolicy_fp fp[TLSPOLICY_MAX_FP];
	char err[200];
	size_t n;

	if (tlspolicy_fp_parse(value, fp, TLSPOLICY_MAX_FP, &n, err,
	    sizeof(err)) < 0) {
		config_error(ctx, "bad value for '%s': %s", key, err);
		return -1;
	}
	if (n == 0) {
		config_error(ctx, "empty value for '%s'", key);
		return -1;
	}
	config_replace_str(field, value);
	return 0;
}

int config_set_log_level(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	enum log_level lv;

	if (log_level_parse(value, &lv) < 0)
		return config_bad_value(ctx, key, value,
		    "error, warning, info or debug");
	*(int *)field = (int)lv;
	return 0;
}

static int config_host_valid(const char *host)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char tmp[CONFIG_HOST_MAX];

	if (util_sockaddr_parse(host, 25, &ss, &len) == 0)
		return 1;
	if (util_strlcpy(tmp, host, sizeof(tmp)) < 0)
		return 0;
	return config_domain_normalize(tmp) == 0;
}

int config_set_route(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	struct config_domain *d = ctx->cur;
	char host[CONFIG_HOST_MAX], v6[CONFIG_HOST_MAX + 2];
	int port, ok;

	if (strcasecmp(value, "mx") == 0) {
		free(d->route);
		free(d->route_host);
		d->route = d->route_host = NULL;
		d->route_port = 25;
		return 0;
	}
	ok = util_split_hostport(value, host, sizeof(host), &port, 25) == 0;
	if (ok && value[0] == '[') {
		/* Brackets hold an IP literal: [192.0.2.1]:25, [::1]:2525. */
		snprintf(v6, sizeof(v6), "[%s]", host);
		ok = config_host_valid(v6);
	} else if (ok)
		ok = strchr(host, ':') == NULL && config_host_valid(host);
	if (!ok)
		return config_bad_value(ctx, key, value,
		    "mx, HOST[:PORT] or [IP]:PORT");
	util_lowercase(host);
	config_replace_str(&d->route, value);
	config_replace_str(&d->route_host, host);
	d->route_port = port;
	(void)field;
	return 0;
}

/*
 * One recipient list entry: "local@domain" or "@domain", lower-cased.
 * Returns a new string, or NULL when malformed.
 */
static char *config_recipient_normalize(const char *s)
{
	char *copy, *at;

	if (strlen(s) >= CONFIG_RCPT_MAX || (at = strrchr(s, '@')) == NULL)
		return NULL;
	copy = xstrdup(s);
	at = copy + (at - s);
	if (config_domain_normalize(at + 1) < 0 ||
	    strpbrk(copy, " \t<>") != NULL) {
		free(copy);
		return NULL;
	}
	util_lowercase(copy);
	return copy;
}

static int config_rcpt_item(struct config_ctx *ctx, const char *key,
    const char *item, struct strlist *out, const void *opt)
{
	char *r;

	(void)opt;
	if (strcmp(item, "learn") == 0 && strcmp(key, "recipients") == 0) {
		ctx->cur->recipients_learn = 1;
		return 0;
	}
	if ((r = config_recipient_normalize(item)) == NULL)
		return config_bad_value(ctx, key, item,
		    "local@domain or @domain");
	strlist_add(out, r);
	free(r);
	return 0;
}

int config_set_recipients(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	struct strlist add;
	size_t i;

	if (*value == '\0')
		return 0;
	memset(&add, 0, sizeof(add));
	if (config_list_each(ctx, key, value, config_rcpt_item, &add,
	    NULL) < 0) {
		strlist_free(&add);
		return -1;
	}
	for (i = 0; i < add.n; i++)
		strlist_add(field, add.v[i]);
	/* "learn" alone is no list: unknown addresses are accepted. */
	if (add.n > 0 || !ctx->cur->recipients_learn)
		ctx->cur->has_recipient_list = 1;
	strlist_free(&add);
	return 0;
}

char *config_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	return s;
}

/* Load one address per line; errors are FILE:LINE of the recipients file. */
static int config_load_recipients(struct config_ctx *ctx, const char *path,
    struct strlist *l)
{
	FILE *fp;
	char *buf = NULL, *p, *r, *hash;
	size_t cap = 0;
	ssize_t n;
	const char *saved_file = ctx->file;
	int saved_line = ctx->line, rc = 0, lineno = 0;

	if ((fp = fopen(path, "r")) == NULL) {
		config_error(ctx, "cannot open recipients_file '%s': %s", path,
		    strerror(errno));
		return -1;
	}
	ctx->file = path;
	while ((n = getline(&buf, &cap, fp)) != -1) {
		ctx->line = ++lineno;
		if ((size_t)n != strlen(buf)) {
			config_error(ctx, "NUL byte in line");
			rc = -1;
			continue;
		}
		if ((hash = strchr(buf, '#')) != NULL)
			*hash = '\0';
		p = config_trim(buf);
		if (*p == '\0')
			continue;
		if ((r = config_recipient_normalize(p)) == NULL) {
			config_error(ctx, "bad recipient '%s' (expected "
			    "local@domain or @domain)", p);
			rc = -1;
			continue;
		}
		strlist_add(l, r);
		free(r);
	}
	if (ferror(fp)) {
		config_error(ctx, "read error: %s", strerror(errno));
		rc = -1;
	}
	free(buf);
	fclose(fp);
	ctx->file = saved_file;
	ctx->line = saved_line;
	return rc;
}

int config_set_recipients_file(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	struct config_domain *d = ctx->cur;
	char *path;

	if (*value == '\0')
		return 0;
	if (value[0] == '/' || ctx->dir == NULL)
		path = xstrdup(value);
	else
		path = xasprintf("%s/%s", ctx->dir, value);
	if (config_load_recipients(ctx, path, &d->recipients) < 0) {
		free(path);
		return -1;
	}
	free(d->recipients_file);
	d->recipients_file = path;
	d->has_recipient_list = 1;
	(void)field;
	return 0;
}

/* A webhook: https://host[:port][/path], or empty for none. */
int config_set_notify_url(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	char **f = field;

	if (*value != '\0' && (strncasecmp(value, "https://", 8) != 0 ||
	    value[8] == '\0' || value[8] == '/' || strlen(value) > 1024 ||
	    strpbrk(value, " \t\"\\") != NULL))
		return config_bad_value(ctx, key, value,
		    "https://host[:port][/path]");
	free(*f);
	/* Empty in a domain section: no webhook there, whatever the global
	 * value ("" is kept to tell it from "not set"). */
	*f = *value != '\0' ? xstrdup(value) : ctx->cur != NULL ? xstrdup("") :
	    NULL;
	return 0;
}

/* ---- gatekeeper: DNS blocklists and milters ---- */

static int config_dnsbl_item(struct config_ctx *ctx, const char *key,
    const char *item, struct strlist *out, const void *opt)
{
	struct dnsbl_spec spec;
	char err[256];

	if (dnsbl_spec_parse(item, &spec, err, sizeof(err)) < 0) {
		config_error(ctx, "bad value for '%s': %s", key, err);
		return -1;
	}
	(void)opt;
	strlist_add(out, item);
	return 0;
}

int config_set_dnsbl(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_list(ctx, field, key, value, config_dnsbl_item,
	    NULL);
}

static int config_cidr_item(struct config_ctx *ctx, const char *key,
    const char *item, struct strlist *out, const void *opt)
{
	struct dnsbl_cidr net;

	(void)opt;
	if (dnsbl_cidr_parse(item, &net) < 0)
		return config_bad_value(ctx, key, item, "a network such as "
		    "192.0.2.0/24 or 2001:db8::/32");
	strlist_add(out, item);
	return 0;
}

int config_set_cidrs(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	return config_set_list(ctx, field, key, value, config_cidr_item, NULL);
}

int config_set_dnsbl_action(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	enum dnsbl_action a;

	if (dnsbl_action_parse(value, &a) < 0)
		return config_bad_value(ctx, key, value,
		    "reject, tempfail or log");
	*(int *)field = (int)a;
	return 0;
}

/* "inet:IP:PORT", "inet:[IPv6]:PORT" or "unix:/PATH". */
static int config_milter_item(struct config_ctx *ctx, const char *key,
    const char *item, struct strlist *out, const void *opt)
{
	struct sockaddr_storage ss;
	socklen_t len;

	(void)opt;
	if (strncmp(item, "unix:", 5) == 0 && item[5] == '/' &&
	    strlen(item + 5) < sizeof(((struct sockaddr_un *)0)->sun_path)) {
		strlist_add(out, item);
		return 0;
	}
	if (strncmp(item, "inet:", 5) == 0 && strchr(item + 5, ':') != NULL &&
	    util_sockaddr_parse(item + 5, 0, &ss, &len) == 0 &&
	    ((struct sockaddr_in *)&ss)->sin_port != 0) {
		strlist_add(out, item);
		return 0;
	}
	return config_bad_value(ctx, key, item,
	    "inet:IP:PORT, inet:[IPv6]:PORT or unix:/PATH");
}

int config_set_milters(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	if (ctx->cur != NULL) {
		/* a domain may only opt out */
		if (strcasecmp(value, "none") != 0) {
			config_error(ctx, "bad value for '%s' in a [domain] "
			    "section: '%s' (only 'none' is allowed there)",
			    key, value);
			return -1;
		}
		ctx->cur->milters_none = 1;
		return 0;
	}
	if (strcasecmp(value, "none") == 0 || *value == '\0') {
		strlist_free(field);
		return 0;
	}
	return config_set_list(ctx, field, key, value, config_milter_item,
	    NULL);
}

int config_set_milter_action(struct config_ctx *ctx, void *field,
    const char *key, const char *value)
{
	if (strcasecmp(value, "tempfail") == 0)
		*(int *)field = CONFIG_MILTER_TEMPFAIL;
	else if (strcasecmp(value, "accept") == 0)
		*(int *)field = CONFIG_MILTER_ACCEPT;
	else if (strcasecmp(value, "reject") == 0)
		*(int *)field = CONFIG_MILTER_REJECT;
	else
		return config_bad_value(ctx, key, value,
		    "tempfail, accept or reject");
	return 0;
}
