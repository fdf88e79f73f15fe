// The sandbox's seccomp filter (docs/design.md §7): what a sandboxed program may not ask
// the kernel for even inside its namespaces. Namespaces and rlimits already keep it from
// the machine; the filter shrinks the kernel surface it can reach, the usual place for
// the next privilege-escalation bug:
//   - no sockets but AF_UNIX (the network namespace has no route out; this also closes
//     netlink and the protocol families' own code);
//   - no new namespaces (unshare, setns, clone with CLONE_NEW*; clone3 answers ENOSYS, so
//     glibc falls back to clone, whose flags the filter can read), no mounts (mount,
//     umount2, pivot_root, chroot, the new mount API), no ptrace or process_vm_*;
//   - no kernel keyrings, bpf, perf_event_open, userfaultfd, io_uring, fanotify, module
//     loading, kexec, reboot, swap, acct, quotactl, handle-based opens, syslog, I/O port
//     access, clock or host-name changes, personality.
// A refused call fails with EPERM (ENOSYS for clone3), so the program sees an ordinary
// error; a call through another architecture's ABI (x32 on x86-64) kills it. Built for the
// architecture the server is compiled for (x86-64 and aarch64); elsewhere Available() is
// false and the sandbox refuses to start.
#ifndef GRPO_SANDBOX_SYSCALL_FILTER_H_
#define GRPO_SANDBOX_SYSCALL_FILTER_H_

#include <linux/filter.h>

#include <vector>

namespace grpo {

// True where SyscallFilter() has a program for this architecture.
bool SyscallFilterAvailable();

// The classic-BPF program for seccomp(SECCOMP_SET_MODE_FILTER). Pure; the sandbox builds it
// before the clone (the child only installs it).
std::vector<sock_filter> SyscallFilter();

}  // namespace grpo

#endif  // GRPO_SANDBOX_SYSCALL_FILTER_H_
