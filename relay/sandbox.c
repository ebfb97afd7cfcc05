/*
 * sandbox - NO_NEW_PRIVS and a seccomp deny-list; see sandbox.h.
 *
 * A deny-list, not an allow-list: the session process uses libevent,
 * OpenSSL, LMDB, c-ares and pthreads, whose exact system calls change with
 * library versions; refusing the calls an attacker needs to escalate
 * (run a program, read another process, load kernel code) cannot break a
 * working daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#if __has_include(<linux/landlock.h>)
#include <linux/landlock.h>
#endif

#include "log.h"
#include "sandbox.h"
#include "xmalloc.h"

#if defined(__x86_64__)
#define SANDBOX_ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SANDBOX_ARCH	AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define SANDBOX_ARCH	AUDIT_ARCH_I386
#endif

#define SANDBOX_DENY_MAX	40

/* LeakSanitizer stops the world with ptrace at exit: leave it to them. */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZER 1
#endif
#endif

static int sandbox_no_new_privs(void)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		log_warn("sandbox: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return -1;
	}
	return 0;
}

#ifdef SANDBOX_ARCH
static const long sandbox_common[] = {
	SYS_execve,
#ifdef SYS_execveat
	SYS_execveat,
#endif
#ifndef SANDBOX_SANITIZER
	SYS_ptrace,
#endif
	SYS_process_vm_readv,
	SYS_process_vm_writev,
	SYS_init_module,
	SYS_finit_module,
	SYS_delete_module,
	SYS_kexec_load,
#ifdef SYS_kexec_file_load
	SYS_kexec_file_load,
#endif
	SYS_mount,
	SYS_umount2,
	SYS_pivot_root,
	SYS_chroot,
	SYS_unshare,
	SYS_setns,
	SYS_reboot,
	SYS_swapon,
	SYS_swapoff,
#ifdef SYS_bpf
	SYS_bpf,
#endif
	SYS_perf_event_open,
	SYS_keyctl,
	SYS_add_key,
	SYS_request_key,
	SYS_acct,
	SYS_settimeofday,
	SYS_clock_settime,
#ifdef SYS_userfaultfd
	SYS_userfaultfd,
#endif
};

#define SANDBOX_STMT(code, k) \
	((struct sock_filter)BPF_STMT((code), (k)))
#define SANDBOX_JUMP(code, k, jt, jf) \
	((struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))
#define SANDBOX_ERRNO(e)	(SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))

static int sandbox_filter(int auth)
{
	struct sock_filter f[3 * SANDBOX_DENY_MAX + 24];
	struct sock_fprog prog;
	size_t n = 0, i, ncommon = sizeof(sandbox_common) /
	    sizeof(sandbox_common[0]);

	/* Another architecture's numbers would mean other calls: kill. */
	f[n++] = SANDBOX_STMT(BPF_LD | BPF_W | BPF_ABS,
	    offsetof(struct seccomp_data, arch));
	f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_ARCH, 1, 0);
	f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	f[n++] = SANDBOX_STMT(BPF_LD | BPF_W | BPF_ABS,
	    offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
	/* x32 calls carry this bit: none of ours do. */
	f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
	f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SANDBOX_ERRNO(EPERM));
#endif
	for (i = 0; i < ncommon && i < SANDBOX_DENY_MAX; i++) {
		f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
		    (unsigned)sandbox_common[i], 0, 1);
		f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SANDBOX_ERRNO(EPERM));
	}
	if (auth) {
		f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_listen,
		    0, 1);
		f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SANDBOX_ERRNO(EPERM));
		f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_accept4,
		    0, 1);
		f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SANDBOX_ERRNO(EPERM));
#ifdef SYS_accept
		f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_accept,
		    0, 1);
		f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SANDBOX_ERRNO(EPERM));
