// Reward-model training with the Bradley-Terry loss, −log σ(r(chosen) − r(rejected)), on
// preference pairs (data/dataset.h), and held-out pairwise accuracy: the fraction of pairs
// the model ranks the right way round (ties count half). Borrows the model and updates it in place.
#ifndef GRPO_LEARNER_REWARD_MODEL_TRAINER_H_
#define GRPO_LEARNER_REWARD_MODEL_TRAINER_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "learner/optimizer.h"
#include "rewards/reward_model.h"
#include "tokenizer/tokenizer.h"

namespace grpo {

struct RewardModelTrainOptions {
  int steps = 400;
  int batch_size = 32;  // pairs per step
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
absl::StatusOr<double> TrainRewardModel(RewardModel* model, const CharTokenizer& tokenizer,
                                        const std::vector<PreferencePair>& pairs,
                                        const RewardModelTrainOptions& options,
                                        const std::function<void(const RewardModelProgress&)>& on_step);

absl::StatusOr<double> PairwiseAccuracy(const RewardModel& model, const CharTokenizer& tokenizer,
                                        const std::vector<PreferencePair>& pairs);

}  // namespace grpo

#endif  // GRPO_LEARNER_REWARD_MODEL_TRAINER_H_
