#include "sandbox/sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "sandbox/syscall_filter.h"

namespace grpo {
namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// 1. What the child does, prepared by the parent before the clone: the child only makes
//    system calls on these (no allocation, no locks: the parent has other threads).

struct Bind {
  std::string source, target;  // target under the staging root
  unsigned long flags;         // the source's mount flags, kept on the read-only remount
  bool file;                   // a file (create an empty one to bind onto), else a directory
};

struct ChildPlan {
  std::vector<std::string> argv_storage, env_storage;
  std::vector<char*> argv, envp;
  std::vector<std::string> dirs;                                // created under staging
  std::vector<std::pair<std::string, std::string>> symlinks;    // target, link path
  std::vector<Bind> binds;
  std::vector<std::pair<std::string, const std::string*>> files;  // path, contents
  std::string tmp_options;  // the private /tmp's tmpfs options
  std::string proc, oldroot;  // <staging>/proc, <staging>/oldroot
  SandboxLimits limits;
  sock_fprog filter = {};  // sandbox/syscall_filter.h, installed last before exec
  int sync_read = -1;     // the parent writes one byte once the id maps are set
  int status_write = -1;  // close-on-exec: EOF at exec, a message on a failed step
  int stdin_read = -1, stdout_write = -1, stderr_write = -1;
};

constexpr char kStaging[] = "/tmp";  // in the child's own mount namespace only

// "step: errno N" to the parent, then exit. Async-signal-safe.
[[noreturn]] void Fail(const ChildPlan& plan, const char* step) {
  const int error = errno;
  char buffer[160];
  size_t n = 0;
  for (const char* p = step; *p && n < 120; ++p) buffer[n++] = *p;
  for (const char* p = ": errno "; *p; ++p) buffer[n++] = *p;
  char digits[12];
  int d = 0, e = error;
  do {
    digits[d++] = static_cast<char>('0' + e % 10);
    e /= 10;
  } while (e > 0 && d < 11);
  while (d > 0) buffer[n++] = digits[--d];
  (void)!write(plan.status_write, buffer, n);
  _exit(127);
}

void SetLimit(const ChildPlan& plan, int resource, rlim_t soft, rlim_t hard, const char* step) {
  const struct rlimit limit = {soft, hard};
  if (setrlimit(resource, &limit) != 0) Fail(plan, step);
}

// The sandbox's root: an empty tmpfs with read-only binds of what programs need.
void BuildRoot(const ChildPlan& plan) {
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    Fail(plan, "making mounts private");
  if (mount("tmpfs", kStaging, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") != 0)
    Fail(plan, "mounting the root tmpfs");
  for (const std::string& dir : plan.dirs)
    if (mkdir(dir.c_str(), 0755) != 0) Fail(plan, "creating a root directory");
  for (const auto& [target, link] : plan.symlinks)
    if (symlink(target.c_str(), link.c_str()) != 0) Fail(plan, "creating a root symlink");
  for (const Bind& b : plan.binds) {
    if (b.file) {
      const int fd = open(b.target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) Fail(plan, "creating a bind target");
      close(fd);
    } else if (mkdir(b.target.c_str(), 0755) != 0) {
      Fail(plan, "creating a bind target directory");
    }
    if (mount(b.source.c_str(), b.target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
      Fail(plan, "binding a host path");
    if (mount(nullptr, b.target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | b.flags,
              nullptr) != 0)
      Fail(plan, "remounting a bind read-only");
  }
  const std::string& tmp = plan.dirs.back();  // <staging>/tmp, created last
  if (mount("tmpfs", tmp.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, plan.tmp_options.c_str()) != 0)
    Fail(plan, "mounting the private /tmp");
  for (const auto& [path, contents] : plan.files) {
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) Fail(plan, "creating a program file");
    for (size_t done = 0; done < contents->size();) {
      const ssize_t n = write(fd, contents->data() + done, contents->size() - done);
      if (n <= 0) Fail(plan, "writing a program file");
      done += static_cast<size_t>(n);
    }
    close(fd);
  }
  // A fresh /proc shows only the sandbox's processes; where the machine forbids one (a
  // container with a masked /proc) programs run without it.
  (void)mount("proc", plan.proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  if (syscall(SYS_pivot_root, kStaging, plan.oldroot.c_str()) != 0)
    Fail(plan, "pivot_root");
  if (chdir("/") != 0) Fail(plan, "chdir /");
  if (umount2("/oldroot", MNT_DETACH) != 0) Fail(plan, "detaching the old root");
  if (rmdir("/oldroot") != 0) Fail(plan, "removing the old root's mount point");
  if (mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
            nullptr) != 0)
    Fail(plan, "remounting the root read-only");
  if (chdir("/tmp") != 0) Fail(plan, "chdir /tmp");
}

int ChildMain(void* arg) {
  const ChildPlan& plan = *static_cast<const ChildPlan*>(arg);
  char byte;
  if (read(plan.sync_read, &byte, 1) != 1) Fail(plan, "waiting for the id maps");
  // Become the namespace's one user, keeping the capabilities the mounts below need (they
  // are the namespace's, and end at exec: the user is not the namespace's root).
  if (prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0) != 0) Fail(plan, "securebits");
  // Raw system calls: glibc's set*id would signal the parent's other threads, which this
  // child has copies of the records of but not the threads, and wait for them forever.
  if (syscall(SYS_setresgid, 65534, 65534, 65534) != 0) Fail(plan, "setresgid");
  if (syscall(SYS_setresuid, 65534, 65534, 65534) != 0) Fail(plan, "setresuid");
  BuildRoot(plan);
  if (sethostname("sandbox", 7) != 0) Fail(plan, "sethostname");
  if (setsid() < 0) Fail(plan, "setsid");  // its own process group: kill(0) reaches no one else
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail(plan, "no_new_privs");
  const SandboxLimits& l = plan.limits;
  const rlim_t cpu = static_cast<rlim_t>(std::ceil(l.cpu_seconds));
  SetLimit(plan, RLIMIT_CPU, cpu, cpu + 1, "RLIMIT_CPU");
  SetLimit(plan, RLIMIT_AS, l.memory_bytes, l.memory_bytes, "RLIMIT_AS");
  SetLimit(plan, RLIMIT_NPROC, l.processes, l.processes, "RLIMIT_NPROC");
  SetLimit(plan, RLIMIT_FSIZE, l.file_bytes, l.file_bytes, "RLIMIT_FSIZE");
  SetLimit(plan, RLIMIT_NOFILE, 64, 64, "RLIMIT_NOFILE");
  SetLimit(plan, RLIMIT_CORE, 0, 0, "RLIMIT_CORE");
  if (dup2(plan.stdin_read, 0) < 0 || dup2(plan.stdout_write, 1) < 0 ||
      dup2(plan.stderr_write, 2) < 0)
    Fail(plan, "dup2");
  // Every other descriptor of the server's (its sockets, its token file) closes; the
  // status pipe closes at exec.
  for (int fd = 3; fd < 1024; ++fd)
    if (fd != plan.status_write) close(fd);
  // Last: the filter refuses calls the steps above make (mount, sethostname).
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &plan.filter) != 0) Fail(plan, "seccomp");
  execve(plan.argv[0], plan.argv.data(), plan.envp.data());
  Fail(plan, "execve");
}

// ---------------------------------------------------------------------------------------
// 2. The plan, from the host's layout.

unsigned long MountFlags(const std::string& path) {
  struct statvfs s;
  if (statvfs(path.c_str(), &s) != 0) return MS_NOSUID | MS_NODEV;
  unsigned long flags = MS_NOSUID | MS_NODEV;  // always: nothing set-uid runs in the sandbox
  if (s.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (s.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (s.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (s.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

void PlanRoot(ChildPlan* plan) {
  const std::string root = kStaging;
  plan->dirs = {root + "/oldroot", root + "/etc", root + "/dev", root + "/proc"};
  plan->proc = root + "/proc";
  plan->oldroot = root + "/oldroot";
  plan->binds.push_back({"/usr", root + "/usr", MountFlags("/usr"), false});
  // /bin, /lib, ...: symlinks into /usr on a merged-/usr system (Debian 12), else binds.
  for (const char* top : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    const std::string host = std::string("/") + top;
    struct stat st;
    if (lstat(host.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      const ssize_t n = readlink(host.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      plan->symlinks.emplace_back(std::string(target, n), root + host);
    } else if (S_ISDIR(st.st_mode)) {
      plan->binds.push_back({host, root + host, MountFlags(host), false});
    }
  }
  if (access("/etc/ld.so.cache", R_OK) == 0)
    plan->binds.push_back({"/etc/ld.so.cache", root + "/etc/ld.so.cache",
                           MountFlags("/etc/ld.so.cache"), true});
  for (const char* dev : {"null", "zero", "random", "urandom"}) {
    const std::string host = std::string("/dev/") + dev;
    if (access(host.c_str(), F_OK) == 0)
      plan->binds.push_back({host, root + host, MountFlags(host) & ~MS_NODEV, true});
  }
  plan->dirs.push_back(root + "/tmp");  // last: BuildRoot mounts the private /tmp on it
  plan->tmp_options =
      absl::StrCat("size=", std::max<int64_t>(4 * plan->limits.file_bytes, 1 << 16),
                   ",mode=0777,nr_inodes=256");
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("opening ", path, ": ", strerror(errno)));
  const ssize_t n = write(fd, text.data(), text.size());
  const int error = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size()))
    return absl::InternalError(absl::StrCat("writing ", path, ": ", strerror(error)));
  return absl::OkStatus();
}

// The child's only user and group: nobody (65534) inside, mapped to nobody outside when
// this process may map another id (root), else to this process's own ids.
absl::Status WriteIdMaps(pid_t child) {
  const std::string proc = absl::StrCat("/proc/", child);
  const bool root = geteuid() == 0;
  if (absl::Status s = WriteFile(proc + "/setgroups", "deny"); !s.ok()) return s;
  if (absl::Status s = WriteFile(proc + "/uid_map",
                                 absl::StrCat("65534 ", root ? 65534u : geteuid(), " 1"));
      !s.ok())
    return s;
  return WriteFile(proc + "/gid_map", absl::StrCat("65534 ", root ? 65534u : getegid(), " 1"));
}

// ---------------------------------------------------------------------------------------
// 3. The parent's side of a run: stdin in, stdout and stderr out under their caps, the
//    wall deadline, the child's end.

struct Pipe {
  int read = -1, write = -1;
  ~Pipe() { CloseBoth(); }
  void CloseBoth() {
    if (read >= 0) close(read);
    if (write >= 0) close(write);
    read = write = -1;
  }
};

bool MakePipe(Pipe* p) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  p->read = fds[0];
  p->write = fds[1];
  return true;
}

// `cpu_out`: it used its CPU seconds. As its namespace's init it ignores SIGXCPU (init
// gets no signal it has no handler for), so the hard limit's SIGKILL is how that ends.
SandboxOutcome Classify(int status, bool timed_out, bool output_cut, bool cpu_out,
                        const std::string& err, int* signal) {
  *signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  if (output_cut) return SandboxOutcome::kOutputLimit;
  if (timed_out || *signal == SIGXCPU || (*signal == SIGKILL && cpu_out))
    return SandboxOutcome::kTimeout;
  if (err.find("MemoryError") != std::string::npos ||
      err.find("Cannot allocate memory") != std::string::npos ||
      err.find("std::bad_alloc") != std::string::npos)
    return SandboxOutcome::kMemory;
  if (*signal != 0) return SandboxOutcome::kCrash;
  return SandboxOutcome::kExited;
}

}  // namespace

const char* SandboxOutcomeName(SandboxOutcome outcome) {
  switch (outcome) {
    case SandboxOutcome::kExited: return "exited";
    case SandboxOutcome::kTimeout: return "timeout";
    case SandboxOutcome::kMemory: return "memory";
    case SandboxOutcome::kCrash: return "crash";
    case SandboxOutcome::kOutputLimit: return "output_limit";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Sandbox>> Sandbox::Create(const SandboxLimits& limits) {
  if (!(limits.cpu_seconds > 0) || !(limits.wall_seconds > 0) || limits.memory_bytes < (16 << 20) ||
      limits.processes < 1 || limits.file_bytes < 1 || limits.output_bytes < 1)
    return absl::InvalidArgumentError(
        "sandbox limits: cpu and wall seconds > 0, memory >= 16 MiB, processes, file and "
        "output bytes >= 1");
  if (!SyscallFilterAvailable())
    return absl::FailedPreconditionError(
        "the code sandbox has no seccomp filter for this architecture (x86-64 and aarch64 "
        "only); code_tests does not run code here");
  // A program that closes its stdin early must not kill the server with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<Sandbox> sandbox(new Sandbox(limits));
  // The probe: a trivial program, through every step a real run takes.
  absl::StatusOr<SandboxResult> probe = sandbox->Run({"/usr/bin/true"}, {}, "");
  if (!probe.ok())
    return absl::FailedPreconditionError(absl::StrCat(
        "the code sandbox cannot start on this machine (", probe.status().message(),
        "); it needs unprivileged user, mount, PID and network namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"));
  if (probe->outcome != SandboxOutcome::kExited || probe->exit_code != 0)
    return absl::FailedPreconditionError(absl::StrCat(
        "the code sandbox's probe (/usr/bin/true) ended ", SandboxOutcomeName(probe->outcome),
        " with exit code ", probe->exit_code, ": ", probe->err));
  return sandbox;
}

absl::StatusOr<SandboxResult> Sandbox::Run(const std::vector<std::string>& argv,
                                           const std::vector<SandboxFile>& files,
                                           std::string_view stdin_text,
                                           const SandboxLimits* run_limits) const {
  const SandboxLimits& limits = run_limits ? *run_limits : limits_;
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/')
    return absl::InvalidArgumentError("sandbox: argv[0] must be an absolute path");
  for (const SandboxFile& f : files)
    if (f.name.empty() || f.name.find('/') != std::string::npos || f.name == "." || f.name == "..")
      return absl::InvalidArgumentError(absl::StrCat("sandbox: bad file name \"", f.name, "\""));

  // --- The plan.
  ChildPlan plan;
  plan.limits = limits;
  static const std::vector<sock_filter>* const filter = new std::vector<sock_filter>(SyscallFilter());
  plan.filter.len = static_cast<unsigned short>(filter->size());
  plan.filter.filter = const_cast<sock_filter*>(filter->data());
  PlanRoot(&plan);
  plan.argv_storage = argv;
  plan.env_storage = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"};
  for (std::string& a : plan.argv_storage) plan.argv.push_back(a.data());
  plan.argv.push_back(nullptr);
  for (std::string& e : plan.env_storage) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);
  for (const SandboxFile& f : files)
    plan.files.emplace_back(absl::StrCat(kStaging, "/tmp/", f.name), &f.contents);

  Pipe sync, status, in, out, err;
  if (!MakePipe(&sync) || !MakePipe(&status) || !MakePipe(&in) || !MakePipe(&out) ||
      !MakePipe(&err))
    return absl::InternalError(absl::StrCat("sandbox: pipe: ", strerror(errno)));
  plan.sync_read = sync.read;
  plan.status_write = status.write;
  plan.stdin_read = in.read;
  plan.stdout_write = out.write;
  plan.stderr_write = err.write;

  // --- The child, in its namespaces.
  std::vector<char> stack(256 << 10);
  const auto start = Clock::now();
  const pid_t pid = clone(ChildMain, stack.data() + stack.size(),
                          CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET |
                              CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD,
                          &plan);
  if (pid < 0) return absl::InternalError(absl::StrCat("sandbox: clone: ", strerror(errno)));
  auto reap = [pid] {
    kill(pid, SIGKILL);  // init of its PID namespace: everything in it dies too
    int ignored;
    while (waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
    }
  };
  close(sync.read), sync.read = -1;
  close(status.write), status.write = -1;
  close(in.read), in.read = -1;
  close(out.write), out.write = -1;
  close(err.write), err.write = -1;
  if (absl::Status s = WriteIdMaps(pid); !s.ok()) {
    reap();
    return absl::InternalError(absl::StrCat("sandbox: user namespace id maps: ", s.message()));
  }
  if (write(sync.write, "g", 1) != 1) {
    reap();
    return absl::InternalError("sandbox: releasing the child");
  }
  // EOF: the program was exec'd; text: a set-up step failed.
  std::string setup_error;
  char buffer[4096];
  for (ssize_t n; (n = read(status.read, buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    setup_error.append(buffer, n);
  }
  if (!setup_error.empty()) {
    reap();
    return absl::InternalError(absl::StrCat("sandbox set-up: ", setup_error));
  }

  // --- Its input and output, until it ends or the deadline.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  fcntl(in.write, F_SETFL, O_NONBLOCK);
  SandboxResult result;
  size_t written = 0;
  bool timed_out = false, output_cut = false, exited = false;
  int raw_status = 0;
  bool cpu_out = false;
  Clock::time_point ended;
  if (stdin_text.empty()) close(in.write), in.write = -1;
  const auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(limits.wall_seconds));
  while (!exited || out.read >= 0 || err.read >= 0) {
    pollfd fds[4];
    int n = 0;
    const int pidfd_at = exited || pidfd < 0 ? -1 : n;
    if (pidfd_at >= 0) fds[n++] = {pidfd, POLLIN, 0};
    const int out_at = out.read >= 0 ? n : -1;
    if (out_at >= 0) fds[n++] = {out.read, POLLIN, 0};
    const int err_at = err.read >= 0 ? n : -1;
    if (err_at >= 0) fds[n++] = {err.read, POLLIN, 0};
    const int in_at = in.write >= 0 ? n : -1;
    if (in_at >= 0) fds[n++] = {in.write, POLLOUT, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    // Without a pidfd (kernels before 5.3) the end is noticed by polling for it.
    const int wait_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, pidfd < 0 ? 20 : 1000));
    if (left.count() <= 0 && !timed_out && !exited) {
      timed_out = true;
      kill(pid, SIGKILL);
    }
    if (poll(fds, n, exited ? 100 : wait_ms) < 0 && errno != EINTR) break;
    // Its end kills the whole namespace, so the pipes close at once; a second is ample.
    if (exited && Clock::now() > ended + std::chrono::seconds(1)) break;
    for (auto [at, pipe, text] : {std::tuple{out_at, &out, &result.out},
                                  std::tuple{err_at, &err, &result.err}}) {
      if (at < 0 || fds[at].revents == 0) continue;
      const ssize_t got = read(pipe->read, buffer, sizeof(buffer));
      if (got <= 0) {
        close(pipe->read), pipe->read = -1;
        continue;
      }
      if (output_cut) continue;  // drained, not kept
      text->append(buffer, got);
      if (static_cast<int64_t>(text->size()) > limits.output_bytes) {
        output_cut = true;
        text->resize(limits.output_bytes);
        kill(pid, SIGKILL);
      }
    }
    if (in_at >= 0 && fds[in_at].revents) {
      const ssize_t put = (fds[in_at].revents & POLLOUT)
                              ? write(in.write, stdin_text.data() + written,
                                      stdin_text.size() - written)
                              : -1;
      if (put > 0) written += put;
      if (put < 0 || written == stdin_text.size()) close(in.write), in.write = -1;
    }
    if (!exited && (pidfd_at < 0 ? true : fds[pidfd_at].revents != 0)) {
      struct rusage usage;
      if (wait4(pid, &raw_status, WNOHANG, &usage) == pid) {
        cpu_out = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + 1e-6 * (usage.ru_utime.tv_usec +
                  usage.ru_stime.tv_usec) >= limits.cpu_seconds - 0.05;
        exited = true;
        ended = Clock::now();
        result.seconds = std::chrono::duration<double>(ended - start).count();
        result.exit_code = WIFEXITED(raw_status) ? WEXITSTATUS(raw_status) : -1;
      }
    }
  }
  if (pidfd >= 0) close(pidfd);
  if (!exited) {
    reap();
    return absl::InternalError("sandbox: lost track of the child");
  }
  // Output read after the end (a program that wrote and exited at once) counts too.
  result.outcome =
      Classify(raw_status, timed_out, output_cut, cpu_out, result.err, &result.signal);
  return result;
}

}  // namespace grpo
