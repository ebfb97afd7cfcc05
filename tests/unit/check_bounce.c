/*
 * check_bounce - RFC 3464 delivery status notifications: who gets one
 * (bounce_wanted), the DSN envelope, the multipart/report structure and
 * fields, RET=HDRS/FULL with the original read back from a real queue,
 * max_return truncation, CRLF/line-length hygiene, the MIME boundary, and
 * header injection through the sender or remote texts.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bounce.h"
#include "queue.h"

#define HOST "mx.relay.test"
#define NOW ((time_t)1750000000)
#define ARRIVAL ((time_t)1700000000)

static char tmpdir[64];
static struct queue *q;

static void setup(void)
{
	char err[256] = "";

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_bounce.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	/* base NULL: synchronous, the done callback runs inline. */
	q = queue_open(tmpdir, NULL, 0, err, sizeof(err));
	ck_assert_msg(q != NULL, "queue_open: %s", err);
}

static void teardown(void)
{
	char cmd[128];

	queue_close(&q);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* ---- envelopes ---- */

static const char *rcpt_addrs[] = {
	"first@dest.example", "second@dest.example", "third@other.example"
};

/* An in-memory envelope with n recipients (n <= 3); strings borrowed. */
static void env_init(struct queue_envelope *env, struct queue_rcpt *rcpts,
    const char *sender, size_t n)
{
	size_t i;

	memset(env, 0, sizeof(*env));
	memset(rcpts, 0, n * sizeof(*rcpts));
	env->sender = (char *)sender;
	env->ret = QUEUE_RET_NONE;
	env->arrival = ARRIVAL;
	env->helo = (char *)"client.example";
	env->client_addr = (char *)"192.0.2.1";
	env->rcpts = rcpts;
	env->nrcpts = n;
	for (i = 0; i < n; i++) {
		rcpts[i].addr = (char *)rcpt_addrs[i];
		rcpts[i].domain = strchr(rcpt_addrs[i], '@') + 1;
	}
}

struct done {
	int called;
	int result;
};

static void on_done(void *arg, int result)
{
	struct done *d = arg;

	d->called++;
	d->result = result;
}

/*
 * Queue env with the given body; env->id is set to the new id. The body is
 * written in pieces of `piece` octets (0 = at once).
 */
static void put_msg(struct queue_envelope *env, const char *body, size_t len,
    size_t piece)
{
	struct queue_put *p = queue_put_begin(q);
	struct done d = { 0, 0 };
	size_t off = 0;

	ck_assert_ptr_nonnull(p);
	snprintf(env->id, sizeof(env->id), "%s", queue_put_id(p));
	while (off < len) {
		size_t n = len - off;

		if (piece != 0 && n > piece)
			n = piece;
		ck_assert_int_ge(queue_put_write(p, body + off, n), 0);
		off += n;
	}
	queue_put_commit(p, env, on_done, &d);
	ck_assert_int_eq(d.called, 1);
	ck_assert_int_eq(d.result, QUEUE_OK);
}

static const char small_msg[] =
    "Received: from client.example by " HOST "\r\n"
    "From: Alice <alice@sender.example>\r\n"
    "To: first@dest.example\r\n"
    "Subject: hello there\r\n"
    "Message-ID: <abc@sender.example>\r\n"
    "\r\n"
    "BODYMARKER line one\r\n"
    "second body line\r\n";

/* ---- DSN inspection ---- */

struct dsn {
	char *body;
	size_t len;
	struct queue_envelope env;
	char boundary[128];
	/* The three parts' contents (after their MIME header), NUL-terminated
	 * copies, and their MIME headers. */
	char *part[3], *phdr[3];
	char *top;		/* the top-level header */
	int nparts;
};

static void dsn_free(struct dsn *d)
{
	int i;

	for (i = 0; i < 3; i++) {
		free(d->part[i]);
		free(d->phdr[i]);
	}
	free(d->top);
	free(d->body);
	if (d->env.rcpts != NULL || d->env.sender != NULL)
		bounce_envelope_clear(&d->env);
	memset(d, 0, sizeof(*d));
}

static char *xmemdup0(const char *p, size_t n)
{
	char *s = malloc(n + 1);

	ck_assert_ptr_nonnull(s);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static const char *find_mem(const char *hay, size_t hlen, const char *needle)
{
	size_t nlen = strlen(needle);

	return memmem(hay, hlen, needle, nlen);
}

/* Every line ends in CRLF (no bare CR or LF), no NUL, <= 998 octets. */
static void check_lines(const char *b, size_t len)
{
	size_t i, linelen = 0, lineno = 1;

	ck_assert_uint_gt(len, 2);
	ck_assert_msg(b[len - 2] == '\r' && b[len - 1] == '\n',
	    "DSN does not end in CRLF");
	for (i = 0; i < len; i++) {
		ck_assert_msg(b[i] != '\0', "NUL at offset %zu", i);
		if (b[i] == '\r') {
			ck_assert_msg(i + 1 < len && b[i + 1] == '\n',
			    "bare CR at offset %zu (line %zu)", i, lineno);
			ck_assert_msg(linelen <= 998, "line %zu is %zu octets",
			    lineno, linelen);
			i++;
			linelen = 0;
			lineno++;
			continue;
		}
		ck_assert_msg(b[i] != '\n', "bare LF at offset %zu (line %zu)",
		    i, lineno);
		linelen++;
	}
}

/* Split the DSN into top header and three parts; checks the skeleton. */
static void dsn_parse(struct dsn *d)
{
	const char *b = d->body, *end = d->body + d->len, *p, *e, *hend;
	char delim[160], close[160];
	int i;

	check_lines(d->body, d->len);
	hend = find_mem(b, d->len, "\r\n\r\n");
	ck_assert_ptr_nonnull(hend);
	d->top = xmemdup0(b, (size_t)(hend - b) + 2);

	/* Content-Type: multipart/report; report-type=delivery-status; boundary */
	p = strcasestr(d->top, "\r\nContent-Type: multipart/report;");
	ck_assert_msg(p != NULL, "no multipart/report in:\n%s", d->top);
	ck_assert_ptr_nonnull(strcasestr(p, "report-type=delivery-status"));
	p = strstr(p, "boundary=\"");
	ck_assert_ptr_nonnull(p);
	p += strlen("boundary=\"");
	e = strchr(p, '"');
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_gt((size_t)(e - p), 0);
	ck_assert_uint_le((size_t)(e - p), 70);	/* RFC 2046 5.1.1 */
	memcpy(d->boundary, p, (size_t)(e - p));
	d->boundary[e - p] = '\0';
	ck_assert_ptr_nonnull(strstr(d->top, "\r\nMIME-Version: 1.0\r\n"));

	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", d->boundary);
	snprintf(close, sizeof(close), "\r\n--%s--\r\n", d->boundary);
	/* The close delimiter ends the message and occurs once. */
	ck_assert_uint_ge(d->len, strlen(close));
	ck_assert_msg(memcmp(end - strlen(close), close, strlen(close)) == 0,
	    "DSN does not end with the close delimiter");
	ck_assert_ptr_eq(find_mem(b, d->len, close), end - strlen(close));

	p = hend;	/* at the CRLF before the preamble's blank line */
	for (i = 0; i < 3; i++) {
		const char *start, *next, *ph;

		start = find_mem(p, (size_t)(end - p), delim);
		ck_assert_msg(start != NULL, "part %d missing", i + 1);
		start += strlen(delim);
		if (i < 2)
			next = find_mem(start, (size_t)(end - start), delim);
		else
			next = end - strlen(close);
		ck_assert_ptr_nonnull(next);
		ph = find_mem(start, (size_t)(next - start) + 2, "\r\n\r\n");
		ck_assert_msg(ph != NULL, "part %d has no header end", i + 1);
		d->phdr[i] = xmemdup0(start, (size_t)(ph - start) + 2);
		/* Content up to the CRLF that belongs to the delimiter
		 * (RFC 2046 5.1.1). */
		ph += 4;
		d->part[i] = xmemdup0(ph, ph <= next ? (size_t)(next - ph) : 0);
		p = next;
		d->nparts++;
	}
	/* Exactly three parts: no further delimiter after the third. */
	ck_assert_ptr_null(find_mem(p + 2, (size_t)(end - p - 2), delim));
}

/* Build a DSN into d and parse it; asserts bounce_build returned 0. */
static void dsn_build(struct dsn *d, const struct queue_envelope *orig,
    const struct bounce_rcpt *br, size_t n, size_t max_return)
{
	memset(d, 0, sizeof(*d));
	ck_assert_int_eq(bounce_build(HOST, orig, br, n, q, max_return, NOW,
	    &d->env, &d->body, &d->len), 0);
	ck_assert_ptr_nonnull(d->body);
	ck_assert_uint_eq(strlen(d->body), d->len);
	dsn_parse(d);
}

/* A whole line "s" in text (at its start or after CRLF). */
static int has_line(const char *text, const char *s)
{
	size_t n = strlen(s);
	const char *p = text;

	while ((p = strstr(p, s)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == '\r' && p[n + 1] == '\n')
			return 1;
		p++;
	}
	return 0;
}

/* A line starting with prefix (field name), case-insensitive. */
static int has_field(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	const char *p = text;

	for (;;) {
		if (strncasecmp(p, prefix, n) == 0)
			return 1;
		p = strstr(p, "\r\n");
		if (p == NULL)
			return 0;
		p += 2;
	}
}

static int count_str(const char *text, const char *s)
{
	int n = 0;
	const char *p = text;

	while ((p = strstr(p, s)) != NULL) {
		n++;
		p += strlen(s);
	}
	return n;
}

struct idset {
	char ids[16][QUEUE_ID_LEN + 1];
	int n;
};

static int collect(void *arg, const char *id)
{
	struct idset *s = arg;

	if (s->n < 16)
		snprintf(s->ids[s->n++], sizeof(s->ids[0]), "%s", id);
	return 0;
}

/* ---- bounce_wanted ---- */

START_TEST(test_wanted_null_sender)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	unsigned notify[] = { 0, QUEUE_NOTIFY_FAILURE, QUEUE_NOTIFY_DELAY,
	    QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY };
	size_t i;
	int a;

	env_init(&env, r, "", 1);
	for (i = 0; i < sizeof(notify) / sizeof(notify[0]); i++) {
		r[0].notify = notify[i];
		for (a = BOUNCE_FAILED; a <= BOUNCE_RELAYED; a++)
			ck_assert_msg(!bounce_wanted(&env, &r[0], a),
			    "null sender wanted action %d notify %#x", a, notify[i]);
	}
}
END_TEST

START_TEST(test_wanted_never)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	int a;

	env_init(&env, r, "alice@sender.example", 1);
	r[0].notify = QUEUE_NOTIFY_NEVER;
	for (a = BOUNCE_FAILED; a <= BOUNCE_RELAYED; a++)
		ck_assert_msg(!bounce_wanted(&env, &r[0], a), "NEVER wanted %d", a);
	/* NEVER wins even if (against RFC 3461 4.1) combined with others. */
	r[0].notify = QUEUE_NOTIFY_NEVER | QUEUE_NOTIFY_FAILURE |
	    QUEUE_NOTIFY_DELAY | QUEUE_NOTIFY_SUCCESS;
	for (a = BOUNCE_FAILED; a <= BOUNCE_RELAYED; a++)
		ck_assert_msg(!bounce_wanted(&env, &r[0], a), "NEVER+ wanted %d", a);
}
END_TEST