#endif
		/* socket(domain, ...): AF_UNIX only. */
		f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket,
		    0, 4);
		f[n++] = SANDBOX_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, args[0]));
		f[n++] = SANDBOX_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 1, 0);
		f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SANDBOX_ERRNO(EACCES));
		f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	}
	f[n++] = SANDBOX_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	prog.len = (unsigned short)n;
	prog.filter = f;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) {
		log_warn("sandbox: seccomp filter not available (%s); "
		    "running with PR_SET_NO_NEW_PRIVS only", strerror(errno));
		return -1;
	}
	return 0;
}
#else
static int sandbox_filter(int auth)
{
	(void)auth;
	log_warn("sandbox: no seccomp filter for this architecture; running "
	    "with PR_SET_NO_NEW_PRIVS only");
	return -1;
}
#endif

int sandbox_session(void)
{
	if (sandbox_no_new_privs() < 0)
		return -1;
	return sandbox_filter(0);
}

int sandbox_auth(void)
{
	if (sandbox_no_new_privs() < 0)
		return -1;
	return sandbox_filter(1);
}

/* ---- Landlock: writes only below the queue ---- */

#if defined(LANDLOCK_CREATE_RULESET_VERSION) && defined(SYS_landlock_create_ruleset)
static int sandbox_allow(int ruleset, const char *dir, uint64_t access)
{
	struct landlock_path_beneath_attr pb;
	int fd, rc;

	fd = open(dir, O_PATH | O_CLOEXEC | O_DIRECTORY);
	if (fd < 0)
		return -1;
	memset(&pb, 0, sizeof(pb));
	pb.allowed_access = access;
	pb.parent_fd = fd;
	rc = (int)syscall(SYS_landlock_add_rule, ruleset,
	    LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
	close(fd);
	return rc;
}

int sandbox_session_paths(const char *queue_dir, const char *control_socket)
{
	struct landlock_ruleset_attr attr;
	uint64_t write_rights;
	char *copy = NULL;
	int abi, ruleset, rc = -1;

	abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1) {
		log_warn("sandbox: Landlock not available (%s); the session "
		    "process may write wherever run_as_user may",
		    strerror(errno));
		return -1;
	}
	/* Reading stays free (configuration, lists, CA files on reload);
	 * every way of changing the file system is handled. */
	write_rights = LANDLOCK_ACCESS_FS_WRITE_FILE |
	    LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
	    LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |
	    LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
	    LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
	    LANDLOCK_ACCESS_FS_MAKE_SYM;
#ifdef LANDLOCK_ACCESS_FS_REFER
	if (abi >= 2)
		write_rights |= LANDLOCK_ACCESS_FS_REFER;
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
	if (abi >= 3)
		write_rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
	memset(&attr, 0, sizeof(attr));
	attr.handled_access_fs = write_rights;
	ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr,
	    sizeof(attr.handled_access_fs), 0);
	if (ruleset < 0) {
		log_warn("sandbox: Landlock ruleset: %s", strerror(errno));
		return -1;
	}
	if (sandbox_allow(ruleset, queue_dir, write_rights) < 0) {
		log_warn("sandbox: Landlock rule for %s: %s", queue_dir,
		    strerror(errno));
		goto out;
	}
	/* The control socket is made already; at the end it is removed. */
	if (control_socket != NULL) {
		copy = xstrdup(control_socket);
		if (sandbox_allow(ruleset, dirname(copy),
		    LANDLOCK_ACCESS_FS_REMOVE_FILE |
		    LANDLOCK_ACCESS_FS_MAKE_SOCK) < 0) {
			log_warn("sandbox: Landlock rule for %s: %s",
			    control_socket, strerror(errno));
			goto out;
		}
	}
	if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) {
		log_warn("sandbox: Landlock: %s", strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(copy);
	close(ruleset);
	return rc;
}
#else
int sandbox_session_paths(const char *queue_dir, const char *control_socket)
{
	(void)queue_dir;
	(void)control_socket;
	log_warn("sandbox: built without Landlock; the session process may "
	    "write wherever run_as_user may");
	return -1;
}
#endif
