/*
 * config_private - what the configuration parser's files share: the
 * parse context, the key table's row type and setter type, defaults and
 * limits. Only common/config.c and common/config_set.c include it;
 * everyone else uses config.h.
 */
#ifndef OD_CONFIG_PRIVATE_H
#define OD_CONFIG_PRIVATE_H

#include <stddef.h>

#include "config.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

#define CONFIG_LINE_MAX		65536	/* longer lines are an error */
#define CONFIG_HOST_MAX		256
#define CONFIG_RCPT_MAX		1024	/* longest recipient we compare */

/* Fixed like Postfix's /var/spool/postfix (spec.md), whatever the prefix;
 * contrib/odrelay.tmpfiles creates it for the systemd unit. */
#define CONFIG_DEF_QUEUE_DIR	"/var/spool/odrelay"
#define CONFIG_DEF_SMTP_LISTEN	"0.0.0.0:25 [::]:25"
#define CONFIG_DEF_ODMR_LISTEN	"0.0.0.0:366 [::]:366"
#define CONFIG_DEF_PASSWD	SYSCONFDIR "/odrelay/passwd"
#define CONFIG_DEF_RUN_AS	"odrelay"

struct config_ctx;

typedef int config_set_fn(struct config_ctx *, void *field, const char *key,
    const char *value);

enum config_scope {
	CONFIG_GLOBAL = 1,
	CONFIG_DOMAIN = 2,
	CONFIG_BOTH = 3
};

struct config_key {
	const char *name;
	enum config_scope scope;
	config_set_fn *set;
	size_t goff;		/* offset in struct config */
	size_t doff;		/* offset in struct config_domain */
};

struct config_ctx {
	struct config *cfg;
	const char *file;	/* name used in messages */
	int line;
	int nerrors;
	config_error_fn *errfn;
	void *errarg;
	char *dir;		/* directory of the config file */
	struct config_domain *cur;	/* NULL: global section */
	struct config_domain scratch;	/* target of a rejected section */
	int *gseen;		/* line where each global key was set */
	int *dseen;		/* same, for the current section */
	int dlifetime_set;	/* current section set queue_lifetime */
	int *lifetime_set;	/* per domain, parallel to cfg->domains */
	size_t nlifetime;
};

/* Shared between the config files (internal, not an interface). */
void config_error(struct config_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int config_domain_normalize(char *s);
int config_set_str(struct config_ctx *ctx, void *field, const char *key,
    const char *value);
int config_set_optstr(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_mailbox(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_hostname(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_socket(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_metrics_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_smtp_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_odmr_listen(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_dns_servers(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_size(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_size0(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_map_size(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_duration(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_duration0(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_lifetime(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_uint(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_port(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_bool(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_verify_unknown(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_verify(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_tls(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_tls_fingerprint(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_log_level(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_route(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_recipients(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
char *config_trim(char *s);
int config_set_recipients_file(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_notify_url(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_dnsbl(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_cidrs(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_dnsbl_action(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_milters(struct config_ctx *ctx, void *field,
    const char *key, const char *value);
int config_set_milter_action(struct config_ctx *ctx, void *field,
    const char *key, const char *value);

#endif
