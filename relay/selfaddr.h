/*
 * selfaddr - "is this address:port this relay?" for delivery (RFC 5321
 * 5.1): an MX or route whose address reaches our own SMTP listener must
 * never be sent to, or mail loops back in (issue 17). Own addresses are
 * the smtp_listen addresses (a wildcard listener stands for every
 * interface address, from getifaddrs) and proxy_interfaces (addresses that
 * reach us through NAT or a proxy).
 */
#ifndef OD_SELFADDR_H
#define OD_SELFADDR_H

#include <sys/socket.h>

struct config;
struct selfaddr;

/* A snapshot of the relay's own addresses now (interfaces change). */
struct selfaddr *selfaddr_new(const struct config *cfg);
void selfaddr_free(struct selfaddr **sp);
/* 1 when a connection to sa (address and port) would reach this relay. */
int selfaddr_is_self(const struct selfaddr *s, const struct sockaddr *sa);
/* For tests: add an interface address (as getifaddrs would). */
void selfaddr_add_interface(struct selfaddr *s, const struct sockaddr *sa);

#endif
