// Joins a learner group on a CUDA host with LearnerGroup (learner/learner_group.h), which
// also builds a ProcessGroupNCCL when compiled with GRPO_WITH_NCCL, then runs one NCCL
// all-reduce and one broadcast of CUDA tensors through that group's devices. World size
// comes from WORLD_SIZE/RANK/MASTER_* as for grpo_learner (one rank per GPU: NCCL refuses
// two ranks on one GPU). Exit 0 when every rank saw the right sums.
#include <cstdio>

#include <torch/torch.h>

#include "learner/learner_group.h"

int main() {
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 2;
  }
  absl::StatusOr<grpo::LearnerGroupOptions> options = grpo::LearnerGroupOptionsFromEnvironment();
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", options.status().ToString().c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<grpo::LearnerGroup>> group = grpo::LearnerGroup::Join(*options);
  if (!group.ok()) {
    std::fprintf(stderr, "join: %s\n", group.status().ToString().c_str());
    return 1;
  }
  const int world = (*group)->world_size(), rank = (*group)->rank();
  const auto device = torch::Device(torch::kCUDA, rank % torch::cuda::device_count());
  std::vector<at::Tensor> tensors{torch::full({1 << 20}, rank + 1.0f, device),
                                  torch::full({3, 5}, 2.0f * rank, device)};
  if (absl::Status s = (*group)->AllReduceSum(tensors); !s.ok()) {
    std::fprintf(stderr, "all-reduce: %s\n", s.ToString().c_str());
    return 1;
  }
  const float expect0 = world * (world + 1) / 2.0f, expect1 = world * (world - 1);
  const bool sums = tensors[0].eq(expect0).all().item<bool>() &&
                    tensors[1].eq(expect1).all().item<bool>() && tensors[0].is_cuda();
  std::vector<at::Tensor> b{torch::full({4}, rank + 5.0f, device)};
  if (absl::Status s = (*group)->Broadcast(b, 0); !s.ok()) {
    std::fprintf(stderr, "broadcast: %s\n", s.ToString().c_str());
    return 1;
  }
  const bool broadcast = b[0].eq(5.0f).all().item<bool>();
  std::printf("rank %d of %d on %s: all-reduce %s, broadcast %s\n", rank, world,
              device.str().c_str(), sums ? "ok" : "WRONG", broadcast ? "ok" : "WRONG");
  return sums && broadcast ? 0 : 1;
}
