/*
 * odrelayctl_private - what odrelayctl's files share: exit codes, limits,
 * message states and per-domain totals. Only queue/odrelayctl*.c include it.
 */
#ifndef OD_ODRELAYCTL_PRIVATE_H
#define OD_ODRELAYCTL_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "queue.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#ifndef OD_VERSION
#define OD_VERSION "unknown"
#endif

#define CTL_DEFAULT_CONFIG SYSCONFDIR "/odrelay/odrelay.conf"
#define CTL_MAX_HEADERS	(256 * 1024)	/* header block shown by "show" */
#define CTL_REPLY_MAX	1024

/* Exit status (spec.md). */
#define CTL_EXIT_OK		0
#define CTL_EXIT_FAIL		1
#define CTL_EXIT_USAGE		2

enum ctl_state { CTL_HELD, CTL_DEFERRED, CTL_DELIVERING, CTL_QUARANTINED,
	CTL_NSTATES };
struct ctl_dom {
	char *name;
	int configured, hold;
	uint64_t messages, bytes;
	time_t oldest;		/* arrival of the oldest queued message, 0 none */
	int oldest_unknown;	/* oldest still to be looked up */
	time_t last_atrn;	/* last successful ATRN pull, 0 never */
	time_t last_etrn;	/* last accepted ETRN, 0 never */
};

struct ctl_doms {
	struct ctl_dom *v;
	size_t n, cap;
	struct domhash *idx;	/* name -> index: 50,000 domains stay fast */
};

/* Shared between the odrelayctl files (internal, not an interface). */
extern const char *ctl_state_names[CTL_NSTATES];
extern int ctl_only_quarantined;	/* "quarantine": list only those */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int ctl_usage(void);
void ctl_put_text(FILE *fp, const char *s);
void ctl_put_cell(FILE *fp, const char *s, int width);
void ctl_json_str(FILE *fp, const char *s);
int ctl_finish_output(int status);
/* 1: a word fit for a control line / a well-formed domain name. */
int ctl_word_arg_ok(const char *d);
int ctl_domain_arg_ok(const char *d);
int ctl_domain_arg(char *d);
/* The global part of the configuration; ctl_config_full: all of it
 * (with the domain sections). NULL when not usable (reported). */
const struct config *ctl_config(void);
const struct config *ctl_config_full(void);
/* A domain's mode as odrelayd applies it (see odrelayctl.c). */
#define CTL_MODE_NONE	0	/* not configured */
#define CTL_MODE_RELAY	1
#define CTL_MODE_HOLD	2
int ctl_domain_mode(const char *domain);
/* Every configured domain, sorted by name (lower case, strcmp): their
 * number in *n_r, then ctl_configured_name/mode(0 .. n-1). 0, or -1
 * (reported). */
int ctl_configured_load(size_t *n_r);
void ctl_configured_prefetch(void);
const char *ctl_configured_name(size_t i);
int ctl_configured_mode(size_t i);
const char *ctl_control_path(const struct config *cfg, char *buf,
    size_t size);
struct queue *ctl_open_ro(const struct config *cfg);
/* queue_open (rdonly 0) or queue_open_readonly, its notices logged. */
struct queue *ctl_queue_open(const struct config *cfg, int rdonly,
    char *err, size_t errlen);
struct ctl_dom *ctl_doms_get(struct ctl_doms *ds, const char *name);
int ctl_dom_cmp(const void *a, const void *b);
void ctl_doms_free(struct ctl_doms *ds);
void ctl_doms_facts(struct queue *q, struct ctl_doms *ds);
void ctl_dom_facts_json(const struct ctl_dom *d, time_t now);
void ctl_dom_json(const struct ctl_dom *d, int modes, int first, time_t now);
void ctl_dom_row(const struct ctl_dom *d, const char *mode, time_t now);
int ctl_cmd_queue(int argc, char **argv);
int ctl_cmd_show(int argc, char **argv);
int ctl_daemon_absent(const char *path);
int ctl_control(const char *line, int quiet_absent);
int ctl_cmd_delete(int argc, char **argv);
int ctl_cmd_stats(int argc, char **argv);
int ctl_cmd_compact(int argc, char **argv);
int ctl_cmd_passwd(int argc, char **argv);
int ctl_cmd_recipients(int argc, char **argv);

#endif
