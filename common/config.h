/*
 * config - odrelay.conf(5): parse, validate, look up domains.
 *
 * struct config is a plain value object (read-only after config_load), not
 * an opaque handle: every module reads its settings straight from it, and a
 * reload builds a new one and swaps the pointer. Strings are owned by the
 * config and live until config_free().
 */
#ifndef OD_CONFIG_H
#define OD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct domhash;
struct domtree;

struct strlist {
	char **v;		/* owned strings */
	size_t n;
};

struct config_domain {
	char *name;		/* lower case, no trailing dot */
	int line;		/* line of the [domain] header */
	int hold;		/* 1: keep until ETRN/ATRN/flush; 0: backup MX */
	int subdomains;		/* also accept *.name */
	char *route;		/* NULL: MX lookup; else as written */
	char *route_host;	/* host name or IP (brackets removed) */
	int route_port;		/* 25 unless given */
	int etrn;		/* ETRN allowed */
	struct strlist recipients;	/* lower-cased; "@dom" = whole domain */
	char *recipients_file;
	int has_recipient_list;	/* recipients or recipients_file was set */
	uint64_t max_queue_size;	/* bytes, per-domain quota */
	long queue_lifetime;	/* seconds */
	/* Knowing the recipients (relay/recip.c). The verify_* and learn_*
	 * values are inherited from the global ones unless set here. */
	int recipients_learn;	/* "learn" in recipients */
	int verify_probe;	/* verify_recipients = probe */
	int verify_unknown;	/* 1: tempfail, 0: accept */
	long verify_timeout;
	long verify_positive_ttl;
	long verify_negative_ttl;
	long learn_ttl;
	long learn_negative_ttl;
	/* Webhook overrides; NULL/0 = the global value. */
	char *notify_url;
	char *notify_ca_file;
	long notify_interval;
	int milters_none;	/* milters = none: never filtered */
	/* Outbound TLS (common/tlspolicy.h); -1/NULL = the global value. */
	int tls;		/* enum tlspolicy_mode */
	char *tls_ca_file;
	char *tls_fingerprint;
};

/* milter_default_action */
enum config_milter_default {
	CONFIG_MILTER_TEMPFAIL = 0,
	CONFIG_MILTER_ACCEPT,
	CONFIG_MILTER_REJECT
};

struct config {
	int refs;		/* config_ref/config_unref; sessions hold one */
	char *path;
	char *hostname;
	char *postmaster;	/* where <Postmaster> goes; NULL: postmaster@hostname */
	char *queue_dir;
	struct strlist smtp_listen;	/* "addr:port" / "[v6]:port" */
	struct strlist odmr_listen;
	struct strlist odmrs_listen;
	char *control_socket;
	struct strlist metrics_listen;
	char *tls_cert_file;
	char *tls_key_file;
	int auth_requires_tls;
	long auth_delay_max;	/* seconds; cap of the AUTH failure delay */
	char *passwd_file;
	uint64_t max_message_size;
	unsigned max_recipients;
	unsigned max_connections;
	unsigned max_connections_per_ip;
	long smtp_timeout;	/* seconds */
	long queue_lifetime;
	long delay_warning;	/* 0 = off */
	long retry_min;
	long retry_max;
	struct strlist dns_servers;	/* empty: /etc/resolv.conf */
	struct strlist proxy_interfaces;	/* "addr:port": NAT/proxy addresses of
					 * this relay, never delivered to */
	int delivery_port;
	char *run_as_user;
	int run_as_user_set;	/* named in the file (else the default) */
	int smtp_listen_set;	/* same for smtp_listen and odmr_listen: */
	int odmr_listen_set;	/* a default that cannot bind only warns */
	int log_level;		/* enum log_level */
	/* Extensions to spec.md (documented in odrelay.conf(5)). */
	uint64_t queue_map_size;	/* LMDB map size [4G] */
	uint64_t queue_min_free;	/* file system kept free of new mail [64M] */
	unsigned max_received;		/* Received headers before 554 5.4.6 [100] */
	unsigned max_errors;		/* protocol errors before 421 [20] */
	unsigned etrn_rate;		/* ETRN per client IP per minute [10] */
	unsigned atrn_rate;		/* ATRN per user per minute [10] */
	unsigned max_deliveries;	/* outbound connections in total [20] */
	unsigned max_deliveries_per_dest; /* per destination [4] */
	long delivery_timeout;		/* delivery: reply deadline, seconds [300] */
	long delivery_session_limit;	/* delivery: no new message after [1h], 0 = off */
	long smtp_session_limit;	/* SMTP session / ODMR before AUTH [1h], 0 = off */
	/* Knowing the recipients: defaults for every domain section. */
	int verify_unknown;		/* 1: tempfail (450 4.1.1), 0: accept */
	long verify_timeout;		/* [10s] */
	long verify_positive_ttl;	/* [30d] */
	long verify_negative_ttl;	/* [3h] */
	long learn_ttl;			/* [180d] */
	long learn_negative_ttl;	/* [30d] */
	unsigned verify_cache_size;	/* addresses kept [100000] */
	/* Push delivery (XWAIT, webhooks). */
	long odmr_wait_timeout;		/* seconds an XWAIT lasts [25m] */
	unsigned max_waiting;		/* XWAIT sessions in all [10000] */
	unsigned max_waiting_per_user;	/* ... of one ATRN user [20] */
	char *notify_url;		/* https:// webhook, or NULL */
	char *notify_ca_file;		/* NULL: system store */
	long notify_interval;		/* seconds [60] */
	/* Gatekeeper: DNS blocklists and milters (odrelay.conf(5)). */
	struct strlist dnsbl;		/* "LIST[=CODES]" items, checked */
	int dnsbl_action;		/* enum dnsbl_action [reject] */
	struct strlist dnsbl_allow;	/* CIDR networks never checked */
	long dnsbl_timeout;		/* seconds [5] */
	struct strlist milters;		/* "inet:IP:PORT" / "unix:PATH" */
	int milter_default_action;	/* enum config_milter_default */
	long milter_connect_timeout;	/* seconds [30] */
	long milter_command_timeout;	/* seconds [30] */
	long milter_content_timeout;	/* seconds [300] */
	int milter_reuse;		/* keep filter connections (QUIT_NC) [no] */
#define CONFIG_MILTER_POOL_MAX	64	/* idle ones kept, all filters */
	/* Outbound TLS policy (common/tlspolicy.h); domains may override. */
	int tls;			/* enum tlspolicy_mode [may] */
	char *tls_ca_file;		/* NULL: system store */
	char *tls_fingerprint;		/* "sha256:HEX ..." or NULL */
	int mta_sts_port;		/* MTA-STS policy server port [443] */

