#include "sandbox/syscall_filter.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/syscall.h>

namespace grpo {
namespace {

#if defined(__x86_64__)
constexpr unsigned kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned kArch = AUDIT_ARCH_AARCH64;
#else
constexpr unsigned kArch = 0;
#endif

// Refused with EPERM. Each entry exists only where the architecture has the call.
constexpr long kDenied[] = {
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_mount, SYS_umount2,
    SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_keyctl, SYS_add_key,
    SYS_request_key, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd, SYS_kexec_load,
    SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_reboot, SYS_swapon,
    SYS_swapoff, SYS_acct, SYS_quotactl, SYS_open_by_handle_at, SYS_name_to_handle_at,
    SYS_syslog, SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime, SYS_adjtimex,
    SYS_sethostname, SYS_setdomainname, SYS_fanotify_init, SYS_personality, SYS_kcmp,
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_move_mount,
    SYS_open_tree, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick,
#ifdef SYS_kexec_file_load
    SYS_kexec_file_load,
#endif
#ifdef SYS_iopl
    SYS_iopl, SYS_ioperm,
#endif
#ifdef SYS_lookup_dcookie
    SYS_lookup_dcookie,
#endif
};

constexpr unsigned kNamespaceFlags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID |
                                     CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                                     CLONE_NEWCGROUP;

constexpr unsigned kNr = offsetof(struct seccomp_data, nr);
constexpr unsigned kArchField = offsetof(struct seccomp_data, arch);
// The low 32 bits of the first argument (little-endian: both supported architectures).
constexpr unsigned kArg0 = offsetof(struct seccomp_data, args[0]);

sock_filter Load(unsigned offset) {
  return BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset);
}
sock_filter Return(unsigned action) { return BPF_STMT(BPF_RET | BPF_K, action); }
sock_filter JumpIfEqual(unsigned value, unsigned char if_true, unsigned char if_false) {
  return BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, value, if_true, if_false);
}
unsigned Errno(int error) { return SECCOMP_RET_ERRNO | (static_cast<unsigned>(error) & SECCOMP_RET_DATA); }

}  // namespace

bool SyscallFilterAvailable() { return kArch != 0; }

std::vector<sock_filter> SyscallFilter() {
  std::vector<sock_filter> p;
  // 1. This architecture's ABI only.
  p.push_back(Load(kArchField));
  p.push_back(JumpIfEqual(kArch, 1, 0));
  p.push_back(Return(SECCOMP_RET_KILL_PROCESS));
  p.push_back(Load(kNr));
#if defined(__x86_64__)
  // x32 calls carry this bit and have numbers of their own.
  p.push_back(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
  p.push_back(Return(SECCOMP_RET_KILL_PROCESS));
#endif
  // 2. Calls refused outright.
  for (long nr : kDenied) {
    p.push_back(JumpIfEqual(static_cast<unsigned>(nr), 0, 1));
    p.push_back(Return(Errno(EPERM)));
  }
  p.push_back(JumpIfEqual(SYS_clone3, 0, 1));
  p.push_back(Return(Errno(ENOSYS)));
  // 3. Calls refused by their first argument. Where the number does not match, the jump
  // skips the block with the accumulator still holding it.
  p.push_back(JumpIfEqual(SYS_socket, 0, 4));
  p.push_back(Load(kArg0));
  p.push_back(JumpIfEqual(AF_UNIX, 0, 1));
  p.push_back(Return(SECCOMP_RET_ALLOW));
  p.push_back(Return(Errno(EPERM)));
  p.push_back(JumpIfEqual(SYS_clone, 0, 4));
  p.push_back(Load(kArg0));
  p.push_back(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, kNamespaceFlags, 0, 1));
  p.push_back(Return(Errno(EPERM)));
  p.push_back(Return(SECCOMP_RET_ALLOW));
  // 4. Everything else.
  p.push_back(Return(SECCOMP_RET_ALLOW));
  return p;
}

}  // namespace grpo
