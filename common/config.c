/*
 * config - odrelay.conf(5): parse, validate, look up domains. This file
 * has the key table, the defaults, the parser and the look-ups; the value
 * parsers and one setter per value type are in config_set.c.
 *
 * The file is trusted (root-owned) but hand-edited, so the parser reports
 * every problem it finds as "FILE:LINE: message" and keeps going, so that
 * `odrelayd -n` lists all of them in one run. A config with any error is
 * never returned. Parsing is table driven: one row per key, naming where
 * the value goes and the function that checks and converts it.
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
#include "domtree.h"
#include "dnsbl_spec.h"
#include "log.h"
#include "tlspolicy.h"
#include "util.h"
#include "xmalloc.h"
#include "config_private.h"

void config_error(struct config_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	char *msg, *line;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (msg == NULL)
		log_panic("config: out of memory");
	line = xasprintf("%s:%d: %s", ctx->file, ctx->line, msg);
	free(msg);
	ctx->nerrors++;
	if (ctx->errfn != NULL)
		ctx->errfn(ctx->errarg, line);
	free(line);
}

/* ---- strlist ---- */

void strlist_add(struct strlist *l, const char *s)
{
	l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = xstrdup(s);
}

void strlist_free(struct strlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int config_strcmp_p(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort and drop duplicates so that lookups can bsearch. */
static void strlist_sort_unique(struct strlist *l)
{
	size_t i, o;

	if (l->n < 2)
		return;
	qsort(l->v, l->n, sizeof(*l->v), config_strcmp_p);
	for (i = 1, o = 1; i < l->n; i++) {
		if (strcmp(l->v[i], l->v[o - 1]) == 0)
			free(l->v[i]);
		else
			l->v[o++] = l->v[i];
	}
	l->n = o;
}

/* ---- the key table ---- */

#define G(f) offsetof(struct config, f), 0
#define D(f) 0, offsetof(struct config_domain, f)
#define GD(f) offsetof(struct config, f), offsetof(struct config_domain, f)

static const struct config_key config_keys[] = {
	{ "hostname", CONFIG_GLOBAL, config_set_hostname, G(hostname) },
	{ "postmaster", CONFIG_GLOBAL, config_set_mailbox, G(postmaster) },
	{ "queue_dir", CONFIG_GLOBAL, config_set_str, G(queue_dir) },
	{ "smtp_listen", CONFIG_GLOBAL, config_set_smtp_listen, G(smtp_listen) },
	{ "odmr_listen", CONFIG_GLOBAL, config_set_odmr_listen, G(odmr_listen) },
	{ "odmrs_listen", CONFIG_GLOBAL, config_set_listen, G(odmrs_listen) },
	{ "control_socket", CONFIG_GLOBAL, config_set_socket, G(control_socket) },
	{ "metrics_listen", CONFIG_GLOBAL, config_set_metrics_listen, G(metrics_listen) },
	{ "tls_cert_file", CONFIG_GLOBAL, config_set_optstr, G(tls_cert_file) },
	{ "tls_key_file", CONFIG_GLOBAL, config_set_optstr, G(tls_key_file) },
	{ "auth_requires_tls", CONFIG_GLOBAL, config_set_bool, G(auth_requires_tls) },
	{ "auth_delay_max", CONFIG_GLOBAL, config_set_duration0, G(auth_delay_max) },
	{ "passwd_file", CONFIG_GLOBAL, config_set_str, G(passwd_file) },
	{ "max_message_size", CONFIG_GLOBAL, config_set_size, G(max_message_size) },
	{ "max_recipients", CONFIG_GLOBAL, config_set_uint, G(max_recipients) },
	{ "max_connections", CONFIG_GLOBAL, config_set_uint, G(max_connections) },
	{ "max_connections_per_ip", CONFIG_GLOBAL, config_set_uint, G(max_connections_per_ip) },
	{ "smtp_timeout", CONFIG_GLOBAL, config_set_duration, G(smtp_timeout) },
	{ "queue_lifetime", CONFIG_BOTH, config_set_lifetime, GD(queue_lifetime) },
	{ "delay_warning", CONFIG_GLOBAL, config_set_duration0, G(delay_warning) },
	{ "retry_min", CONFIG_GLOBAL, config_set_duration, G(retry_min) },
	{ "retry_max", CONFIG_GLOBAL, config_set_duration, G(retry_max) },
	{ "dns_servers", CONFIG_GLOBAL, config_set_dns_servers, G(dns_servers) },
	{ "proxy_interfaces", CONFIG_GLOBAL, config_set_smtp_listen, G(proxy_interfaces) },
	{ "delivery_port", CONFIG_GLOBAL, config_set_port, G(delivery_port) },
	{ "run_as_user", CONFIG_GLOBAL, config_set_str, G(run_as_user) },
	{ "log_level", CONFIG_GLOBAL, config_set_log_level, G(log_level) },
	{ "queue_map_size", CONFIG_GLOBAL, config_set_map_size, G(queue_map_size) },
	{ "queue_min_free", CONFIG_GLOBAL, config_set_size0, G(queue_min_free) },
	{ "max_received", CONFIG_GLOBAL, config_set_uint, G(max_received) },
	{ "max_errors", CONFIG_GLOBAL, config_set_uint, G(max_errors) },
	{ "etrn_rate", CONFIG_GLOBAL, config_set_uint, G(etrn_rate) },
	{ "atrn_rate", CONFIG_GLOBAL, config_set_uint, G(atrn_rate) },
	{ "max_deliveries", CONFIG_GLOBAL, config_set_uint, G(max_deliveries) },
	{ "max_deliveries_per_dest", CONFIG_GLOBAL, config_set_uint, G(max_deliveries_per_dest) },
	{ "delivery_timeout", CONFIG_GLOBAL, config_set_duration, G(delivery_timeout) },
	{ "delivery_session_limit", CONFIG_GLOBAL, config_set_duration0, G(delivery_session_limit) },
	{ "smtp_session_limit", CONFIG_GLOBAL, config_set_duration0, G(smtp_session_limit) },
	{ "odmr_wait_timeout", CONFIG_GLOBAL, config_set_duration, G(odmr_wait_timeout) },
	{ "max_waiting", CONFIG_GLOBAL, config_set_uint, G(max_waiting) },
	{ "max_waiting_per_user", CONFIG_GLOBAL, config_set_uint, G(max_waiting_per_user) },
	{ "notify_url", CONFIG_BOTH, config_set_notify_url, GD(notify_url) },
	{ "notify_ca_file", CONFIG_BOTH, config_set_optstr, GD(notify_ca_file) },
	{ "notify_interval", CONFIG_BOTH, config_set_duration, GD(notify_interval) },
	{ "dnsbl", CONFIG_GLOBAL, config_set_dnsbl, G(dnsbl) },
	{ "dnsbl_action", CONFIG_GLOBAL, config_set_dnsbl_action, G(dnsbl_action) },
	{ "dnsbl_allow", CONFIG_GLOBAL, config_set_cidrs, G(dnsbl_allow) },
	{ "dnsbl_timeout", CONFIG_GLOBAL, config_set_duration, G(dnsbl_timeout) },
	{ "milters", CONFIG_BOTH, config_set_milters, offsetof(struct config, milters), offsetof(struct config_domain, milters_none) },
	{ "milter_default_action", CONFIG_GLOBAL, config_set_milter_action, G(milter_default_action) },
	{ "milter_connect_timeout", CONFIG_GLOBAL, config_set_duration, G(milter_connect_timeout) },
	{ "milter_command_timeout", CONFIG_GLOBAL, config_set_duration, G(milter_command_timeout) },
	{ "milter_content_timeout", CONFIG_GLOBAL, config_set_duration, G(milter_content_timeout) },
	{ "milter_reuse", CONFIG_GLOBAL, config_set_bool, G(milter_reuse) },
	{ "hold", CONFIG_DOMAIN, config_set_bool, D(hold) },
	{ "subdomains", CONFIG_DOMAIN, config_set_bool, D(subdomains) },
	{ "route", CONFIG_DOMAIN, config_set_route, D(route) },
	{ "etrn", CONFIG_DOMAIN, config_set_bool, D(etrn) },
	{ "recipients", CONFIG_DOMAIN, config_set_recipients, D(recipients) },
	{ "recipients_file", CONFIG_DOMAIN, config_set_recipients_file, D(recipients_file) },
	{ "max_queue_size", CONFIG_DOMAIN, config_set_size, D(max_queue_size) },
	{ "verify_recipients", CONFIG_DOMAIN, config_set_verify, D(verify_probe) },
	{ "verify_unknown", CONFIG_BOTH, config_set_verify_unknown, GD(verify_unknown) },
	{ "verify_timeout", CONFIG_BOTH, config_set_duration, GD(verify_timeout) },
	{ "verify_positive_ttl", CONFIG_BOTH, config_set_duration, GD(verify_positive_ttl) },
	{ "verify_negative_ttl", CONFIG_BOTH, config_set_duration, GD(verify_negative_ttl) },
	{ "learn_ttl", CONFIG_BOTH, config_set_duration, GD(learn_ttl) },
	{ "learn_negative_ttl", CONFIG_BOTH, config_set_duration, GD(learn_negative_ttl) },
	{ "verify_cache_size", CONFIG_GLOBAL, config_set_uint, G(verify_cache_size) },
	{ "tls", CONFIG_BOTH, config_set_tls, GD(tls) },
	{ "tls_ca_file", CONFIG_BOTH, config_set_optstr, GD(tls_ca_file) },
	{ "tls_fingerprint", CONFIG_BOTH, config_set_tls_fingerprint, GD(tls_fingerprint) },
	{ "mta_sts_port", CONFIG_GLOBAL, config_set_port, G(mta_sts_port) },
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/*
 * The defaults, as they would be written in the file: each is set by its
 * key's own setter, into the global value or, for a key of domain
 * sections only, into each new section. One that does not parse is a bug
 * of this table (check_config tests them).
 */
static const struct config_default {
	const char *key, *value;
} config_defaults_tab[] = {
	{ "queue_dir", CONFIG_DEF_QUEUE_DIR },
	{ "smtp_listen", CONFIG_DEF_SMTP_LISTEN },
	{ "odmr_listen", CONFIG_DEF_ODMR_LISTEN },
	{ "auth_requires_tls", "yes" },
	{ "auth_delay_max", "16s" },
	{ "passwd_file", CONFIG_DEF_PASSWD },
	{ "max_message_size", "50M" },
	{ "max_recipients", "1000" },
	{ "max_connections", "1000" },
	{ "max_connections_per_ip", "20" },
	{ "smtp_timeout", "5m" },
	{ "queue_lifetime", "30d" },
	{ "delay_warning", "4h" },
	{ "retry_min", "5m" },
	{ "retry_max", "1h" },
	{ "delivery_port", "25" },
	{ "run_as_user", CONFIG_DEF_RUN_AS },
	{ "log_level", "info" },
	{ "queue_map_size", "4G" },
	{ "queue_min_free", "64M" },
	{ "max_received", "100" },
	{ "max_errors", "20" },
	{ "etrn_rate", "10" },
	{ "atrn_rate", "10" },
	{ "max_deliveries", "20" },
	{ "max_deliveries_per_dest", "4" },
	{ "delivery_timeout", "5m" },
	{ "delivery_session_limit", "1h" },
	{ "smtp_session_limit", "1h" },
	{ "odmr_wait_timeout", "25m" },
	{ "max_waiting", "10000" },
	{ "max_waiting_per_user", "20" },
	{ "notify_interval", "1m" },
	{ "dnsbl_timeout", "5s" },
	{ "milter_connect_timeout", "30s" },
	{ "milter_command_timeout", "30s" },
	{ "milter_content_timeout", "5m" },
	{ "hold", "yes" },
	{ "route", "mx" },
	{ "etrn", "yes" },
	{ "max_queue_size", "1G" },
	{ "verify_timeout", "10s" },
	{ "verify_positive_ttl", "30d" },
	{ "verify_negative_ttl", "3h" },
	{ "learn_ttl", "180d" },
	{ "learn_negative_ttl", "30d" },
	{ "verify_cache_size", "100000" },
	{ "tls", "may" },
	{ "mta_sts_port", "443" },
};

static const struct config_key *config_key_find(const char *name, size_t *idx_r)
{
	size_t i;

	/* The first letter first: 100,000 lines of 50,000 sections would
	 * otherwise cost a hundred strcmp each. */
	for (i = 0; i < CONFIG_NKEYS; i++) {
		if (config_keys[i].name[0] == name[0] &&
		    strcmp(config_keys[i].name, name) == 0) {
			*idx_r = i;
			return &config_keys[i];
		}
	}
	return NULL;
}

/* ---- defaults ---- */

/*
 * The system's FQDN: gethostname(), made canonical through the resolver
 * when it has no dot. That lookup may block, so it runs once per process
 * (startup) and the answer is reused by reloads.
 */
static const char *config_system_hostname(void)
{
	static char cached[CONFIG_HOST_MAX];
	char name[CONFIG_HOST_MAX];
	struct addrinfo hints, *res;

	if (cached[0] != '\0')
		return cached;
	if (gethostname(name, sizeof(name) - 1) < 0 || name[0] == '\0')
		util_strlcpy(name, "localhost", sizeof(name));
	name[sizeof(name) - 1] = '\0';
	if (strchr(name, '.') == NULL) {
		memset(&hints, 0, sizeof(hints));
		hints.ai_flags = AI_CANONNAME;
		hints.ai_socktype = SOCK_STREAM;
		if (getaddrinfo(name, NULL, &hints, &res) == 0) {
			if (res->ai_canonname != NULL &&
			    strchr(res->ai_canonname, '.') != NULL)
				util_strlcpy(name, res->ai_canonname,
				    sizeof(name));
			freeaddrinfo(res);
		}
	}
	util_lowercase(name);
	util_strlcpy(cached, name, sizeof(cached));
	return cached;
}

/* The defaults of the global values (cur NULL) or of the section cur. */
static void config_set_defaults(struct config *cfg, struct config_domain *cur)
{
	struct config_ctx ctx;
	size_t i, idx;

	/* Each default's key, found once: a new section needs only the
	 * few of domain scope, and 50,000 sections would otherwise look up
	 * every default's key by name each (most of the start-up time). */
	static const struct config_key *keys[sizeof(config_defaults_tab) /
	    sizeof(config_defaults_tab[0])];
	static int keys_found;

	if (!keys_found) {
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			keys[i] = config_key_find(config_defaults_tab[i].key,
			    &idx);
		keys_found = 1;
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = cfg;
	ctx.file = "(defaults)";
	ctx.cur = cur;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct config_default *df = &config_defaults_tab[i];
		const struct config_key *k = keys[i];

		if (k == NULL)
			ctx.nerrors++;
		else if (cur == NULL && (k->scope & CONFIG_GLOBAL))
			k->set(&ctx, (char *)cfg + k->goff, k->name, df->value);
		else if (cur != NULL && k->scope == CONFIG_DOMAIN)
			k->set(&ctx, (char *)cur + k->doff, k->name, df->value);
	}
	if (ctx.nerrors > 0)
		log_panic("config: a built-in default does not parse");
}

/* Every default except those derived from other keys. */
static struct config *config_new(void)
{
	struct config *cfg;

	cfg = xcalloc(1, sizeof(*cfg));
	cfg->refs = 1;
	config_set_defaults(cfg, NULL);
	return cfg;
}

/*
 * A domain section's verify_*, learn_* and tls default to the global ones:
 * config_domain_init marks them unset (-1), config_finish fills in what
 * the section did not set.
 */
#define INHERIT(f) { offsetof(struct config, f), \
	offsetof(struct config_domain, f), \
	_Generic(((struct config_domain *)0)->f, long: 1, int: 0) }

static const struct config_inherit {
	size_t goff, doff;
	int is_long;		/* else int */
} config_inherited[] = {
	INHERIT(verify_unknown), INHERIT(verify_timeout),
	INHERIT(verify_positive_ttl), INHERIT(verify_negative_ttl),
	INHERIT(learn_ttl), INHERIT(learn_negative_ttl), INHERIT(tls),
};

/* cfg NULL: mark every inherited value unset. */
static void config_domain_inherit(struct config_domain *d,
    const struct config *cfg)
{
	for (size_t i = 0; i < sizeof(config_inherited) /
	    sizeof(config_inherited[0]); i++) {
		const struct config_inherit *in = &config_inherited[i];
		void *dv = (char *)d + in->doff;
		const void *gv = cfg != NULL ? (const char *)cfg + in->goff :
		    NULL;

		if (in->is_long)
			*(long *)dv = cfg == NULL ? -1 : *(long *)dv < 0 ?
			    *(const long *)gv : *(long *)dv;
		else
			*(int *)dv = cfg == NULL ? -1 : *(int *)dv < 0 ?
			    *(const int *)gv : *(int *)dv;
	}
}

static void config_domain_init(struct config_domain *d, const char *name,
    int line, const struct config *cfg)
{
	memset(d, 0, sizeof(*d));
	d->name = xstrdup(name);
	d->line = line;
	config_set_defaults(NULL, d);
	d->queue_lifetime = cfg->queue_lifetime;
	config_domain_inherit(d, NULL);
}

static void config_domain_clear(struct config_domain *d)
{
	free(d->name);
	free(d->route);
	free(d->route_host);
	strlist_free(&d->recipients);
	free(d->recipients_file);
	free(d->notify_url);
	free(d->notify_ca_file);
	free(d->tls_ca_file);
	free(d->tls_fingerprint);
	memset(d, 0, sizeof(*d));
}

struct config *config_defaults(void)
{
	struct config *cfg;

	cfg = config_new();
	cfg->hostname = xstrdup(config_system_hostname());
	cfg->control_socket = xasprintf("%s/control.sock", cfg->queue_dir);
	return cfg;
}

struct config *config_ref(struct config *cfg)
{
	cfg->refs++;
	return cfg;
}

static config_reaper_fn *config_reaper;

void config_set_reaper(config_reaper_fn *fn)
{
	config_reaper = fn;
}

void config_free(struct config **cfgp)
{
	struct config *cfg = *cfgp;

	if (cfg == NULL)
		return;
	*cfgp = NULL;
	if (--cfg->refs > 0)
		return;
	/* 50,000 sections are ~10 ms of free(): not on the event loop. */
	if (config_reaper != NULL && cfg->ndomains >= CONFIG_REAP_MIN) {
		config_reaper(cfg);
		return;
	}
	config_destroy(cfg);
}

void config_destroy(struct config *cfg)
{
	size_t i;

	free(cfg->path);
	free(cfg->hostname);
	free(cfg->postmaster);
	free(cfg->queue_dir);
	strlist_free(&cfg->smtp_listen);
	strlist_free(&cfg->odmr_listen);
	strlist_free(&cfg->odmrs_listen);
	free(cfg->control_socket);
	strlist_free(&cfg->metrics_listen);
	free(cfg->tls_cert_file);
	free(cfg->tls_key_file);
	free(cfg->passwd_file);
	strlist_free(&cfg->dns_servers);
	strlist_free(&cfg->proxy_interfaces);
	strlist_free(&cfg->dnsbl);
	strlist_free(&cfg->dnsbl_allow);
	strlist_free(&cfg->milters);
	free(cfg->run_as_user);
	free(cfg->notify_url);
	free(cfg->notify_ca_file);
	free(cfg->tls_ca_file);
	free(cfg->tls_fingerprint);
	for (i = 0; i < cfg->ndomains; i++)
		config_domain_clear(&cfg->domains[i]);
	free(cfg->domains);
	domhash_free(&cfg->dindex);
	domtree_free(&cfg->dtree);
	free(cfg->dsorted);
	free(cfg);
}

/* ---- the parser ---- */

static void config_section_end(struct config_ctx *ctx)
{
	if (ctx->cur == NULL)
		return;
	if (ctx->cur == &ctx->scratch)
		config_domain_clear(&ctx->scratch);
	else
		ctx->lifetime_set[ctx->cur - ctx->cfg->domains] =
		    ctx->dlifetime_set;
	ctx->dlifetime_set = 0;
	memset(ctx->dseen, 0, CONFIG_NKEYS * sizeof(*ctx->dseen));
}

static void config_section(struct config_ctx *ctx, char *line)
{
	struct config *cfg = ctx->cfg;
	char *end, *p, *word, *name;
	size_t i;

	config_section_end(ctx);
	end = line + strlen(line) - 1;
	if (*end != ']') {
		config_error(ctx, "bad section header (expected [domain NAME])");
		goto reject;
	}
	*end = '\0';
	p = config_trim(line + 1);
	word = strsep(&p, " \t");
	while (p != NULL && (*p == ' ' || *p == '\t'))
		p++;
	name = p == NULL ? NULL : config_trim(p);
	if (strcmp(word, "domain") != 0) {
		config_error(ctx, "unknown section type '%s' (expected "
		    "[domain NAME])", word);
		goto reject;
	}
	if (name == NULL || *name == '\0' || strpbrk(name, " \t") != NULL) {
		config_error(ctx, "bad section header (expected [domain NAME])");
		goto reject;
	}
	if (config_domain_normalize(name) < 0) {
		config_error(ctx, "bad domain name '%s'", name);
		goto reject;
	}
	/* The name index makes this check, and every lookup, O(1). */
	if (cfg->dindex == NULL)
		cfg->dindex = domhash_new();
	if (domhash_get(cfg->dindex, name, &i)) {
		config_error(ctx, "duplicate section [domain %s] "
		    "(first at line %d)", name, cfg->domains[i].line);
		goto reject;
	}
	domhash_put(cfg->dindex, name, cfg->ndomains);
	/* Doubling: one more element each time would copy the whole array
	 * per section (quadratic in the number of domains). */
	if ((cfg->ndomains & (cfg->ndomains - 1)) == 0) {
		size_t cap = cfg->ndomains ? cfg->ndomains * 2 : 1;

		cfg->domains = xreallocarray(cfg->domains, cap,
		    sizeof(*cfg->domains));
		ctx->lifetime_set = xreallocarray(ctx->lifetime_set, cap,
		    sizeof(*ctx->lifetime_set));
	}
	ctx->lifetime_set[cfg->ndomains] = 0;
	config_domain_init(&cfg->domains[cfg->ndomains], name, ctx->line, cfg);
	ctx->cur = &cfg->domains[cfg->ndomains++];
	return;
reject:
	/* Keys of a rejected header land in scratch: still checked. (Set
	 * up only then: 50,000 good sections need no scratch.) */
	config_domain_init(&ctx->scratch, "", ctx->line, cfg);
	ctx->cur = &ctx->scratch;
}

static void config_keyvalue(struct config_ctx *ctx, char *line)
{
	const struct config_key *k;
	char *eq, *key, *value;
	size_t idx;
	int *seen;
	void *field;

	if ((eq = strchr(line, '=')) == NULL) {
		config_error(ctx, "missing '=' (expected 'key = value')");
		return;
	}
	*eq = '\0';
	key = config_trim(line);
	value = config_trim(eq + 1);
	if (*key == '\0') {
		config_error(ctx, "missing key before '='");
		return;
	}
	if ((k = config_key_find(key, &idx)) == NULL) {
		config_error(ctx, "unknown key '%s'", key);
		return;
	}
	if (ctx->cur == NULL && !(k->scope & CONFIG_GLOBAL)) {
		config_error(ctx, "key '%s' is only allowed in a [domain] "
		    "section", key);
		return;
	}
	if (ctx->cur != NULL && !(k->scope & CONFIG_DOMAIN)) {
		config_error(ctx, "global key '%s' inside a [domain] section "
		    "(global keys go before the first section)", key);
		return;
	}
	seen = ctx->cur == NULL ? ctx->gseen : ctx->dseen;
	if (seen[idx] != 0) {
		/* spec.md names a duplicate section, not a repeated key, as
		 * an error: as in Postfix's main.cf the last value counts
		 * (a file of defaults with overrides appended works). The
		 * recipient lists add up, so repeating them stays an error. */
		if (strncmp(key, "recipients", 10) == 0) {
			config_error(ctx, "duplicate key '%s' (first at line "
			    "%d)", key, seen[idx]);
			return;
		}
		log_warn("%s:%d: '%s' given again (first at line %d): this "
		    "value is used", ctx->file, ctx->line, key, seen[idx]);
	}
	seen[idx] = ctx->line;
	if (ctx->cur == NULL && strcmp(key, "run_as_user") == 0)
		ctx->cfg->run_as_user_set = 1;
	if (ctx->cur == NULL && strcmp(key, "smtp_listen") == 0)
		ctx->cfg->smtp_listen_set = 1;
	if (ctx->cur == NULL && strcmp(key, "odmr_listen") == 0)
		ctx->cfg->odmr_listen_set = 1;
	if (ctx->cur == NULL)
		field = (char *)ctx->cfg + k->goff;
	else
		field = (char *)ctx->cur + k->doff;
	k->set(ctx, field, key, value);
}

/* Remove a comment: '#' at the start or after white space. */
static void config_strip_comment(char *s)
{
	char *p;

	for (p = s; *p != '\0'; p++) {
		if (*p == '#' && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			return;
		}
	}
}

static void config_parse_line(struct config_ctx *ctx, char *buf)
{
	char *line;

	config_strip_comment(buf);
	line = config_trim(buf);
	if (*line == '\0')
		return;
	if (*line == '[')
		config_section(ctx, line);
	else
		config_keyvalue(ctx, line);
}

/* Line where a global key was set, 0 if it was not. */
static int config_gline(const struct config_ctx *ctx, const char *name)
{
	size_t i;

	if (config_key_find(name, &i) == NULL)
		log_panic("config: no key %s", name);
	return ctx->gseen[i];
}

/* Relative paths in the file are relative to the file's directory (as a
 * production server's are): the daemon's working directory does not matter. */
static void config_rebase(struct config_ctx *ctx, char **path)
{
	char *p;

	if (*path == NULL || (*path)[0] == '/' || (*path)[0] == '\0' ||
	    ctx->dir == NULL)
		return;
	p = xasprintf("%s/%s", ctx->dir, *path);
	free(*path);
	*path = p;
}

/* A domain that pins certificates must have pins (its own or global). */
static void config_check_tls(struct config_ctx *ctx,
    const struct config_domain *d)
{
	if (d->tls == TLSPOLICY_FINGERPRINT && d->tls_fingerprint == NULL &&
	    ctx->cfg->tls_fingerprint == NULL) {
		ctx->line = d->line;
		config_error(ctx, "domain %s: tls = fingerprint needs "
		    "tls_fingerprint", d->name);
	}
}

/* 1 for "127.x.x.x[:port]" and "[::1]:port" / "::1". */
static int config_loopback_server(const char *s)
{
	return strncmp(s, "127.", 4) == 0 || strcmp(s, "::1") == 0 ||
	    strncmp(s, "[::1]", 5) == 0;
}

/*
 * DANE trusts the AD bit, which means something only from a validating
 * resolver that nobody on the path can forge: one on loopback.
 */
static void config_check_dane(struct config_ctx *ctx)
{
	const struct config *cfg = ctx->cfg;
	int line = 0;
	size_t i;

	if (cfg->tls == TLSPOLICY_DANE || cfg->tls == TLSPOLICY_DANE_ONLY)
		line = config_gline(ctx, "tls");
	for (i = 0; i < cfg->ndomains && line == 0; i++)
		if (cfg->domains[i].tls == TLSPOLICY_DANE ||
		    cfg->domains[i].tls == TLSPOLICY_DANE_ONLY)
			line = cfg->domains[i].line;
	if (line == 0)
		return;
	for (i = 0; i < cfg->dns_servers.n; i++)
		if (!config_loopback_server(cfg->dns_servers.v[i]))
			break;
	if (cfg->dns_servers.n == 0 || i < cfg->dns_servers.n) {
		ctx->line = line;
		config_error(ctx, "tls = dane needs dns_servers on loopback "
		    "only (a validating resolver such as unbound on 127.0.0.1)");
	}
}

/* Checks that involve several keys, after the whole file was read. */
static void config_finish(struct config_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	struct sockaddr_un sun;
	size_t i;

	if ((cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL)) {
		ctx->line = config_gline(ctx, cfg->tls_cert_file != NULL ?
		    "tls_cert_file" : "tls_key_file");
		config_error(ctx, "tls_cert_file and tls_key_file must be set "
		    "together");
	}
	if (cfg->odmrs_listen.n > 0 && cfg->tls_cert_file == NULL) {
		ctx->line = config_gline(ctx, "odmrs_listen");
		config_error(ctx, "odmrs_listen needs tls_cert_file and "
		    "tls_key_file");
	}
	if (cfg->retry_max < cfg->retry_min) {
		ctx->line = config_gline(ctx, "retry_max");
		if (ctx->line == 0)
			ctx->line = config_gline(ctx, "retry_min");
		config_error(ctx, "retry_max (%lds) is less than retry_min (%lds)",
		    cfg->retry_max, cfg->retry_min);
	}
	if (cfg->hostname == NULL)
		cfg->hostname = xstrdup(config_system_hostname());
	config_rebase(ctx, &cfg->queue_dir);
	config_rebase(ctx, &cfg->passwd_file);
	config_rebase(ctx, &cfg->control_socket);
	config_rebase(ctx, &cfg->tls_cert_file);
	config_rebase(ctx, &cfg->tls_key_file);
	config_rebase(ctx, &cfg->tls_ca_file);
	config_rebase(ctx, &cfg->notify_ca_file);
	if (cfg->control_socket == NULL) {
		cfg->control_socket = xasprintf("%s/control.sock",
		    cfg->queue_dir);
		if (strlen(cfg->control_socket) >= sizeof(sun.sun_path)) {
			ctx->line = config_gline(ctx, "queue_dir");
			config_error(ctx, "default control socket '%s' is too "
			    "long for a Unix socket: set control_socket",
			    cfg->control_socket);
		}
	}
	/* Domains inherit the global lifetime unless they set their own. */
	for (i = 0; i < cfg->ndomains; i++) {
		if (!ctx->lifetime_set[i])
			cfg->domains[i].queue_lifetime = cfg->queue_lifetime;
		strlist_sort_unique(&cfg->domains[i].recipients);
		config_rebase(ctx, &cfg->domains[i].tls_ca_file);
		config_rebase(ctx, &cfg->domains[i].notify_ca_file);
		config_domain_inherit(&cfg->domains[i], cfg);
		config_check_tls(ctx, &cfg->domains[i]);
	}
	config_check_dane(ctx);
	if (cfg->tls == TLSPOLICY_FINGERPRINT && cfg->tls_fingerprint == NULL) {
		ctx->line = config_gline(ctx, "tls");
		config_error(ctx, "tls = fingerprint needs tls_fingerprint");
	}
}

/*
 * The label order of the sections (config_domains_under), built with the
 * file (on the reload thread at a reload): ETRN @name then reads only the
 * sections it flushes.
 */
static void config_build_tree(struct config *cfg)
{
	const char **names;

	if (cfg->ndomains == 0)
		return;
	names = xcalloc(cfg->ndomains, sizeof(*names));
	for (size_t i = 0; i < cfg->ndomains; i++)
		names[i] = cfg->domains[i].name;
	cfg->dtree = domtree_new(names, cfg->ndomains);
	/* And the name order (config_domain_sorted): the daemon's domain
	 * list comes sorted, so that odrelayctl need not sort 50,000. */
	cfg->dsorted = xcalloc(cfg->ndomains, sizeof(*cfg->dsorted));
	for (size_t i = 0; i < cfg->ndomains; i++)
		cfg->dsorted[i] = i;
	domtree_sort(names, cfg->dsorted, cfg->ndomains);
	free(names);
}

const struct config_domain *config_domain_sorted(const struct config *cfg,
    size_t i)
{
	if (i >= cfg->ndomains)
		return NULL;
	return &cfg->domains[cfg->dsorted != NULL ? cfg->dsorted[i] : i];
}

static struct config *config_load_part(const char *path,
    config_error_fn *errfn, void *arg, int global_only)
{
	struct config_ctx ctx;
	FILE *fp;
	char *buf = NULL, *slash;
	size_t cap = 0;
	ssize_t n;
	int gseen[CONFIG_NKEYS], dseen[CONFIG_NKEYS];

	memset(&ctx, 0, sizeof(ctx));
	memset(gseen, 0, sizeof(gseen));
	memset(dseen, 0, sizeof(dseen));
	ctx.file = path;
	ctx.errfn = errfn;
	ctx.errarg = arg;
	ctx.gseen = gseen;
	ctx.dseen = dseen;
	if ((fp = fopen(path, "r")) == NULL) {
		config_error(&ctx, "cannot open: %s", strerror(errno));
		return NULL;
	}
	ctx.cfg = config_new();
	ctx.cfg->path = xstrdup(path);
	if ((slash = strrchr(path, '/')) != NULL)
		ctx.dir = xstrndup(path, (size_t)(slash - path) + (slash == path));
	while ((n = getline(&buf, &cap, fp)) != -1) {
		ctx.line++;
		if (n > CONFIG_LINE_MAX) {
			config_error(&ctx, "line too long (over %d bytes)",
			    CONFIG_LINE_MAX);
			continue;
		}
		if ((size_t)n != strlen(buf)) {
			config_error(&ctx, "NUL byte in line");
			continue;
		}
		if (global_only && buf[strspn(buf, " \t")] == '[')
			break;
		config_parse_line(&ctx, buf);
	}
	if (ferror(fp)) {
		config_error(&ctx, "read error: %s", strerror(errno));
	}
	free(buf);
	fclose(fp);
	config_section_end(&ctx);
	config_finish(&ctx);
	free(ctx.dir);
	free(ctx.lifetime_set);
	if (ctx.nerrors > 0) {
		config_free(&ctx.cfg);
		return NULL;
	}
	config_build_tree(ctx.cfg);
	return ctx.cfg;
}

struct config *config_load(const char *path, config_error_fn *errfn, void *arg)
{
	return config_load_part(path, errfn, arg, 0);
}

struct config *config_load_global(const char *path, config_error_fn *errfn,
    void *arg)
{
	return config_load_part(path, errfn, arg, 1);
}

/* ---- lookups ---- */

const struct config_domain *config_domain_by_name(const struct config *cfg,
    const char *name)
{
	size_t i, len = strlen(name);

	/* The index, unless the domain list was built by hand (tests). */
	if (cfg->dindex != NULL && domhash_count(cfg->dindex) == cfg->ndomains)
		return domhash_get(cfg->dindex, name, &i) ? &cfg->domains[i] : NULL;
	/* Tolerate one trailing dot, as in the file. */
	if (len > 1 && name[len - 1] == '.')
		len--;
	for (i = 0; i < cfg->ndomains; i++)
		if (strncasecmp(cfg->domains[i].name, name, len) == 0 &&
		    cfg->domains[i].name[len] == '\0')
			return &cfg->domains[i];
	return NULL;
}

static int config_size_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* name as the sections are written: lower case, no trailing dot; 0 if
 * it does not fit. */
static int config_plain_name(const char *name, char *buf, size_t size)
{
	size_t len;

	if (util_strlcpy(buf, name, size) < 0)
		return 0;
	len = strlen(buf);
	if (len > 1 && buf[len - 1] == '.')
		buf[--len] = '\0';
	util_lowercase(buf);
	return 1;
}

size_t config_domains_under(const struct config *cfg, const char *name,
    size_t **idx_r)
{
	size_t n = 0;

	*idx_r = NULL;
	if (cfg->dtree != NULL && domtree_count(cfg->dtree) == cfg->ndomains) {
		const size_t *v;

		n = domtree_under(cfg->dtree, name, &v);
		if (n > 0) {
			*idx_r = xreallocarray(NULL, n, sizeof(**idx_r));
			memcpy(*idx_r, v, n * sizeof(*v));
			qsort(*idx_r, n, sizeof(**idx_r), config_size_cmp);
		}
		return n;
	} else {
		/* A list built by hand (tests): the walk. */
		char buf[256];
		size_t nl;

		if (!config_plain_name(name, buf, sizeof(buf)) ||
		    (nl = strlen(buf)) == 0)
			return 0;
		for (size_t i = 0; i < cfg->ndomains; i++) {
			const char *cn = cfg->domains[i].name;
			size_t dl = strlen(cn);

			if (strcmp(cn, buf) != 0 && !(dl > nl &&
			    cn[dl - nl - 1] == '.' && strcmp(cn + dl - nl, buf) == 0))
				continue;
			if ((n & (n - 1)) == 0)
				*idx_r = xreallocarray(*idx_r, n ? n * 2 : 1,
				    sizeof(**idx_r));
			(*idx_r)[n++] = i;
		}
	}
	return n;
}

const struct config_domain *config_find_domain(const struct config *cfg,
    const char *domain)
{
	const struct config_domain *d;
	const char *p;

	if (*domain == '\0')
		return NULL;
	if ((d = config_domain_by_name(cfg, domain)) != NULL)
		return d;
	/* Nearest parent first: a.b.example.org, then b.example.org, ... */
	for (p = strchr(domain, '.'); p != NULL; p = strchr(p + 1, '.')) {
		if (p[1] == '\0')
			break;
		d = config_domain_by_name(cfg, p + 1);
		if (d != NULL && d->subdomains)
			return d;
	}
	return NULL;
}

static int config_bsearch_cmp(const void *key, const void *elem)
{
	return strcmp(key, *(char *const *)elem);
}

int config_recipient_allowed(const struct config_domain *dom, const char *addr)
{
	char buf[CONFIG_RCPT_MAX];
	const char *at;

	if (!dom->has_recipient_list)
		return 1;
	if (dom->recipients.n == 0)
		return 0;
	if (util_strlcpy(buf, addr, sizeof(buf)) < 0)
		return 0;
	util_lowercase(buf);
	if (bsearch(buf, dom->recipients.v, dom->recipients.n,
	    sizeof(*dom->recipients.v), config_bsearch_cmp) != NULL)
		return 1;
	if ((at = strrchr(buf, '@')) == NULL)
		return 0;
	return bsearch(at, dom->recipients.v, dom->recipients.n,
	    sizeof(*dom->recipients.v), config_bsearch_cmp) != NULL;
}
