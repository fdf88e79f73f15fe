#include "local/supervisor.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "rpc/process.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// "status 1", or "signal 9 (status 137)" for a child a signal ended.
std::string DescribeExit(int status) {
  if (status > 128 && status < 128 + 65)
    return absl::StrCat("signal ", status - 128, " (status ", status, ")");
  return absl::StrCat("status ", status);
}

// The stop order of StopAll: workers first, the coordinator last.
int StopRank(const std::string& name) {
  if (name.rfind("rollout_worker", 0) == 0) return 0;
  if (name == "learner-0") return 1;
  if (name.rfind("learner-", 0) == 0) return 2;
  if (name.rfind("reward", 0) == 0) return 3;
  return 4;
}

}  // namespace

Supervisor::Supervisor(std::string run_dir, RestartPolicy policy, std::ostream* events)
    : run_dir_(std::move(run_dir)), policy_(policy), events_(events) {}

Supervisor::~Supervisor() { StopAll(std::chrono::seconds(10)); }

void Supervisor::Log(const std::string& line) {
  if (events_) *events_ << line << std::endl;
}

absl::Status Supervisor::Spawn(Service& s) {
  const bool restart = s.process != nullptr;
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Spawn(
      s.name, s.argv, s.env, (fs::path(run_dir_) / "logs" / (s.name + ".log")).string(),
      /*append=*/restart);
  if (!child.ok()) return child.status();
  s.process = std::move(*child);
  s.restart_at.reset();
  std::error_code ec;
  fs::create_directories(fs::path(run_dir_) / "pids", ec);
  // The pid file is informational; a failure to write it never stops the launch.
  (void)WritePortFile((fs::path(run_dir_) / "pids" / s.name).string(), s.process->pid());
  return absl::OkStatus();
}

absl::StatusOr<ChildProcess*> Supervisor::Start(const std::string& name, const std::string& role,
                                                const std::string& group,
                                                std::vector<std::string> argv,
                                                std::map<std::string, std::string> env) {
  auto s = std::make_unique<Service>();
  s->name = name;
  s->role = role;
  s->group = group;
  s->argv = std::move(argv);
  s->env = std::move(env);
  if (absl::Status status = Spawn(*s); !status.ok()) return status;
  services_.push_back(std::move(s));
  return services_.back()->process.get();
}

void Supervisor::SetFlag(const std::string& name, const std::string& flag,
                         const std::string& value) {
  for (auto& s : services_) {
    if (s->name != name) continue;
    const std::string prefix = absl::StrCat("--", flag, "=");
    auto it = std::find_if(s->argv.begin(), s->argv.end(),
                           [&](const std::string& a) { return a.rfind(prefix, 0) == 0; });
    if (it != s->argv.end()) {
      *it = prefix + value;
    } else {
      s->argv.push_back(prefix + value);
    }
  }
}

void Supervisor::OnGroupRestart(const std::string& group, std::function<void()> hook) {
  group_hooks_[group] = std::move(hook);
}

absl::Status Supervisor::OnExit(Service& s, int exit_status) {
  const auto now = Clock::now();
  while (!s.recent.empty() && now - s.recent.front() > policy_.window) s.recent.pop_front();
  if (static_cast<int>(s.recent.size()) >= policy_.max_restarts)
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s exited with %s after %d restart(s) within %d s (--max_restarts %d); see %s",
        s.name, DescribeExit(exit_status), s.recent.size(), policy_.window.count(),
        policy_.max_restarts, s.process->log_path()));
  // Exponential backoff over the restarts in the window: a crash loop slows down, a
  // single crash comes back at once.
  auto backoff = policy_.initial_backoff * (1 << std::min<size_t>(s.recent.size(), 16));
  backoff = std::min<std::chrono::milliseconds>(backoff, policy_.max_backoff);
  s.recent.push_back(now);
  ++s.restarts;
  s.restart_at = now + backoff;
  Log(absl::StrFormat("grpo_launch: %s exited with %s while the job ran; restart %d in %.1f s "
                      "(log %s)",
                      s.name, DescribeExit(exit_status), s.restarts,
                      std::chrono::duration<double>(backoff).count(), s.process->log_path()));
  if (s.group.empty()) return absl::OkStatus();
  // The rest of the group is stopped now and starts again with it.
  std::vector<Service*> others;
  for (auto& o : services_)
    if (o.get() != &s && o->group == s.group && !o->restart_at) others.push_back(o.get());
  std::stable_sort(others.begin(), others.end(), [](const Service* a, const Service* b) {
    return StopRank(a->name) < StopRank(b->name);
  });
  for (Service* o : others) {
    if (!o->process->Poll()) {
      Log(absl::StrCat("grpo_launch: stopping ", o->name, " to restart its group with ", s.name));
      o->process->Stop(std::chrono::seconds(10));
    }
    o->restart_at = s.restart_at;
  }
  return absl::OkStatus();
}

absl::Status Supervisor::Supervise() {
  for (auto& s : services_) {
    if (s->restart_at) continue;
    if (std::optional<int> exit = s->process->Poll()) {
      if (absl::Status status = OnExit(*s, *exit); !status.ok()) return status;
    }
  }
  const auto now = Clock::now();
  std::map<std::string, bool> hooks_run;
  for (auto& s : services_) {
    if (!s->restart_at || *s->restart_at > now) continue;
    if (!s->group.empty() && !hooks_run[s->group]) {
      hooks_run[s->group] = true;
      if (auto hook = group_hooks_.find(s->group); hook != group_hooks_.end()) hook->second();
    }
    if (absl::Status status = Spawn(*s); !status.ok())
      return absl::Status(status.code(),
                          absl::StrCat("restarting ", s->name, ": ", status.message()));
  }
  return absl::OkStatus();
}

std::map<std::string, int> Supervisor::RestartsByRole() const {
  std::map<std::string, int> out;
  for (const auto& s : services_)
    if (s->restarts > 0) out[s->role] += s->restarts;
  return out;
}

std::string Supervisor::RestartSummary() const {
  const std::map<std::string, int> by_role = RestartsByRole();
  if (by_role.empty()) return "none";
  return absl::StrJoin(by_role, ", ", [](std::string* out, const auto& entry) {
    absl::StrAppend(out, entry.first, " ", entry.second);
  });
}

void Supervisor::StopAll(std::chrono::milliseconds grace) {
  std::vector<Service*> order;
  for (auto& s : services_) order.push_back(s.get());
  std::stable_sort(order.begin(), order.end(), [](const Service* a, const Service* b) {
    return StopRank(a->name) < StopRank(b->name);
  });
  for (Service* s : order) s->process->Stop(grace);
  services_.clear();
}

void Supervisor::KillAll() {
  for (auto& s : services_) s->process->Kill(SIGKILL);
  for (auto& s : services_) s->process->Stop(std::chrono::seconds(1));
  services_.clear();
}

}  // namespace grpo
