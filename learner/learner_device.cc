#include "learner/learner_device.h"

#include <torch/torch.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "model/model.h"

namespace grpo {

absl::StatusOr<c10::Device> ResolveLearnerDevice(const std::string& flag, int rank) {
  absl::StatusOr<Placement> placement = ParsePlacement(flag, "float32");
  if (!placement.ok())
    return absl::Status(placement.status().code(),
                        absl::StrCat("--device: ", placement.status().message()));
  c10::Device device = placement->device;
  if (!device.is_cuda() || device.has_index()) return device;
  const int count = static_cast<int>(torch::cuda::device_count());
  int index = rank % count;
  if (const char* local = std::getenv("LOCAL_RANK"); local && *local) {
    if (!absl::SimpleAtoi(local, &index) || index < 0 || index >= count)
      return absl::InvalidArgumentError(absl::StrCat(
          "LOCAL_RANK=\"", local, "\": must be a device index in [0, ", count, ")"));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace grpo
