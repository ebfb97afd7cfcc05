/*
 * tlsfind - a destination host's TLS policy (see tlsfind.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dns.h"
#include "log.h"
#include "mtasts.h"
#include "sts.h"
#include "tlsa.h"
#include "tlsfind.h"
#include "tlspolicy.h"
#include "xmalloc.h"

#define TLSA_RRTYPE	52

struct tlsfind {
	struct tlspolicy pol;
	char host[256];
	char name[300];		/* _port._tcp.host */
	struct dns_raw *q;
	struct sts_req *sr;
	int no_name;		/* an address: no TLSA possible (insecure) */
	tlsfind_fn *done;
	void *arg;
};

static int tlsfind_mode(const struct config *cfg, const char *domain)
{
	/* as tlspolicy_for_domain: a subdomain has its section's tls */
	const struct config_domain *cd = config_find_domain(cfg, domain);

	return cd != NULL && cd->tls >= 0 ? cd->tls : cfg->tls;
}

static struct sts *tlsfind_sts;

void tlsfind_set_sts(struct sts *sts)
{
	tlsfind_sts = sts;
}

int tlsfind_needed(const struct config *cfg, const char *domain, int routed)
{
	int m = tlsfind_mode(cfg, domain);

	if (m == TLSPOLICY_DANE || m == TLSPOLICY_DANE_ONLY)
		return 1;
	/* MTA-STS: tls = sts, and `may` upgraded when a policy exists. */
	return (m == TLSPOLICY_STS || m == TLSPOLICY_MAY) && !routed &&
	    tlsfind_sts != NULL;
}

static void tlsfind_sts_cb(void *arg, const struct mtasts_policy *p)
{
	struct tlsfind *tf = arg;
	tlsfind_fn *done = tf->done;
	char why[400] = "";

	tf->sr = NULL;
	if (p != NULL && p->mode != MTASTS_NONE) {
		if (mtasts_mx_match(p, tf->host))
			tf->pol.sts = p->mode == MTASTS_ENFORCE ? 1 : 2;
		else if (p->mode == MTASTS_ENFORCE)
			snprintf(why, sizeof(why), "MTA-STS: MX host %s is not "
			    "in the policy's mx list", tf->host);
		else
			log_info("tlsfind: %s: MX host not in the MTA-STS "
			    "policy (testing mode: not enforced)", tf->host);
	}
	tf->done = NULL;
	done(tf->arg, why[0] == '\0' ? &tf->pol : NULL, why);
	free(tf);
}

static int tlsfind_is_ip(const char *host)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, host, buf) == 1 ||
	    inet_pton(AF_INET6, host, buf) == 1;
}

static void tlsfind_tlsa_cb(void *arg, int ok, const unsigned char *msg,
    size_t len)
{
	struct tlsfind *tf = arg;
	enum tlsa_status st = TLSA_TEMPFAIL;
	char why[400] = "";
	size_t n = 0;

	tf->q = NULL;
	if (tf->no_name)
		st = TLSA_INSECURE;
	else if (ok)
		st = tlsa_parse(msg, len, tf->pol.tlsa, TLSPOLICY_MAX_TLSA, &n);
	log_debug("tlsfind: %s: TLSA %s (%zu records)", tf->name,
	    tlsa_status_str(st), n);
	switch (st) {
	case TLSA_SECURE:
		tf->pol.ntlsa = n;
		break;
	case TLSA_TEMPFAIL:
		/* RFC 7672 2.2: a failed lookup makes the host unusable. */
		snprintf(why, sizeof(why), "DANE: TLSA lookup for %s failed "
		    "(SERVFAIL, bogus signatures or no answer)", tf->name);
		break;
	case TLSA_SECURE_NONE:
	case TLSA_INSECURE:
		tf->pol.ntlsa = 0;
		if (tf->pol.mode == TLSPOLICY_DANE_ONLY)
			snprintf(why, sizeof(why), "DANE: no DNSSEC-secure TLSA "
			    "records for %s (tls = dane-only)", tf->name);
		break;
	}
	{
		tlsfind_fn *done = tf->done;
		void *darg = tf->arg;

		/* Freed after the call: done may not cancel (q is done). */
		tf->done = NULL;
		done(darg, why[0] == '\0' ? &tf->pol : NULL, why);
		free(tf);
	}
}

struct tlsfind *tlsfind_host(struct dns *dns, const struct config *cfg,
    const char *domain, const char *host, int port, tlsfind_fn *done,
    void *arg)
{
	struct tlsfind *tf = xcalloc(1, sizeof(*tf));
	char err[200];

	tf->done = done;
	tf->arg = arg;
	if (tlspolicy_for_domain(&tf->pol, cfg, domain, err, sizeof(err)) < 0)
		log_warn("%s: tls policy: %s", domain, err);
	snprintf(tf->host, sizeof(tf->host), "%s", host);
	if (tf->pol.mode != TLSPOLICY_DANE && tf->pol.mode != TLSPOLICY_DANE_ONLY) {
		tf->sr = sts_get(tlsfind_sts, cfg, domain, tlsfind_sts_cb, tf);
		return tf;
	}
	if (tlsfind_is_ip(host) || tlsa_name(host, port, tf->name,
	    sizeof(tf->name)) < 0) {
		/* No name, no TLSA: as insecure. */
		snprintf(tf->name, sizeof(tf->name), "%s", host);
		tf->no_name = 1;
		/* An invalid name: answered "no" later, never from here. */
		tf->q = dns_query_raw(dns, "", TLSA_RRTYPE, 1, tlsfind_tlsa_cb, tf);
		return tf;
	}
	tf->q = dns_query_raw(dns, tf->name, TLSA_RRTYPE, 1, tlsfind_tlsa_cb, tf);
	return tf;
}

void tlsfind_cancel(struct tlsfind **tfp)
{
	struct tlsfind *tf;

	if (tfp == NULL || (tf = *tfp) == NULL)
		return;
	*tfp = NULL;
	dns_raw_cancel(&tf->q);
	sts_cancel(&tf->sr);
	free(tf);
}
