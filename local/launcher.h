// LaunchLocalCluster: the whole distributed service on this machine (DESIGN.md §2, local
// mode). Starts grpo_coordinator, grpo_reward_server(s), grpo_learner rank(s) and
// grpo_rollout_worker(s) as child processes on loopback ports the kernel picks (real gRPC,
// the same binaries a cluster runs), submits one job, prints its progress until it ends,
// then stops every process (workers first, coordinator last). Each child's output goes to
// <run_dir>/logs/<name>.log; the learner writes the job under <run_dir>/<job_id>/.
#ifndef GRPO_LOCAL_LAUNCHER_H_
#define GRPO_LOCAL_LAUNCHER_H_

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "grpo/v1/coordinator.pb.h"
#include "grpo/v1/job.pb.h"

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
  std::ostream* progress = nullptr;
};

// The job as it ended (SUCCEEDED, FAILED or CANCELLED), or an error when the services
// could not be started or one of them died.
absl::StatusOr<v1::Job> LaunchLocalCluster(const v1::JobSpec& user_spec,
                                           const LaunchOptions& options);

}  // namespace grpo

#endif  // GRPO_LOCAL_LAUNCHER_H_
