// LearnerGroup: the data-parallel learner ranks (docs/design.md §2). Rendezvous follows the
// torchrun / PyTorchJob conventions — MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK — through
// a c10d TCPStore hosted by rank 0, and gradients are summed with c10d's ProcessGroupGloo
// for CPU tensors. Built against a CUDA LibTorch (CMake defines GRPO_WITH_NCCL) on a host
// with a GPU, Join also creates a ProcessGroupNCCL and CUDA tensors go through it: the
// backend follows the tensors' device. Debian's LibTorch has no CUDA, so the CI build is
// Gloo only.
//
// One object per rank; calls are collective (every rank makes them in the same order).
// Not thread-safe.
#ifndef GRPO_LEARNER_LEARNER_GROUP_H_
#define GRPO_LEARNER_LEARNER_GROUP_H_

#include <ATen/core/Tensor.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpo {

struct LearnerGroupOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // rank 0 may pass 0 to let the kernel pick (see port())
  int world_size = 1;
  int rank = 0;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // With NCCL: the GPU this rank trains on (ResolveLearnerDevice), made current before
  // the NCCL group is built so that its set-up and barriers use that device; -1: rank
  // modulo the device count.
  int cuda_device = -1;
  // Rank 0: called with the store's port once it listens, before Join waits for the other
  // ranks (how a launcher that asked for port 0 tells them where to connect).
  std::function<void(int port)> on_listening;
};

// Reads MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK where set, over `defaults`.
// INVALID_ARGUMENT naming the variable for a value that is not a number in range.
absl::StatusOr<LearnerGroupOptions> LearnerGroupOptionsFromEnvironment(
    LearnerGroupOptions defaults = {});

class LearnerGroup {
 public:
  // Blocks until all world_size ranks have joined (or the timeout passes: DEADLINE_EXCEEDED
  // / UNAVAILABLE with the address in the message).
  static absl::StatusOr<std::unique_ptr<LearnerGroup>> Join(const LearnerGroupOptions& options);
  ~LearnerGroup();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  int port() const { return port_; }  // the store's port (useful when rank 0 asked for 0)

  // Element-wise sum over the ranks, in place; every rank ends with the same values.
  absl::Status AllReduceSum(std::vector<at::Tensor>& tensors);
  // Wall time spent in AllReduceSum so far (the step-time breakdown).
  double allreduce_seconds() const { return allreduce_seconds_; }
  // Rank `root`'s values to every rank, in place.
  absl::Status Broadcast(std::vector<at::Tensor>& tensors, int root);

 private:
  struct Impl;
  LearnerGroup() = default;
  std::unique_ptr<Impl> impl_;
  LearnerGroupOptions options_;
  int port_ = 0;
  double allreduce_seconds_ = 0;
};

}  // namespace grpo

#endif  // GRPO_LEARNER_LEARNER_GROUP_H_
