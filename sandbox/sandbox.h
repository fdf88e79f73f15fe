// Sandbox: runs an untrusted program (model-written code) and reports how it ended, for
// the code-execution reward (reward_server's code_tests). Plain Linux namespaces and
// rlimits, nothing to install (docs/design.md §7):
//   - a new user namespace whose only user is "nobody" (outside: nobody when the server is
//     root, else the server's own uid), so the program holds no capability and no file
//     of the server's is readable through it;
//   - a new mount namespace whose root is an empty tmpfs holding read-only binds of /usr
//     (the interpreters; /bin, /lib, /lib64 are symlinks into it), /etc/ld.so.cache and
//     /dev/{null,zero,random,urandom}, and a private, size-limited, empty /tmp: nothing
//     else of the machine (the server's token, certificates, run directories) exists;
//   - new PID, network (loopback down: no traffic leaves), IPC and UTS namespaces; the
//     program is PID 1 of its namespace, so when it ends, or is killed at the deadline,
//     the kernel kills everything it started: nothing is left behind;
//   - a seccomp filter (sandbox/syscall_filter.h): no sockets but AF_UNIX, no new
//     namespaces, mounts, ptrace, keyrings, bpf, io_uring, modules and the like;
//   - rlimits for CPU time, address space, processes, file size and open files; a new
//     session, so it cannot signal the server's process group; an environment of PATH,
//     HOME=/tmp and LANG only;
//   - the parent enforces the wall deadline and the stdout/stderr caps (SIGKILL to the
//     namespace's init).
// Create probes the machine once (a trivial run) and refuses with FAILED_PRECONDITION,
// naming the step that failed, where namespaces are unavailable: code never runs
// unsandboxed. It also ignores SIGPIPE process-wide (a program that closes its stdin
// early must not end the server).
//
// Run is thread-safe (each run is its own child); the child between clone and exec makes
// only system calls on memory prepared before the clone, as a child of a multi-threaded
// process must.
#ifndef GRPO_SANDBOX_SANDBOX_H_
#define GRPO_SANDBOX_SANDBOX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace grpo {

struct SandboxLimits {
  double cpu_seconds = 5;
  double wall_seconds = 10;
  int64_t memory_bytes = 512 << 20;  // address space
  int processes = 32;                // of the sandbox's user, at once
  int64_t file_bytes = 1 << 20;      // any one file; /tmp holds at most 4× this
  int64_t output_bytes = 64 << 10;   // stdout and stderr, each
};

enum class SandboxOutcome {
  kExited,       // it exited by itself (see exit_code)
  kTimeout,      // CPU time or the wall deadline ran out
  kMemory,       // it ran out of address space (MemoryError, or a failed allocation)
  kCrash,        // a signal ended it (SIGSEGV, SIGABRT, SIGXFSZ: a file past file_bytes)
  kOutputLimit,  // stdout or stderr passed output_bytes
};

struct SandboxResult {
  SandboxOutcome outcome = SandboxOutcome::kExited;
  int exit_code = -1;  // kExited
  int signal = 0;      // the signal that ended it, if one did
  std::string out, err;
  double seconds = 0;
};

// A file written into the sandbox's /tmp before the program starts.
struct SandboxFile {
  std::string name;  // a plain name: no '/'
  std::string contents;
};

class Sandbox {
 public:
  static absl::StatusOr<std::unique_ptr<Sandbox>> Create(const SandboxLimits& limits);

  // argv[0] is an absolute path inside the sandbox (/usr/bin/python3); the working
  // directory is /tmp. An error only when the sandbox itself failed (INTERNAL, naming the
  // step) or for a bad argument (INVALID_ARGUMENT); whatever the program does is a result.
  // `limits`: this run's, instead of the sandbox's (the caller keeps them within its own).
  absl::StatusOr<SandboxResult> Run(const std::vector<std::string>& argv,
                                    const std::vector<SandboxFile>& files,
                                    std::string_view stdin_text,
                                    const SandboxLimits* limits = nullptr) const;

  const SandboxLimits& limits() const { return limits_; }

 private:
  explicit Sandbox(const SandboxLimits& limits) : limits_(limits) {}
  SandboxLimits limits_;
};

const char* SandboxOutcomeName(SandboxOutcome outcome);

}  // namespace grpo

#endif  // GRPO_SANDBOX_SANDBOX_H_
