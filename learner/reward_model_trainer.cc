#include "learner/reward_model_trainer.h"

#include <torch/torch.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "model/torch_status.h"

namespace grpo {
namespace {

struct EncodedPair {
  std::vector<int32_t> chosen;
  std::vector<int32_t> rejected;
};

absl::StatusOr<std::vector<EncodedPair>> Encode(const CharTokenizer& tokenizer,
                                                const std::vector<PreferencePair>& pairs,
                                                int max_len) {
  std::vector<EncodedPair> out;
  for (size_t i = 0; i < pairs.size(); ++i) {
    EncodedPair e;
    for (auto [text, dst] : {std::pair<const std::string*, std::vector<int32_t>*>{
                                 &pairs[i].chosen, &e.chosen},
                             {&pairs[i].rejected, &e.rejected}}) {
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer.EncodeStrict(pairs[i].prompt + *text);
      if (!ids.ok())
        return absl::InvalidArgumentError(absl::StrCat("pair ", i, ": ", ids.status().message()));
      if (static_cast<int>(ids->size()) > max_len)
        return absl::InvalidArgumentError(absl::StrCat("pair ", i, ": ", ids->size(),
                                                       " tokens exceed max_seq_len ", max_len));
      *dst = std::move(*ids);
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

absl::StatusOr<double> TrainRewardModel(RewardModel* model, const CharTokenizer& tokenizer,
                                        const std::vector<PreferencePair>& pairs,
                                        const RewardModelTrainOptions& o,
                                        const std::function<void(const RewardModelProgress&)>& on_step) {
  if (pairs.empty()) return absl::InvalidArgumentError("no preference pairs to train on");
  if (o.batch_size < 1) return absl::InvalidArgumentError("batch_size must be >= 1");
  auto encoded = Encode(tokenizer, pairs, model->config().max_seq_len);
  if (!encoded.ok()) return encoded.status();
  Optimizer optimizer(model->parameters(), o.optimizer);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<size_t> pick(0, encoded->size() - 1);
  double tail = 0;
  int tail_steps = 0;
  for (int step = 1; step <= o.steps; ++step) {
    std::vector<std::vector<int32_t>> sequences;  // chosen then rejected
    std::vector<size_t> rows;
    for (int i = 0; i < o.batch_size; ++i) rows.push_back(pick(rng));
    for (size_t r : rows) sequences.push_back((*encoded)[r].chosen);
    for (size_t r : rows) sequences.push_back((*encoded)[r].rejected);
    RewardModelProgress progress;
    progress.step = step;
    absl::Status status = CatchTorch("reward model step", [&] {
      at::Tensor scores = model->ScoreLast(sequences);
      at::Tensor margin = scores.narrow(0, 0, o.batch_size) - scores.narrow(0, o.batch_size, o.batch_size);
      at::Tensor loss = -at::log_sigmoid(margin).mean();
      optimizer.ZeroGrad();
      loss.backward();
      progress.loss = loss.item<double>();
      progress.batch_accuracy = (margin > 0).to(at::kFloat).mean().item<double>();
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

absl::StatusOr<double> PairwiseAccuracy(const RewardModel& model, const CharTokenizer& tokenizer,
                                        const std::vector<PreferencePair>& pairs) {
  if (pairs.empty()) return absl::InvalidArgumentError("no preference pairs to evaluate");
  auto encoded = Encode(tokenizer, pairs, model.config().max_seq_len);
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

}  // namespace grpo