START_TEST(test_wanted_no_failure)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];

	env_init(&env, r, "alice@sender.example", 1);
	r[0].notify = QUEUE_NOTIFY_DELAY;
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_FAILED));
	ck_assert(bounce_wanted(&env, &r[0], BOUNCE_DELAYED));
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_DELIVERED));
	r[0].notify = QUEUE_NOTIFY_SUCCESS;
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_FAILED));
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_DELAYED));
	ck_assert(bounce_wanted(&env, &r[0], BOUNCE_DELIVERED));
	ck_assert(bounce_wanted(&env, &r[0], BOUNCE_RELAYED));
	r[0].notify = QUEUE_NOTIFY_FAILURE;
	ck_assert(bounce_wanted(&env, &r[0], BOUNCE_FAILED));
	/* NOTIFY given without DELAY: no delay notice. */
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_DELAYED));
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_DELIVERED));
}
END_TEST

START_TEST(test_wanted_default)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];

	env_init(&env, r, "alice@sender.example", 1);
	r[0].notify = 0;
	ck_assert(bounce_wanted(&env, &r[0], BOUNCE_FAILED));
	/* RFC 3461 4.1 lets an MTA treat no NOTIFY as FAILURE or as
	 * FAILURE,DELAY; bounce.h documents the latter (delay notices sent). */
	ck_assert(bounce_wanted(&env, &r[0], BOUNCE_DELAYED));
	/* Success notices only on request. */
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_DELIVERED));
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_RELAYED));
}
END_TEST

