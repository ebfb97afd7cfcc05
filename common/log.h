/*
 * log - one line per event, to syslog or (foreground) stderr.
 *
 * Lines start with the queue id, "NOQUEUE" or a subsystem word, then
 * "key=value, key=value" pairs (see odrelayd(8) for the vocabulary).
 * Untrusted strings must pass through log_sanitize() first.
 */
#ifndef OD_LOG_H
#define OD_LOG_H

#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG
};

/* ident: program name; to_stderr: 1 for foreground/tests, 0 for syslog. */
void log_init(const char *ident, int to_stderr, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error|warning|info|debug"; returns 0 and sets *level_r, or -1. */
int log_level_parse(const char *s, enum log_level *level_r);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug_real(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* At a level known at run time (a library's report, e.g. queue notices). */
void log_at(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Startup-only: log and exit(status). */
void log_fatal(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
/* Broken internal invariant: log and abort(). */
void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Skips argument evaluation when debug is off. */
#define log_debug(...) do { \
	if (log_get_level() >= LOG_LEVEL_DEBUG) log_debug_real(__VA_ARGS__); \
} while (0)

/*
 * Copy untrusted text into buf (size bufsize) for logging: non-printable
 * bytes become \xHH, the result is cut at max_in input bytes and marked
 * with "..." when cut. Returns buf.
 */
const char *log_sanitize(char *buf, size_t bufsize, const char *s, size_t max_in);

#endif
