#include "local/launcher.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/job_spec.h"
#include "grpo/v1/coordinator.grpc.pb.h"
#include "local/child_process.h"
#include "rpc/process.h"
#include "rpc/status.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// --bin_dir, else the build tree's binary, else (an installed copy, as in the container
// image) the one beside this executable.
std::string Binary(const LaunchOptions& options, const std::string& name,
                   const char* build_path) {
  if (!options.bin_dir.empty()) return (fs::path(options.bin_dir) / name).string();
  std::error_code error;
  if (fs::exists(build_path, error)) return build_path;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  return error ? std::string(build_path) : (self.parent_path() / name).string();
}

class Cluster {
 public:
  Cluster(const LaunchOptions& options) : options_(options) {}
  ~Cluster() { StopAll(); }

  void Log(const std::string& line) {
    if (options_.progress) *options_.progress << line << std::endl;
  }

  absl::StatusOr<ChildProcess*> Start(const std::string& name, std::vector<std::string> argv,
                                      std::map<std::string, std::string> env = {}) {
    env.emplace("OMP_WAIT_POLICY", "PASSIVE");
    // Every service serves Prometheus metrics on a port of its own, published next to its
    // gRPC port: ports/<name>.metrics.
    argv.push_back("--metrics_listen=127.0.0.1:0");
    argv.push_back(absl::StrCat("--metrics_port_file=",
                                (fs::path(options_.run_dir) / "ports" / (name + ".metrics")).string()));
    absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Spawn(
        name, argv, env, (fs::path(options_.run_dir) / "logs" / (name + ".log")).string());
    if (!child.ok()) return child.status();
    children_.push_back(std::move(*child));
    return children_.back().get();
  }

  // Waits for the port file a child writes once it listens.
  absl::StatusOr<int> AwaitPort(ChildProcess* child, const std::string& port_file) {
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    for (;;) {
      absl::StatusOr<int> port = ReadPortFile(port_file);
      if (port.ok() || port.status().code() != absl::StatusCode::kNotFound) return port;
      if (std::optional<int> exit = child->Poll())
        return absl::UnavailableError(absl::StrCat(child->name(), " exited with status ", *exit,
                                                   " before listening; see ",
                                                   child->log_path()));
      if (Clock::now() > give_up)
        return absl::DeadlineExceededError(
            absl::StrCat(child->name(), " did not listen within 120 s; see ", child->log_path()));
      if (WaitForStopSignal(std::chrono::milliseconds(20)) != 0)
        return absl::CancelledError("interrupted");
    }
  }

  // A child that ended while the job runs; the job cannot finish without it.
  const ChildProcess* Dead() {
    for (auto& child : children_)
      if (child->Poll()) return child.get();
    return nullptr;
  }

  // Workers first (they talk to everyone), then learner rank 0 (it tells the other ranks
  // to shut down; they wait in collectives and do not act on SIGTERM themselves), then
  // the other ranks, the reward servers, the coordinator last.
  void StopAll() {
    auto order = [](const std::string& name) {
      if (name.rfind("rollout_worker", 0) == 0) return 0;
      if (name == "learner-0") return 1;
      if (name.rfind("learner-", 0) == 0) return 2;
      if (name.rfind("reward", 0) == 0) return 3;
      return 4;
    };
    std::stable_sort(children_.begin(), children_.end(), [&](const auto& a, const auto& b) {
      return order(a->name()) < order(b->name());
    });
    for (auto& child : children_) child->Stop(std::chrono::seconds(10));
    children_.clear();
  }

 private:
  const LaunchOptions& options_;
  std::vector<std::unique_ptr<ChildProcess>> children_;
};

std::string PortFile(const LaunchOptions& options, const std::string& name) {
  return (fs::path(options.run_dir) / "ports" / name).string();
}

std::string Loopback(int port) { return absl::StrCat("127.0.0.1:", port); }

