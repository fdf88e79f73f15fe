#include "rewards/neural_rewards.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rewards/code_tests.h"

namespace grpo {
namespace {

// Where each function reads the model: the last token (outcome) or each step's end.
struct ReadPoints {
  std::vector<int> positions;  // into the encoded sample
  std::vector<int> step_ends;  // byte offsets into the completion; empty for the outcome model
};

// Scores every input at its read points, `kChunk` sequences per forward pass, and turns
// them into outputs: the single score (outcome) or a step reward per end and their mean.
// A model trained on step labels gives P(step right), σ of its score.
absl::StatusOr<std::vector<RewardOutput>> ScoreWithModel(const RewardModel& model,
                                                         const std::vector<RewardInput>& inputs,
                                                         bool at_steps) {
  constexpr size_t kChunk = 64;  // bounds activation memory per pass
  const bool probability = model.objective() == RewardObjective::kStepCrossEntropy;
  std::vector<RewardOutput> outputs(inputs.size());
  for (size_t begin = 0; begin < inputs.size(); begin += kChunk) {
    const size_t end = std::min(inputs.size(), begin + kChunk);
    std::vector<std::vector<int32_t>> sequences;
    std::vector<std::vector<int>> positions;
    std::vector<ReadPoints> points;
    std::vector<size_t> rows;
    for (size_t i = begin; i < end; ++i) {
      if (at_steps && inputs[i].completion.empty()) continue;  // nothing to judge: 0
      absl::StatusOr<EncodedSample> sample = model.Encode(inputs[i].prompt, inputs[i].completion);
      if (!sample.ok())
        return absl::Status(sample.status().code(),
                            absl::StrCat("sample ", i, ": ", sample.status().message()));
      ReadPoints p;
      if (!at_steps) {
        p.positions.push_back(static_cast<int>(sample->ids.size()) - 1);
      } else {
        for (int byte : StepEnds(inputs[i].completion, model.step_rule())) {
          const int position = RewardModel::PositionOfByte(*sample, byte);
          if (position < 0)
            return absl::InternalError(absl::StrCat("sample ", i, ": step end at byte ", byte,
                                                    " is past the encoded completion"));
          p.positions.push_back(position);
          p.step_ends.push_back(byte);
        }
      }
      sequences.push_back(std::move(sample->ids));
      positions.push_back(p.positions);
      points.push_back(std::move(p));
      rows.push_back(i);
    }
    if (sequences.empty()) continue;
    auto scores = model.ScoreAt(sequences, positions);
    if (!scores.ok()) return scores.status();
    for (size_t k = 0; k < rows.size(); ++k) {
      RewardOutput& out = outputs[rows[k]];
      std::vector<double> s = (*scores)[k];
      if (probability)
        for (double& v : s) v = 1.0 / (1.0 + std::exp(-v));
      if (!at_steps) {
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
  return ScoreWithModel(*model_, inputs, read_at_ == ReadAt::kStepEnds);
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
      if (absl::Status s = CheckStepDelimiter(spec.step_delimiter(), *fn); !s.ok())
        return absl::InvalidArgumentError(absl::StrCat("rewards[", i, "].", s.message()));
    } else if (spec.name() == "code_tests") {
      absl::StatusOr<std::unique_ptr<RewardFunction>> made =
          MakeCodeTestsFunction(RewardParams(spec.params().begin(), spec.params().end()));
      if (!made.ok())
        return absl::Status(made.status().code(),
                            absl::StrCat("rewards[", i, "]: ", made.status().message()));
      fn = std::move(*made);
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
