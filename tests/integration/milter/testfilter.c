/*
 * testfilter - a small milter written with Sendmail's libmilter, for
 * odrelay's integration tests and bench/milter.sh.
 *
 * usage: testfilter SOCKET [accept | accept-nr | accept-connect]
 *   SOCKET: inet:PORT@127.0.0.1 or unix:/path (libmilter syntax)
 *   accept: an accept-all filter that sees everything (continues up to
 *           the end of the message, changes nothing, accepts)
 *   accept-nr: the same, but it asks not to be answered for anything
 *           but the end of message (SMFIP_NR_*, negotiated in
 *           tf_negotiate): it still sees every command, header and body
 *           chunk, as a filter that only decides at the end would
 *   accept-connect: accepts every connection at once (sees nothing more)
 *
 * Otherwise the message tells it what to do:
 *   RCPT TO:<reject-me@...>          550 5.7.1 at RCPT (smfi_setreply)
 *   RCPT TO:<slow-rcpt@...>          answers after 2 s
 *   X-Test-Action: quarantine        smfi_quarantine
 *   X-Test-Action: delrcpt ADDR      smfi_delrcpt(ADDR)
 *   X-Test-Action: replycode         554 5.7.0 at end of message
 *   X-Test-Action: headers           add, insert, change, delete headers
 *   X-Test-Action: discard / tempfail
 *   X-Test-Action: slow N            answers the end of message after N s
 * Each end of message prints "eom i=ID client=ADDR j=HOST rcpts=N" on
 * stderr so the tests can check the macros.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

struct tf {
	char action[256];
	int nrcpts;
};

static int accept_all, accept_connect, no_reply;

/* What a step callback answers: nothing at all in accept-nr mode. */
#define TF_CONTINUE	(no_reply ? SMFIS_NOREPLY : SMFIS_CONTINUE)

static struct tf *tf_get(SMFICTX *ctx)
{
	struct tf *t = smfi_getpriv(ctx);

	if (t == NULL) {
		t = calloc(1, sizeof(*t));
		smfi_setpriv(ctx, t);
	}
	return t;
}

static sfsistat tf_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
	(void)host;
	(void)sa;
	tf_get(ctx);
	return accept_connect ? SMFIS_ACCEPT : TF_CONTINUE;
}

static sfsistat tf_envfrom(SMFICTX *ctx, char **argv)
{
	struct tf *t = tf_get(ctx);

	(void)argv;
	t->action[0] = '\0';
	t->nrcpts = 0;
	return TF_CONTINUE;
}

static sfsistat tf_envrcpt(SMFICTX *ctx, char **argv)
{
	struct tf *t = tf_get(ctx);

	if (!accept_all && strncasecmp(argv[0], "<reject-me@", 11) == 0) {
		smfi_setreply(ctx, "550", "5.7.1", "test filter refuses this "
		    "recipient");
		return SMFIS_REJECT;
	}
	if (!accept_all && strncasecmp(argv[0], "<slow-rcpt@", 11) == 0)
		sleep(2);
	t->nrcpts++;
	return TF_CONTINUE;
}

static sfsistat tf_header(SMFICTX *ctx, char *name, char *value)
{
	struct tf *t = tf_get(ctx);

	if (strcasecmp(name, "X-Test-Action") == 0)
		snprintf(t->action, sizeof(t->action), "%s", value);
	return TF_CONTINUE;
}

static sfsistat tf_body(SMFICTX *ctx, unsigned char *data, size_t len)
{
	(void)ctx;
	(void)data;
	(void)len;
	return TF_CONTINUE;
}

