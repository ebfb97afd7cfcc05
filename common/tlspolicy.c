/*
 * tlspolicy - outbound TLS requirements (see tlspolicy.h).
 */

#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <sys/stat.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "tlspolicy.h"
#include "util.h"

static const char *const tlspolicy_names[TLSPOLICY_NMODES] = {
	"none", "may", "encrypt", "verify", "fingerprint", "dane",
	"dane-only", "sts",
};

int tlspolicy_mode_parse(const char *s)
{
	for (int i = 0; i < TLSPOLICY_NMODES; i++)
		if (strcasecmp(s, tlspolicy_names[i]) == 0)
			return i;
	return -1;
}

const char *tlspolicy_mode_name(int mode)
{
	if (mode < 0 || mode >= TLSPOLICY_NMODES)
		return "?";
	return tlspolicy_names[mode];
}

static int tlspolicy_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* One "sha256:HEX" / "pubkey-sha256:HEX" word of length len. */
static int tlspolicy_fp_word(const char *w, size_t len, struct tlspolicy_fp *fp)
{
	static const char cert[] = "sha256:", key[] = "pubkey-sha256:";
	size_t i, nd = 0;
	int hi = -1;

	memset(fp, 0, sizeof(*fp));
	if (len > sizeof(key) - 1 && strncasecmp(w, key, sizeof(key) - 1) == 0) {
		fp->pubkey = 1;
		i = sizeof(key) - 1;
	} else if (len > sizeof(cert) - 1 &&
	    strncasecmp(w, cert, sizeof(cert) - 1) == 0)
		i = sizeof(cert) - 1;
	else
		return -1;
	for (; i < len; i++) {
		int v;

		if (w[i] == ':')
			continue;
		if ((v = tlspolicy_hexval((unsigned char)w[i])) < 0)
			return -1;
		if (hi < 0) {
			hi = v;
			continue;
		}
		if (nd == sizeof(fp->md))
			return -1;
		fp->md[nd++] = (unsigned char)(hi << 4 | v);
		hi = -1;
	}
	return nd == sizeof(fp->md) && hi < 0 ? 0 : -1;
}

int tlspolicy_fp_parse(const char *s, struct tlspolicy_fp *fp, size_t max,
    size_t *n, char *err, size_t errlen)
{
	size_t k = 0;

	while (*s != '\0') {
		size_t len;

		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		if (*s == '\0')
			break;
		len = strcspn(s, " \t,");
		if (k == max) {
			snprintf(err, errlen, "more than %zu fingerprints", max);
			return -1;
		}
		if (tlspolicy_fp_word(s, len, &fp[k]) < 0) {
			snprintf(err, errlen, "bad fingerprint '%.*s' (expected "
			    "sha256:HEX or pubkey-sha256:HEX, 32 octets)",
			    (int)(len > 120 ? 120 : len), s);
			return -1;
		}
		k++;
		s += len;
	}
	*n = k;
	return 0;
}

int tlspolicy_init(struct tlspolicy *p, int mode, const char *ca_file,
    const char *fps, char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	p->mode = mode;
	if (ca_file != NULL && util_strlcpy(p->ca_file, ca_file,
	    sizeof(p->ca_file)) < 0) {
		snprintf(err, errlen, "CA file name too long");
		return -1;
	}
	if (fps != NULL && tlspolicy_fp_parse(fps, p->fp, TLSPOLICY_MAX_FP,
	    &p->nfp, err, errlen) < 0)
		return -1;
	return 0;
}

int tlspolicy_for_domain(struct tlspolicy *p, const struct config *cfg,
    const char *domain, char *err, size_t errlen)
{
	/* sub.example.org under subdomains = yes: example.org's settings */
	const struct config_domain *cd = domain != NULL ?
	    config_find_domain(cfg, domain) : NULL;
	int mode = cd != NULL && cd->tls >= 0 ? cd->tls : cfg->tls;
	const char *ca = cd != NULL && cd->tls_ca_file != NULL ?
	    cd->tls_ca_file : cfg->tls_ca_file;
	const char *fp = cd != NULL && cd->tls_fingerprint != NULL ?
	    cd->tls_fingerprint : cfg->tls_fingerprint;

	return tlspolicy_init(p, mode, ca, fp, err, errlen);
}

int tlspolicy_required(const struct tlspolicy *p)
{
	if (p->required || p->ntlsa > 0 || p->sts == 1)
		return 1;
	switch (p->mode) {
	case TLSPOLICY_ENCRYPT:
	case TLSPOLICY_VERIFY:
	case TLSPOLICY_FINGERPRINT:
	case TLSPOLICY_DANE_ONLY:
		return 1;
	default:
		return 0;
	}
}

static SSL_CTX *tlspolicy_ctx;

