// The job loop of a grpo_learner rank (docs/design.md §2, §3).
//
// Rank 0 (the leader) takes jobs from the coordinator one after another and runs each
// with the job driver every learner runs (learner/job_driver.h: starting policy and its
// evaluation, steps, metrics, checkpoints, resume), as its batch source: it asks the
// coordinator for prompts, takes B groups from the ingest buffer (dropping groups more
// than max_policy_lag versions old and asking for replacements), acknowledges what it
// ingested, tells every rank to train on the batch (each takes its shard; gradients are
// all-reduced), and publishes the new weights to the rollout workers. Progress goes to
// the coordinator and to Prometheus.
//
// Resume: a job whose run directory has a complete checkpoint (`latest`) — because the
// learner was killed or stopped with SIGTERM, which checkpoints and leaves the job
// RUNNING — continues from it: model, reference, optimizer, step and policy version on
// every rank, and the prompt ids already ingested, so none of them is trained again.
//
// Other ranks (followers) do what rank 0's broadcast commands say, in the same order, so
// the collectives line up and the parameters stay bit-identical. At the end of each job
// every rank writes `param_digest.rank-R` (FNV-1a 64 of its parameters) to the run
// directory, so anyone can check that the ranks agree.
#ifndef GRPO_LEARNER_DISTRIBUTED_LEARNER_H_
#define GRPO_LEARNER_DISTRIBUTED_LEARNER_H_

#include <c10/core/Device.h>

#include <chrono>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "learner/ingest_buffer.h"
#include "learner/job_source.h"
#include "learner/learner_group.h"
#include "learner/weight_publisher.h"

namespace grpo {
namespace metrics {
class Registry;
}  // namespace metrics

struct DistributedLearnerOptions {
  std::string run_root = "runs";  // a job's files go to run_root/<job_id>
  // While rank 0 waits (for a job, for groups) it pings the other ranks this often, so a
  // long wait never runs into the collective timeout.
  std::chrono::milliseconds keepalive{std::chrono::seconds(2)};
  std::ostream* log = nullptr;  // progress lines; null = silent
  int keep_checkpoints = 3;     // step-N directories kept per job (the newest)
  // Rank 0 exports its step statistics here (learner/learner_metrics.h); null = none.
  metrics::Registry* registry = nullptr;
  // This rank's training device (learner/learner_device.h).
  c10::Device device = c10::kCPU;
};

// Rank 0. `group` may be null for a single-rank learner. Returns when `stop` is notified
// (after telling the other ranks to shut down) or a collective fails.
absl::Status RunLearnerLeader(LearnerGroup* group, JobSource* jobs, IngestBuffer* buffer,
                              WeightPublisher* weights, const DistributedLearnerOptions& options,
                              absl::Notification* stop);

// Ranks 1..R-1. Returns on rank 0's shutdown command or a failed collective.
absl::Status RunLearnerFollower(LearnerGroup* group, const DistributedLearnerOptions& options);

}  // namespace grpo

#endif  // GRPO_LEARNER_DISTRIBUTED_LEARNER_H_
