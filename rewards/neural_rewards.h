// Reward functions backed by a RewardModel (rewards/reward_model.h), behind the same
// RewardFunction interface as the rule-based ones, so the reward server and the local
// trainer use them unchanged:
//   "reward_model"          score of prompt + completion read at its last token;
//   "process_reward_model"  a score at the token ending each step of the completion (the
//                           model's step rule, data/step_split.h), and their mean as the
//                           outcome reward.
// Each reads the sample through the model's own tokenizer (RewardModel::Encode). A model
// trained on step labels scores P(step right) = σ(score); one trained on preferences, its
// raw score.
// The model is shared (shared_ptr) and read-only; Score is thread-safe.
#ifndef GRPO_REWARDS_NEURAL_REWARDS_H_
#define GRPO_REWARDS_NEURAL_REWARDS_H_

#include <memory>

#include "grpo/v1/job.pb.h"
#include "rewards/reward_model.h"
#include "rewards/rewards.h"
#include "tokenizer/tokenizer.h"

namespace grpo {

class RewardModelFunction : public RewardFunction {
 public:
  enum class ReadAt { kLastToken, kStepEnds };

  RewardModelFunction(std::shared_ptr<const RewardModel> model, ReadAt read_at)
      : model_(std::move(model)), read_at_(read_at) {}
  std::string_view name() const override {
    return read_at_ == ReadAt::kLastToken ? "reward_model" : "process_reward_model";
  }
  bool gives_step_rewards() const override { return read_at_ == ReadAt::kStepEnds; }
  std::string step_rule() const override { return StepRuleName(model_->step_rule()); }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override;
  // One forward pass per chunk of inputs.
  absl::StatusOr<std::vector<RewardOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override;

 private:
  std::shared_ptr<const RewardModel> model_;
  ReadAt read_at_;
};

// The weighted reward of a job spec: rule-based functions by name, reward_model and
// process_reward_model loaded from their model_dir (each directory loaded once), and
// code_tests running in this process's own sandbox (MakeCodeTestsFunction).
absl::StatusOr<CompositeReward> MakeJobReward(
    const google::protobuf::RepeatedPtrField<v1::RewardFunctionSpec>& specs);

}  // namespace grpo

#endif  // GRPO_REWARDS_NEURAL_REWARDS_H_
