// Optimizer: AdamW with gradient-norm clipping and linear learning-rate warm-up, the
// update rule shared by GRPO and the SFT warm-up. Borrows the parameter tensors (owned by
// the model, which must outlive it). A non-finite gradient norm skips the update and
// reports an error, so one bad batch never corrupts the weights.
//
// Sharded (ZeRO stage 1, docs/design.md §9): given a learner group of W > 1 ranks, each
// parameter's AdamW moments live on one rank only (its owner: parameters dealt largest
// first to the least-loaded rank, the same table on every rank), so optimizer memory per
// rank is ~1/W. The gradients arrive summed on every rank (the trainer's all-reduce); Step
// clips with the global norm, each rank updates the parameters it owns, and every owner
// broadcasts its updated parameters, so all ranks end bit-identical to the unsharded
// update. Save and Load stay in the unsharded file format, whatever the world size:
// GatherForSave (a collective: every rank calls it) brings the moments to rank 0, whose
// Save writes them; Load reads the whole file and keeps this rank's share.
#ifndef GRPO_LEARNER_OPTIMIZER_H_
#define GRPO_LEARNER_OPTIMIZER_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/job.pb.h"

namespace grpo {

class LearnerGroup;

struct OptimizerOptions {
  double learning_rate = 1e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double epsilon = 1e-8;
  double max_grad_norm = 1.0;  // 0 = no clipping (the norm is still measured)
  int warmup_steps = 0;        // learning rate rises linearly over these updates
};

OptimizerOptions OptimizerOptionsFromSpec(const v1::OptimizerSpec& spec);

class Optimizer {
 public:
  // `shard`: the learner group whose ranks share the optimizer state (borrowed; null or
  // one rank = unsharded). Every rank passes the same parameter shapes in the same order.
  Optimizer(std::vector<at::Tensor> parameters, const OptimizerOptions& options,
            LearnerGroup* shard = nullptr);
  ~Optimizer();

  void ZeroGrad();
  // Measures and clips the gradient norm, applies the warm-up learning rate and steps.
  // Returns the pre-clipping norm; FAILED_PRECONDITION (weights untouched) if non-finite.
  // Sharded: collective.
  absl::StatusOr<double> Step();

  double learning_rate() const;  // the rate the next Step will use
  int64_t updates() const { return updates_; }
  bool sharded() const;
  // The parameters whose moments this rank keeps (all of them unsharded).
  int64_t owned_parameter_elements() const;

  // Sharded: collective, before Save; a no-op unsharded.
  absl::Status GatherForSave();
  // Sharded: only rank 0 writes (the others return at once), what GatherForSave gathered.
  absl::Status Save(const std::string& path);
  absl::Status Load(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  OptimizerOptions options_;
  int64_t updates_ = 0;
};

}  // namespace grpo

#endif  // GRPO_LEARNER_OPTIMIZER_H_
