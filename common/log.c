/*
 * log - syslog or stderr, one line per event. Handles untrusted strings only
 * through log_sanitize().
 */
#include "autoconf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_ident = "odrelay";
static int log_to_stderr = 1;
static enum log_level log_level_cur = LOG_LEVEL_INFO;

void log_init(const char *ident, int to_stderr, enum log_level level)
{
	log_ident = ident;
	log_to_stderr = to_stderr;
	log_level_cur = level;
	if (!to_stderr)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_set_level(enum log_level level) { log_level_cur = level; }
enum log_level log_get_level(void) { return log_level_cur; }

int log_level_parse(const char *s, enum log_level *level_r)
{
	static const char *names[] = { "error", "warning", "info", "debug" };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

static void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *tag[] = { "error: ", "warning: ", "", "debug: " };
	char line[4096];

	if (level > log_level_cur)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_to_stderr) {
		char stamp[32];
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s %s[%ld]: %s%s\n", stamp, log_ident,
		    (long)getpid(), tag[level], line);
	} else {
		syslog(prio[level], "%s%s", tag[level], line);
	}
}

#define LOG_FN(name, level) \
void name(const char *fmt, ...) \
{ \
	va_list ap; \
	va_start(ap, fmt); \
	log_vwrite(level, fmt, ap); \
	va_end(ap); \
}
LOG_FN(log_error, LOG_LEVEL_ERROR)
LOG_FN(log_warn, LOG_LEVEL_WARNING)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_debug_real, LOG_LEVEL_DEBUG)

void log_at(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

void log_fatal(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(status);
}

void log_panic(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	abort();
}

const char *log_sanitize(char *buf, size_t bufsize, const char *s, size_t max_in)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;

	if (bufsize == 0)
		return buf;
	for (i = 0; s[i] != '\0' && i < max_in; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			if (o + 1 >= bufsize)
				break;
			buf[o++] = (char)c;
		} else {
			if (o + 4 >= bufsize)
				break;
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	if (s[i] != '\0' && o + 3 < bufsize) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}
