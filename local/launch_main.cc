// grpo_launch: the distributed service on this machine — coordinator, reward server,
// learner rank(s) and rollout workers as separate processes on loopback — running one job
// (the built-in one unless --spec is given) from submission to the end.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "core/job_spec.h"
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
ABSL_FLAG(int64_t, seed, -1, "overrides the spec's seed when >= 0");
ABSL_FLAG(int, steps, -1, "overrides the spec's GRPO steps when >= 0");

int main(int argc, char** argv) {
  grpo::CatchStopSignals();
  absl::SetProgramUsageMessage("grpo_launch [--spec job.json] [--workers N] [--learners R]");
  absl::ParseCommandLine(argc, argv);
  grpo::v1::JobSpec spec;
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
  options.progress = &std::cout;
  absl::StatusOr<grpo::v1::Job> job = grpo::LaunchLocalCluster(spec, options);
  if (!job.ok()) {
    std::cerr << "error: " << job.status() << "\n";
    return job.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return job->state() == grpo::v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}
