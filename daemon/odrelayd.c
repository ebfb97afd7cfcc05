/*
 * odrelayd - the on-demand mail relay daemon: wires the modules together,
 * owns the event loop, signals, privilege drop and reload.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "authc.h"
#include "config.h"
#include "control.h"
#include "deliver.h"
#include "dns.h"
#include "domstate.h"
#include "dnsbl.h"
#include "fdbudget.h"
#include "log.h"
#include "metrics.h"
#include "cfgload.h"
#include "milter.h"
#include "notify.h"
#include "odmr.h"
#include "precheck.h"
#include "qadmin.h"
#include "privsep.h"
#include "queue.h"
#include "rcache.h"
#include "sts.h"
#include "stscache.h"
#include "tlsfind.h"
#include "recip.h"
#include "sched.h"
#include "sandbox.h"
#include "smtpc.h"
#include "smtpd.h"
#include "tls.h"
#include "tlspolicy.h"
#include "util.h"
#include "watch.h"
#include "xmalloc.h"
#include "turnwatch.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

#define DRAIN_SECONDS 30	/* SIGTERM: how long sessions may finish */

struct daemon {
	struct event_base *base;
	struct config *cfg;
	const char *cfg_path;
	struct queue *q;
	struct domstate *domstate;
	struct dns *dns;
	struct dnsbl *dnsbl;
	struct sched *sched;
	struct smtpd *smtpd;
	struct odmr *odmr;
	struct fdbudget *budget;	/* connections on all listeners */
	unsigned long nofile;		/* the descriptor limit it is from */
	struct notify *notify;
	struct metrics **metrics;
	size_t nmetrics;
	uint64_t cfg_gen;	/* reloads so far (a scrape spans several turns) */
	struct cfgload *cfgload;	/* SIGHUP: the file parsed on a thread */
	int reload_again;	/* a SIGHUP came during the parse */
	int rl_cert_fd, rl_key_fd, rl_via_helper;	/* for the parse's end */
	char *rl_tls_err;
	struct {
		const char *name;
		uint64_t max;
	} *rl_q;		/* quotas to set at the swap (reload_prepare) */
	size_t rl_nq;
	struct control *control;
	struct privsep *ps;
	struct authc *auth;
	int dropped;		/* started as root, now run_as_user */
	struct rcache *rcache;
	struct stscache *stscache;
	struct sts *sts;
	struct recip *recip;
	struct qadmin *qadmin;
	SSL_CTX *server_tls;
	SSL_CTX *client_tls;
	struct event *ev_term, *ev_int, *ev_hup, *ev_drain;
	int stopping;
	int pending_shutdowns;
};

static void usage(FILE *out, int status)
{
	fprintf(out, "usage: odrelayd [-c FILE] [-f] [-n] [-d] [-V] [-h]\n"
	    "  -c FILE  configuration file [%s]\n"
	    "  -f       stay in the foreground, log to stderr\n"
	    "  -n       check the configuration and the files it names, then exit\n"
	    "  -d       debug logging\n"
	    "  -V       print the version\n"
	    "  -h       this help (also --help)\n"
	    "See odrelayd(8) and odrelay.conf(5).\n",
	    SYSCONFDIR "/odrelay/odrelay.conf");
	exit(status);
}

static void print_config_error(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "%s\n", msg);
}

static void log_config_error(void *arg, const char *msg)
{
	(void)arg;
	log_error("reload: %s", msg);
}

