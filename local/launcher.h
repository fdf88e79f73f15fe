// LaunchLocalCluster: the whole distributed service on this machine (docs/design.md §2, local
// mode). Starts grpo_coordinator (its state in <run_dir>/coordinator), grpo_reward_server(s),
// grpo_learner rank(s) and grpo_rollout_worker(s) as child processes on loopback ports the
// kernel picks (real gRPC, the same binaries a cluster runs), submits one job, prints its
// progress until it ends, then stops every process (workers first, coordinator last).
// Each child's output goes to <run_dir>/logs/<name>.log; the learner writes the job under
// <run_dir>/<job_id>/.
//
// While the job runs the launcher supervises its children (supervisor.h): one that exits
// is started again with the same flags on the same address (the coordinator from its
// state, the learner from its newest checkpoint), so a lost process costs a restart, not
// the run. <run_dir>/launch_job.txt records the job so that `resume` continues a run
// whose launcher itself was killed.
#ifndef GRPO_LOCAL_LAUNCHER_H_
#define GRPO_LOCAL_LAUNCHER_H_

#include <map>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "grpo/v1/coordinator.pb.h"
#include "grpo/v1/job.pb.h"
#include "local/supervisor.h"

namespace grpo {

struct LaunchOptions {
  std::string run_dir = "runs/launch";
  std::string bin_dir;  // where the grpo_* binaries are; empty = this build's paths
  int learner_ranks = 1;
  int rollout_workers = 2;
  int reward_servers = 1;
  int worker_threads = 0;   // per rollout worker; 0 = cores / workers
  int learner_threads = 0;  // per learner rank; 0 = cores / ranks
  int max_prompts_per_lease = 4;
  // Where the learner ranks train and the rollout workers sample: "cpu", "cuda" (a learner
  // rank's own GPU, LOCAL_RANK else its rank mod the device count; a worker's current
  // device, cuda:0) or "cuda:N". Checked for form here; each service checks the device.
  std::string learner_device = "cpu";
  std::string worker_device = "cpu";
  // The workers' model dtype (float32, bfloat16, float16); empty = theirs by default,
  // float32 on a CPU and bfloat16 on a GPU.
  std::string worker_dtype;
  // Continue the run in run_dir (its coordinator state and checkpoints) instead of
  // submitting `user_spec`.
  bool resume = false;
  RestartPolicy restart;
  std::ostream* progress = nullptr;
};

struct LaunchOutcome {
  v1::Job job;                // as it ended: SUCCEEDED, FAILED or CANCELLED
  bool already_ended = false;  // resume found the run ended; nothing was started
  std::map<std::string, int> restarts;  // by role, for the summary
};

// The job as it ended, or an error: the services could not be started, one of them kept
// dying (FAILED_PRECONDITION naming it and its log), the launch was interrupted
// (CANCELLED), or run_dir holds no run to resume / an unfinished one without `resume`
// (FAILED_PRECONDITION saying which).
absl::StatusOr<LaunchOutcome> LaunchLocalCluster(const v1::JobSpec& user_spec,
                                                 const LaunchOptions& options);

}  // namespace grpo

#endif  // GRPO_LOCAL_LAUNCHER_H_