void PrintSummary(const v1::Job& job, std::ostream& out) {
  google::protobuf::Struct result;
  if (job.result_json().empty() ||
      !google::protobuf::util::JsonStringToMessage(job.result_json(), &result).ok())
    return;
  auto field = [&](const char* which, const char* key) {
    const auto& f = result.fields();
    if (!f.contains(which)) return 0.0;
    const auto& inner = f.at(which).struct_value().fields();
    return inner.contains(key) ? inner.at(key).number_value() : 0.0;
  };
  const int k = static_cast<int>(field("after", "k"));
  out << "\nheld-out evaluation (" << field("after", "num_prompts") << " prompts, k = " << k
      << ")\n"
      << absl::StrFormat("  %-12s %8s %8s %8s %8s\n", "policy", "pass@1",
                         absl::StrCat("pass@", k), absl::StrCat("maj@", k), "greedy");
  for (const auto& [label, which] : {std::pair{"SFT (before)", "before"},
                                     std::pair{"GRPO (after)", "after"}})
    out << absl::StrFormat("  %-12s %8.3f %8.3f %8.3f %8.3f\n", label, field(which, "pass@1"),
                           field(which, "pass@k"), field(which, "maj@k"),
                           field(which, "greedy_accuracy"));
}

}  // namespace

