#include "local/launcher.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/clock.h"
#include "base/durable_file.h"
#include "base/file.h"
#include "grpo/v1/coordinator.grpc.pb.h"
#include "jobspec/job_spec.h"
#include "local/child_process.h"
#include "local/supervisor.h"
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

std::string PortFile(const LaunchOptions& options, const std::string& name) {
  return (fs::path(options.run_dir) / "ports" / name).string();
}

std::string Loopback(int port) { return absl::StrCat("127.0.0.1:", port); }

// The launcher links no LibTorch, so it checks the device's form only; a GPU that is not
// there is the service's error, in its log. A bad value fails here, before any process.
absl::Status CheckDevice(const char* flag, const std::string& device) {
  const std::string index = absl::StartsWith(device, "cuda:") ? device.substr(5) : "";
  if (device == "cpu" || device == "cuda" ||
      (!index.empty() && index.size() <= 4 &&
       std::all_of(index.begin(), index.end(), absl::ascii_isdigit)))
    return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " = \"", device, "\": must be cpu, cuda or cuda:N"));
}

absl::Status CheckPlacements(const LaunchOptions& o) {
  if (absl::Status s = CheckDevice("learner_device", o.learner_device); !s.ok()) return s;
  if (absl::Status s = CheckDevice("worker_device", o.worker_device); !s.ok()) return s;
  // NCCL refuses two ranks on one GPU; "cuda" gives each rank its own.
  if (o.learner_ranks > 1 && absl::StartsWith(o.learner_device, "cuda:"))
    return absl::InvalidArgumentError(absl::StrCat(
        "learner_device = \"", o.learner_device, "\" would put all ", o.learner_ranks,
        " learner ranks on one GPU; use cuda (rank r on its own GPU)"));
  for (const char* dtype : {"", "float32", "bfloat16", "float16"})
    if (o.worker_dtype == dtype) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "worker_dtype = \"", o.worker_dtype, "\": must be float32, bfloat16 or float16"));
}

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
  const char* trained =
      job.spec().algorithm() == v1::ALGORITHM_PPO ? "PPO (after)" : "GRPO (after)";
  for (const auto& [label, which] : {std::pair{"SFT (before)", "before"},
                                     std::pair{trained, "after"}})
    out << absl::StrFormat("  %-12s %8.3f %8.3f %8.3f %8.3f\n", label, field(which, "pass@1"),
                           field(which, "pass@k"), field(which, "maj@k"),
                           field(which, "greedy_accuracy"));
}

}  // namespace