START_TEST(test_wanted_dsn_message)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	int a;

	env_init(&env, r, "alice@sender.example", 1);
	env.flags = QUEUE_F_DSN | QUEUE_F_8BITMIME;
	r[0].notify = QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY | QUEUE_NOTIFY_SUCCESS;
	for (a = BOUNCE_FAILED; a <= BOUNCE_RELAYED; a++)
		ck_assert_msg(!bounce_wanted(&env, &r[0], a), "DSN about DSN %d", a);
	r[0].notify = 0;
	ck_assert(!bounce_wanted(&env, &r[0], BOUNCE_FAILED));
}
END_TEST

START_TEST(test_addr_domain)
{
	char buf[64];

	ck_assert_str_eq(bounce_addr_domain("Alice@Sender.EXAMPLE", buf, sizeof(buf)),
	    "sender.example");
	/* The last '@' counts (quoted local parts may hold one). */
	ck_assert_str_eq(bounce_addr_domain("\"a@b\"@Host.Example", buf, sizeof(buf)),
	    "host.example");
	ck_assert_str_eq(bounce_addr_domain("postmaster", buf, sizeof(buf)), "");
	ck_assert_str_eq(bounce_addr_domain("a@0123456789abcdef", buf, 8), "");
}
END_TEST

/* ---- bounce_build: when nothing is due ---- */

START_TEST(test_build_not_due)
{
	struct queue_envelope env, out;
	struct queue_rcpt r[2];
	struct bounce_rcpt br[2] = {
		{ 0, BOUNCE_FAILED, "5.1.1", NULL, NULL },
		{ 1, BOUNCE_FAILED, "5.1.1", NULL, NULL },
	};
	char *body = (char *)"untouched";
	size_t len = 12345;

	env_init(&env, r, "alice@sender.example", 2);
	put_msg(&env, small_msg, strlen(small_msg), 0);

	env.sender = (char *)"";
	ck_assert_int_eq(bounce_build(HOST, &env, br, 2, q, 4096, NOW, &out,
	    &body, &len), -1);
	env.sender = (char *)"alice@sender.example";

	env.flags = QUEUE_F_DSN;
	ck_assert_int_eq(bounce_build(HOST, &env, br, 2, q, 4096, NOW, &out,
	    &body, &len), -1);
	env.flags = 0;

	r[0].notify = r[1].notify = QUEUE_NOTIFY_NEVER;
	ck_assert_int_eq(bounce_build(HOST, &env, br, 2, q, 4096, NOW, &out,
	    &body, &len), -1);
	r[0].notify = r[1].notify = QUEUE_NOTIFY_SUCCESS;
	ck_assert_int_eq(bounce_build(HOST, &env, br, 2, q, 4096, NOW, &out,
	    &body, &len), -1);
	r[0].notify = r[1].notify = 0;

	/* An index out of range is ignored, not read. */
	br[0].index = 2;
	br[1].index = 99;
	ck_assert_int_eq(bounce_build(HOST, &env, br, 2, q, 4096, NOW, &out,
	    &body, &len), -1);
	ck_assert_int_eq(bounce_build(HOST, &env, br, 0, q, 4096, NOW, &out,
	    &body, &len), -1);

	ck_assert_str_eq(body, "untouched");
	ck_assert_uint_eq(len, 12345);
}
END_TEST

