#include "local/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace grpo {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::string& name, const std::vector<std::string>& argv,
    const std::map<std::string, std::string>& env, const std::string& log_path, bool append) {
  if (argv.empty()) return absl::InvalidArgumentError("argv: empty");
  if (access(argv[0].c_str(), X_OK) != 0)
    return absl::NotFoundError(absl::StrCat(name, ": cannot execute ", argv[0]));
  // Everything the child needs is built before fork: between fork and exec only
  // async-signal-safe calls are allowed (the launcher has gRPC threads).
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) merged[std::string(*e, eq - *e)] = eq + 1;
  }
  for (const auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int log_fd = open(log_path.c_str(),
                          O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
  if (log_fd < 0)
    return absl::InternalError(absl::StrCat("opening ", log_path, ": ", std::strerror(errno)));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // the launcher died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);  // a Ctrl-C at the terminal reaches the launcher, which stops us in order
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(log_fd);
  std::unique_ptr<ChildProcess> child(new ChildProcess);
  child->name_ = name;
  child->log_path_ = log_path;
  child->pid_ = pid;
  return child;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_status_) Stop(std::chrono::seconds(5));
}

std::optional<int> ChildProcess::Poll() {
  if (exit_status_ || pid_ <= 0) return exit_status_;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_)
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_status_;
}

void ChildProcess::Kill(int signal) {
  if (pid_ > 0 && !Poll()) kill(pid_, signal);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  // Polling, as in Stop: a child's exit has no fd to wait on portably.
  while (!Poll() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return exit_status_;
}

int ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (Poll()) return *exit_status_;
  kill(pid_, SIGTERM);
  const auto give_up = std::chrono::steady_clock::now() + grace;
  while (!Poll()) {
    if (std::chrono::steady_clock::now() > give_up) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      exit_status_ = 128 + SIGKILL;
      break;
    }
    // Polling a child's exit with a short interval: there is no fd to wait on portably.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return *exit_status_;
}

}  // namespace grpo