int tlspolicy_ctx_setup(SSL_CTX *ctx)
{
	if (SSL_CTX_dane_enable(ctx) <= 0) {
		ERR_clear_error();
		return -1;
	}
	tlspolicy_ctx = ctx;
	return 0;
}

SSL_CTX *tlspolicy_client_ctx(void)
{
	return tlspolicy_ctx;
}

/* ---- trust stores, loaded once per file (and again when it changes) ---- */

#define TLSPOLICY_STORES	8

static struct tlspolicy_store {
	char path[512];		/* "" = the system store */
	time_t mtime;
	X509_STORE *st;
} tlspolicy_stores[TLSPOLICY_STORES];
static size_t tlspolicy_next_slot;

void tlspolicy_cache_clear(void)
{
	for (size_t i = 0; i < TLSPOLICY_STORES; i++) {
		X509_STORE_free(tlspolicy_stores[i].st);
		memset(&tlspolicy_stores[i], 0, sizeof(tlspolicy_stores[i]));
	}
	tlspolicy_next_slot = 0;
}

static X509_STORE *tlspolicy_store(const char *path, char *err, size_t errlen)
{
	struct tlspolicy_store *slot;
	struct stat sb;
	time_t mtime = 0;
	X509_STORE *st;
	size_t i;

	if (path[0] != '\0') {
		if (stat(path, &sb) < 0) {
			snprintf(err, errlen, "cannot read CA file %s", path);
			return NULL;
		}
		mtime = sb.st_mtime;
	}
	for (i = 0; i < TLSPOLICY_STORES; i++) {
		slot = &tlspolicy_stores[i];
		if (slot->st != NULL && strcmp(slot->path, path) == 0) {
			if (slot->mtime == mtime)
				return slot->st;
			break;
		}
	}
	if ((st = X509_STORE_new()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if ((path[0] != '\0' ? X509_STORE_load_file(st, path) :
	    X509_STORE_set_default_paths(st)) != 1) {
		ERR_clear_error();
		X509_STORE_free(st);
		snprintf(err, errlen, "cannot load %s", path[0] != '\0' ? path :
		    "the system CA store");
		return NULL;
	}
	if (i == TLSPOLICY_STORES) {
		i = tlspolicy_next_slot;
		tlspolicy_next_slot = (tlspolicy_next_slot + 1) % TLSPOLICY_STORES;
	}
	slot = &tlspolicy_stores[i];
	X509_STORE_free(slot->st);	/* SSLs still using it hold a reference */
	util_strlcpy(slot->path, path, sizeof(slot->path));
	slot->mtime = mtime;
	slot->st = st;
	return st;
}

/* ---- before the handshake ---- */

static int tlspolicy_is_ip(const char *host)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, host, buf) == 1 ||
	    inet_pton(AF_INET6, host, buf) == 1;
}

/* Host without a trailing dot, into buf. */
static int tlspolicy_host(const char *host, char *buf, size_t size)
{
	size_t len;

	if (host == NULL || util_strlcpy(buf, host, size) < 0)
		return -1;
	len = strlen(buf);
	if (len > 1 && buf[len - 1] == '.')
		buf[len - 1] = '\0';
	return buf[0] != '\0' ? 0 : -1;
}

static int tlspolicy_pkix(const struct tlspolicy *p, SSL *ssl,
    const char *host, char *err, size_t errlen)
{
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
	X509_STORE *st;

	if ((st = tlspolicy_store(p->ca_file, err, errlen)) == NULL)
		return -1;
	if (SSL_set1_verify_cert_store(ssl, st) != 1)
		goto fail;
	/* A route given as an address is checked against IP names. */
	if (tlspolicy_is_ip(host)) {
		if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1)
			goto fail;
	} else {
		X509_VERIFY_PARAM_set_hostflags(vp,
		    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1)
			goto fail;
	}
	return 0;
fail:
	ERR_clear_error();
	snprintf(err, errlen, "cannot set up certificate checks for %s", host);
	return -1;
}

static int tlspolicy_usable(const struct tlspolicy_tlsa *t)
{
	/* RFC 7672 3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable. */
	return (t->usage == 2 || t->usage == 3) && t->selector <= 1 &&
	    t->mtype <= 2;
}

static int tlspolicy_dane(const struct tlspolicy *p, SSL *ssl,
    const char *host, char *err, size_t errlen)
{
	size_t i, usable = 0;

	for (i = 0; i < p->ntlsa; i++)
		usable += tlspolicy_usable(&p->tlsa[i]);
	/* RFC 7672 2.2: only unusable records: TLS stays mandatory,
	 * unauthenticated. */
	if (usable == 0)
		return 0;
	if (SSL_dane_enable(ssl, host) <= 0) {
		ERR_clear_error();
		snprintf(err, errlen, "cannot enable DANE (no DANE support in "
		    "the TLS context)");
		return -1;
	}
	/* RFC 7672 3.1.3: DANE-EE names are not checked. */
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (i = 0; i < p->ntlsa; i++) {
		const struct tlspolicy_tlsa *t = &p->tlsa[i];

		if (tlspolicy_usable(t) && SSL_dane_tlsa_add(ssl, t->usage,
		    t->selector, t->mtype, t->data, t->len) <= 0)
			ERR_clear_error();
	}
	return 0;
}

