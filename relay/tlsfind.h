/*
 * tlsfind - the TLS policy for one destination host, found before
 * connecting: the configured mode (common/tlspolicy.h) plus what DNS says
 * for `dane` and `dane-only` (TLSA records, RFC 7672, trusted only when the
 * resolver authenticated them) and, for `sts` (or `may` with MTA-STS
 * published), the domain's MTA-STS policy (RFC 8461).
 *
 * Loop thread only. The callback never runs from inside tlsfind_host.
 */
#ifndef OD_TLSFIND_H
#define OD_TLSFIND_H

struct config;
struct dns;
struct tlsfind;
struct tlspolicy;

/*
 * pol: the policy for connections to this host (borrowed for the call);
 * NULL: do not use this host (why: "DANE: ..." for a 4.7.5 deferral if no
 * other host is left).
 */
typedef void tlsfind_fn(void *arg, const struct tlspolicy *pol,
    const char *why);

struct sts;
/* The MTA-STS source (NULL: no MTA-STS). */
void tlsfind_set_sts(struct sts *sts);

/* 1 when the domain's policy needs DNS before connecting; routed: the
 * destination is the domain's route (MTA-STS applies to MX hosts only). */
int tlsfind_needed(const struct config *cfg, const char *domain, int routed);

/* Look up the policy of domain's host (port: the one about to be used). */
struct tlsfind *tlsfind_host(struct dns *dns, const struct config *cfg,
    const char *domain, const char *host, int port, tlsfind_fn *done,
    void *arg);
/* done will not run; *tf = NULL. */
void tlsfind_cancel(struct tlsfind **tf);

#endif