/* Server TLS context, or NULL when no certificate is configured. */
static int load_server_tls(const struct config *cfg, SSL_CTX **ctx_r)
{
	char err[256];

	*ctx_r = NULL;
	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL)
		return 0;
	/* A missing or unreadable file gets its strerror, not OpenSSL's. */
	if (precheck_tls(cfg, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	*ctx_r = tls_server_ctx(cfg->tls_cert_file, cfg->tls_key_file, err,
	    sizeof(err));
	if (*ctx_r == NULL) {
		log_error("tls: %s", err);
		return -1;
	}
	return 0;
}

/*
 * The SMTP listener offers AUTH after STARTTLS when the ODMR listener is
 * on or the password file exists (the auth process reads it, not us).
 */
static void smtpd_auth(struct daemon *d)
{
	struct stat st;

	smtpd_set_auth(d->smtpd, d->odmr != NULL ||
	    stat(d->cfg->passwd_file, &st) == 0 ? d->auth : NULL);
}

/* The privileged helper restarted the auth process. */
static void on_auth_fd(void *arg, int fd)
{
	struct daemon *d = arg;

	authc_set_fd(d->auth, fd);
}

/*
 * "domains": the configured domains and their modes as this daemon runs
 * them, "250-NAME hold|relay" each, in name order (strcmp, as odrelayctl
 * wants them: it checks instead of sorting), then "250 N domains"
 * (odrelayctl stats and queue: 50,000 sections are read here in a few ms
 * instead of parsed again by each odrelayctl). A slice at a time; a
 * reload in the middle ends the answer with a 451 (the list it walked is
 * gone).
 */
#define CONTROL_DOMAINS_SLICE 25000	/* about 0.5 ms */

struct domlist {
	struct daemon *d;
	uint64_t gen;
	size_t next;
};

static int control_domains_slice(void *arg, struct evbuffer *out)
{
	struct domlist *dl = arg;
	const struct config *cfg = dl->d->cfg;
	char buf[16384];
	size_t end, fill = 0;

	if (dl->gen != dl->d->cfg_gen) {
		evbuffer_add_printf(out, "451 configuration reloaded meanwhile, "
		    "ask again\n");
		return 0;
	}
	end = dl->next + CONTROL_DOMAINS_SLICE;
	if (end > cfg->ndomains)
		end = cfg->ndomains;
	/* Lines gathered in buf, not printf'd one by one: the whole list
	 * of 50,000 costs about a millisecond. */
	for (; dl->next < end; dl->next++) {
		const struct config_domain *cd = config_domain_sorted(cfg,
		    dl->next);
		size_t len = strlen(cd->name);

		if (fill + len + 16 > sizeof(buf)) {
			evbuffer_add(out, buf, fill);
			fill = 0;
		}
		memcpy(buf + fill, "250-", 4);
		memcpy(buf + fill + 4, cd->name, len);
		fill += 4 + len;
		memcpy(buf + fill, cd->hold ? " hold\n" : " relay\n",
		    cd->hold ? 6 : 7);
		fill += cd->hold ? 6 : 7;
	}
	evbuffer_add(out, buf, fill);
	if (dl->next < cfg->ndomains)
		return 1;
	evbuffer_add_printf(out, "250 %zu domains\n", cfg->ndomains);
	return 0;
}

static void control_domains(struct daemon *d, struct control_req *req)
{
	struct domlist *dl = xcalloc(1, sizeof(*dl));

	dl->d = d;
	dl->gen = d->cfg_gen;
	control_req_stream(req, control_domains_slice, dl, free);
}

/* "domain NAME": "250 hold" or "250 relay", "550 not configured". */
static void control_domain(struct daemon *d, const char *name,
    struct control_req *req)
{
	const struct config_domain *cd;

	if (*name == '\0') {
		control_req_reply(req, "501 usage: domain NAME");
		return;
	}
	if ((cd = config_domain_by_name(d->cfg, name)) == NULL)
		control_req_reply(req, "550 not configured");
	else
		control_req_reply(req, "250 %s", cd->hold ? "hold" : "relay");
}

/*
 * "waiting": the configured domains with XWAIT sessions now (odrelayctl
 * queue), one "250-DOMAIN=N" line each, then "250 N domains". Made from
 * what odmr holds (O(domains waited for), bounded by the sessions, not
 * by the configuration), in one piece when asked, and sent in slices.
 */
struct waitlist {
	struct daemon *d;
	struct evbuffer *lines;
	size_t n;
};

static void control_waiting_add(void *arg, const char *domain, size_t n)
{
	struct waitlist *wl = arg;

	/* odmr may hold a domain a reload has removed: not listed. */
	if (n == 0 || config_domain_by_name(wl->d->cfg, domain) == NULL)
		return;
	evbuffer_add_printf(wl->lines, "250-%s=%zu\n", domain, n);
	wl->n++;
}

static int control_waiting_slice(void *arg, struct evbuffer *out)
{
	struct waitlist *wl = arg;

	/* 64 KiB a turn (about 2,000 lines), moved, not copied. */
	if (evbuffer_remove_buffer(wl->lines, out, 65536) > 0 &&
	    evbuffer_get_length(wl->lines) > 0)
		return 1;
	evbuffer_add_printf(out, "250 %zu domains\n", wl->n);
	return 0;
}

static void control_waiting_free(void *arg)
{
	struct waitlist *wl = arg;

	evbuffer_free(wl->lines);
	free(wl);
}

static void control_waiting(struct daemon *d, struct control_req *req)
{
	struct waitlist *wl = xcalloc(1, sizeof(*wl));

	wl->d = d;
	if ((wl->lines = evbuffer_new()) == NULL) {
		free(wl);
		control_req_reply(req, "451 out of memory");
		return;
	}
	if (d->odmr != NULL)
		odmr_foreach_waiting(d->odmr, control_waiting_add, wl);
	control_req_stream(req, control_waiting_slice, wl,
	    control_waiting_free);
}

/* Push delivery: committed mail wakes XWAIT sessions (queue hook). */
static void on_arrival(void *arg, const char *domain)
{
	struct daemon *d = arg;

	if (d->odmr != NULL)
		odmr_arrived(d->odmr, domain);
	notify_arrived(d->notify, domain);
}

/*
 * The quota of the section named like old's i-th (same place in an
 * unchanged file: no look-up), or 0 when the section is gone.
 */
static uint64_t quota_in(const struct config *cfg, const struct config *old,
    size_t i)
{
	const struct config_domain *cd;

	if (i < cfg->ndomains &&
	    strcmp(cfg->domains[i].name, old->domains[i].name) == 0)
		return cfg->domains[i].max_queue_size;
	cd = config_domain_by_name(cfg, old->domains[i].name);
	return cd != NULL ? cd->max_queue_size : 0;
}

/* A quota to set at the swap (names borrowed from the two
 * configurations, both alive until then). */
static void quota_change(struct daemon *d, const char *name, uint64_t max)
{
	if ((d->rl_nq & (d->rl_nq - 1)) == 0)
		d->rl_q = xreallocarray(d->rl_q, d->rl_nq ? d->rl_nq * 2 : 1,
		    sizeof(*d->rl_q));
	d->rl_q[d->rl_nq].name = name;
	d->rl_q[d->rl_nq++].max = max;
}

/*
 * On the cfgload thread: the quotas that differ between the file in use
 * and the new one (a quota dropped with its section goes back to 0,
 * none), so that the swap on the loop sets only those; 50,000 unchanged
 * sections cost a string comparison each, off the loop.
 */
static void reload_prepare(void *arg, const struct config *ncfg)
{
	struct daemon *d = arg;
	const struct config *old = d->cfg;

	d->rl_nq = 0;
	for (size_t i = 0; i < old->ndomains; i++)
		if (quota_in(ncfg, old, i) == 0 &&
		    old->domains[i].max_queue_size != 0)
			quota_change(d, old->domains[i].name, 0);
	for (size_t i = 0; i < ncfg->ndomains; i++)
		if (quota_in(old, ncfg, i) != ncfg->domains[i].max_queue_size)
			quota_change(d, ncfg->domains[i].name,
			    ncfg->domains[i].max_queue_size);
}

/* The domains' quotas into the queue: all at start, the changes found by
 * reload_prepare at a reload. */
static void apply_quotas(struct daemon *d, int reload)
{
	const struct config *cfg = d->cfg;

	queue_set_min_free(d->q, cfg->queue_min_free);
	if (reload) {
		for (size_t i = 0; i < d->rl_nq; i++)
			queue_set_quota(d->q, d->rl_q[i].name, d->rl_q[i].max);
		d->rl_nq = 0;
		return;
	}
	for (size_t i = 0; i < cfg->ndomains; i++)
		queue_set_quota(d->q, cfg->domains[i].name,
		    cfg->domains[i].max_queue_size);
}

/*
 * After the drop, run_as_user may not read the TLS key: the helper opens
 * the files (tls_* < 0: read them here). tls_err: the helper could not.
 */
static int reload_tls(struct config *ncfg, int cert_fd, int key_fd,
    const char *tls_err, int via_helper, SSL_CTX **ctx_r)
{
	char err[256];

	*ctx_r = NULL;
	if (!via_helper)
		return load_server_tls(ncfg, ctx_r);
	if (tls_err != NULL) {
		log_error("tls: %s", tls_err);
		return -1;
	}
	if (ncfg->tls_cert_file == NULL || ncfg->tls_key_file == NULL)
		return 0;
	if (cert_fd < 0) {
		log_error("tls: the files changed while reloading");
		return -1;
	}
	*ctx_r = tls_server_ctx_fd(cert_fd, key_fd, ncfg->tls_cert_file,
	    ncfg->tls_key_file, err, sizeof(err));
	if (*ctx_r == NULL) {
		log_error("tls: %s", err);
		return -1;
	}
	return 0;
}

/* Milters, deliveries or listeners changed what a session costs and what
 * is kept back: the budget follows, or sessions run out of descriptors. */
static void reload_budget(struct daemon *d)
{
	size_t n = fdbudget_sessions(d->cfg, d->nofile);

	if (d->budget == NULL || n == fdbudget_limit(d->budget))
		return;
	fdbudget_set_limit(d->budget, n);
	log_info("descriptors: limit %lu, %zu reserved, %zu client "
	    "connections on all listeners (reload)", d->nofile,
	    fdbudget_reserve(d->cfg), n);
}

static void reload_close_fds(struct daemon *d)
{
	if (d->rl_cert_fd >= 0)
		close(d->rl_cert_fd);
	if (d->rl_key_fd >= 0)
		close(d->rl_key_fd);
	d->rl_cert_fd = d->rl_key_fd = -1;
	free(d->rl_tls_err);
	d->rl_tls_err = NULL;
}

static void start_reload(struct daemon *d);

/* The file is parsed (on the cfgload thread): swap it in, on the loop. */
static void reload_parsed(void *arg, struct config *ncfg)
{
	struct daemon *d = arg;
	struct config *old;
	SSL_CTX *ntls;
	int rc;

	if (ncfg == NULL) {
		log_error("reload: %s has errors, keeping the old configuration",
		    d->cfg_path);
		reload_close_fds(d);
		goto again;
	}
	rc = reload_tls(ncfg, d->rl_cert_fd, d->rl_key_fd, d->rl_tls_err,
	    d->rl_via_helper, &ntls);
	reload_close_fds(d);
	if (rc < 0) {
		log_error("reload: TLS setup failed, keeping the old configuration");
		config_free(&ncfg);
		goto again;
	}
	log_set_level(ncfg->log_level);
	/* The auth process reads the password file first: odmr_reload then
	 * asks it about each logged-in user, on the same ordered channel. */
	authc_reload(d->auth);
	smtpd_reload(d->smtpd, ncfg, ntls);
	if (d->odmr != NULL)
		odmr_reload(d->odmr, ncfg, ntls);
	sched_reload(d->sched, ncfg);
	notify_reload(d->notify, ncfg);
	recip_reload(d->recip, ncfg);
	if (d->server_tls != NULL)
		SSL_CTX_free(d->server_tls);
	d->server_tls = ntls;
	old = d->cfg;
	d->cfg = ncfg;
	d->cfg_gen++;
	apply_quotas(d, 1);
	config_free(&old);
	reload_budget(d);
	smtpd_auth(d);
	log_info("reload: configuration %s loaded, %zu domains", d->cfg_path,
	    d->cfg->ndomains);
again:
	/* A SIGHUP during the parse: the file may have changed since. */
	if (d->reload_again && !d->stopping) {
		d->reload_again = 0;
		start_reload(d);
	}
}

/* The file is parsed on a thread (50,000 domains take ~0.1 s); the TLS
 * files, if any, wait for the result. */
static void reload_fds(struct daemon *d, int cert_fd, int key_fd,
    const char *tls_err, int via_helper)
{
	if (cfgload_busy(d->cfgload)) {
		if (cert_fd >= 0)
			close(cert_fd);
		if (key_fd >= 0)
			close(key_fd);
		d->reload_again = 1;
		log_info("reload: still reading the file; reloading again after");
		return;
	}
	d->rl_cert_fd = cert_fd;
	d->rl_key_fd = key_fd;
	d->rl_tls_err = tls_err != NULL ? xstrdup(tls_err) : NULL;
	d->rl_via_helper = via_helper;
	d->rl_nq = 0;
	if (cfgload_start(d->cfgload, d->cfg_path, log_config_error,
	    reload_prepare, reload_parsed, d) < 0)
		reload_close_fds(d);
}

static void reload(struct daemon *d)
{
	reload_fds(d, -1, -1, NULL, 0);
}

static void reload_with_tls_files(void *arg, int cert_fd, int key_fd,
    const char *err)
{
	reload_fds(arg, cert_fd, key_fd, err, 1);
}

static void start_reload(struct daemon *d)
{
	/* Dropped from root: the TLS files come from the helper. */
	if (d->dropped) {
		if (privsep_tls_files(d->ps, reload_with_tls_files, d) < 0)
			log_warn("reload: already in progress or the "
			    "privileged helper is gone");
		return;
	}
	reload(d);
}

static void shutdown_part_done(void *arg)
{
	struct daemon *d = arg;

	if (--d->pending_shutdowns == 0)
		event_base_loopexit(d->base, NULL);
}

static void drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)what;
	log_warn("shutdown: sessions still open after %d s, closing them",
	    DRAIN_SECONDS);
	event_base_loopexit(d->base, NULL);
}

