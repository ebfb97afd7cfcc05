/*
 * metrics - process-wide counters and the /metrics HTTP endpoint.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "log.h"
#include "metrics.h"
#include "util.h"
#include "xmalloc.h"

#define METRICS_LABELS 24	/* distinct labels per counter */

struct metric_def {
	const char *name;
	const char *label_name;	/* NULL: no label */
	const char *help;
};

static const struct metric_def metric_defs[METRIC_COUNT] = {
	[METRIC_RECEIVED] = { "odrelay_messages_received_total", NULL,
	    "Messages accepted and stored in the queue." },
	[METRIC_RECEIVED_BYTES] = { "odrelay_bytes_received_total", NULL,
	    "Octets of accepted messages." },
	[METRIC_DELIVERED] = { "odrelay_recipients_delivered_total", "via",
	    "Recipients delivered, by how the delivery was started." },
	[METRIC_BOUNCED] = { "odrelay_recipients_bounced_total", NULL,
	    "Recipients returned to the sender with a delivery status notification." },
	[METRIC_DEFERRED] = { "odrelay_recipients_deferred_total", NULL,
	    "Recipient delivery attempts that failed temporarily." },
	[METRIC_REJECTED] = { "odrelay_rejected_total", "reason",
	    "SMTP commands or messages refused, by reason." },
	[METRIC_ETRN] = { "odrelay_etrn_requests_total", "result",
	    "ETRN requests, by result." },
	[METRIC_ATRN] = { "odrelay_atrn_requests_total", "result",
	    "ATRN requests, by result: started, then ok or incomplete when the "
	    "reversed session ends; refused, rate-limited, busy, no-mail." },
	[METRIC_AUTH] = { "odrelay_auth_attempts_total", "result",
	    "SASL authentications (ODMR and SMTP listeners), by result: ok, "
	    "failed (bad credentials), refused (454: too many failures), "
	    "invalid (syntax, cancelled, unknown mechanism)." },
	[METRIC_RCPT_PROBE] = { "odrelay_recipient_probes_total", "result",
	    "Recipient verification probes to a primary, by result." },
	[METRIC_RCPT_CACHE] = { "odrelay_recipient_cache_lookups_total", "result",
	    "Recipient cache look-ups at RCPT (hit or miss)." },
	[METRIC_RCPT_LEARNED_VALID] = { "odrelay_recipients_learned_valid_total",
	    "domain", "Recipients learned valid from deliveries, by domain." },
	[METRIC_RCPT_LEARNED_INVALID] = { "odrelay_recipients_learned_invalid_total",
	    "domain", "Recipients learned invalid from deliveries, by domain." },
	[METRIC_RCPT_REFUSED] = { "odrelay_rcpt_refused_total", "mechanism",
	    "RCPT commands refused as unknown recipients, by mechanism." },
	[METRIC_XWAIT] = { "odrelay_xwait_total", "result",
	    "XWAIT commands and how their waits ended, by result." },
	[METRIC_XWAIT_WAKEUPS] = { "odrelay_xwait_wakeups_total", NULL,
	    "Waiting ODMR sessions woken by arriving mail." },
	[METRIC_NOTIFY] = { "odrelay_notifications_total", "result",
	    "Arrival webhooks (notify_url), by result." },
	[METRIC_DNSBL_HITS] = { "odrelay_dnsbl_hits_total", "list",
	    "Clients found on a DNS blocklist, by list." },
	[METRIC_DNSBL_ERRORS] = { "odrelay_dnsbl_errors_total", "error",
	    "DNS blocklist lookups that failed (client not treated as listed)." },
	[METRIC_MILTER_ACTIONS] = { "odrelay_milter_actions_total", "milter_action",
	    "Milter decisions, as milter/action (accept, reject, tempfail, discard)." },
	[METRIC_MILTER_FAILURES] = { "odrelay_milter_failures_total", "milter",
	    "Milters unreachable, too slow or speaking garbage (default action applied)." },
	[METRIC_MILTER_REPLIES] = { "odrelay_milter_replies_total", "milter",
	    "Milter answers received." },
	[METRIC_MILTER_LATENCY_MS] = { "odrelay_milter_latency_ms_total", "milter",
	    "Milliseconds spent waiting for milter answers (divide by replies for the mean)." },
	[METRIC_DELIVERY_TLS] = { "odrelay_delivery_tls_total", "outcome",
	    "Delivery sessions by TLS outcome: clear, encrypted, verified "
	    "(ca, fingerprint, dane or sts), missing (required TLS not offered, "
	    "4.7.4), failed (handshake or policy check failed, 4.7.5)." },
	[METRIC_ODMR_RELOAD] = { "odrelay_odmr_reload_sessions_total", "result",
	    "Logged-in ODMR sessions at a reload (SIGHUP), by result: kept "
	    "(the user still has the same domains, all configured), ended "
	    "(421: user removed, domains changed or no longer configured, "
	    "listener removed)." },
};

