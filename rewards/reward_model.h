// RewardModel: a neural reward model — a decoder backbone with a scalar head,
// score(t) = w · FinalNorm(h_t) + b read at token t of prompt + completion. Read at the
// last token it is an outcome reward model; read at the token that ends each step it is a
// process reward model (docs/design.md §2, reward_server). Trained by
// learner/reward_model_trainer.h: Bradley-Terry on preference pairs, or cross-entropy on
// step correctness labels (then a step's score is the logit of P(step right)).
//
// The backbone is the policy's architecture from a preset with the character tokenizer,
// or a Hugging Face checkpoint (Llama, Qwen2, Qwen3) with its own tokenizer.json. Either
// way the model owns its tokenizer, and Encode is the one way a sample becomes tokens, in
// training and in serving alike, so served scores are the trained model's.
//
// Directories (Save/Load): info.txt (objective, step rule) and head.pt, and the backbone
// as config.txt + backbone.pt (preset) or hf/ (a Hugging Face checkpoint directory with
// its tokenizer files; the directory before info.txt existed loads as Bradley-Terry with
// the newline rule).
//
// Scoring (no autograd) is safe from several threads at once; training is not.
#ifndef GRPO_REWARDS_REWARD_MODEL_H_
#define GRPO_REWARDS_REWARD_MODEL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/step_split.h"
#include "hf/hf_config.h"
#include "model/model.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {

enum class RewardObjective {
  kBradleyTerry,      // scores are free-scale preferences
  kStepCrossEntropy,  // scores are logits of P(step right): served as σ(score)
};

// A sample as the model reads it: the prompt's tokens, then the completion's.
struct EncodedSample {
  std::vector<int32_t> ids;
  int prompt_tokens = 0;
  // The completion's per-token byte ends (TextTokenizer::DecodeWithEnds), for step ends.
  std::vector<int32_t> completion_ends;
};

class RewardModel {
 public:
  // A preset-shaped backbone drawn from `seed`, the character tokenizer, a zero head.
  RewardModel(const ModelConfig& config, uint64_t seed);
  ~RewardModel();

  // The weights and tokenizer of Hugging Face checkpoint directory `hf_dir` (capped at
  // `max_seq_len` positions), a zero head. Errors name the file. (reward_model_hf.cc)
  static absl::StatusOr<std::unique_ptr<RewardModel>> FromHuggingFace(const std::string& hf_dir,
                                                                        int max_seq_len = 1024);
  static absl::StatusOr<std::unique_ptr<RewardModel>> Load(const std::string& dir);
  absl::Status Save(const std::string& dir) const;

  const ModelConfig& config() const { return backbone_.config(); }
  const TextTokenizer& tokenizer() const { return *tokenizer_; }
  std::vector<at::Tensor> parameters() const;
  // What PPO's critic starts from (learner/value_model.h).
  const Transformer& backbone() const { return backbone_; }
  const at::Tensor& head_weight() const { return head_weight_; }
  const at::Tensor& head_bias() const { return head_bias_; }

  RewardObjective objective() const { return objective_; }
  void set_objective(RewardObjective objective) { objective_ = objective; }
  // The step rule it reads process scores by (and was trained with).
  const StepRule& step_rule() const { return step_rule_; }
  void set_step_rule(const StepRule& rule) { step_rule_ = rule; }

  // The prompt through the tokenizer's prompt format, then the completion's text.
  // INVALID_ARGUMENT for text the tokenizer cannot represent, an empty sample, or one past
  // max_seq_len.
  absl::StatusOr<EncodedSample> Encode(std::string_view prompt, std::string_view completion) const;
  // The position in `sample.ids` of the token holding byte `byte_end` of the completion
  // (a step's last byte); -1 when the completion has no such byte.
  static int PositionOfByte(const EncodedSample& sample, int byte_end);

  // Differentiable scores [N] of each sequence at its last token.
  at::Tensor ScoreLast(const std::vector<std::vector<int32_t>>& sequences) const;
  // Differentiable scores at the given positions of each sequence, concatenated in order
  // (sequence 0's positions first). Positions must be inside their sequences.
  at::Tensor ScorePositions(const std::vector<std::vector<int32_t>>& sequences,
                            const std::vector<std::vector<int>>& positions) const;

  // Scores at the given token indices of each sequence (no autograd). INVALID_ARGUMENT for
  // an empty sequence or an index outside it; INTERNAL if the model produces NaN or inf.
  absl::StatusOr<std::vector<std::vector<double>>> ScoreAt(
      const std::vector<std::vector<int32_t>>& sequences,
      const std::vector<std::vector<int>>& positions) const;

 private:
  RewardModel(const ModelConfig& config, Transformer::Uninitialized);
  absl::Status SaveHfBackbone(const std::string& dir) const;  // reward_model_hf.cc

  Transformer backbone_;
  at::Tensor head_weight_;  // [d]
  at::Tensor head_bias_;    // [1]
  std::unique_ptr<TextTokenizer> tokenizer_;
  // Set for a Hugging Face backbone: how to save it, and where its tokenizer files are.
  std::optional<hf::HfModelConfig> hf_config_;
  std::string hf_files_;
  RewardObjective objective_ = RewardObjective::kBradleyTerry;
  StepRule step_rule_;
};

}  // namespace grpo

#endif  // GRPO_REWARDS_REWARD_MODEL_H_