static void begin_shutdown(struct daemon *d)
{
	struct timeval tv = { DRAIN_SECONDS, 0 };

	if (d->stopping)
		return;
	d->stopping = 1;
	log_info("shutdown: stopping listeners");
	control_free(&d->control);
	sched_shutdown(d->sched);
	d->pending_shutdowns = 1;
	if (d->odmr != NULL) {
		d->pending_shutdowns++;
		odmr_shutdown(d->odmr, shutdown_part_done, d);
	}
	smtpd_shutdown(d->smtpd, shutdown_part_done, d);
	d->ev_drain = evtimer_new(d->base, drain_timeout, d);
	evtimer_add(d->ev_drain, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	(void)what;
	if (sig == SIGHUP) {
		log_info("reload: SIGHUP received");
		start_reload(d);
		return;
	}
	log_info("shutdown: signal %d received", (int)sig);
	begin_shutdown(d);
}

/* A message out of quarantine: non-held mail goes out at once. */
struct released {
	struct daemon *d;
	char id[QUEUE_ID_LEN + 1];
};

static void released_cb(void *arg, int result)
{
	struct released *rl = arg;

	if (result == QUEUE_OK && rl->d->sched != NULL)
		sched_message_added(rl->d->sched, rl->id);
	free(rl);
}

/* Control socket verbs; flush and bounce go to the scheduler. */
/* A control reply that waits until the queue writes before it are done. */
struct control_later {
	struct control_req *req;
	char line[512];
};

static void control_reply_later(void *arg, int result)
{
	struct control_later *cl = arg;

	if (result != QUEUE_OK && cl->line[0] == '2')
		control_req_reply(cl->req, "451 %s", queue_strerror(result));
	else
		control_req_reply(cl->req, "%s", cl->line);
	free(cl);
}

static void control_after_writes(struct daemon *d, struct control_req *req,
    const char *line)
{
	struct control_later *cl = xcalloc(1, sizeof(*cl));

	cl->req = req;
	util_strlcpy(cl->line, line, sizeof(cl->line));
	queue_barrier(d->q, control_reply_later, cl);
}

/* "recipients-forget DOMAIN [ADDRESS]": clear what the relay knows. */
static void recip_control_forget(struct daemon *d, const char *cmdarg,
    struct control_req *req)
{
	char dom[300], addr[300], reply[512];
	int n;

	n = sscanf(cmdarg, "%299s %299s", dom, addr);
	if (n < 1 || config_domain_by_name(d->cfg, dom) == NULL) {
		control_req_reply(req, "501 usage: recipients-forget DOMAIN "
		    "[ADDRESS] (a configured domain)");
		return;
	}
	util_lowercase(dom);
	rcache_forget(d->rcache, dom, n == 2 ? addr : NULL, NULL, NULL);
	log_info("recip: %.100s%s%.100s forgotten by odrelayctl", dom,
	    n == 2 ? " " : "", n == 2 ? addr : "");
	snprintf(reply, sizeof(reply), "250 %.100s: %s forgotten", dom,
	    n == 2 ? "address" : "every address");
	control_after_writes(d, req, reply);
}

/* Control socket verbs; flush and bounce go to the scheduler. */
static void on_control(void *arg, const char *cmd, const char *cmdarg,
    struct control_req *req)
{
	struct daemon *d = arg;
	struct queue_envelope *env = NULL;
	char reply[512];

	if (strcmp(cmd, "flush") == 0) {
		if (*cmdarg == '\0') {
			control_req_reply(req, "501 usage: flush DOMAIN");
			return;
		}
		sched_flush(d->sched, cmdarg, reply, sizeof(reply));
		control_req_reply(req, "%s", reply);
	} else if (strcmp(cmd, "bounce") == 0) {
		if (!queue_id_valid(cmdarg)) {
			control_req_reply(req, "501 bad queue id");
			return;
		}
		sched_bounce(d->sched, cmdarg, reply, sizeof(reply));
		control_after_writes(d, req, reply);
	} else if (strcmp(cmd, "delete") == 0) {
		if (!queue_id_valid(cmdarg)) {
			control_req_reply(req, "501 bad queue id");
		} else if (queue_is_leased(d->q, cmdarg)) {
			control_req_reply(req, "450 %s is being delivered", cmdarg);
		} else if (queue_get(d->q, cmdarg, &env) != 1) {
			control_req_reply(req, "550 %s: no such message", cmdarg);
		} else {
			queue_delete(d->q, cmdarg, NULL, NULL);
			log_info("%s: removed by odrelayctl", cmdarg);
			snprintf(reply, sizeof(reply), "250 %s deleted", cmdarg);
			control_after_writes(d, req, reply);
		}
		queue_envelope_free(&env);
	} else if (strcmp(cmd, "release") == 0) {
		if (!queue_id_valid(cmdarg)) {
			control_req_reply(req, "501 bad queue id");
		} else if (queue_get(d->q, cmdarg, &env) != 1) {
			control_req_reply(req, "550 %s: no such message", cmdarg);
		} else if (!(env->flags & QUEUE_F_QUARANTINE)) {
			control_req_reply(req, "550 %s is not quarantined", cmdarg);
		} else {
			struct released *rl = xcalloc(1, sizeof(*rl));

			rl->d = d;
			util_strlcpy(rl->id, cmdarg, sizeof(rl->id));
			queue_release(d->q, cmdarg, released_cb, rl);
			log_info("%s: released from quarantine by odrelayctl",
			    cmdarg);
			snprintf(reply, sizeof(reply), "250 %s released", cmdarg);
			control_after_writes(d, req, reply);
		}
		queue_envelope_free(&env);
	} else if (strcmp(cmd, "recipients-forget") == 0) {
		recip_control_forget(d, cmdarg, req);
	} else if (strcmp(cmd, "stats") == 0) {
		char line[7900];

		control_req_reply(req, "250 %s", metrics_format_line(line,
		    sizeof(line)));
	} else if (strcmp(cmd, "waiting") == 0) {
		control_waiting(d, req);
	} else if (strcmp(cmd, "domains") == 0) {
		control_domains(d, req);
	} else if (strcmp(cmd, "domain") == 0) {
		control_domain(d, cmdarg, req);
	} else if (qadmin_control(d->qadmin, cmd, cmdarg, req)) {
		/* compact, compact-status: answered */
	} else {
		control_req_reply(req, "500 unknown command");
	}
}

/*
 * Switch to run_as_user: temporarily (effective ids only, so the queue is
 * created with the right owner) or for good once the listeners are bound.
 */
/* The queue reports what it met (it never logs); the daemon logs it.
 * Its notice levels are in the order of log.h's. */
_Static_assert((int)QUEUE_NOTICE_DEBUG == (int)LOG_LEVEL_DEBUG &&
    (int)QUEUE_NOTICE_WARN == (int)LOG_LEVEL_WARNING, "notice levels");
static void queue_notice_log(void *arg, enum queue_notice_level level,
    const char *text)
{
	(void)arg;
	log_at((enum log_level)level, "%s", text);
}

static void become_user(const struct config *cfg, int permanent)
{
	struct passwd *pw;

	pw = getpwnam(cfg->run_as_user);
	if (pw == NULL && !cfg->run_as_user_set) {
		/* The default user of an installation that has not created
		 * it (a build tree, a test): say so loudly, do not refuse. */
		if (permanent)
			log_warn("run_as_user odrelay does not exist: running as "
			    "root; create the user (see README) or set run_as_user");
		return;
	}
	if (pw == NULL)
		log_fatal(1, "run_as_user %s: no such user", cfg->run_as_user);
	if (pw->pw_uid == 0) {
		/* An explicit choice (the demo); never the default. */
		if (permanent)
			log_warn("run_as_user is %s: running with root privileges",
			    cfg->run_as_user);
		return;
	}
	if (!permanent) {
		if (mkdir(cfg->queue_dir, 0700) == 0)
			log_info("queue: created directory %s", cfg->queue_dir);
		else if (errno != EEXIST)
			log_fatal(1, "mkdir %s: %s", cfg->queue_dir, strerror(errno));
		if (chown(cfg->queue_dir, pw->pw_uid, pw->pw_gid) < 0)
			log_fatal(1, "chown %s: %s", cfg->queue_dir, strerror(errno));
		if (setegid(pw->pw_gid) < 0 || seteuid(pw->pw_uid) < 0)
			log_fatal(1, "cannot act as %s: %s", cfg->run_as_user,
			    strerror(errno));
		return;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0)
		log_fatal(1, "cannot become %s: %s", cfg->run_as_user,
		    strerror(errno));
	if (setuid(0) == 0)
		log_fatal(1, "privileges could not be dropped");
	log_info("running as %s", cfg->run_as_user);
}

/*
 * Gauges for /metrics, a slice per call: queue contents per domain, open
 * sessions, the other per-domain facts, capacity. A reload in mid-scrape
 * ends the per-domain lines there (the list they walk is gone) rather
 * than repeat or mix domains.
 */
static int gauges(void *arg, struct metrics_cursor *cur, struct evbuffer *out)
{
	static const enum watch_family fam[] = { WATCH_MESSAGES, WATCH_BYTES,
	    0, WATCH_OLDEST, WATCH_LAST_ATRN, WATCH_LAST_ETRN };
	struct daemon *d = arg;

	if (cur->part == 0 && cur->index == 0)
		cur->tag = d->cfg_gen;
	while (evbuffer_get_length(out) < METRICS_SLICE) {
		if (cur->part == 2) {
			evbuffer_add_printf(out, "# HELP odrelay_sessions Open sessions, by listener.\n"
			    "# TYPE odrelay_sessions gauge\n"
			    "odrelay_sessions{listener=\"smtp\"} %zu\n"
			    "odrelay_sessions{listener=\"odmr\"} %zu\n"
			    "# HELP odrelay_xwait_sessions ODMR sessions waiting for mail (XWAIT).\n"
			    "# TYPE odrelay_xwait_sessions gauge\n"
			    "odrelay_xwait_sessions %zu\n"
			    "# HELP odrelay_deliveries_active Outbound delivery connections running.\n"
			    "# TYPE odrelay_deliveries_active gauge\n"
			    "odrelay_deliveries_active %zu\n",
			    smtpd_session_count(d->smtpd),
			    d->odmr ? odmr_session_count(d->odmr) : (size_t)0,
			    d->odmr ? odmr_waiting_count(d->odmr) : (size_t)0,
			    sched_active(d->sched));
			qadmin_gauges(d->qadmin, out);
		} else if (cur->part < sizeof(fam) / sizeof(fam[0])) {
			if (cur->tag == d->cfg_gen && !watch_family(out,
			    METRICS_SLICE, fam[cur->part], d->cfg, d->q,
			    d->domstate, &cur->index))
				return 1;
		} else {
			watch_capacity(out, d->cfg, d->q);
			return 0;
		}
		cur->part++;
		cur->index = 0;
	}
	return 1;
}

/*
 * A listener the file names must bind (else exit 1). The built-in
 * defaults (0.0.0.0 and [::] on ports 25 and 366) may not all be possible
 * (no IPv6, no root for port 366): those only warn, as long as one SMTP
 * listener is up.
 */
/*
 * One connection budget for the SMTP and ODMR listeners, from the
 * descriptor limit (raised to the hard limit first), less what the queue,
 * DNS, deliveries and the control socket need (issue 17).
 */
static void start_budget(struct daemon *d)
{
	unsigned long nofile;
	int raised = fdbudget_raise_nofile(&nofile) == 0;

	d->nofile = nofile;
	d->budget = fdbudget_new(fdbudget_sessions(d->cfg, nofile));
	smtpd_set_budget(d->smtpd, d->budget);
	if (d->odmr != NULL)
		odmr_set_budget(d->odmr, d->budget);
	log_info("descriptors: limit %lu%s, %zu reserved, %zu client "
	    "connections on all listeners", nofile, raised ? "" :
	    " (could not raise it to the hard limit)",
	    fdbudget_reserve(d->cfg), fdbudget_limit(d->budget));
}

static void listen_all(struct daemon *d)
{
	char err[256];
	const struct config *cfg = d->cfg;
	size_t smtp_up = 0;

	for (size_t i = 0; i < cfg->smtp_listen.n; i++) {
		if (smtpd_listen(d->smtpd, cfg->smtp_listen.v[i], err,
		    sizeof(err)) == 0) {
			smtp_up++;
			log_info("smtpd: listening on %s", cfg->smtp_listen.v[i]);
		} else if (cfg->smtp_listen_set)
			log_fatal(1, "smtp_listen %s: %s", cfg->smtp_listen.v[i], err);
		else
			log_warn("smtp_listen (default) %s: %s", cfg->smtp_listen.v[i],
			    err);
	}
	if (smtp_up == 0 && cfg->smtp_listen.n > 0)
		log_fatal(1, "no SMTP listener could be opened");
	/* d->odmr exists when either ODMR list is non-empty. */
	for (size_t i = 0; d->odmr != NULL && i < cfg->odmr_listen.n; i++) {
		if (odmr_listen(d->odmr, cfg->odmr_listen.v[i], 0, err,
		    sizeof(err)) == 0)
			continue;	/* odmr_listen logs it */
		if (cfg->odmr_listen_set)
			log_fatal(1, "odmr_listen %s: %s", cfg->odmr_listen.v[i], err);
		log_warn("odmr_listen (default) %s: %s; set odmr_listen to choose "
		    "(empty disables ODMR)", cfg->odmr_listen.v[i], err);
	}
	for (size_t i = 0; d->odmr != NULL && i < cfg->odmrs_listen.n; i++) {
		if (odmr_listen(d->odmr, cfg->odmrs_listen.v[i], 1, err,
		    sizeof(err)) < 0)
			log_fatal(1, "odmrs_listen %s: %s", cfg->odmrs_listen.v[i], err);
	}
	/* Metrics do not depend on ODMR: a pure backup MX has them too. */
	for (size_t i = 0; i < cfg->metrics_listen.n; i++) {
		struct metrics *m = metrics_listen(d->base, cfg->metrics_listen.v[i],
		    gauges, d, err, sizeof(err));

		if (m == NULL)
			log_fatal(1, "metrics_listen %s: %s", cfg->metrics_listen.v[i], err);
		d->metrics = xreallocarray(d->metrics, d->nmetrics + 1,
		    sizeof(*d->metrics));
		d->metrics[d->nmetrics++] = m;	/* metrics_listen logs it */
	}
}

/*
 * Without -f: go to the background. The parent returns only once the
 * daemon is ready (listeners and control socket up: exit 0) or has failed
 * to start (its exit status: 1 runtime, 2 configuration), so scripts can
 * rely on it. The daemon leaves the caller's session and its standard
 * descriptors (it logs to syslog), before any helper process is forked,
 * so none keeps a caller's pipe open. Returns the write end of the
 * readiness pipe in the daemon.
 */
static int daemonize(void)
{
	int p[2], fd;
	pid_t pid;

	/* Descriptors 0-2 taken first: a pipe end among them would be
	 * replaced by /dev/null below and the caller never told. */
	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= STDERR_FILENO)
		;
	if (fd > STDERR_FILENO)
		close(fd);
	if (pipe(p) < 0) {
		fprintf(stderr, "odrelayd: pipe: %s\n", strerror(errno));
		exit(1);
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "odrelayd: fork: %s\n", strerror(errno));
		exit(1);
	}
	if (pid > 0) {
		close(p[1]);
		for (;;) {
			struct pollfd pfd = { .fd = p[0], .events = POLLIN };
			int st, code;
			char c;

			if (poll(&pfd, 1, 200) > 0 && read(p[0], &c, 1) == 1)
				_exit(0);
			/* No byte: the daemon died (or a helper still holds
			 * the pipe), so ask for its status. */
			if (waitpid(pid, &st, pfd.revents & POLLHUP ? 0 :
			    WNOHANG) != pid)
				continue;
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
			fprintf(stderr, "odrelayd: start-up failed (exit %d); "
			    "the reason is in the mail log (syslog), or run "
			    "with -f to see it\n", code);
			_exit(code == 0 ? 1 : code);
		}
	}
	close(p[0]);
	(void)setsid();
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		(void)dup2(fd, STDIN_FILENO);
		(void)dup2(fd, STDOUT_FILENO);
		(void)dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	return p[1];
}