namespace {

// <run_dir>/launch_job.txt: the job's id once submitted, and on a second line its final
// state once it ended. What `resume` reads.
struct RunRecord {
  std::string job_id;
  std::string ended;  // a JobState name, or empty while the job runs
};

std::string RecordPath(const LaunchOptions& o) {
  return (fs::path(o.run_dir) / "launch_job.txt").string();
}

std::optional<RunRecord> ReadRecord(const LaunchOptions& o) {
  const std::vector<std::string> lines = absl::StrSplit(ReadFileOrEmpty(RecordPath(o)), '\n');
  if (lines.empty() || lines[0].empty()) return std::nullopt;
  return RunRecord{lines[0], lines.size() > 1 ? lines[1] : ""};
}

absl::Status WriteRecord(const LaunchOptions& o, const RunRecord& r) {
  return WriteFileDurably(RecordPath(o), absl::StrCat(r.job_id, "\n", r.ended,
                                                      r.ended.empty() ? "" : "\n"));
}

// Children of a killed launcher get SIGTERM (child_process.h) and may still be writing
// their last checkpoint or state: a resumed run waits for them rather than racing them.
absl::Status AwaitOldChildren(const LaunchOptions& o) {
  std::error_code ec;
  const fs::path pids = fs::path(o.run_dir) / "pids";
  if (!fs::is_directory(pids, ec)) return absl::OkStatus();
  const auto give_up = Clock::now() + std::chrono::seconds(60);
  for (const fs::directory_entry& entry : fs::directory_iterator(pids, ec)) {
    absl::StatusOr<int> pid = ReadPortFile(entry.path().string());
    if (!pid.ok() || *pid <= 0) continue;
    auto alive = [&] {
      // Only a grpo_ process counts: the pid may have been reused since.
      std::ifstream cmdline(absl::StrCat("/proc/", *pid, "/cmdline"));
      std::string argv0;
      return std::getline(cmdline, argv0, '\0') &&
             fs::path(argv0).filename().string().rfind("grpo_", 0) == 0;
    };
    while (alive()) {
      if (Clock::now() > give_up)
        return absl::FailedPreconditionError(absl::StrCat(
            entry.path().filename().string(), " of the earlier launch (pid ", *pid,
            ") is still running; stop it before --resume"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // no fd to wait on
    }
  }
  return absl::OkStatus();
}

// What the run directory holds decides what may be done with it: a fresh launch
// starts over a finished run (or none); only `resume` continues an unfinished one.
absl::StatusOr<std::optional<RunRecord>> CheckRunDir(const LaunchOptions& o) {
  std::optional<RunRecord> record = ReadRecord(o);
  if (o.resume) {
    if (!record)
      return absl::FailedPreconditionError(absl::StrCat(
          o.run_dir, " holds no run to resume (no ", RecordPath(o),
          "); start one without --resume"));
    if (absl::Status s = AwaitOldChildren(o); !s.ok()) return s;
    return record;
  }
  if (record && record->ended.empty())
    return absl::FailedPreconditionError(absl::StrCat(
        o.run_dir, " holds an unfinished run (", record->job_id,
        "); continue it with --resume, or choose another --run_dir"));
  // A finished run's coordinator state would bring its jobs back; this run starts over.
  std::error_code ec;
  fs::remove_all(fs::path(o.run_dir) / "coordinator", ec);
  fs::remove(RecordPath(o), ec);
  return std::optional<RunRecord>();
}

// The services' addresses, once they listen.
struct Addresses {
  std::string coordinator;
  std::vector<std::string> reward_servers;
};

// Every service as a supervised child, started with the flags it keeps across restarts:
// a fixed --listen port once the kernel has picked it, the coordinator's state directory.
absl::StatusOr<Addresses> StartServices(const LaunchOptions& o, int worker_threads,
                                        int learner_threads, Supervisor& supervisor) {
  auto start = [&](const std::string& name, const std::string& role, const std::string& group,
                   std::vector<std::string> argv, std::map<std::string, std::string> env = {}) {
    env.emplace("OMP_WAIT_POLICY", "PASSIVE");
    // Every service serves Prometheus metrics on a port of its own, published next to its
    // gRPC port: ports/<name>.metrics.
    argv.push_back("--metrics_listen=127.0.0.1:0");
    argv.push_back(absl::StrCat("--metrics_port_file=", PortFile(o, name + ".metrics")));
    return supervisor.Start(name, role, group, std::move(argv), std::move(env));
  };
  // Waits for the port file a child writes once it listens, then pins the port.
  auto await_port = [&](ChildProcess* child) -> absl::StatusOr<int> {
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    for (;;) {
      absl::StatusOr<int> port = ReadPortFile(PortFile(o, child->name()));
      if (port.ok()) {
        supervisor.SetFlag(child->name(), "listen", Loopback(*port));
        return port;
      }
      if (port.status().code() != absl::StatusCode::kNotFound) return port;
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
  };
  Addresses a;

  // --- Coordinator, on a state directory so that a restart resumes its jobs.
  absl::StatusOr<ChildProcess*> coordinator = start(
      "coordinator", "coordinator", "",
      {Binary(o, "grpo_coordinator", GRPO_COORDINATOR_BINARY), "--listen=127.0.0.1:0",
       absl::StrCat("--port_file=", PortFile(o, "coordinator")),
       absl::StrCat("--state_dir=", (fs::path(o.run_dir) / "coordinator").string())});
  if (!coordinator.ok()) return coordinator.status();
  absl::StatusOr<int> coordinator_port = await_port(*coordinator);
  if (!coordinator_port.ok()) return coordinator_port.status();
  a.coordinator = Loopback(*coordinator_port);

  // --- Reward servers.
  for (int i = 0; i < o.reward_servers; ++i) {
    const std::string name = absl::StrCat("reward_server-", i);
    absl::StatusOr<ChildProcess*> child =
        start(name, "reward_server", "",
              {Binary(o, "grpo_reward_server", GRPO_REWARD_SERVER_BINARY),
               "--listen=127.0.0.1:0", absl::StrCat("--port_file=", PortFile(o, name)),
               "--compute_threads=1"});
    if (!child.ok()) return child.status();
    absl::StatusOr<int> port = await_port(*child);
    if (!port.ok()) return port.status();
    a.reward_servers.push_back(Loopback(*port));
  }

  // --- Learner ranks, one restart group: rank 0 hosts the rendezvous store on a port it
  // picks and writes to learner-store; a restarted group must not read the old one.
  const std::string store_file = PortFile(o, "learner-store");
  supervisor.OnGroupRestart("learner", [store_file] {
    std::error_code ec;
    fs::remove(store_file, ec);
  });
  for (int rank = 0; rank < o.learner_ranks; ++rank) {
    const std::string name = absl::StrCat("learner-", rank);
    absl::StatusOr<ChildProcess*> child = start(
        name, "learner", "learner",
        {Binary(o, "grpo_learner", GRPO_LEARNER_BINARY),
         absl::StrCat("--coordinator=", a.coordinator), "--listen=127.0.0.1:0",
         absl::StrCat("--port_file=", PortFile(o, name)), absl::StrCat("--run_root=", o.run_dir),
         absl::StrCat("--threads=", learner_threads),
         absl::StrCat("--master_port_file=", store_file),
         absl::StrCat("--device=", o.learner_device)},
        // Every rank is on this host, so its local rank is its rank: with --device=cuda
        // the learner takes that GPU and refuses, at start-up, one that does not exist.
        {{"MASTER_ADDR", "127.0.0.1"},
         {"MASTER_PORT", "0"},
         {"WORLD_SIZE", absl::StrCat(o.learner_ranks)},
         {"RANK", absl::StrCat(rank)},
         {"LOCAL_RANK", absl::StrCat(rank)}});
    if (!child.ok()) return child.status();
  }

  // --- Rollout workers.
  for (int i = 0; i < o.rollout_workers; ++i) {
    const std::string name = absl::StrCat("rollout_worker-", i);
    absl::StatusOr<ChildProcess*> child =
        start(name, "rollout_worker", "",
              {Binary(o, "grpo_rollout_worker", GRPO_ROLLOUT_WORKER_BINARY),
               absl::StrCat("--coordinator=", a.coordinator),
               absl::StrCat("--reward_server=", a.reward_servers[i % a.reward_servers.size()]),
               absl::StrCat("--threads=", worker_threads),
               absl::StrCat("--max_prompts=", o.max_prompts_per_lease),
               absl::StrCat("--name=", name), absl::StrCat("--device=", o.worker_device),
               absl::StrCat("--dtype=", o.worker_dtype)});
    if (!child.ok()) return child.status();
  }
  return a;
}

bool Ended(const v1::Job& job) {
  return job.state() == v1::JOB_STATE_SUCCEEDED || job.state() == v1::JOB_STATE_FAILED ||
         job.state() == v1::JOB_STATE_CANCELLED;
}

// Follows the job to its end, supervising the services meanwhile. The first SIGINT or
// SIGTERM cancels the job and waits for it to end; a second one returns CANCELLED at
// once (the caller kills everything).
absl::StatusOr<v1::Job> Follow(v1::CoordinatorService::Stub& stub, v1::Job job,
                               Supervisor& supervisor, std::ostream* progress) {
  auto log = [&](const std::string& line) {
    if (progress) *progress << line << std::endl;
  };
  std::string last_message;
  bool cancel_logged = false, cancel_sent = false;
  for (;;) {
    const int signals = StopSignalCount();
    if (signals >= 2)
      return absl::CancelledError("interrupted again; every process was stopped at once");
    if (signals == 1 && !cancel_sent) {
      if (!cancel_logged)
        log(absl::StrCat("grpo_launch: signal ", PollStopSignal(), ", cancelling ", job.job_id(),
                         " (again to stop at once)"));
      cancel_logged = true;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::CancelJobRequest request;
      request.set_job_id(job.job_id());
      v1::Job ignored;
      cancel_sent = stub.CancelJob(&context, request, &ignored).ok();  // else: next round
    }
    if (absl::Status s = supervisor.Supervise(); !s.ok()) return s;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetJobRequest request;
    request.set_job_id(job.job_id());
    v1::Job now;
    if (stub.GetJob(&context, request, &now).ok()) {
      job = std::move(now);
      if (job.progress().message() != last_message && !job.progress().message().empty()) {
        last_message = job.progress().message();
        log(last_message);
      }
      if (Ended(job)) return job;
    }
    WaitForAnotherStopSignal(signals, std::chrono::milliseconds(100));
  }
}

std::string FormatElapsed(Clock::time_point start) {
  const int s =
      static_cast<int>(SecondsSince(start) + 0.5);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace

absl::StatusOr<LaunchOutcome> LaunchLocalCluster(const v1::JobSpec& user_spec,
                                                 const LaunchOptions& options) {
  if (options.learner_ranks < 1 || options.rollout_workers < 1 || options.reward_servers < 1)
    return absl::InvalidArgumentError(
        "learner ranks, rollout workers and reward servers: at least one of each");
  if (options.restart.max_restarts < 0)
    return absl::InvalidArgumentError("max_restarts must be >= 0");
  if (absl::Status s = CheckPlacements(options); !s.ok()) return s;
  // Reject a bad spec before any process starts.
  if (!options.resume) {
    if (absl::StatusOr<v1::JobSpec> resolved = ResolveJobSpec(user_spec); !resolved.ok())
      return resolved.status();
  }
  absl::StatusOr<std::optional<RunRecord>> record = CheckRunDir(options);
  if (!record.ok()) return record.status();
  LaunchOutcome outcome;
  if (*record && !(*record)->ended.empty()) {
    outcome.already_ended = true;
    outcome.job.set_job_id((*record)->job_id);
    v1::JobState state;
    if (v1::JobState_Parse((*record)->ended, &state)) outcome.job.set_state(state);
    if (options.progress)
      *options.progress << "grpo_launch: " << options.run_dir << ": " << (*record)->job_id
                        << " already ended (" << (*record)->ended << "); nothing to resume"
                        << std::endl;
    return outcome;
  }
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
  Supervisor supervisor(options.run_dir, options.restart, options.progress);
  const auto start = Clock::now();
  absl::StatusOr<Addresses> addresses =
      StartServices(options, worker_threads, learner_threads, supervisor);
  if (!addresses.ok()) return addresses.status();
  if (options.progress)
    *options.progress << absl::StrFormat(
                             "grpo_launch: coordinator %s, %d reward server(s), %d learner "
                             "rank(s) x %d threads on %s, %d rollout worker(s) x %d threads on "
                             "%s; logs in %s/logs, metrics ports in %s/ports/*.metrics",
                             addresses->coordinator, options.reward_servers,
                             options.learner_ranks, learner_threads, options.learner_device,
                             options.rollout_workers, worker_threads, options.worker_device,
                             options.run_dir, options.run_dir)
                      << std::endl;

  // --- Submit, or take up the recorded job again.
  grpc::ChannelArguments channel_args;
  // A restarted coordinator is back within seconds; gRPC's default reconnect backoff
  // (up to 2 minutes) would leave the launcher blind for longer than the outage.
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto stub = v1::CoordinatorService::NewStub(grpc::CreateCustomChannel(
      addresses->coordinator, grpc::InsecureChannelCredentials(), channel_args));
  v1::Job job;
  if (*record) {
    job.set_job_id((*record)->job_id);
    if (options.progress)
      *options.progress << "grpo_launch: resuming " << job.job_id() << " in " << options.run_dir
                        << std::endl;
  } else {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::SubmitJobRequest request;
    *request.mutable_spec() = user_spec;
    absl::Status s = FromGrpcStatus(stub->SubmitJob(&context, request, &job), "SubmitJob");
    if (!s.ok()) return s;
    if (absl::Status w = WriteRecord(options, {job.job_id(), ""}); !w.ok()) return w;
    if (options.progress)
      *options.progress << "grpo_launch: submitted " << job.job_id() << " (" << job.name() << ")"
                        << std::endl;
  }

  // --- Follow it to the end, then record how it ended.
  absl::StatusOr<v1::Job> ended = Follow(*stub, job, supervisor, options.progress);
  outcome.restarts = supervisor.RestartsByRole();
  if (!ended.ok()) {
    if (absl::IsCancelled(ended.status())) supervisor.KillAll();
    return absl::Status(ended.status().code(),
                        absl::StrCat(ended.status().message(), "; restarts: ",
                                     supervisor.RestartSummary(), "; continue the run with "
                                     "--resume --run_dir ", options.run_dir));
  }
  outcome.job = *ended;
  if (absl::Status w = WriteRecord(options, {outcome.job.job_id(),
                                             v1::JobState_Name(outcome.job.state())});
      !w.ok())
    return w;
  if (options.progress) {
    PrintSummary(outcome.job, *options.progress);
    *options.progress << absl::StrFormat(
                             "grpo_launch: %s %s in %s; run directory %s; lease reissues %d, "
                             "duplicate groups %d; restarts: %s%s",
                             outcome.job.job_id(), v1::JobState_Name(outcome.job.state()),
                             FormatElapsed(start), outcome.job.run_dir(),
                             outcome.job.lease_reissues(),
                             outcome.job.progress().duplicate_groups(),
                             supervisor.RestartSummary(),
                             outcome.job.error().empty()
                                 ? ""
                                 : absl::StrCat("; error: ", outcome.job.error()))
                      << std::endl;
  }
  supervisor.StopAll(std::chrono::seconds(10));
  return outcome;
}

}  // namespace grpo
