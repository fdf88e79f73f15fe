// RewardModel: a neural reward model — the policy's Transformer architecture with a scalar
// head, score(t) = w · FinalNorm(h_t) + b read at token t of prompt + completion. Read at the
// last token it is an outcome reward model; read at the token that ends each step it is a
// process reward model (docs/design.md §2, reward_server). Trained with the Bradley-Terry loss by
// learner/reward_model_trainer.h.
//
// Scoring (no autograd) is safe from several threads at once; training is not.
#ifndef GRPO_REWARDS_REWARD_MODEL_H_
#define GRPO_REWARDS_REWARD_MODEL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/model.h"

namespace grpo {

class RewardModel {
 public:
  RewardModel(const ModelConfig& config, uint64_t seed);
  ~RewardModel();

  // A directory written by Save: config.txt, backbone.pt, head.pt.
  static absl::StatusOr<std::unique_ptr<RewardModel>> Load(const std::string& dir);
  absl::Status Save(const std::string& dir) const;

  const ModelConfig& config() const { return backbone_.config(); }
  std::vector<at::Tensor> parameters() const;
  // What PPO's critic starts from (learner/value_model.h).
  const Transformer& backbone() const { return backbone_; }
  const at::Tensor& head_weight() const { return head_weight_; }
  const at::Tensor& head_bias() const { return head_bias_; }

  // Differentiable scores [N] of each sequence at its last token.
  at::Tensor ScoreLast(const std::vector<std::vector<int32_t>>& sequences) const;

  // Scores at the given token indices of each sequence (no autograd). INVALID_ARGUMENT for
  // an empty sequence or an index outside it; INTERNAL if the model produces NaN or inf.
  absl::StatusOr<std::vector<std::vector<double>>> ScoreAt(
      const std::vector<std::vector<int32_t>>& sequences,
      const std::vector<std::vector<int>>& positions) const;

 private:
  Transformer backbone_;
  at::Tensor head_weight_;  // [d]
  at::Tensor head_bias_;    // [1]
};

}  // namespace grpo

#endif  // GRPO_REWARDS_REWARD_MODEL_H_
