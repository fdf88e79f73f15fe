#include "rewards/neural_rewards.h"

#include <algorithm>
#include <map>
#include <string>
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

// Where each function reads the model: the last token (outcome) or each step's end.
struct ReadPoints {
  std::vector<int> positions;  // into prompt + completion
  std::vector<int> step_ends;  // into the completion; empty for the outcome model
};

ReadPoints OutcomePoints(const RewardInput& input) {
  return {{static_cast<int>(input.prompt.size() + input.completion.size()) - 1}, {}};
}

// Step ends: each newline of the completion, and its last character if that is not one.
ReadPoints StepPoints(const RewardInput& input) {
  ReadPoints points;
  for (size_t i = 0; i < input.completion.size(); ++i) {
    if (input.completion[i] == '\n' || i + 1 == input.completion.size()) {
      points.step_ends.push_back(static_cast<int>(i));
      points.positions.push_back(static_cast<int>(input.prompt.size() + i));
    }
  }
  return points;
}

// Scores every input at its read points, `kChunk` sequences per forward pass, and turns
// them into outputs: the single score (outcome) or a step reward per end and their mean.
absl::StatusOr<std::vector<RewardOutput>> ScoreWithModel(
    const RewardModel& model, const CharTokenizer& tokenizer,
    const std::vector<RewardInput>& inputs, ReadPoints (*points_of)(const RewardInput&)) {
  constexpr size_t kChunk = 64;  // bounds activation memory per pass
  std::vector<RewardOutput> outputs(inputs.size());
  for (size_t begin = 0; begin < inputs.size(); begin += kChunk) {
    const size_t end = std::min(inputs.size(), begin + kChunk);
    std::vector<std::vector<int32_t>> sequences;
    std::vector<std::vector<int>> positions;
    std::vector<ReadPoints> points;
    std::vector<size_t> rows;
    for (size_t i = begin; i < end; ++i) {
      ReadPoints p = points_of(inputs[i]);
      if (p.positions.empty()) continue;  // nothing generated, nothing to judge: 0
      absl::StatusOr<std::vector<int32_t>> ids = Encode(tokenizer, inputs[i]);
      if (!ids.ok()) return ids.status();
      sequences.push_back(*std::move(ids));
      positions.push_back(p.positions);
      points.push_back(std::move(p));
      rows.push_back(i);
    }
    if (sequences.empty()) continue;
    auto scores = model.ScoreAt(sequences, positions);
    if (!scores.ok()) return scores.status();
    for (size_t k = 0; k < rows.size(); ++k) {
      RewardOutput& out = outputs[rows[k]];
      const std::vector<double>& s = (*scores)[k];
      if (points[k].step_ends.empty()) {
        out.reward = s[0];
        continue;
      }
      double sum = 0;
      for (size_t j = 0; j < s.size(); ++j) {
        out.steps.push_back(StepReward{s[j], points[k].step_ends[j]});
        sum += s[j];
      }
      out.reward = sum / s.size();
    }
  }
  return outputs;
}

}  // namespace

absl::StatusOr<RewardOutput> RewardModelFunction::Score(const RewardInput& input) const {
  auto out = ScoreBatch({input});
  if (!out.ok()) return out.status();
  return std::move(out->front());
}

absl::StatusOr<std::vector<RewardOutput>> RewardModelFunction::ScoreBatch(
    const std::vector<RewardInput>& inputs) const {
  return ScoreWithModel(*model_, tokenizer_, inputs,
                        read_at_ == ReadAt::kLastToken ? &OutcomePoints : &StepPoints);
}

absl::StatusOr<CompositeReward> MakeJobReward(
    const google::protobuf::RepeatedPtrField<v1::RewardFunctionSpec>& specs) {
  std::map<std::string, std::shared_ptr<const RewardModel>> models;
  std::vector<WeightedRewardFunction> functions;
  for (int i = 0; i < specs.size(); ++i) {
    const v1::RewardFunctionSpec& spec = specs[i];
    std::unique_ptr<RewardFunction> fn;
    if (spec.name() == "reward_model" || spec.name() == "process_reward_model") {
      std::shared_ptr<const RewardModel>& model = models[spec.model_dir()];
      if (!model) {
        absl::StatusOr<std::unique_ptr<RewardModel>> loaded = RewardModel::Load(spec.model_dir());
        if (!loaded.ok())
          return absl::Status(loaded.status().code(), absl::StrCat("rewards[", i, "].model_dir: ",
                                                                   loaded.status().message()));
        model = std::move(*loaded);
      }
      fn = std::make_unique<RewardModelFunction>(
          model, spec.name() == "reward_model" ? RewardModelFunction::ReadAt::kLastToken
                                               : RewardModelFunction::ReadAt::kStepEnds);
    } else {
      absl::StatusOr<std::unique_ptr<RewardFunction>> made = MakeRewardFunction(
          spec.name(), RewardParams(spec.params().begin(), spec.params().end()));
      if (!made.ok())
        return absl::InvalidArgumentError(absl::StrCat("rewards[", i, "]: ", made.status().message()));
      fn = std::move(*made);
    }
    functions.push_back({std::move(fn), spec.weight()});
  }
  return CompositeReward::CreateFromFunctions(std::move(functions));
}

}  // namespace grpo