/* ---- bounce_build: envelope ---- */

START_TEST(test_build_envelope)
{
	struct queue_envelope env;
	struct queue_rcpt r[2];
	struct bounce_rcpt br[1] = { { 1, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;

	env_init(&env, r, "Alice@Sender.EXAMPLE", 2);
	env.flags = QUEUE_F_8BITMIME;
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 1, 65536);

	ck_assert_ptr_nonnull(d.env.sender);
	ck_assert_str_eq(d.env.sender, "");
	ck_assert_uint_eq(d.env.nrcpts, 1);
	ck_assert_str_eq(d.env.rcpts[0].addr, "Alice@Sender.EXAMPLE");
	ck_assert_str_eq(d.env.rcpts[0].domain, "sender.example");
	ck_assert(d.env.flags & QUEUE_F_DSN);
	ck_assert(d.env.flags & QUEUE_F_8BITMIME);
	ck_assert_int_eq(d.env.rcpts[0].state, QUEUE_RCPT_QUEUED);
	ck_assert_int_eq(d.env.rcpts[0].next_attempt, NOW);
	ck_assert_int_eq(d.env.arrival, NOW);
	ck_assert_uint_eq(d.env.rcpts[0].notify, 0);
	ck_assert_ptr_null(d.env.envid);
	/* The DSN itself never gets a DSN. */
	ck_assert(!bounce_wanted(&d.env, &d.env.rcpts[0], BOUNCE_FAILED));

	/* The DSN goes into the queue with the recipient's new state (as the
	 * scheduler does) and reads back as a due DSN with the same body. */
	{
		struct queue_rcpt_update up = { 1, QUEUE_RCPT_BOUNCED, "550 no", 0, 0 };
		struct done dn = { 0, 0 };
		struct idset ids = { { { 0 } }, 0 };
		struct queue_envelope *got = NULL;
		struct queue_body *qb = NULL;
		const unsigned char *data;
		size_t len, off = 0;
		int i, found = -1;

		queue_update(q, env.id, &up, 1, &d.env, d.body, d.len, on_done, &dn);
		ck_assert_int_eq(dn.called, 1);
		ck_assert_int_eq(dn.result, QUEUE_OK);
		ck_assert_int_eq(queue_foreach_due(q, NOW, collect, &ids), QUEUE_OK);
		for (i = 0; i < ids.n; i++)
			if (strcmp(ids.ids[i], env.id) != 0)
				found = i;
		ck_assert_msg(found >= 0, "DSN not due at NOW");
		ck_assert_int_eq(queue_get(q, ids.ids[found], &got), 1);
		ck_assert_str_eq(got->sender, "");
		ck_assert(got->flags & QUEUE_F_DSN);
		ck_assert_uint_eq(got->nrcpts, 1);
		ck_assert_str_eq(got->rcpts[0].addr, "Alice@Sender.EXAMPLE");
		ck_assert_uint_eq(got->size, d.len);
		ck_assert_int_eq(queue_body_open(q, got->id, &qb), QUEUE_OK);
		while (queue_body_read(qb, &data, &len) == 1) {
			ck_assert_uint_le(off + len, d.len);
			ck_assert(memcmp(d.body + off, data, len) == 0);
			off += len;
		}
		ck_assert_uint_eq(off, d.len);
		queue_body_free(&qb);
		queue_envelope_free(&got);
	}
	dsn_free(&d);
}
END_TEST

/* ---- bounce_build: the report ---- */

START_TEST(test_build_report_failed)
{
	struct queue_envelope env;
	struct queue_rcpt r[3];
	struct bounce_rcpt br[2] = {
		{ 0, BOUNCE_FAILED, "5.1.1", "mx.dest.example",
		    "550 5.1.1 <first@dest.example>: no such user" },
		{ 2, BOUNCE_FAILED, "5.7.1", NULL, NULL },
	};
	struct dsn d;
	const char *ds, *p1, *p3;

	env_init(&env, r, "alice@sender.example", 3);
	env.envid = (char *)"QQ314159";
	r[0].orcpt = (char *)"rfc822;First@Dest.Example";
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 2, 65536);

	/* Top header. */
	ck_assert(has_line(d.top, "To: <alice@sender.example>"));
	ck_assert(has_field(d.top, "From: "));
	ck_assert(has_field(d.top, "Date: "));
	ck_assert(has_field(d.top, "Subject: "));
	ck_assert(has_field(d.top, "Message-ID: <"));
	ck_assert(has_line(d.top, "Auto-Submitted: auto-replied"));

	/* 1: human readable. */
	ck_assert_ptr_nonnull(strcasestr(d.phdr[0], "Content-Type: text/plain"));
	p1 = d.part[0];
	ck_assert_ptr_nonnull(strstr(p1, HOST));
	ck_assert_ptr_nonnull(strstr(p1, "first@dest.example"));
	ck_assert_ptr_nonnull(strstr(p1, "third@other.example"));
	ck_assert_ptr_null(strstr(p1, "second@dest.example"));

	/* 2: message/delivery-status. */
	ck_assert(has_line(d.phdr[1], "Content-Type: message/delivery-status"));
	ds = d.part[1];
	ck_assert_msg(has_line(ds, "Reporting-MTA: dns; " HOST), "%s", ds);
	ck_assert(has_line(ds, "Original-Envelope-Id: QQ314159"));
	ck_assert(has_field(ds, "Arrival-Date: "));
	ck_assert_int_eq(count_str(ds, "Arrival-Date: "), 1);
	/* Per-message fields first, then one blank-line-separated group per
	 * recipient (RFC 3464 2.1). */
	ck_assert_ptr_nonnull(strstr(ds, "\r\n\r\nFinal-Recipient: "));
	ck_assert(has_line(ds, "Final-Recipient: rfc822; first@dest.example") ||
	    has_line(ds, "Final-Recipient: rfc822;first@dest.example"));
	ck_assert(has_line(ds, "Final-Recipient: rfc822; third@other.example") ||
	    has_line(ds, "Final-Recipient: rfc822;third@other.example"));
	ck_assert_ptr_null(strstr(ds, "second@dest.example"));
	ck_assert_int_eq(count_str(ds, "Final-Recipient: "), 2);
	ck_assert_int_eq(count_str(ds, "\r\nAction: failed\r\n"), 2);
	ck_assert_int_eq(count_str(ds, "Action: "), 2);
	ck_assert(has_line(ds, "Status: 5.1.1"));
	ck_assert(has_line(ds, "Status: 5.7.1"));
	ck_assert(has_line(ds, "Original-Recipient: rfc822;First@Dest.Example"));
	ck_assert_int_eq(count_str(ds, "Original-Recipient: "), 1);
	ck_assert(has_line(ds, "Remote-MTA: dns; mx.dest.example"));
	ck_assert(has_line(ds,
	    "Diagnostic-Code: smtp; 550 5.1.1 <first@dest.example>: no such user"));
	ck_assert_int_eq(count_str(ds, "Diagnostic-Code: "), 1);
	ck_assert_int_eq(count_str(ds, "Remote-MTA: "), 1);
	/* Fields belong to the right recipient: first's group holds its ORCPT
	 * and diagnostic; third's holds neither. */
	{
		const char *g1 = strstr(ds, "Final-Recipient: rfc822; first");
		const char *g3 = strstr(ds, "Final-Recipient: rfc822; third");

		const char *o, *dc, *st1, *st3;

		ck_assert_ptr_nonnull(g1);
		ck_assert_ptr_nonnull(g3);
		o = strstr(g1, "Original-Recipient:");
		dc = strstr(g1, "Diagnostic-Code:");
		st1 = strstr(g1, "Status: 5.1.1");
		st3 = strstr(g1, "Status: 5.7.1");
		ck_assert(g1 < g3);
		ck_assert(o != NULL && o < g3);
		ck_assert(dc != NULL && dc < g3);
		ck_assert(st1 != NULL && st1 < g3);
		ck_assert(st3 != NULL && st3 > g3);
	}

	/* 3: default RET: the header only. */
	ck_assert(has_line(d.phdr[2], "Content-Type: text/rfc822-headers"));
	p3 = d.part[2];
	ck_assert(has_line(p3, "Subject: hello there"));
	ck_assert(has_line(p3, "Message-ID: <abc@sender.example>"));
	ck_assert_ptr_null(strstr(p3, "BODYMARKER"));
	dsn_free(&d);
}
END_TEST

