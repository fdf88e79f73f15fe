// PullWeights: fetches a job's newest policy weights from learner rank 0's StreamWeights
// and returns them only once every chunk arrived and the checksum matched (docs/design.md §7);
// on any error the caller keeps the weights it has. A transfer that is corrupt or cut
// short is DATA_LOSS (or INVALID_ARGUMENT for a chunk that contradicts the others).
#ifndef GRPO_ROLLOUT_WORKER_WEIGHT_CLIENT_H_
#define GRPO_ROLLOUT_WORKER_WEIGHT_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "grpo/v1/learner.grpc.pb.h"

namespace grpo {

struct PulledWeights {
  int64_t version = -1;
  std::string payload;  // Transformer::SaveToString bytes
};

absl::StatusOr<PulledWeights> PullWeights(v1::LearnerService::StubInterface* stub,
                                          const std::string& job_id,
                                          std::chrono::milliseconds deadline);

}  // namespace grpo

#endif  // GRPO_ROLLOUT_WORKER_WEIGHT_CLIENT_H_