absl::StatusOr<v1::Job> LaunchLocalCluster(const v1::JobSpec& user_spec,
                                           const LaunchOptions& options) {
  if (options.learner_ranks < 1 || options.rollout_workers < 1 || options.reward_servers < 1)
    return absl::InvalidArgumentError(
        "learner ranks, rollout workers and reward servers: at least one of each");
  // Reject a bad spec before any process starts.
  if (absl::StatusOr<v1::JobSpec> resolved = ResolveJobSpec(user_spec); !resolved.ok())
    return resolved.status();
  std::error_code ec;
  fs::remove_all(fs::path(options.run_dir) / "ports", ec);
  fs::create_directories(fs::path(options.run_dir) / "ports", ec);
  fs::create_directories(fs::path(options.run_dir) / "logs", ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", options.run_dir, ": ", ec.message()));

  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int worker_threads = options.worker_threads > 0
                                 ? options.worker_threads
                                 : std::max(1, cores / options.rollout_workers);
  const int learner_threads = options.learner_threads > 0
                                  ? options.learner_threads
                                  : std::max(1, cores / options.learner_ranks);
  Cluster cluster(options);
  const auto start = Clock::now();

  // --- Coordinator.
  absl::StatusOr<ChildProcess*> coordinator = cluster.Start(
      "coordinator", {Binary(options, "grpo_coordinator", GRPO_COORDINATOR_BINARY),
                      "--listen=127.0.0.1:0",
                      absl::StrCat("--port_file=", PortFile(options, "coordinator"))});
  if (!coordinator.ok()) return coordinator.status();
  absl::StatusOr<int> coordinator_port =
      cluster.AwaitPort(*coordinator, PortFile(options, "coordinator"));
  if (!coordinator_port.ok()) return coordinator_port.status();
  const std::string coordinator_address = Loopback(*coordinator_port);

  // --- Reward servers.
  std::vector<std::string> reward_addresses;
  for (int i = 0; i < options.reward_servers; ++i) {
    const std::string name = absl::StrCat("reward_server-", i);
    absl::StatusOr<ChildProcess*> child = cluster.Start(
        name, {Binary(options, "grpo_reward_server", GRPO_REWARD_SERVER_BINARY),
               "--listen=127.0.0.1:0", absl::StrCat("--port_file=", PortFile(options, name)),
               "--compute_threads=1"});
    if (!child.ok()) return child.status();
    absl::StatusOr<int> port = cluster.AwaitPort(*child, PortFile(options, name));
    if (!port.ok()) return port.status();
    reward_addresses.push_back(Loopback(*port));
  }

  // --- Learner ranks: rank 0 hosts the rendezvous store on a port it picks.
  for (int rank = 0; rank < options.learner_ranks; ++rank) {
    const std::string name = absl::StrCat("learner-", rank);
    absl::StatusOr<ChildProcess*> child = cluster.Start(
        name,
        {Binary(options, "grpo_learner", GRPO_LEARNER_BINARY),
         absl::StrCat("--coordinator=", coordinator_address), "--listen=127.0.0.1:0",
         absl::StrCat("--port_file=", PortFile(options, name)),
         absl::StrCat("--run_root=", options.run_dir),
         absl::StrCat("--threads=", learner_threads),
         // Rank 0's store listens on a port the kernel picks and writes it here; the
         // other ranks read it.
         absl::StrCat("--master_port_file=", PortFile(options, "learner-store"))},
        {{"MASTER_ADDR", "127.0.0.1"},
         {"MASTER_PORT", "0"},
         {"WORLD_SIZE", absl::StrCat(options.learner_ranks)},
         {"RANK", absl::StrCat(rank)}});
    if (!child.ok()) return child.status();
  }
  // --- Rollout workers.
  for (int i = 0; i < options.rollout_workers; ++i) {
    const std::string name = absl::StrCat("rollout_worker-", i);
    absl::StatusOr<ChildProcess*> child = cluster.Start(
        name, {Binary(options, "grpo_rollout_worker", GRPO_ROLLOUT_WORKER_BINARY),
               absl::StrCat("--coordinator=", coordinator_address),
               absl::StrCat("--reward_server=", reward_addresses[i % reward_addresses.size()]),
               absl::StrCat("--threads=", worker_threads),
               absl::StrCat("--max_prompts=", options.max_prompts_per_lease),
               absl::StrCat("--name=", name)});
    if (!child.ok()) return child.status();
  }
  cluster.Log(absl::StrFormat(
      "grpo_launch: coordinator %s, %d reward server(s), %d learner rank(s) x %d threads, "
      "%d rollout worker(s) x %d threads; logs in %s/logs, metrics ports in %s/ports/*.metrics",
      coordinator_address, options.reward_servers, options.learner_ranks, learner_threads,
      options.rollout_workers, worker_threads, options.run_dir, options.run_dir));

  // --- Submit and follow.
  auto stub = v1::CoordinatorService::NewStub(
      grpc::CreateChannel(coordinator_address, grpc::InsecureChannelCredentials()));
  v1::Job job;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::SubmitJobRequest request;
    *request.mutable_spec() = user_spec;
    absl::Status s = FromGrpcStatus(stub->SubmitJob(&context, request, &job), "SubmitJob");
    if (!s.ok()) return s;
  }
  cluster.Log(absl::StrCat("grpo_launch: submitted ", job.job_id(), " (", job.name(), ")"));
  std::string last_message;
  for (;;) {
    if (int signal = WaitForStopSignal(std::chrono::milliseconds(100)); signal != 0) {
      cluster.Log(absl::StrCat("grpo_launch: signal ", signal, ", cancelling ", job.job_id()));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::CancelJobRequest request;
      request.set_job_id(job.job_id());
      v1::Job ignored;
      (void)stub->CancelJob(&context, request, &ignored);
      return absl::CancelledError("interrupted");
    }
    if (const ChildProcess* dead = cluster.Dead())
      return absl::InternalError(absl::StrCat(dead->name(), " exited with status ",
                                              *const_cast<ChildProcess*>(dead)->Poll(),
                                              " while the job ran; see ", dead->log_path()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetJobRequest request;
    request.set_job_id(job.job_id());
    v1::Job now;
    if (!stub->GetJob(&context, request, &now).ok()) continue;
    job = std::move(now);
    if (job.progress().message() != last_message && !job.progress().message().empty()) {
      last_message = job.progress().message();
      cluster.Log(last_message);
    }
    if (job.state() == v1::JOB_STATE_SUCCEEDED || job.state() == v1::JOB_STATE_FAILED ||
        job.state() == v1::JOB_STATE_CANCELLED)
      break;
  }
  if (options.progress) PrintSummary(job, *options.progress);
  cluster.Log(absl::StrFormat(
      "grpo_launch: %s %s in %s; run directory %s; lease reissues %d, duplicate groups %d%s",
      job.job_id(), v1::JobState_Name(job.state()),
      [&] {
        const int s = static_cast<int>(
            std::chrono::duration<double>(Clock::now() - start).count() + 0.5);
        return absl::StrFormat("%d:%02d", s / 60, s % 60);
      }(),
      job.run_dir(), job.lease_reissues(), job.progress().duplicate_groups(),
      job.error().empty() ? "" : absl::StrCat("; error: ", job.error())));
  cluster.StopAll();
  return job;
}

}  // namespace grpo