int main(int argc, char **argv)
{
	struct daemon d;
	const char *cfg_path = SYSCONFDIR "/odrelay/odrelay.conf";
	int foreground = 0, check_only = 0, debug = 0, ch, ready_fd = -1;
	char err[512];

	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};

	memset(&d, 0, sizeof(d));
	/* --help and --version anywhere, as -h and -V ("-f --help" was an
	 * invalid option). */
	while ((ch = getopt_long(argc, argv, "c:fndVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': cfg_path = optarg; break;
		case 'f': foreground = 1; break;
		case 'n': check_only = 1; break;
		case 'd': debug = 1; break;
		case 'V':
			printf("odrelayd %s\n", OD_VERSION);
			return 0;
		case 'h': usage(stdout, 0); break;
		default: usage(stderr, 2);
		}
	}
	if (optind != argc)
		usage(stderr, 2);

	d.cfg_path = cfg_path;
	d.cfg = config_load(cfg_path, print_config_error, NULL);
	if (d.cfg == NULL)
		return 2;
	if (check_only) {
		int bad = precheck_all(d.cfg, print_config_error, NULL);

		bad += privsep_check_layout(d.cfg, print_config_error, NULL);

		if (bad == 0)
			printf("odrelayd: %s: configuration OK, %zu domains, "
			    "queue %s\n", cfg_path, d.cfg->ndomains,
			    d.cfg->queue_dir);
		config_free(&d.cfg);
		return bad ? 2 : 0;
	}
	if (!foreground)
		ready_fd = daemonize();
	log_init("odrelayd", foreground, debug ? LOG_LEVEL_DEBUG : d.cfg->log_level);
	turnwatch_init();
	signal(SIGPIPE, SIG_IGN);
	/* First, while nothing else is open: the privileged helper and the
	 * auth process, the only ones to read the password file. */
	{
		int status;

		struct stat st;

		/* ODMR needs the file; an existing one turns on SMTP AUTH
		 * (smtpd_auth): either way a broken file stops the start,
		 * rather than an auth process that can never run. */
		d.ps = privsep_start(cfg_path, d.cfg,
		    d.cfg->odmr_listen.n > 0 || d.cfg->odmrs_listen.n > 0 ||
		    stat(d.cfg->passwd_file, &st) == 0,
		    &status, err, sizeof(err));
		if (d.ps == NULL)
			log_fatal(status, "%s", err);
	}
	if (evthread_use_pthreads() < 0)
		log_fatal(1, "libevent without pthreads support");
	d.base = event_base_new();
	if (d.base == NULL)
		log_fatal(1, "event_base_new failed");
	d.auth = authc_new(d.base);
	authc_set_fd(d.auth, privsep_first_auth_fd(d.ps));
	privsep_attach(d.ps, d.base, on_auth_fd, &d);
	if (load_server_tls(d.cfg, &d.server_tls) < 0)
		log_fatal(2, "TLS configuration failed");
	d.client_tls = tls_client_ctx(NULL, 0, err, sizeof(err));
	if (d.client_tls == NULL)
		log_fatal(1, "TLS client: %s", err);
	if (tlspolicy_ctx_setup(d.client_tls) < 0)
		log_fatal(1, "TLS client: cannot enable DANE");

	/*
	 * As root, the queue files must belong to run_as_user: open it under
	 * that effective id, bind the listeners as root, then drop for good.
	 */
	if (geteuid() == 0)
		become_user(d.cfg, 0);
	else if (mkdir(d.cfg->queue_dir, 0700) == 0)
		log_info("queue: created directory %s", d.cfg->queue_dir);
	d.q = queue_open(d.cfg->queue_dir, d.base, d.cfg->queue_map_size, err,
	    sizeof(err));
	/* Back to root first: exiting with mixed ids upsets LeakSanitizer. */
	if (getuid() == 0 && (seteuid(0) < 0 || setegid(0) < 0))
		log_fatal(1, "seteuid(0): %s", strerror(errno));
	/* A format we do not understand is a configuration matter (2); a
	 * queue we cannot open (permissions, disk) a runtime failure (1). */
	if (d.q == NULL)
		log_fatal(strstr(err, "version") != NULL ? 2 : 1, "queue %s: %s",
		    d.cfg->queue_dir, err);
	/* What the open repaired or upgraded, and from now on the rest. */
	queue_set_notice_hook(d.q, queue_notice_log, NULL);
	queue_notices_flush(d.q);
	apply_quotas(&d, 0);
	d.qadmin = qadmin_new(d.base, d.q);
	d.domstate = domstate_open(d.q, err, sizeof(err));
	if (d.domstate == NULL)
		log_fatal(1, "queue %s: %s", d.cfg->queue_dir, err);
	domstate_set_default(d.domstate);
	d.dns = dns_new(d.base, (const char *const *)d.cfg->dns_servers.v,
	    d.cfg->dns_servers.n, 5000, err, sizeof(err));
	if (d.dns == NULL)
		log_fatal(1, "dns: %s", err);
	d.rcache = rcache_open(d.q, d.cfg->verify_cache_size, err, sizeof(err));
	if (d.rcache == NULL)
		log_fatal(1, "queue %s: %s", d.cfg->queue_dir, err);
	d.stscache = stscache_open(d.q, err, sizeof(err));
	if (d.stscache == NULL)
		log_fatal(1, "queue %s: %s", d.cfg->queue_dir, err);
	d.sts = sts_new(d.base, d.dns, d.stscache);
	tlsfind_set_sts(d.sts);
	d.recip = recip_new(d.base, d.cfg, d.rcache, d.dns);
	deliver_set_recip(d.recip);
	d.sched = sched_new(d.base, d.cfg, d.q, d.dns, d.client_tls);
	d.smtpd = smtpd_new(d.base, d.cfg, d.q, d.server_tls);
	smtpd_set_recip(d.smtpd, d.recip);
	d.dnsbl = dnsbl_new(d.base, d.dns);
	smtpd_set_dnsbl(d.smtpd, d.dnsbl);
	if (d.cfg->odmr_listen.n > 0 || d.cfg->odmrs_listen.n > 0) {
		d.odmr = odmr_new(d.base, d.cfg, d.q, d.server_tls, err, sizeof(err));
		if (d.odmr == NULL)
			log_fatal(2, "%s", err);
		odmr_set_auth(d.odmr, d.auth);
	}
	smtpd_auth(&d);
	start_budget(&d);
	listen_all(&d);
	if (getuid() == 0) {
		become_user(d.cfg, 1);
		d.dropped = getuid() != 0;
	}
	(void)sandbox_session();
	smtpd_set_etrn_handler(d.smtpd, sched_etrn, d.sched);
	smtpd_set_added_handler(d.smtpd, sched_message_added, d.sched);
	d.notify = notify_new(d.base, d.cfg, d.q);
	queue_set_arrival_hook(d.q, on_arrival, &d);
	d.control = control_new(d.base, d.cfg->control_socket, on_control, &d,
	    err, sizeof(err));
	if (d.control == NULL)
		log_fatal(1, "control socket %s: %s", d.cfg->control_socket, err);
	/* From here on the session process writes only below the queue. */
	(void)sandbox_session_paths(d.cfg->queue_dir, d.cfg->control_socket);
	log_info("control: listening on %s", d.cfg->control_socket);

	d.ev_term = evsignal_new(d.base, SIGTERM, on_signal, &d);
	d.ev_int = evsignal_new(d.base, SIGINT, on_signal, &d);
	d.ev_hup = evsignal_new(d.base, SIGHUP, on_signal, &d);
	d.cfgload = cfgload_new(d.base);
	d.rl_cert_fd = d.rl_key_fd = -1;
	evsignal_add(d.ev_term, NULL);
	evsignal_add(d.ev_int, NULL);
	evsignal_add(d.ev_hup, NULL);
	log_info("odrelayd %s started, queue %s, %zu domains", OD_VERSION,
	    d.cfg->queue_dir, d.cfg->ndomains);
	if (ready_fd >= 0) {
		/* The caller of odrelayd (without -f) may return now. */
		(void)!write(ready_fd, "1", 1);
		close(ready_fd);
	}

	turnwatch_dispatch(d.base);

	/* Sessions are gone or timed out; nothing unacknowledged is kept. */
	smtpd_free(&d.smtpd);
	milter_pool_free();
	dnsbl_free(&d.dnsbl);
	if (d.odmr != NULL)
		odmr_free(&d.odmr);
	fdbudget_free(&d.budget);
	notify_free(&d.notify);
	for (size_t i = 0; i < d.nmetrics; i++)
		metrics_free(&d.metrics[i]);
	free(d.metrics);
	sched_free(&d.sched);
	deliver_set_recip(NULL);
	recip_free(&d.recip);
	rcache_close(&d.rcache);
	tlsfind_set_sts(NULL);
	sts_free(&d.sts);
	stscache_close(&d.stscache);
	dns_free(&d.dns);
	control_free(&d.control);
	domstate_close(&d.domstate);
	/* The helper first: it ends the auth process, then exits. */
	privsep_free(&d.ps);
	authc_free(&d.auth);
	queue_close(&d.q);
	qadmin_free(&d.qadmin);
	if (d.ev_drain != NULL)
		event_free(d.ev_drain);
	event_free(d.ev_term);
	event_free(d.ev_int);
	event_free(d.ev_hup);
	cfgload_free(&d.cfgload);
	reload_close_fds(&d);
	free(d.rl_q);
	if (d.server_tls != NULL)
		SSL_CTX_free(d.server_tls);
	SSL_CTX_free(d.client_tls);
	config_free(&d.cfg);
	tls_linger_free_all();
	smtpc_close_all(d.base);
	event_base_free(d.base);
	log_info("odrelayd stopped");
	return 0;
}
