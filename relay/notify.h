/*
 * notify - arrival webhooks (notify_url): an HTTPS POST with a JSON body
 * {"event":"arrival","domain":...,"messages":N,"bytes":N,"oldest":T} when
 * mail arrives for a domain, through libevent's HTTP client over OpenSSL
 * (the server's certificate verified against notify_ca_file or the system
 * store, and its name checked).
 *
 * The first POST goes out at once when mail arrives for a domain with none
 * waiting; later ones at most every notify_interval, with the counts of
 * that moment. A failed POST is retried with a growing delay while mail
 * waits. Nothing here ever delays the SMTP side: the hook only looks at
 * the queue index and starts a request. All calls on the loop thread.
 */
#ifndef OD_NOTIFY_H
#define OD_NOTIFY_H

struct event_base;
struct config;
struct queue;
struct notify;

struct notify *notify_new(struct event_base *base, struct config *cfg,
    struct queue *q);
/* SIGHUP: new URLs, CA files and intervals (running requests go on). */
void notify_reload(struct notify *n, struct config *cfg);
/* The queue's arrival hook: mail for domain (lower case) committed. */
void notify_arrived(struct notify *n, const char *domain);
/* Drops pending retries and requests in flight. */
void notify_free(struct notify **n);

#endif