START_TEST(test_build_no_optional_fields)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, NULL, NULL, NULL } };
	struct dsn d;

	env_init(&env, r, "alice@sender.example", 1);
	env.helo = NULL;
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 1, 65536);
	ck_assert_ptr_null(strstr(d.part[1], "Original-Envelope-Id:"));
	ck_assert_ptr_null(strstr(d.part[1], "Original-Recipient:"));
	ck_assert_ptr_null(strstr(d.part[1], "Diagnostic-Code:"));
	ck_assert_ptr_null(strstr(d.part[1], "Remote-MTA:"));
	/* No status given: a generic permanent one. */
	ck_assert(has_line(d.part[1], "Status: 5.0.0"));
	ck_assert(has_line(d.part[1], "Action: failed"));
	dsn_free(&d);
}
END_TEST

START_TEST(test_build_delayed)
{
	struct queue_envelope env;
	struct queue_rcpt r[2];
	struct bounce_rcpt br[2] = {
		{ 0, BOUNCE_DELAYED, "4.4.7", NULL, "421 4.3.2 try later" },
		/* FAILURE only: no delay notice for this one. */
		{ 1, BOUNCE_DELAYED, "4.4.7", NULL, NULL },
	};
	struct dsn d;

	env_init(&env, r, "alice@sender.example", 2);
	r[1].notify = QUEUE_NOTIFY_FAILURE;
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 2, 65536);
	ck_assert(has_line(d.part[1], "Action: delayed"));
	ck_assert_ptr_null(strstr(d.part[1], "Action: failed"));
	ck_assert(has_line(d.part[1], "Status: 4.4.7"));
	ck_assert(has_line(d.part[1], "Diagnostic-Code: smtp; 421 4.3.2 try later"));
	ck_assert_int_eq(count_str(d.part[1], "Final-Recipient: "), 1);
	ck_assert_ptr_null(strstr(d.part[1], "second@dest.example"));
	/* Not announced as undelivered. */
	ck_assert_ptr_null(strcasestr(d.top, "Undelivered"));
	dsn_free(&d);

	/* Status defaults to 4.0.0 for delays. */
	br[0].status = NULL;
	dsn_build(&d, &env, br, 1, 65536);
	ck_assert(has_line(d.part[1], "Status: 4.0.0"));
	dsn_free(&d);
}
END_TEST

