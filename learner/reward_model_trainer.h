// Reward-model training, for both kinds of reward model (rewards/reward_model.h):
//   - outcome: the Bradley-Terry loss, −log σ(r(chosen) − r(rejected)), on preference pairs
//     (data/dataset.h), and held-out pairwise accuracy: the fraction of pairs the model
//     ranks the right way round (ties count half);
//   - process: binary cross-entropy on each step's correctness label, the score read at
//     the token that holds the step's last byte, and held-out step accuracy: the fraction
//     of steps whose sign of score matches the label, beside the majority label's share
//     (what always guessing it would get).
// Text becomes tokens through the model's own tokenizer (RewardModel::Encode), as in
// serving. Borrows the model and updates it in place; the process trainer also sets its
// objective (kStepCrossEntropy), so a saved model is served as P(step right).
#ifndef GRPO_LEARNER_REWARD_MODEL_TRAINER_H_
#define GRPO_LEARNER_REWARD_MODEL_TRAINER_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "learner/optimizer.h"
#include "rewards/reward_model.h"

namespace grpo {

struct RewardModelTrainOptions {
  int steps = 400;
  int batch_size = 32;  // pairs, or step-labelled completions, per step
  OptimizerOptions optimizer;
  uint64_t seed = 0;
};

struct RewardModelProgress {
  int step = 0;
  double loss = 0;
  double batch_accuracy = 0;
};

// Mean loss over the last 10% of steps. INVALID_ARGUMENT for no pairs or text the
// tokenizer cannot represent (naming the pair).
absl::StatusOr<double> TrainRewardModel(RewardModel* model, const std::vector<PreferencePair>& pairs,
                                        const RewardModelTrainOptions& options,
                                        const std::function<void(const RewardModelProgress&)>& on_step);

absl::StatusOr<double> PairwiseAccuracy(const RewardModel& model,
                                        const std::vector<PreferencePair>& pairs);

// The process model on step-labelled completions (their steps split by the model's step
// rule; set it first). INVALID_ARGUMENT naming the example for text the tokenizer cannot
// represent, one past max_seq_len, or steps that do not match its labels.
absl::StatusOr<double> TrainProcessRewardModel(
    RewardModel* model, const std::vector<StepLabelledExample>& examples,
    const RewardModelTrainOptions& options,
    const std::function<void(const RewardModelProgress&)>& on_step);

struct StepAccuracy {
  double accuracy = 0;        // steps whose score > 0 iff their label is 1
  double majority_rate = 0;   // the share of the more common label
  int steps = 0;
};
absl::StatusOr<StepAccuracy> ProcessStepAccuracy(const RewardModel& model,
                                                 const std::vector<StepLabelledExample>& examples);

// Synthetic step-labelled completions from the arithmetic task: each problem's worked
// solution, half of them with one step's result (or the final answer) off by 1..3, every
// step labelled by the step verifier (rewards/rewards.h, ArithmeticStepReward): a slip is
// wrong, and so is the step after it, which no longer starts from the written result.
std::vector<StepLabelledExample> ArithmeticStepLabels(const std::vector<Problem>& problems,
                                                      uint64_t seed);

}  // namespace grpo

#endif  // GRPO_LEARNER_REWARD_MODEL_TRAINER_H_
