// RemoteScorer: a BatchScorer that asks a reward server (grpo.v1.RewardService.Score) with
// the job's weighted reward functions. Each call has a deadline; UNAVAILABLE,
// RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED are retried with jittered exponential backoff
// until `total_deadline` (scoring is idempotent); other errors come back at once.
// Borrows the stub. Thread-safe.
#ifndef GRPO_ROLLOUT_WORKER_REMOTE_SCORER_H_
#define GRPO_ROLLOUT_WORKER_REMOTE_SCORER_H_

#include <atomic>
#include <chrono>
#include <vector>

#include "grpo/v1/job.pb.h"
#include "grpo/v1/reward.grpc.pb.h"
#include "rollout_worker/rollout.h"

namespace grpo {

struct RemoteScorerOptions {
  std::chrono::milliseconds call_deadline{std::chrono::seconds(30)};
  std::chrono::milliseconds total_deadline{std::chrono::minutes(2)};
};

class RemoteScorer : public BatchScorer {
 public:
  RemoteScorer(v1::RewardService::StubInterface* stub,
               std::vector<v1::RewardFunctionSpec> functions, RemoteScorerOptions options = {})
      : stub_(stub), functions_(std::move(functions)), options_(options) {}

  absl::StatusOr<std::vector<CompositeOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override;

  int64_t retries() const { return retries_; }

 private:
  v1::RewardService::StubInterface* stub_;
  std::vector<v1::RewardFunctionSpec> functions_;
  RemoteScorerOptions options_;
  mutable std::atomic<int64_t> retries_{0};
};

}  // namespace grpo

#endif  // GRPO_ROLLOUT_WORKER_REMOTE_SCORER_H_