START_TEST(test_build_ret_hdrs)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;
	size_t hlen = (size_t)(strstr(small_msg, "\r\n\r\n") - small_msg) + 4;

	env_init(&env, r, "alice@sender.example", 1);
	env.ret = QUEUE_RET_HDRS;
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 1, 65536);
	ck_assert(has_line(d.phdr[2], "Content-Type: text/rfc822-headers"));
	ck_assert_ptr_null(strcasestr(d.phdr[2], "message/rfc822"));
	/* Exactly the original header (with its ending blank line). */
	ck_assert_msg(strlen(d.part[2]) == hlen &&
	    memcmp(d.part[2], small_msg, hlen) == 0, "headers part:\n%s", d.part[2]);
	ck_assert_ptr_null(strstr(d.part[2], "BODYMARKER"));
	dsn_free(&d);
}
END_TEST

/* The header/body separator split across two queue_put_write calls (and,
 * for big headers, two body chunks) is still found. */
START_TEST(test_build_ret_hdrs_split)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;
	size_t hlen = QUEUE_CHUNK_SIZE - 1, blen = hlen + 2 + 5000, i;
	char *msg = malloc(blen);

	ck_assert_ptr_nonnull(msg);
	/* Header lines of 78 + CRLF up to hlen, the CRLF CRLF straddling the
	 * first chunk boundary. */
	for (i = 0; i < hlen; i++)
		msg[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' :
		    (i % 80 < 2) ? 'X' : (i % 80 == 2) ? ':' : 'h';
	/* Make sure the header ends with CRLF. */
	msg[hlen - 2] = '\r';
	msg[hlen - 1] = '\n';
	msg[hlen] = '\r';
	msg[hlen + 1] = '\n';
	for (i = hlen + 2; i < blen; i++)
		msg[i] = (i % 50 == 48) ? '\r' : (i % 50 == 49) ? '\n' : 'B';
	msg[blen - 2] = '\r';
	msg[blen - 1] = '\n';

	env_init(&env, r, "alice@sender.example", 1);
	env.ret = QUEUE_RET_HDRS;
	put_msg(&env, msg, blen, 3000);
	dsn_build(&d, &env, br, 1, 1024 * 1024);
	ck_assert_uint_eq(strlen(d.part[2]), hlen + 2);
	ck_assert_ptr_null(strchr(d.part[2], 'B'));
	dsn_free(&d);
	free(msg);
}
END_TEST

START_TEST(test_build_ret_full)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;

	env_init(&env, r, "alice@sender.example", 1);
	env.ret = QUEUE_RET_FULL;
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 1, 65536);
	ck_assert(has_line(d.phdr[2], "Content-Type: message/rfc822"));
	ck_assert_str_eq(d.part[2], small_msg);
	dsn_free(&d);
}
END_TEST

/* A multi-chunk original, returned whole, then bounded by max_return. */
START_TEST(test_build_ret_full_big)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.3.4", NULL, NULL } };
	struct dsn d;
	size_t blen = 2 * QUEUE_CHUNK_SIZE + 12345, i, hlen;
	char *msg = malloc(blen);
	size_t maxes[] = { 10000, QUEUE_CHUNK_SIZE, QUEUE_CHUNK_SIZE + 77 };

	ck_assert_ptr_nonnull(msg);
	hlen = (size_t)snprintf(msg, blen, "Subject: big\r\n\r\n");
	for (i = hlen; i < blen; i++)
		msg[i] = (i % 72 == 70) ? '\r' : (i % 72 == 71) ? '\n' :
		    (char)('a' + i % 26);
	msg[blen - 2] = '\r';
	msg[blen - 1] = '\n';

	env_init(&env, r, "alice@sender.example", 1);
	env.ret = QUEUE_RET_FULL;
	put_msg(&env, msg, blen, 70001);

	dsn_build(&d, &env, br, 1, blen + 100);
	ck_assert_uint_eq(strlen(d.part[2]), blen);
	ck_assert(memcmp(d.part[2], msg, blen) == 0);
	dsn_free(&d);

	for (i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
		size_t got;

		dsn_build(&d, &env, br, 1, maxes[i]);
		got = strlen(d.part[2]);
		/* At most max_return octets of the original, plus a CRLF
		 * to end a cut line. */
		ck_assert_msg(got <= maxes[i] + 2 && got >= maxes[i],
		    "max_return %zu returned %zu", maxes[i], got);
		ck_assert(memcmp(d.part[2], msg, maxes[i]) == 0);
		ck_assert_uint_lt(d.len, maxes[i] + 8192);
		dsn_free(&d);
	}

	/* max_return 0 (the scheduler's delay notices): no original. */
	dsn_build(&d, &env, br, 1, 0);
	ck_assert_ptr_null(strstr(d.part[2], "Subject: big"));
	ck_assert_uint_le(strlen(d.part[2]), 2);
	dsn_free(&d);
	free(msg);
}
END_TEST

