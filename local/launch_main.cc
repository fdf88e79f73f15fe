// grpo_launch: the distributed service on this machine — coordinator, reward server,
// learner rank(s) and rollout workers as separate processes on loopback — running one job
// (the built-in one unless --spec is given) from submission to the end, restarting any
// process that dies on the way; --resume continues a run whose launcher was killed.
#include <chrono>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "jobspec/job_spec.h"
#include "local/launcher.h"
#include "rpc/process.h"

ABSL_FLAG(std::string, spec, "", "job spec file (JSON or text proto); empty = built-in job");
ABSL_FLAG(std::string, run_dir, "runs/launch", "logs, ports and the job's run directory");
ABSL_FLAG(std::string, bin_dir, "",
          "directory of the grpo_* binaries; default: this build's, else this binary's own");
ABSL_FLAG(int, learners, 1, "learner ranks");
ABSL_FLAG(int, workers, 2, "rollout workers");
ABSL_FLAG(int, reward_servers, 1, "reward servers");
ABSL_FLAG(int, worker_threads, 0, "threads per rollout worker; 0 = cores / workers");
ABSL_FLAG(int, learner_threads, 0, "threads per learner rank; 0 = cores / ranks");
ABSL_FLAG(int, max_prompts, 4, "prompts per lease");
ABSL_FLAG(std::string, device, "cpu",
          "where the learner ranks train and the rollout workers sample: cpu, cuda or cuda:N "
          "(a learner rank takes its own GPU on cuda; the workers share cuda:0)");
ABSL_FLAG(std::string, learner_device, "", "overrides --device for the learner ranks");
ABSL_FLAG(std::string, worker_device, "", "overrides --device for the rollout workers");
ABSL_FLAG(std::string, worker_dtype, "",
          "the workers' model dtype: float32, bfloat16 or float16; empty = float32 on a CPU, "
          "bfloat16 on a GPU");
ABSL_FLAG(int64_t, seed, -1, "overrides the spec's seed when >= 0");
ABSL_FLAG(int, steps, -1, "overrides the spec's GRPO steps when >= 0");
ABSL_FLAG(bool, resume, false,
          "continue the run in --run_dir (its job, coordinator state and newest checkpoint) "
          "instead of submitting a new job");
ABSL_FLAG(int, max_restarts, 5,
          "restarts of one process within --restart_window_s before the launch fails");
ABSL_FLAG(int, restart_window_s, 600, "the window --max_restarts counts restarts in");

int main(int argc, char** argv) {
  grpo::CatchStopSignals();
  absl::SetProgramUsageMessage(
      "grpo_launch [--spec job.json] [--workers N] [--learners R] [--device cpu|cuda] "
      "[--run_dir DIR [--resume]]");
  absl::ParseCommandLine(argc, argv);
  grpo::v1::JobSpec spec;
  if (absl::GetFlag(FLAGS_resume) &&
      (!absl::GetFlag(FLAGS_spec).empty() || absl::GetFlag(FLAGS_seed) >= 0 ||
       absl::GetFlag(FLAGS_steps) >= 0)) {
    std::cerr << "error: --resume continues the job recorded in --run_dir; --spec, --seed and "
                 "--steps cannot change it\n";
    return 2;
  }
  if (!absl::GetFlag(FLAGS_spec).empty()) {
    auto loaded = grpo::LoadJobSpecFile(absl::GetFlag(FLAGS_spec));
    if (!loaded.ok()) {
      std::cerr << "error: " << loaded.status().message() << "\n";
      return 2;
    }
    spec = *loaded;
  }
  if (absl::GetFlag(FLAGS_seed) >= 0) spec.set_seed(absl::GetFlag(FLAGS_seed));
  if (absl::GetFlag(FLAGS_steps) >= 0) spec.set_steps(absl::GetFlag(FLAGS_steps));
  grpo::LaunchOptions options;
  options.run_dir = absl::GetFlag(FLAGS_run_dir);
  options.bin_dir = absl::GetFlag(FLAGS_bin_dir);
  options.learner_ranks = absl::GetFlag(FLAGS_learners);
  options.rollout_workers = absl::GetFlag(FLAGS_workers);
  options.reward_servers = absl::GetFlag(FLAGS_reward_servers);
  options.worker_threads = absl::GetFlag(FLAGS_worker_threads);
  options.learner_threads = absl::GetFlag(FLAGS_learner_threads);
  options.max_prompts_per_lease = absl::GetFlag(FLAGS_max_prompts);
  options.learner_device = absl::GetFlag(FLAGS_learner_device).empty()
                               ? absl::GetFlag(FLAGS_device)
                               : absl::GetFlag(FLAGS_learner_device);
  options.worker_device = absl::GetFlag(FLAGS_worker_device).empty()
                              ? absl::GetFlag(FLAGS_device)
                              : absl::GetFlag(FLAGS_worker_device);
  options.worker_dtype = absl::GetFlag(FLAGS_worker_dtype);
  options.resume = absl::GetFlag(FLAGS_resume);
  options.restart.max_restarts = absl::GetFlag(FLAGS_max_restarts);
  options.restart.window = std::chrono::seconds(absl::GetFlag(FLAGS_restart_window_s));
  options.progress = &std::cout;
  absl::StatusOr<grpo::LaunchOutcome> outcome = grpo::LaunchLocalCluster(spec, options);
  if (!outcome.ok()) {
    std::cerr << "error: " << outcome.status() << "\n";
    return outcome.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (outcome->already_ended) return 0;  // nothing to resume, as it said
  return outcome->job.state() == grpo::v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}
