#include "learner/reward_model_trainer.h"

#include <torch/torch.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "model/torch_status.h"
#include "rewards/rewards.h"

namespace grpo {
namespace {

// ---------------------------------------------------------------------------------------
// Encoding: every text through RewardModel::Encode, so training reads what serving reads.

struct EncodedPair {
  std::vector<int32_t> chosen;
  std::vector<int32_t> rejected;
};

absl::StatusOr<std::vector<EncodedPair>> EncodePairs(const RewardModel& model,
                                                     const std::vector<PreferencePair>& pairs) {
  std::vector<EncodedPair> out;
  for (size_t i = 0; i < pairs.size(); ++i) {
    EncodedPair e;
    for (auto [text, dst] : {std::pair<const std::string*, std::vector<int32_t>*>{
                                 &pairs[i].chosen, &e.chosen},
                             {&pairs[i].rejected, &e.rejected}}) {
      absl::StatusOr<EncodedSample> sample = model.Encode(pairs[i].prompt, *text);
      if (!sample.ok())
        return absl::InvalidArgumentError(absl::StrCat("pair ", i, ": ", sample.status().message()));
      *dst = std::move(sample->ids);
    }
    out.push_back(std::move(e));
  }
  return out;
}

struct EncodedSteps {
  std::vector<int32_t> ids;
  std::vector<int> positions;  // each step's end token
  std::vector<float> labels;
};

absl::StatusOr<std::vector<EncodedSteps>> EncodeSteps(
    const RewardModel& model, const std::vector<StepLabelledExample>& examples) {
  std::vector<EncodedSteps> out;
  for (size_t i = 0; i < examples.size(); ++i) {
    const StepLabelledExample& e = examples[i];
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("example ", i, ": ", why));
    };
    const std::vector<int> ends = StepEnds(e.completion, model.step_rule());
    if (ends != e.step_ends || e.labels.size() != ends.size())
      return bad(absl::StrCat(e.labels.size(), " labels, ", e.step_ends.size(), " step ends, but the ",
                              StepRuleName(model.step_rule()), " rule finds ", ends.size(),
                              " steps in its completion"));
    absl::StatusOr<EncodedSample> sample = model.Encode(e.prompt, e.completion);
    if (!sample.ok()) return bad(std::string(sample.status().message()));
    EncodedSteps encoded;
    for (size_t j = 0; j < ends.size(); ++j) {
      const int position = RewardModel::PositionOfByte(*sample, ends[j]);
      if (position < 0)
        return bad(absl::StrCat("step ", j, " ends at byte ", ends[j], ", past the text"));
      encoded.positions.push_back(position);
      encoded.labels.push_back(static_cast<float>(e.labels[j]));
    }
    encoded.ids = std::move(sample->ids);
    out.push_back(std::move(encoded));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// One optimiser loop for both objectives: `step_loss` builds a batch's loss from row ids.

absl::StatusOr<double> Optimise(
    RewardModel* model, size_t rows, const RewardModelTrainOptions& o,
    const std::function<void(const std::vector<size_t>&, RewardModelProgress*, at::Tensor*)>& step_loss,
    const std::function<void(const RewardModelProgress&)>& on_step) {
  if (o.batch_size < 1) return absl::InvalidArgumentError("batch_size must be >= 1");
  Optimizer optimizer(model->parameters(), o.optimizer);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<size_t> pick(0, rows - 1);
  double tail = 0;
  int tail_steps = 0;
  for (int step = 1; step <= o.steps; ++step) {
    std::vector<size_t> batch;
    for (int i = 0; i < o.batch_size; ++i) batch.push_back(pick(rng));
    RewardModelProgress progress;
    progress.step = step;
    absl::Status status = CatchTorch("reward model step", [&] {
      at::Tensor loss;
      step_loss(batch, &progress, &loss);
      optimizer.ZeroGrad();
      loss.backward();
      progress.loss = loss.item<double>();
    });
    if (!status.ok()) return status;
    if (absl::StatusOr<double> norm = optimizer.Step(); !norm.ok()) return norm.status();
    if (step > o.steps - std::max(1, o.steps / 10)) {
      tail += progress.loss;
      ++tail_steps;
    }
    if (on_step) on_step(progress);
  }
  return tail_steps ? tail / tail_steps : 0.0;
}

}  // namespace

absl::StatusOr<double> TrainRewardModel(RewardModel* model, const std::vector<PreferencePair>& pairs,
                                        const RewardModelTrainOptions& o,
                                        const std::function<void(const RewardModelProgress&)>& on_step) {
  if (pairs.empty()) return absl::InvalidArgumentError("no preference pairs to train on");
  auto encoded = EncodePairs(*model, pairs);
  if (!encoded.ok()) return encoded.status();
  model->set_objective(RewardObjective::kBradleyTerry);
  return Optimise(
      model, encoded->size(), o,
      [&](const std::vector<size_t>& rows, RewardModelProgress* progress, at::Tensor* loss) {
        std::vector<std::vector<int32_t>> sequences;  // chosen then rejected
        for (size_t r : rows) sequences.push_back((*encoded)[r].chosen);
        for (size_t r : rows) sequences.push_back((*encoded)[r].rejected);
        const int64_t n = static_cast<int64_t>(rows.size());
        at::Tensor scores = model->ScoreLast(sequences);
        at::Tensor margin = scores.narrow(0, 0, n) - scores.narrow(0, n, n);
        *loss = -at::log_sigmoid(margin).mean();
        progress->batch_accuracy = (margin > 0).to(at::kFloat).mean().item<double>();
      },
      on_step);
}

absl::StatusOr<double> PairwiseAccuracy(const RewardModel& model,
                                        const std::vector<PreferencePair>& pairs) {
  if (pairs.empty()) return absl::InvalidArgumentError("no preference pairs to evaluate");
  auto encoded = EncodePairs(model, pairs);
  if (!encoded.ok()) return encoded.status();
  std::vector<std::vector<int32_t>> sequences;
  std::vector<std::vector<int>> positions;
  for (const EncodedPair& e : *encoded) {
    for (const auto* s : {&e.chosen, &e.rejected}) {
      sequences.push_back(*s);
      positions.push_back({static_cast<int>(s->size()) - 1});
    }
  }
  auto scores = model.ScoreAt(sequences, positions);
  if (!scores.ok()) return scores.status();
  // A tie (an untrained, zero-initialised head scores everything 0) is a coin flip.
  double right = 0;
  for (size_t i = 0; i < encoded->size(); ++i) {
    const double chosen = (*scores)[2 * i][0], rejected = (*scores)[2 * i + 1][0];
    right += chosen > rejected ? 1.0 : (chosen == rejected ? 0.5 : 0.0);
  }
  return right / encoded->size();
}

absl::StatusOr<double> TrainProcessRewardModel(
    RewardModel* model, const std::vector<StepLabelledExample>& examples,
    const RewardModelTrainOptions& o,
    const std::function<void(const RewardModelProgress&)>& on_step) {
  if (examples.empty()) return absl::InvalidArgumentError("no step-labelled examples to train on");
  auto encoded = EncodeSteps(*model, examples);
  if (!encoded.ok()) return encoded.status();
  model->set_objective(RewardObjective::kStepCrossEntropy);
  return Optimise(
      model, encoded->size(), o,
      [&](const std::vector<size_t>& rows, RewardModelProgress* progress, at::Tensor* loss) {
        std::vector<std::vector<int32_t>> sequences;
        std::vector<std::vector<int>> positions;
        std::vector<float> labels;
        for (size_t r : rows) {
          sequences.push_back((*encoded)[r].ids);
          positions.push_back((*encoded)[r].positions);
          labels.insert(labels.end(), (*encoded)[r].labels.begin(), (*encoded)[r].labels.end());
        }
        at::Tensor logits = model->ScorePositions(sequences, positions);  // [steps in batch]
        at::Tensor target = at::tensor(labels).to(logits.device());
        // Every step counts once: long completions weigh more, as each of their steps is a
        // label of its own.
        *loss = at::binary_cross_entropy_with_logits(logits, target);
        progress->batch_accuracy =
            ((logits > 0).to(at::kFloat) == target).to(at::kFloat).mean().item<double>();
      },
      on_step);
}

absl::StatusOr<StepAccuracy> ProcessStepAccuracy(const RewardModel& model,
                                                 const std::vector<StepLabelledExample>& examples) {
  if (examples.empty()) return absl::InvalidArgumentError("no step-labelled examples to evaluate");
  auto encoded = EncodeSteps(model, examples);
  if (!encoded.ok()) return encoded.status();
  std::vector<std::vector<int32_t>> sequences;
  std::vector<std::vector<int>> positions;
  for (const EncodedSteps& e : *encoded) {
    sequences.push_back(e.ids);
    positions.push_back(e.positions);
  }
  auto scores = model.ScoreAt(sequences, positions);
  if (!scores.ok()) return scores.status();
  StepAccuracy out;
  int right = 0, ones = 0;
  for (size_t i = 0; i < encoded->size(); ++i)
    for (size_t j = 0; j < (*encoded)[i].labels.size(); ++j) {
      const bool label = (*encoded)[i].labels[j] > 0.5f;
      right += ((*scores)[i][j] > 0) == label;
      ones += label;
      ++out.steps;
    }
  out.accuracy = static_cast<double>(right) / out.steps;
  out.majority_rate = static_cast<double>(std::max(ones, out.steps - ones)) / out.steps;
  return out;
}

std::vector<StepLabelledExample> ArithmeticStepLabels(const std::vector<Problem>& problems,
                                                      uint64_t seed) {
  const ArithmeticStepReward verifier;
  std::mt19937_64 rng(seed);
  std::vector<StepLabelledExample> out;
  for (const Problem& p : problems) {
    StepLabelledExample e;
    e.prompt = p.prompt;
    e.completion = p.solution;
    if (rng() % 2) {
      const std::vector<PreferencePair> slipped = ArithmeticPreferences({p}, rng());
      if (!slipped.empty()) e.completion = slipped[0].rejected;
    }
    absl::StatusOr<RewardOutput> judged =
        verifier.Score(RewardInput{e.prompt, e.completion, p.answer, nullptr});
    if (!judged.ok()) continue;
    for (const StepReward& s : judged->steps) {
      e.step_ends.push_back(s.end_offset);
      e.labels.push_back(s.reward > 0.5 ? 1 : 0);
    }
    if (e.step_ends != StepEnds(e.completion, StepRule())) continue;  // every line is a step
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace grpo
