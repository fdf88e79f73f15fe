// Where a learner rank trains: the --device flag of grpo_learner and grpo_local resolved for
// one rank. "cpu" (the default where no GPU exists); "cuda" = the rank's own GPU
// (LOCAL_RANK when set, as torchrun and PyTorchJob set it, else rank modulo the visible
// device count); "cuda:N" = that device. INVALID_ARGUMENT naming the flag for a bad value or
// LOCAL_RANK; FAILED_PRECONDITION when CUDA is asked for and this LibTorch or host has none
// (Debian's LibTorch is CPU-only).
#ifndef GRPO_LEARNER_LEARNER_DEVICE_H_
#define GRPO_LEARNER_LEARNER_DEVICE_H_

#include <c10/core/Device.h>

#include <string>

#include "absl/status/statusor.h"

namespace grpo {

absl::StatusOr<c10::Device> ResolveLearnerDevice(const std::string& flag, int rank);

}  // namespace grpo

#endif  // GRPO_LEARNER_LEARNER_DEVICE_H_