/* Room for a domain name (253) or a milter spec and its action. */
#define METRICS_LABEL_MAX 256

struct metric_cell {
	int used;
	char label[METRICS_LABEL_MAX];
	uint64_t value;
};

static struct metric_cell cells[METRIC_COUNT][METRICS_LABELS];

/* A scrape being streamed: one chunk per slice of gauges. */
struct scrape {
	struct metrics *mt;
	struct evhttp_request *req;
	struct metrics_cursor cur;
	struct scrape *next;
};

struct metrics {
	struct evhttp *http;
	struct evconnlistener *lev;	/* evhttp's, for its error callback */
	struct event *accept_retry;	/* re-enable after EMFILE */
	time_t warned;
	struct metrics *next;		/* metrics_all */
	metrics_gauge_fn *gauges;
	void *arg;
	struct scrape *scrapes;	/* streaming now */
};

/* The cell for (m, label); a full table folds new labels into "other". */
static struct metric_cell *metrics_cell(enum metric m, const char *label,
    int create)
{
	char key[METRICS_LABEL_MAX];
	const char *l = key;
	struct metric_cell *row;

	if ((unsigned)m >= METRIC_COUNT)
		return NULL;
	/* Compare what a cell can hold: a longer label cut short must find
	 * its cell again, not take a new one with the same text each time. */
	util_strlcpy(key, label ? label : "", sizeof(key));
	row = cells[m];
	for (size_t i = 0; i < METRICS_LABELS; i++) {
		if (row[i].used && strcmp(row[i].label, l) == 0)
			return &row[i];
		if (!row[i].used) {
			if (!create)
				return NULL;
			if (i == METRICS_LABELS - 1)
				l = "other";
			row[i].used = 1;
			util_strlcpy(row[i].label, l, sizeof(row[i].label));
			return &row[i];
		}
	}
	return create ? &row[METRICS_LABELS - 1] : NULL;
}

void metrics_add(enum metric m, const char *label, uint64_t n)
{
	struct metric_cell *c = metrics_cell(m, label, 1);

	if (c != NULL)
		c->value += n;
}

uint64_t metrics_get(enum metric m, const char *label)
{
	struct metric_cell *c = metrics_cell(m, label, 0);

	return c ? c->value : 0;
}

/*
 * A label value as the text format wants it (backslash, quote and newline
 * escaped); other control and non-ASCII octets become '?' so the page is
 * valid UTF-8 whatever a configuration named. Values come from
 * configuration (milter sockets, lists, domains) and must not break the
 * page. Returns dst.
 */
const char *metrics_label_escape(char *dst, size_t size, const char *v)
{
	size_t o = 0;

	for (; *v != '\0' && o + 3 < size; v++) {
		unsigned char c = (unsigned char)*v;

		if (c == '\\' || c == '"') {
			dst[o++] = '\\';
			dst[o++] = (char)c;
		} else if (c == '\n') {
			dst[o++] = '\\';
			dst[o++] = 'n';
		} else
			dst[o++] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
	}
	dst[o] = '\0';
	return dst;
}

/* Sum of a counter over all its labels. */
static uint64_t metrics_sum(enum metric m)
{
	uint64_t n = 0;

	for (size_t i = 0; i < METRICS_LABELS && cells[m][i].used; i++)
		n += cells[m][i].value;
	return n;
}

/* One family with every recipient delivery outcome, so that a failure
 * ratio is one PromQL expression over one metric. */
static void metrics_format_outcomes(struct evbuffer *out)
{
	evbuffer_add_printf(out, "# HELP odrelay_deliveries_total Recipient "
	    "delivery attempts, by outcome (delivered, deferred, bounced).\n"
	    "# TYPE odrelay_deliveries_total counter\n"
	    "odrelay_deliveries_total{outcome=\"delivered\"} %llu\n"
	    "odrelay_deliveries_total{outcome=\"deferred\"} %llu\n"
	    "odrelay_deliveries_total{outcome=\"bounced\"} %llu\n",
	    (unsigned long long)metrics_sum(METRIC_DELIVERED),
	    (unsigned long long)metrics_sum(METRIC_DEFERRED),
	    (unsigned long long)metrics_sum(METRIC_BOUNCED));
}

