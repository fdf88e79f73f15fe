// Rollout: the sample-and-score half of GRPO (docs/design.md §2, rollout_worker). Given a policy
// and B prompts it samples G completions per prompt in one batched decode, scores each
// with a BatchScorer — the job's reward functions in-process (local mode) or a reward
// server (the rollout worker service) — and returns ScoredGroups for the learner.
//
// Borrows the tokenizer and scorer; both must outlive the Rollout. Not thread-safe.
#ifndef GRPO_ROLLOUT_WORKER_ROLLOUT_H_
#define GRPO_ROLLOUT_WORKER_ROLLOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "grpo/v1/job.pb.h"
#include "model/model.h"
#include "model/sampler.h"
#include "rewards/rewards.h"
#include "rl/scored_group.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {

struct RolloutBatch {
  std::vector<ScoredGroup> groups;
  std::vector<std::vector<std::string>> completions;  // decoded text, [group][sample]
  int64_t generated_tokens = 0;
  double sample_seconds = 0;
  double score_seconds = 0;
};

// The sampler settings of a resolved job spec (seed left 0: callers set it per batch).
SamplingOptions SamplingOptionsFromSpec(const v1::JobSpec& resolved,
                                        const TextTokenizer& tokenizer);

// Scores completions: one output per input, in order, or an error and no scores.
class BatchScorer {
 public:
  virtual ~BatchScorer() = default;
  virtual absl::StatusOr<std::vector<CompositeOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const = 0;
};

// The job's reward functions in this process. Borrows `reward`.
class LocalScorer : public BatchScorer {
 public:
  explicit LocalScorer(const CompositeReward* reward) : reward_(reward) {}
  absl::StatusOr<std::vector<CompositeOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override {
    return reward_->ScoreBatch(inputs);
  }

 private:
  const CompositeReward* reward_;
};

class Rollout {
 public:
  Rollout(const TextTokenizer* tokenizer, const BatchScorer* scorer)
      : tokenizer_(tokenizer), scorer_(scorer) {}

  // prompt_ids[i] names examples[i]; sampling.seed fixes the draw.
  absl::StatusOr<RolloutBatch> Generate(const Transformer& policy, int64_t policy_version,
                                        const std::vector<Example>& examples,
                                        const std::vector<std::string>& prompt_ids,
                                        int group_size, const SamplingOptions& sampling) const;

 private:
  const TextTokenizer* tokenizer_;
  const BatchScorer* scorer_;
};

}  // namespace grpo

#endif  // GRPO_ROLLOUT_WORKER_ROLLOUT_H_
