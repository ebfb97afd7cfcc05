/*
 * tlspolicy - what a client demands of a server's TLS before it sends mail
 * (odrelay.conf(5) `tls`, `tls_ca_file`, `tls_fingerprint`).
 *
 * A policy is a plain value resolved from the configuration for one
 * destination. The SMTP client asks it whether STARTTLS is required, lets
 * it prepare each SSL before the handshake (SNI, the names and trust store
 * to check against, DANE records) and checks the finished handshake with
 * it. A failed check is never a reason to go on in clear text: the caller
 * defers (4.7.4 when TLS was required and not offered, 4.7.5 when the
 * server's certificate did not satisfy the policy).
 *
 * Loop thread only (the CA store cache is not locked).
 */
#ifndef OD_TLSPOLICY_H
#define OD_TLSPOLICY_H

#include <stddef.h>
#include <openssl/ssl.h>

enum tlspolicy_mode {
	TLSPOLICY_NONE = 0,	/* never STARTTLS */
	TLSPOLICY_MAY,		/* STARTTLS when offered, any certificate */
	TLSPOLICY_ENCRYPT,	/* STARTTLS required, any certificate */
	TLSPOLICY_VERIFY,	/* chain to tls_ca_file/system store + name */
	TLSPOLICY_FINGERPRINT,	/* certificate or key pinned */
	TLSPOLICY_DANE,		/* TLSA when secure, else may */
	TLSPOLICY_DANE_ONLY,	/* secure TLSA required */
	TLSPOLICY_STS,		/* MTA-STS when published, else may */
	TLSPOLICY_NMODES
};

#define TLSPOLICY_MAX_FP	16	/* pins per destination */
#define TLSPOLICY_MAX_TLSA	8	/* TLSA records kept per host */
#define TLSPOLICY_MAX_TLSA_DATA	2048	/* octets of one record's data */

struct tlspolicy_fp {
	int pubkey;		/* 1: SHA-256 of SubjectPublicKeyInfo DER */
	unsigned char md[32];	/* SHA-256 */
};

struct tlspolicy_tlsa {
	unsigned char usage, selector, mtype;
	unsigned short len;	/* of data */
	unsigned char data[TLSPOLICY_MAX_TLSA_DATA];
};

struct tlspolicy {
	int mode;		/* enum tlspolicy_mode, as configured */
	int required;		/* STARTTLS required (mode, or DANE/STS found) */
	char ca_file[512];	/* "" = the system store */
	struct tlspolicy_fp fp[TLSPOLICY_MAX_FP];
	size_t nfp;
	/* DANE: TLSA records of the host about to be contacted (set by the
	 * caller once authenticated); ntlsa 0 = no DANE for this host. */
	struct tlspolicy_tlsa tlsa[TLSPOLICY_MAX_TLSA];
	size_t ntlsa;
	/* MTA-STS for this connection (the caller matched the MX against
	 * the policy's mx patterns): the certificate must verify (PKIX) for
	 * the MX name. 0 none, 1 enforce, 2 testing (report, never defer). */
	int sts;
};

/* "none", "may", ... -> mode; -1 when unknown. */
int tlspolicy_mode_parse(const char *s);
const char *tlspolicy_mode_name(int mode);

/*
 * A list of pins ("sha256:HEX pubkey-sha256:HEX", separated by spaces or
 * commas; HEX upper or lower case, colons allowed). Returns 0 and fills
 * fp[0..*n), or -1 with a message in err.
 */
int tlspolicy_fp_parse(const char *s, struct tlspolicy_fp *fp, size_t max,
    size_t *n, char *err, size_t errlen);

/*
 * Fill p for one destination: mode, CA file (NULL: system store) and pins
 * (NULL: none). -1 with err if fps does not parse.
 */
int tlspolicy_init(struct tlspolicy *p, int mode, const char *ca_file,
    const char *fps, char *err, size_t errlen);

struct config;
/* tlspolicy_init from the configuration of domain (the tls, tls_ca_file,
 * tls_fingerprint of the section that takes it in, its own or a parent's
 * with subdomains = yes; else the global ones). */
int tlspolicy_for_domain(struct tlspolicy *p, const struct config *cfg,
    const char *domain, char *err, size_t errlen);

/* 1 when STARTTLS must be done (no clear-text fallback). */
int tlspolicy_required(const struct tlspolicy *p);

/*
 * Register the client context every outbound session uses (enables DANE
 * on it). Returns 0, or -1 when OpenSSL refuses.
 */
int tlspolicy_ctx_setup(SSL_CTX *ctx);
/* That context (for sessions started without one), or NULL. */
SSL_CTX *tlspolicy_client_ctx(void);

/*
 * Before the handshake: SNI for host (a name; never for an IP), and for
 * verify/DANE/STS the checks the handshake must pass. host is the route's
 * host name or address, or the MX name. 0, or -1 with err.
 */
int tlspolicy_prepare(const struct tlspolicy *p, SSL *ssl, const char *host,
    char *err, size_t errlen);

/*
 * After the handshake. Returns 0 when the connection satisfies p, with
 * *verified set to what was established ("no", "ca", "fingerprint",
 * "dane", "sts"); -1 with why (for "451 4.7.5 ..."). In testing mode an
 * MTA-STS failure returns 0 with *verified = "no" and why set.
 */
int tlspolicy_check(const struct tlspolicy *p, SSL *ssl, const char *host,
    const char **verified, char *why, size_t whylen);

/* Drop cached CA stores (reload). */
void tlspolicy_cache_clear(void);

#endif
