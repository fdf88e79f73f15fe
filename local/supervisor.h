// Supervisor: the one-machine launcher's process table, doing for grpo_launch what a
// Kubernetes restart policy or torchrun's --max-restarts does for the same binaries. Each
// service is a child process (child_process.h) with the flags it was started with; one
// that exits while the job runs is started again with the same flags after an
// exponential backoff, and its log gets the new run appended. A service that has had to
// be restarted `max_restarts` times within `window` and exits again fails the launch.
//
// Services of one restart group (the learner ranks) restart together: when a rank is
// lost the others wait in collectives that can never complete, so they are stopped and
// the whole group starts again, as torchrun restarts all its workers.
//
// Owns its children; the destructor stops them. Not thread-safe.
#ifndef GRPO_LOCAL_SUPERVISOR_H_
#define GRPO_LOCAL_SUPERVISOR_H_

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "local/child_process.h"

namespace grpo {

struct RestartPolicy {
  int max_restarts = 5;                           // per service within `window`
  std::chrono::seconds window{600};
  std::chrono::milliseconds initial_backoff{500};  // doubled on each restart in the window
  std::chrono::milliseconds max_backoff{30000};
};

class Supervisor {
 public:
  // Logs go to <run_dir>/logs/<name>.log and each child's pid to <run_dir>/pids/<name>
  // (rewritten on every start, for operators and tests). Events go to `events` (may be
  // null).
  Supervisor(std::string run_dir, RestartPolicy policy, std::ostream* events);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts a service. `role` is what the restart summary counts ("rollout_worker");
  // `group` names the services that restart together ("" = alone).
  absl::StatusOr<ChildProcess*> Start(const std::string& name, const std::string& role,
                                      const std::string& group, std::vector<std::string> argv,
                                      std::map<std::string, std::string> env = {});
  // Sets `--flag=value` for the service's later starts (a --listen port once known).
  void SetFlag(const std::string& name, const std::string& flag, const std::string& value);
  // Runs before the services of `group` start again (a stale rendezvous file removed).
  void OnGroupRestart(const std::string& group, std::function<void()> hook);

  // Notices exits and starts again what is due. FAILED_PRECONDITION naming the service,
  // its exit status and its log when one has exhausted the policy.
  absl::Status Supervise();

  // Restarts so far, by role (only roles that restarted).
  std::map<std::string, int> RestartsByRole() const;
  // "coordinator 1, learner 1" or "none".
  std::string RestartSummary() const;

  // Workers first (they talk to everyone), then learner rank 0 (it tells the other
  // ranks to shut down), the other ranks, the reward servers, the coordinator last; each
  // gets SIGTERM and `grace` before SIGKILL.
  void StopAll(std::chrono::milliseconds grace);
  // SIGKILL to every child at once (a second Ctrl-C).
  void KillAll();

 private:
  struct Service {
    std::string name, role, group;
    std::vector<std::string> argv;
    std::map<std::string, std::string> env;
    std::unique_ptr<ChildProcess> process;
    int restarts = 0;
    std::deque<std::chrono::steady_clock::time_point> recent;  // restarts in the window
    std::optional<std::chrono::steady_clock::time_point> restart_at;
  };

  absl::Status Spawn(Service& service);
  absl::Status OnExit(Service& service, int exit_status);
  void Log(const std::string& line);

  std::string run_dir_;
  RestartPolicy policy_;
  std::ostream* events_;
  std::vector<std::unique_ptr<Service>> services_;
  std::map<std::string, std::function<void()>> group_hooks_;
};

}  // namespace grpo

#endif  // GRPO_LOCAL_SUPERVISOR_H_
