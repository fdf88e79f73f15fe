#include "core/neural_rewards.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace grpo {
namespace {

// prompt + completion as tokens; EncodeStrict so nothing unrepresentable is scored silently.
absl::StatusOr<std::vector<int32_t>> Encode(const CharTokenizer& tokenizer,
                                            const RewardInput& input) {
  absl::StatusOr<std::vector<int32_t>> prompt = tokenizer.EncodeStrict(input.prompt);
  if (!prompt.ok()) return prompt.status();
  absl::StatusOr<std::vector<int32_t>> completion = tokenizer.EncodeStrict(input.completion);
  if (!completion.ok()) return completion.status();
  prompt->insert(prompt->end(), completion->begin(), completion->end());
  if (prompt->empty()) return absl::InvalidArgumentError("prompt and completion are both empty");
  return prompt;
}

}  // namespace

absl::StatusOr<RewardOutput> NeuralRewardFunction::Score(const RewardInput& input) const {
  absl::StatusOr<std::vector<int32_t>> ids = Encode(tokenizer_, input);
  if (!ids.ok()) return ids.status();
  const int last = static_cast<int>(ids->size()) - 1;
  auto scores = model_->ScoreAt({*ids}, {{last}});
  if (!scores.ok()) return scores.status();
  RewardOutput out;
  out.reward = (*scores)[0][0];
  return out;
}

absl::StatusOr<RewardOutput> ProcessRewardModelFunction::Score(const RewardInput& input) const {
  absl::StatusOr<std::vector<int32_t>> ids = Encode(tokenizer_, input);
  if (!ids.ok()) return ids.status();
  // Step ends: each newline of the completion, and its last character if that is not one.
  std::vector<int> ends;
  for (size_t i = 0; i < input.completion.size(); ++i) {
    if (input.completion[i] == '\n' || i + 1 == input.completion.size()) ends.push_back(i);
  }
  RewardOutput out;
  if (ends.empty()) return out;  // nothing generated, nothing to judge
  const int prompt_length = static_cast<int>(input.prompt.size());
  std::vector<int> positions;
  for (int end : ends) positions.push_back(prompt_length + end);
  auto scores = model_->ScoreAt({*ids}, {positions});
  if (!scores.ok()) return scores.status();
  double sum = 0;
  for (size_t j = 0; j < ends.size(); ++j) {
    out.steps.push_back(StepReward{(*scores)[0][j], ends[j]});
    sum += (*scores)[0][j];
  }
  out.reward = sum / ends.size();
  return out;
}

}  // namespace grpo
