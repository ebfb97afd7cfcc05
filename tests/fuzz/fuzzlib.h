/*
 * fuzzlib.h - helpers shared by the libFuzzer targets in tests/fuzz.
 *
 * Targets whose parser reads a file get one anonymous temporary file: it is
 * created once, unlinked at once (so nothing is left behind even after a
 * crash) and reached through /proc/self/fd/N, rewritten for every input.
 */
#ifndef OD_FUZZLIB_H
#define OD_FUZZLIB_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

struct fuzz_file {
	int fd;
	char path[4200];
};

static inline const char *
fuzz_tmpdir(void)
{
	const char *t = getenv("TMPDIR");

	return t != NULL && *t != '\0' ? t : "/tmp";
}

/* Open the anonymous file once; abort if that fails (not the input's fault). */
static inline void
fuzz_file_init(struct fuzz_file *f)
{
	char tmpl[4096];

	snprintf(tmpl, sizeof(tmpl), "%s/odrelay-fuzz-XXXXXX", fuzz_tmpdir());
	f->fd = mkstemp(tmpl);
	if (f->fd < 0) {
		perror("fuzz: mkstemp");
		abort();
	}
	unlink(tmpl);
	/* 0600: passwd_load warns about anything wider */
	if (fchmod(f->fd, 0600) < 0) {
		perror("fuzz: fchmod");
		abort();
	}
	snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
}

/* Replace the file's contents with data[0..len-1]. */
static inline void
fuzz_file_set(struct fuzz_file *f, const void *data, size_t len)
{
	const unsigned char *p = data;
	off_t off = 0;
	ssize_t n;

	if (ftruncate(f->fd, 0) < 0) {
		perror("fuzz: ftruncate");
		abort();
	}
	while (len > 0) {
		n = pwrite(f->fd, p, len, off);
		if (n <= 0) {
			perror("fuzz: pwrite");
			abort();
		}
		p += n;
		off += n;
		len -= (size_t)n;
	}
}

/* Quiet logging: only errors reach stderr. */
static inline void
fuzz_log_quiet(void)
{
	log_init("fuzz", 1, LOG_LEVEL_ERROR);
}

#endif