	struct config_domain *domains;
	size_t ndomains;
	struct domhash *dindex;	/* name -> index into domains (private) */
	struct domtree *dtree;	/* the names in label order (private) */
	size_t *dsorted;	/* indexes in name order (private) */
};

/* Called once per problem with "FILE:LINE: message" (no newline). */
typedef void config_error_fn(void *arg, const char *msg);

/*
 * Parse and validate path. Returns a new config, or NULL when there was any
 * error (each reported through errfn; errfn may be NULL). Also loads every
 * recipients_file.
 */
struct config *config_load(const char *path, config_error_fn *errfn, void *arg);
/*
 * Only the global part of path (the lines before the first section, where
 * global keys must be): what a tool needing the queue directory, the
 * control socket or the password file reads without setting up 50,000
 * domain sections. That part is checked as by config_load; the sections
 * are not read (ndomains is 0).
 */
struct config *config_load_global(const char *path, config_error_fn *errfn,
    void *arg);
/* A config with every default and no domains (for tests and tools). */
struct config *config_defaults(void);
/*
 * Reference counting: each long-lived user (a session) takes a reference so
 * that a SIGHUP reload can swap configs without freeing one in use.
 * config_free() is config_unref(): it frees on the last reference and sets
 * *cfg to NULL.
 */
struct config *config_ref(struct config *cfg);
void config_free(struct config **cfg);
#define config_unref config_free
/*
 * The daemon frees big configurations off its event loop: with a reaper
 * set, the last config_free of one with CONFIG_REAP_MIN domains or more
 * hands it to fn (which must call config_destroy, from any thread).
 */
#define CONFIG_REAP_MIN 1000
typedef void config_reaper_fn(struct config *cfg);
void config_set_reaper(config_reaper_fn *fn);
/* Frees cfg now, whatever its references. */
void config_destroy(struct config *cfg);

/*
 * The domain section that accepts mail for `domain` (already lower case, no
 * trailing dot): an exact match, or a parent with subdomains = yes. NULL if
 * none. The pointer is borrowed from cfg.
 */
const struct config_domain *config_find_domain(const struct config *cfg,
    const char *domain);
/*
 * The sections named `name` or under it, whole labels (ETRN @name: name
 * and *.name; case and one trailing dot as config_domain_by_name): their
 * indexes into cfg->domains in the file's order, in *idx_r (the caller
 * frees it; NULL when none). Returns how many. O(log n + k).
 */
size_t config_domains_under(const struct config *cfg, const char *name,
    size_t **idx_r);
/*
 * The i-th section in name order (strcmp of the lower-case names), or
 * NULL past the last; in the file's order for a list built by hand.
 */
const struct config_domain *config_domain_sorted(const struct config *cfg,
    size_t i);
/* The section named exactly `name` (case-insensitive), or NULL. */
const struct config_domain *config_domain_by_name(const struct config *cfg,
    const char *name);
/*
 * 1 if addr (local@domain, domain lower case) passes dom's recipient list
 * (always 1 when the domain has none), else 0.
 */
int config_recipient_allowed(const struct config_domain *dom, const char *addr);

/* Parsers shared with odpull's configuration: 0 ok, -1 bad. */
int config_parse_size(const char *s, uint64_t *bytes_r);
int config_parse_duration(const char *s, long *seconds_r);
int config_parse_bool(const char *s, int *b_r);

void strlist_add(struct strlist *l, const char *s);
void strlist_free(struct strlist *l);

#endif