static sfsistat tf_eom(SMFICTX *ctx)
{
	struct tf *t = tf_get(ctx);
	const char *id = smfi_getsymval(ctx, "i");
	const char *ca = smfi_getsymval(ctx, "{client_addr}");
	const char *j = smfi_getsymval(ctx, "j");
	const char *tv = smfi_getsymval(ctx, "{tls_version}");
	const char *a = t->action;

	fprintf(stderr, "eom i=%s client=%s j=%s rcpts=%d action=%s tls=%s\n",
	    id ? id : "-", ca ? ca : "-", j ? j : "-", t->nrcpts,
	    a[0] ? a : "-", tv ? tv : "-");
	fflush(stderr);
	if (accept_all || a[0] == '\0')
		return SMFIS_ACCEPT;
	if (strcmp(a, "quarantine") == 0)
		smfi_quarantine(ctx, "held by the test filter");
	else if (strncmp(a, "delrcpt ", 8) == 0)
		smfi_delrcpt(ctx, (char *)a + 8);
	else if (strcmp(a, "replycode") == 0) {
		smfi_setreply(ctx, "554", "5.7.0", "test filter rejects this "
		    "message");
		return SMFIS_REJECT;
	} else if (strcmp(a, "headers") == 0) {
		smfi_addheader(ctx, "X-Added", "yes");
		smfi_insheader(ctx, 0, "X-Top", "first");
		smfi_chgheader(ctx, "Subject", 1, "changed subject");
		smfi_chgheader(ctx, "X-Remove-Me", 1, NULL);
	} else if (strcmp(a, "discard") == 0)
		return SMFIS_DISCARD;
	else if (strcmp(a, "tempfail") == 0)
		return SMFIS_TEMPFAIL;
	else if (strncmp(a, "slow ", 5) == 0)
		sleep((unsigned)atoi(a + 5));
	return SMFIS_ACCEPT;
}

static sfsistat tf_close(SMFICTX *ctx)
{
	free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static sfsistat tf_abort(SMFICTX *ctx)
{
	(void)ctx;
	return SMFIS_CONTINUE;
}

/* accept-nr: no answer to any step before the end of message, no
 * HELO, DATA or EOH step (no callback for them). */
static sfsistat tf_negotiate(SMFICTX *ctx, unsigned long actions,
    unsigned long steps, unsigned long f2, unsigned long f3,
    unsigned long *actions_r, unsigned long *steps_r, unsigned long *f2_r,
    unsigned long *f3_r)
{
	unsigned long want = SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL |
	    SMFIP_NR_RCPT | SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_HDR |
	    SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_NOHELO | SMFIP_NODATA |
	    SMFIP_NOEOH;

	(void)ctx;
	(void)f2;
	(void)f3;
	if ((steps & want) != want)
		return SMFIS_REJECT;	/* the MTA cannot: libmilter aborts */
	*actions_r = actions & (SMFIF_ADDHDRS | SMFIF_CHGHDRS |
	    SMFIF_DELRCPT | SMFIF_QUARANTINE);
	*steps_r = want;
	*f2_r = *f3_r = 0;
	return SMFIS_CONTINUE;
}

static struct smfiDesc tf_desc = {
	"odrelay-testfilter",
	SMFI_VERSION,
	SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_DELRCPT | SMFIF_QUARANTINE,
	tf_connect,
	NULL,		/* helo */
	tf_envfrom,
	tf_envrcpt,
	tf_header,
	NULL,		/* eoh */
	tf_body,
	tf_eom,
	tf_abort,
	tf_close,
	NULL,		/* unknown */
	NULL,		/* data */
	NULL		/* negotiate */
};

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: testfilter SOCKET [accept | "
		    "accept-nr | accept-connect]\n");
		return 2;
	}
	no_reply = argc > 2 && strcmp(argv[2], "accept-nr") == 0;
	accept_all = no_reply || (argc > 2 && strcmp(argv[2], "accept") == 0);
	if (no_reply)
		tf_desc.xxfi_negotiate = tf_negotiate;
	accept_connect = argc > 2 && strcmp(argv[2], "accept-connect") == 0;
	if (smfi_setconn(argv[1]) == MI_FAILURE ||
	    smfi_register(tf_desc) == MI_FAILURE) {
		fprintf(stderr, "testfilter: cannot set up %s\n", argv[1]);
		return 1;
	}
	smfi_settimeout(30);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