void metrics_format(struct evbuffer *out)
{
	char esc[2 * METRICS_LABEL_MAX];

	for (int m = 0; m < METRIC_COUNT; m++) {
		const struct metric_def *d = &metric_defs[m];
		int any = 0;

		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n",
		    d->name, d->help, d->name);
		for (size_t i = 0; i < METRICS_LABELS; i++) {
			const struct metric_cell *c = &cells[m][i];

			if (!c->used)
				break;
			any = 1;
			if (d->label_name != NULL && c->label[0] != '\0')
				evbuffer_add_printf(out, "%s{%s=\"%s\"} %llu\n", d->name,
				    d->label_name, metrics_label_escape(esc,
				    sizeof(esc), c->label),
				    (unsigned long long)c->value);
			else
				evbuffer_add_printf(out, "%s %llu\n", d->name,
				    (unsigned long long)c->value);
		}
		if (!any && d->label_name == NULL)
			evbuffer_add_printf(out, "%s 0\n", d->name);
	}
	metrics_format_outcomes(out);
}

char *metrics_format_line(char *buf, size_t size)
{
	char esc[2 * METRICS_LABEL_MAX];
	size_t off = 0;

	buf[0] = '\0';
	for (int m = 0; m < METRIC_COUNT; m++) {
		const struct metric_def *d = &metric_defs[m];

		for (size_t i = 0; i < METRICS_LABELS && cells[m][i].used; i++) {
			const struct metric_cell *c = &cells[m][i];
			int n;

			if (d->label_name != NULL && c->label[0] != '\0')
				n = snprintf(buf + off, size - off, "%s%s{%s=\"%s\"}=%llu",
				    off ? " " : "", d->name, d->label_name,
				    metrics_label_escape(esc, sizeof(esc), c->label),
				    (unsigned long long)c->value);
			else
				n = snprintf(buf + off, size - off, "%s%s=%llu",
				    off ? " " : "", d->name, (unsigned long long)c->value);
			if (n < 0 || (size_t)n >= size - off) {
				buf[off] = '\0';	/* whole words only */
				return buf;
			}
			off += (size_t)n;
		}
	}
	/* The delivery outcomes, as /metrics shows them. */
	{
		static const enum metric om[] = { METRIC_DELIVERED,
		    METRIC_DEFERRED, METRIC_BOUNCED };
		static const char *const on[] = { "delivered", "deferred",
		    "bounced" };

		for (size_t k = 0; k < 3; k++) {
			int n = snprintf(buf + off, size - off,
			    "%sodrelay_deliveries_total{outcome=\"%s\"}=%llu",
			    off ? " " : "", on[k],
			    (unsigned long long)metrics_sum(om[k]));

			if (n < 0 || (size_t)n >= size - off) {
				buf[off] = '\0';
				break;
			}
			off += (size_t)n;
		}
	}
	return buf;
}

static void scrape_unlink(struct scrape *sc)
{
	struct scrape **pp = &sc->mt->scrapes;

	while (*pp != NULL && *pp != sc)
		pp = &(*pp)->next;
	if (*pp == sc)
		*pp = sc->next;
	free(sc);
}

/* The client went away (or the server is being freed) mid-stream. */
static void scrape_closed(struct evhttp_connection *evcon, void *arg)
{
	struct scrape *sc = arg;

	(void)evcon;
	/* Detached by libevent (EOF, timeout): ours to free; still attached
	 * (evhttp_free): the connection frees it. */
	if (evhttp_request_get_connection(sc->req) == NULL)
		evhttp_send_reply_end(sc->req);
	scrape_unlink(sc);
}

static void scrape_next(struct evhttp_connection *evcon, void *arg);

/* Makes one slice and sends it; the last one ends the reply. */
static void scrape_slice(struct scrape *sc, struct evbuffer *out)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(sc->req);
	int more = 0;

	do
		more = sc->mt->gauges != NULL &&
		    sc->mt->gauges(sc->mt->arg, &sc->cur, out);
	while (more && evbuffer_get_length(out) == 0);
	if (more) {
		evhttp_send_reply_chunk_with_cb(sc->req, out, scrape_next, sc);
		return;
	}
	if (evbuffer_get_length(out) > 0)
		evhttp_send_reply_chunk(sc->req, out);
	evhttp_connection_set_closecb(evcon, NULL, NULL);
	evhttp_send_reply_end(sc->req);
	scrape_unlink(sc);
}

