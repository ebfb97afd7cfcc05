/*
 * sandbox - what each odrelayd process may still do once it runs.
 *
 * Both processes get PR_SET_NO_NEW_PRIVS (no set-id program, no file
 * capability can give them more) and, where the kernel and architecture
 * allow, a seccomp filter that fails (EPERM) what neither ever needs:
 * execve/execveat, ptrace, process_vm_readv/writev, kernel module and
 * kexec calls, mount and namespace calls, reboot, swapon/off, bpf,
 * perf_event_open, keyctl. The auth process's filter also refuses
 * sockets other than AF_UNIX (it has no network; syslog goes over
 * /dev/log), listen and accept.
 *
 * Each returns 0 when the filter is in place, -1 when only NO_NEW_PRIVS
 * could be set (logged; never fatal: an old kernel or a container that
 * forbids seccomp still runs).
 */
#ifndef OD_SANDBOX_H
#define OD_SANDBOX_H

int sandbox_session(void);
int sandbox_auth(void);
/*
 * Once the control socket exists: where the kernel has Landlock, the
 * session process may change the file system only below queue_dir (and
 * remove the control socket). Reading stays allowed. 0, or -1 (logged).
 */
int sandbox_session_paths(const char *queue_dir, const char *control_socket);

#endif
