// Optimizer: AdamW with gradient-norm clipping and linear learning-rate warm-up, the
// update rule shared by GRPO and the SFT warm-up. Borrows the parameter tensors (owned by
// the model, which must outlive it). A non-finite gradient norm skips the update and
// reports an error, so one bad batch never corrupts the weights.
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
  Optimizer(std::vector<at::Tensor> parameters, const OptimizerOptions& options);
  ~Optimizer();

  void ZeroGrad();
  // Measures and clips the gradient norm, applies the warm-up learning rate and steps.
  // Returns the pre-clipping norm; FAILED_PRECONDITION (weights untouched) if non-finite.
  absl::StatusOr<double> Step();

  double learning_rate() const;  // the rate the next Step will use
  int64_t updates() const { return updates_; }

  absl::Status Save(const std::string& path) const;
  absl::Status Load(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  OptimizerOptions options_;
  int64_t updates_ = 0;
};

}  // namespace grpo

#endif  // GRPO_LEARNER_OPTIMIZER_H_
