// WeightReceiver: fetches one policy version from learner rank 0's StreamWeights
// (docs/design.md §7) over one or more parallel streams, in the dtype the worker samples
// in, straight into one receive buffer it keeps from version to version; it hands the
// payload over only once every chunk arrived and every checksum matched. On any error the
// caller keeps the weights it has: DATA_LOSS for a transfer corrupt or cut short,
// INVALID_ARGUMENT for a chunk that contradicts the others, ABORTED when the version was
// superseded while the streams started (ask again). One Pull at a time per receiver.
#ifndef GRPO_ROLLOUT_WORKER_WEIGHT_CLIENT_H_
#define GRPO_ROLLOUT_WORKER_WEIGHT_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "grpo/v1/learner.grpc.pb.h"
#include "model/weight_transfer.h"

namespace grpo {

struct PullOptions {
  std::chrono::milliseconds deadline{std::chrono::seconds(60)};
  v1::WeightDtype dtype = v1::WEIGHT_DTYPE_FLOAT32;
  // Parallel streams (1 to kMaxWeightStreams).
  int streams = 1;
  // The version to fetch; -1: the newest (with several streams, asked first so that all
  // of them send the same one).
  int64_t version = -1;
};

struct PulledWeights {
  int64_t version = -1;
  v1::WeightDtype dtype = v1::WEIGHT_DTYPE_FLOAT32;
  std::string_view payload;  // flat weights, valid until the next Pull
};

class WeightReceiver {
 public:
  absl::StatusOr<PulledWeights> Pull(v1::LearnerService::StubInterface* stub,
                                     const std::string& job_id, const PullOptions& options);

 private:
  WeightAssembler assembler_;
};

}  // namespace grpo

#endif  // GRPO_ROLLOUT_WORKER_WEIGHT_CLIENT_H_
