/*
 * cfgload - parse the configuration on a thread for a SIGHUP reload, so
 * that the event loop is not held while 50,000 domain sections are read
 * (issue 16). The result and the FILE:LINE messages are handed back on
 * the loop; the caller swaps the new configuration in there.
 */
#ifndef OD_CFGLOAD_H
#define OD_CFGLOAD_H

struct event_base;
struct config;
struct cfgload;

/*
 * On the loop, once per cfgload_start: cfg is the new configuration (the
 * callee owns it) or NULL when the file has errors, each of which was
 * passed to errfn (on the loop, in order) before this call.
 */
typedef void cfgload_done_fn(void *arg, struct config *cfg);
typedef void cfgload_error_fn(void *arg, const char *msg);

/* Also makes config_free hand big configurations to a thread to free
 * (config_set_reaper) until cfgload_free. */
struct cfgload *cfgload_new(struct event_base *base);
/* Run on the thread after a successful parse (may be NULL): work on the
 * new configuration that need not hold the loop, e.g. comparing it with
 * the one in use (which the loop must not free or change meanwhile). */
typedef void cfgload_prepare_fn(void *arg, const struct config *cfg);

/* Starts parsing path; -1 when a parse is already running (or no thread
 * could be started: then done is not called). */
int cfgload_start(struct cfgload *cl, const char *path,
    cfgload_error_fn *errfn, cfgload_prepare_fn *prepare,
    cfgload_done_fn *done, void *arg);
int cfgload_busy(const struct cfgload *cl);
/* Waits for a running parse (its result is dropped). */
void cfgload_free(struct cfgload **cl);

#endif