/* The header is bounded by max_return too. */
START_TEST(test_build_ret_hdrs_truncated)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;

	env_init(&env, r, "alice@sender.example", 1);
	put_msg(&env, small_msg, strlen(small_msg), 0);
	/* Cut inside "From: Alice ..." (not at a CR). */
	dsn_build(&d, &env, br, 1, 50);
	ck_assert_uint_le(strlen(d.part[2]), 52);
	ck_assert(memcmp(d.part[2], small_msg, 50) == 0);
	dsn_free(&d);
}
END_TEST

/*
 * A cut by max_return that falls between the CR and LF of a line must not
 * leave a bare CR in the DSN (check_lines in dsn_parse).
 */
START_TEST(test_build_truncate_at_cr)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;
	size_t cut = (size_t)(strstr(small_msg, "\r\n") - small_msg) + 1;
	int ret;

	env_init(&env, r, "alice@sender.example", 1);
	put_msg(&env, small_msg, strlen(small_msg), 0);
	for (ret = QUEUE_RET_FULL; ret <= QUEUE_RET_HDRS; ret++) {
		env.ret = ret;
		dsn_build(&d, &env, br, 1, cut);
		ck_assert_uint_le(strlen(d.part[2]), cut + 2);
		dsn_free(&d);
	}
}
END_TEST

START_TEST(test_build_lines)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	char diag[3000];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, diag } };
	struct dsn d;
	char mta[400];

	/* A very long remote reply and remote host name. */
	memset(diag, 'D', sizeof(diag) - 1);
	memcpy(diag, "550 5.1.1 ", 10);
	diag[sizeof(diag) - 1] = '\0';
	memset(mta, 'm', sizeof(mta) - 1);
	mta[sizeof(mta) - 1] = '\0';
	br[0].remote_mta = mta;
	env_init(&env, r, "alice@sender.example", 1);
	env.ret = QUEUE_RET_FULL;
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 1, 65536);	/* check_lines: <= 998 */
	ck_assert_ptr_nonnull(strstr(d.part[1], "Diagnostic-Code: smtp; 550 5.1.1 DDD"));
	ck_assert_ptr_nonnull(strstr(d.part[1], "Remote-MTA: dns; mmm"));
	dsn_free(&d);
}
END_TEST

START_TEST(test_build_boundary)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d, d2;
	struct queue_put *p;
	struct done dn = { 0, 0 };
	char msg[2048];
	int n;

	/* An original that quotes what a boundary built from its id would
	 * look like, in the header and the body. */
	env_init(&env, r, "alice@sender.example", 1);
	env.ret = QUEUE_RET_FULL;
	p = queue_put_begin(q);
	snprintf(env.id, sizeof(env.id), "%s", queue_put_id(p));
	n = snprintf(msg, sizeof(msg),
	    "X-Boundary: --%s/0000000000000000\r\n"
	    "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"
	    "--%s\r\n\r\nhello\r\n--%s/\r\n--%s--\r\n",
	    env.id, env.id, env.id, env.id, env.id);
	ck_assert_int_ge(queue_put_write(p, msg, (size_t)n), 0);
	queue_put_commit(p, &env, on_done, &dn);
	ck_assert_int_eq(dn.result, QUEUE_OK);

	dsn_build(&d, &env, br, 1, 65536);
	ck_assert_str_eq(d.part[2], msg);
	ck_assert_ptr_null(strstr(msg, d.boundary));
	ck_assert_ptr_null(strstr(d.part[0], d.boundary));
	ck_assert_ptr_null(strstr(d.part[1], d.boundary));
	ck_assert_ptr_null(strstr(d.part[2], d.boundary));
	/* Boundaries are not predictable: two DSNs differ. */
	dsn_build(&d2, &env, br, 1, 65536);
	ck_assert_str_ne(d.boundary, d2.boundary);
	dsn_free(&d2);
	dsn_free(&d);
}
END_TEST

/* Top-level header field names of a DSN (each line not starting with
 * white space) must be among the expected ones. */
