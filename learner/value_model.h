// ValueModel: PPO's critic, the policy's architecture with a scalar head,
// V(s_t) = w · FinalNorm(h_t) + b, read at the positions that predict each completion
// token (the state before token t, where the policy's log-prob of token t is read), so
// values and log-probs share the [N, M] completion grid of learner/batch.h.
//
// It is placed as the policy is (device, parameter dtype, compute dtype: mixed precision
// runs its backbone in bfloat16 over float32 master weights); the head computes in the
// parameters' dtype. Owns its backbone and head. Not thread-safe.
#ifndef GRPO_LEARNER_VALUE_MODEL_H_
#define GRPO_LEARNER_VALUE_MODEL_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "learner/batch.h"
#include "model/model.h"

namespace grpo {

class ValueModel {
 public:
  // The policy's weights and a zero head: V ≡ 0 until it learns, so the first advantages
  // are the discounted returns themselves.
  static absl::StatusOr<std::unique_ptr<ValueModel>> FromPolicy(const Transformer& policy);
  // A grpo_train_rm --out directory (a reward model of the policy's shape), placed as the
  // policy. Errors name the directory.
  static absl::StatusOr<std::unique_ptr<ValueModel>> FromRewardModel(const std::string& dir,
                                                                     const Transformer& policy);
  ~ValueModel();

  // [N, M] values of the batch's completion positions, 0 off the mask; differentiable
  // unless under NoGradGuard.
  at::Tensor Values(const TokenBatch& batch) const;

  // What the critic trains: the backbone without an untied LM head (V never reads it),
  // then the head's weight and bias.
  std::vector<at::Tensor> parameters() const;
  Transformer& backbone() { return *backbone_; }

  // <dir>/critic.pt (the backbone) and <dir>/critic_head.pt. Load checks names and shapes
  // and names the file; on an error the model may be partly loaded (the caller discards it).
  absl::Status Save(const std::string& dir) const;
  absl::Status Load(const std::string& dir);

 private:
  explicit ValueModel(const Transformer& policy);
  static absl::StatusOr<std::unique_ptr<ValueModel>> Placed(const Transformer& policy);
  std::unique_ptr<Transformer> backbone_;
  at::Tensor head_weight_;  // [d_model]
  at::Tensor head_bias_;    // [1]
};

}  // namespace grpo

#endif  // GRPO_LEARNER_VALUE_MODEL_H_
