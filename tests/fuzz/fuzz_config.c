/*
 * fuzz_config - libFuzzer target for common/config: config_load() on an
 * arbitrary odrelay.conf, then the domain lookups smtpd makes on what
 * loaded.
 *
 * The file is a real name in a private temporary directory (relative
 * recipients_file names resolve next to it; "rcpts" there is a small valid
 * list), rewritten for each input and removed at exit. An anonymous
 * /proc/self/fd file would not do: "recipients_file = 0" would read stdin.
 *
 * Every error must be reported through errfn (a NULL result with no
 * message, or a config with messages, aborts); a loaded config must free
 * cleanly.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static struct fuzz_file ff;
static char fz_dir[4096];
static int nerr;

static void
fz_cleanup(void)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/odrelay.conf", fz_dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/rcpts", fz_dir);
	unlink(path);
	rmdir(fz_dir);
}

static void
fz_setup(void)
{
	static const char rcpts[] = "# allowed\nalice@example.org\n"
	    "Bob@Example.ORG\n@sub.example.org\n";
	char path[4200];
	int fd;

	fuzz_log_quiet();
	snprintf(fz_dir, sizeof(fz_dir), "%s/odrelay-fuzz-config.XXXXXX",
	    fuzz_tmpdir());
	if (mkdtemp(fz_dir) == NULL) {
		perror("fuzz_config: mkdtemp");
		abort();
	}
	atexit(fz_cleanup);
	snprintf(path, sizeof(path), "%s/rcpts", fz_dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && write(fd, rcpts, sizeof(rcpts) - 1) ==
	    (ssize_t)sizeof(rcpts) - 1);
	close(fd);
	snprintf(ff.path, sizeof(ff.path), "%s/odrelay.conf", fz_dir);
	ff.fd = open(ff.path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(ff.fd >= 0);
}

static void
errfn(void *arg, const char *msg)
{
	(void)arg;
	CHECK(msg != NULL);
	(void)strlen(msg);
	nerr++;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;
	const struct config_domain *d;
	char addr[600];
	size_t i;

	if (ff.path[0] == '\0')
		fz_setup();
	/* recipients_file naming a device or a huge file is the admin's
	 * choice, not an input bug: keep such paths out */
	if (memmem(data, size, "/dev/", 5) != NULL ||
	    memmem(data, size, "/proc/", 6) != NULL ||
	    memmem(data, size, "/sys/", 5) != NULL)
		return 0;
	fuzz_file_set(&ff, data, size);
	nerr = 0;
	cfg = config_load(ff.path, errfn, NULL);
	if (cfg == NULL) {
		CHECK(nerr > 0);
		return 0;
	}
	CHECK(nerr == 0);
	CHECK(cfg->hostname != NULL && cfg->queue_dir != NULL);
	for (i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *dom = &cfg->domains[i];
		CHECK(dom->name != NULL);
		d = config_find_domain(cfg, dom->name);
		CHECK(d != NULL);
		CHECK(config_domain_by_name(cfg, dom->name) == dom);
		snprintf(addr, sizeof(addr), "postmaster@%s", dom->name);
		(void)config_recipient_allowed(dom, addr);
		snprintf(addr, sizeof(addr), "sub.%s", dom->name);
		(void)config_find_domain(cfg, addr);
	}
	(void)config_find_domain(cfg, "example.org");
	config_free(&cfg);
	CHECK(cfg == NULL);
	return 0;
}