/* The previous chunk is written: the next slice, in a later loop turn. */
static void scrape_next(struct evhttp_connection *evcon, void *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)evcon;
	scrape_slice(arg, out);
	evbuffer_free(out);
}

static void metrics_request(struct evhttp_request *req, void *arg)
{
	struct metrics *mt = arg;
	struct scrape *sc;
	struct evbuffer *out;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		/* Headers only: the body's length is not known in advance. */
		evhttp_send_reply(req, 200, "OK", NULL);
		return;
	}
	sc = xcalloc(1, sizeof(*sc));
	sc->mt = mt;
	sc->req = req;
	sc->next = mt->scrapes;
	mt->scrapes = sc;
	evhttp_connection_set_closecb(evhttp_request_get_connection(req),
	    scrape_closed, sc);
	evhttp_send_reply_start(req, 200, "OK");
	out = evbuffer_new();
	metrics_format(out);
	scrape_slice(sc, out);
	evbuffer_free(out);
}

static void metrics_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evhttp_send_error(req, 404, "Not Found");
}

/* Every endpoint: a listener's error callback gets evhttp's argument,
 * not ours, so it finds its endpoint here. */
static struct metrics *metrics_all;

static void metrics_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	struct metrics *mt = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(mt->lev);
}

/*
 * Out of descriptors (a scraper's or anyone's idle connections): pause
 * for a second. Without this callback libevent retried at once and logged
 * each failure: 99% CPU and millions of log lines a second, as the ODMR
 * listener did before (issue 17).
 */
static void metrics_accept_error(struct evconnlistener *lev, void *arg)
{
	struct metrics *mt;
	struct timeval tv = { 1, 0 };
	int e = EVUTIL_SOCKET_ERROR();
	time_t now = time(NULL);

	(void)arg;
	for (mt = metrics_all; mt != NULL && mt->lev != lev; mt = mt->next)
		;
	if (mt == NULL)
		return;

	if (now - mt->warned >= 10) {
		log_warn("metrics: accept: %s (pausing)",
		    evutil_socket_error_to_string(e));
		mt->warned = now;
	}
	evconnlistener_disable(lev);
	evtimer_add(mt->accept_retry, &tv);
}

struct metrics *metrics_listen(struct event_base *base, const char *addr,
    metrics_gauge_fn *gauges, void *arg, char *err, size_t errlen)
{
	struct metrics *mt;
	struct evhttp_bound_socket *bound;
	char host[256];
	int port;

	if (util_split_hostport(addr, host, sizeof(host), &port, 9366) < 0) {
		snprintf(err, errlen, "bad address %s", addr);
		return NULL;
	}
	mt = xcalloc(1, sizeof(*mt));
	mt->gauges = gauges;
	mt->arg = arg;
	mt->http = evhttp_new(base);
	if (mt->http == NULL || (bound = evhttp_bind_socket_with_handle(mt->http,
	    host, (uint16_t)port)) == NULL) {
		snprintf(err, errlen, "cannot listen on %s", addr);
		if (mt->http != NULL)
			evhttp_free(mt->http);
		free(mt);
		return NULL;
	}
	mt->lev = evhttp_bound_socket_get_listener(bound);
	mt->accept_retry = evtimer_new(base, metrics_accept_retry, mt);
	evconnlistener_set_error_cb(mt->lev, metrics_accept_error);
	mt->next = metrics_all;
	metrics_all = mt;
	/* Bounded requests: the endpoint takes no input. */
	evhttp_set_max_headers_size(mt->http, 8192);
	evhttp_set_max_body_size(mt->http, 0);
	evhttp_set_timeout(mt->http, 10);
	evhttp_set_allowed_methods(mt->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_cb(mt->http, "/metrics", metrics_request, mt);
	evhttp_set_gencb(mt->http, metrics_other, mt);
	log_info("metrics: listening on %s", addr);
	return mt;
}

void metrics_free(struct metrics **mp)
{
	struct metrics *mt = *mp;

	if (mt == NULL)
		return;
	for (struct metrics **pp = &metrics_all; *pp != NULL;
	    pp = &(*pp)->next)
		if (*pp == mt) {
			*pp = mt->next;
			break;
		}
	evhttp_free(mt->http);
	if (mt->accept_retry != NULL)
		event_free(mt->accept_retry);
	free(mt);
	*mp = NULL;
}