static void check_top_fields(const char *top)
{
	static const char *ok[] = { "From:", "To:", "Subject:", "Date:",
	    "Message-ID:", "Auto-Submitted:", "MIME-Version:", "Content-Type:" };
	const char *p = top;

	while (*p != '\0') {
		const char *e = strstr(p, "\r\n");
		size_t i;
		int found = 0;

		ck_assert_ptr_nonnull(e);
		if (*p != ' ' && *p != '\t') {
			for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
				if (strncasecmp(p, ok[i], strlen(ok[i])) == 0)
					found = 1;
			ck_assert_msg(found, "unexpected header line: %.*s",
			    (int)(e - p), p);
		}
		p = e + 2;
	}
}

START_TEST(test_inject_diagnostic)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1",
	    "mx.evil\r\nX-Injected-MTA: 1",
	    "550 no\r\nX-Injected: yes\r\n\r\n--fake\nBcc: victim@x\r" } };
	struct dsn d;
	int i;

	env_init(&env, r, "alice@sender.example", 1);
	put_msg(&env, small_msg, strlen(small_msg), 0);
	dsn_build(&d, &env, br, 1, 65536);	/* bare CR/LF caught here */
	check_top_fields(d.top);
	for (i = 0; i < 3; i++) {
		ck_assert(!has_field(d.part[i], "X-Injected"));
		ck_assert(!has_field(d.part[i], "Bcc:"));
		ck_assert(!has_field(d.part[i], "--fake"));
	}
	ck_assert_int_eq(count_str(d.part[1], "Diagnostic-Code: "), 1);
	ck_assert_ptr_nonnull(strstr(d.part[1], "Diagnostic-Code: smtp; 550 no"));
	ck_assert_ptr_nonnull(strstr(d.part[1], "X-Injected: yes"));
	dsn_free(&d);
}
END_TEST

/*
 * A sender holding CR/LF (smtp_parse refuses control characters, so this
 * is defence in depth: queue data from elsewhere, a corrupt record).
 */
START_TEST(test_inject_sender)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;
	int rc;

	env_init(&env, r, "alice@sender.example>\r\nBcc: victim@target.example\r\nX-A: <x", 1);
	put_msg(&env, small_msg, strlen(small_msg), 0);
	memset(&d, 0, sizeof(d));
	rc = bounce_build(HOST, &env, br, 1, q, 65536, NOW, &d.env, &d.body, &d.len);
	/* Refusing is fine; building one with injected lines is not. */
	if (rc == 0) {
		dsn_parse(&d);
		check_top_fields(d.top);
		ck_assert(!has_field(d.top, "Bcc:"));
		ck_assert_ptr_null(strchr(d.env.rcpts[0].addr, '\r'));
		ck_assert_ptr_null(strchr(d.env.rcpts[0].addr, '\n'));
	}
	dsn_free(&d);
}
END_TEST

/* Other queue strings copied into the report: ENVID, ORCPT, HELO. */
START_TEST(test_inject_envid_orcpt)
{
	struct queue_envelope env;
	struct queue_rcpt r[1];
	struct bounce_rcpt br[1] = { { 0, BOUNCE_FAILED, "5.1.1", NULL, NULL } };
	struct dsn d;
	int rc;

	env_init(&env, r, "alice@sender.example", 1);
	env.envid = (char *)"E1\r\nX-Injected: envid";
	env.helo = (char *)"helo.example\r\nX-Injected: helo";
	r[0].orcpt = (char *)"rfc822;a@b\r\nX-Injected: orcpt";
	put_msg(&env, small_msg, strlen(small_msg), 0);
	memset(&d, 0, sizeof(d));
	rc = bounce_build(HOST, &env, br, 1, q, 65536, NOW, &d.env, &d.body, &d.len);
	if (rc == 0) {
		dsn_parse(&d);
		ck_assert(!has_field(d.part[1], "X-Injected"));
	}
	dsn_free(&d);
}
END_TEST

static Suite *bounce_suite(void)
{
	Suite *s = suite_create("bounce");
	TCase *tc;

	tc = tcase_create("wanted");
	tcase_add_test(tc, test_wanted_null_sender);
	tcase_add_test(tc, test_wanted_never);
	tcase_add_test(tc, test_wanted_no_failure);
	tcase_add_test(tc, test_wanted_default);
	tcase_add_test(tc, test_wanted_dsn_message);
	tcase_add_test(tc, test_addr_domain);
	suite_add_tcase(s, tc);

	tc = tcase_create("build");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_build_not_due);
	tcase_add_test(tc, test_build_envelope);
	tcase_add_test(tc, test_build_report_failed);
	tcase_add_test(tc, test_build_no_optional_fields);
	tcase_add_test(tc, test_build_delayed);
	tcase_add_test(tc, test_build_ret_hdrs);
	tcase_add_test(tc, test_build_ret_hdrs_split);
	tcase_add_test(tc, test_build_ret_full);
	tcase_add_test(tc, test_build_ret_full_big);
	tcase_add_test(tc, test_build_ret_hdrs_truncated);
	tcase_add_test(tc, test_build_truncate_at_cr);
	tcase_add_test(tc, test_build_lines);
	tcase_add_test(tc, test_build_boundary);
	suite_add_tcase(s, tc);

	tc = tcase_create("injection");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_inject_diagnostic);
	tcase_add_test(tc, test_inject_sender);
	tcase_add_test(tc, test_inject_envid_orcpt);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(bounce_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
