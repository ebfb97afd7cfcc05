/*
 * dnsbl - DNS blocklist checks of SMTP clients (dnsbl, dnsbl_action,
 * dnsbl_allow, dnsbl_timeout in odrelay.conf(5)).
 *
 * A check starts when a client connects: one A query per list for the
 * client's reversed address (RFC 5782), through the daemon's c-ares
 * resolver, so answers are cached for their TTL by the dns module. smtpd
 * asks for the verdict at RCPT. A lookup that fails or takes longer than
 * dnsbl_timeout counts as "not listed" (and is logged): DNS trouble never
 * refuses mail. All calls on the loop thread.
 */
#ifndef OD_DNSBL_H
#define OD_DNSBL_H

#include <stddef.h>
#include <stdint.h>

#include "dnsbl_spec.h"

struct event_base;
struct config;
struct dns;
struct dnsbl;
struct dnsbl_check;

struct dnsbl *dnsbl_new(struct event_base *base, struct dns *dns);
void dnsbl_free(struct dnsbl **bl);

/*
 * Start checking client ip against cfg's lists. done(arg) runs (never from
 * inside this call) once every list answered or gave up. NULL when there
 * is nothing to check (no lists, client in dnsbl_allow).
 */
struct dnsbl_check *dnsbl_check_start(struct dnsbl *bl,
    const struct config *cfg, const char *ip, void (*done)(void *arg),
    void *arg);
int dnsbl_check_pending(const struct dnsbl_check *c);
/* The first list (in configuration order) that listed the client, or
 * NULL. Meaningful once not pending. */
const char *dnsbl_check_listed(const struct dnsbl_check *c);
/* Cancels lookups in flight; done will not run. *c set to NULL. */
void dnsbl_check_free(struct dnsbl_check **c);

#endif