int tlspolicy_prepare(const struct tlspolicy *p, SSL *ssl, const char *host,
    char *err, size_t errlen)
{
	char name[256];

	if (tlspolicy_host(host, name, sizeof(name)) < 0) {
		if (p->mode == TLSPOLICY_VERIFY || p->ntlsa > 0 || p->sts) {
			snprintf(err, errlen, "no host name to verify");
			return -1;
		}
		return 0;
	}
	/* SNI carries a DNS name, never an IP. */
	if (!tlspolicy_is_ip(name) && SSL_set_tlsext_host_name(ssl, name) != 1)
		ERR_clear_error();
	if (p->ntlsa > 0)
		return tlspolicy_dane(p, ssl, name, err, errlen);
	if (p->mode == TLSPOLICY_VERIFY || p->sts)
		return tlspolicy_pkix(p, ssl, name, err, errlen);
	return 0;
}

/* ---- after the handshake ---- */

static int tlspolicy_fp_match(const struct tlspolicy *p, X509 *cert)
{
	unsigned char cmd[EVP_MAX_MD_SIZE], kmd[EVP_MAX_MD_SIZE];
	unsigned int clen = 0, klen = 0;
	unsigned char *der = NULL;
	int dlen, have_k = 0;

	if (X509_digest(cert, EVP_sha256(), cmd, &clen) != 1)
		clen = 0;
	dlen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	if (dlen > 0 && EVP_Digest(der, (size_t)dlen, kmd, &klen, EVP_sha256(),
	    NULL) == 1)
		have_k = 1;
	OPENSSL_free(der);
	ERR_clear_error();
	for (size_t i = 0; i < p->nfp; i++) {
		const struct tlspolicy_fp *f = &p->fp[i];

		if (!f->pubkey && clen == 32 && memcmp(f->md, cmd, 32) == 0)
			return 1;
		if (f->pubkey && have_k && klen == 32 &&
		    memcmp(f->md, kmd, 32) == 0)
			return 1;
	}
	return 0;
}

int tlspolicy_check(const struct tlspolicy *p, SSL *ssl, const char *host,
    const char **verified, char *why, size_t whylen)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	long vr = SSL_get_verify_result(ssl);
	const char *h = host != NULL && host[0] != '\0' ? host : "server";

	*verified = "no";
	why[0] = '\0';
	if (p->mode == TLSPOLICY_DANE_ONLY && p->ntlsa == 0) {
		/* Normally refused before connecting; never send unchecked. */
		snprintf(why, whylen, "DANE: no DNSSEC-secure TLSA records "
		    "for %s (tls = dane-only)", h);
		return -1;
	}
	if (p->ntlsa > 0) {
		if (SSL_get0_dane(ssl) == NULL || SSL_get0_dane_authority(ssl,
		    NULL, NULL) < 0 || vr != X509_V_OK) {
			/* No usable record: encryption was all DANE asked. */
			size_t usable = 0;

			for (size_t i = 0; i < p->ntlsa; i++)
				usable += tlspolicy_usable(&p->tlsa[i]);
			if (usable == 0)
				return 0;
			snprintf(why, whylen, "DANE: certificate of %s does not "
			    "match its TLSA records (%s)", h, cert == NULL ?
			    "no certificate" : X509_verify_cert_error_string(vr));
			return -1;
		}
		*verified = "dane";
		return 0;
	}
	if (p->mode == TLSPOLICY_FINGERPRINT) {
		if (cert == NULL || !tlspolicy_fp_match(p, cert)) {
			snprintf(why, whylen, "certificate of %s does not match "
			    "tls_fingerprint", h);
			return -1;
		}
		*verified = "fingerprint";
		return 0;
	}
	if (p->mode == TLSPOLICY_VERIFY || p->sts) {
		if (cert == NULL || vr != X509_V_OK) {
			snprintf(why, whylen, "%scertificate of %s not verified: %s",
			    p->sts ? "MTA-STS: " : "", h, cert == NULL ?
			    "no certificate" : X509_verify_cert_error_string(vr));
			if (p->sts == 2)
				return 0;	/* testing: report only */
			return -1;
		}
		*verified = p->mode == TLSPOLICY_VERIFY ? "ca" : "sts";
		return 0;
	}
	return 0;
}
