// ChildProcess: a service binary started by the local launcher. Its stdout and stderr go
// to a log file; it receives SIGTERM if the launcher dies, so nothing outlives a crashed
// launcher. Not thread-safe.
#ifndef GRPO_LOCAL_CHILD_PROCESS_H_
#define GRPO_LOCAL_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace grpo {

class ChildProcess {
 public:
  // argv[0] is the binary's path. `env` adds to (or overrides) the launcher's environment.
  // The log is truncated, or with `append` (a restart) continued.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(
      const std::string& name, const std::vector<std::string>& argv,
      const std::map<std::string, std::string>& env, const std::string& log_path,
      bool append = false);
  ~ChildProcess();  // stops it (SIGTERM, then SIGKILL) if it still runs

  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }

  // The exit status once it has ended (a signal number s reads as 128 + s), else nullopt.
  std::optional<int> Poll();
  // Waits up to `timeout` for it to end on its own; the exit status, or nullopt.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
  int Stop(std::chrono::milliseconds grace);
  void Kill(int signal);

 private:
  ChildProcess() = default;
  std::string name_, log_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

}  // namespace grpo

#endif  // GRPO_LOCAL_CHILD_PROCESS_H_
