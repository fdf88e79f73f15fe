// Rollout: the sample-and-score half of GRPO (DESIGN.md §2, rollout_worker). Given a policy
// and B prompts it samples G completions per prompt in one batched decode, scores each
// with the job's reward functions and returns ScoredGroups for the learner. The same code
// runs in-process (local mode) and behind the rollout worker service.
//
// Borrows the tokenizer and reward; both must outlive the Rollout. Not thread-safe.
#ifndef GRPO_ROLLOUT_WORKER_ROLLOUT_H_
#define GRPO_ROLLOUT_WORKER_ROLLOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/rewards.h"
#include "core/sampler.h"
#include "core/scored_group.h"
#include "core/tokenizer.h"

namespace grpo {

struct RolloutBatch {
  std::vector<ScoredGroup> groups;
  std::vector<std::vector<std::string>> completions;  // decoded text, [group][sample]
  int64_t generated_tokens = 0;
  double sample_seconds = 0;
  double score_seconds = 0;
};

class Rollout {
 public:
  Rollout(const CharTokenizer* tokenizer, const CompositeReward* reward)
      : tokenizer_(tokenizer), reward_(reward) {}

  // prompt_ids[i] names examples[i]; sampling.seed fixes the draw.
  absl::StatusOr<RolloutBatch> Generate(const Transformer& policy, int64_t policy_version,
                                        const std::vector<Example>& examples,
                                        const std::vector<std::string>& prompt_ids,
                                        int group_size, const SamplingOptions& sampling) const;

 private:
  const CharTokenizer* tokenizer_;
  const CompositeReward* reward_;
};

}  // namespace grpo

#endif  // GRPO_ROLLOUT_WORKER_ROLLOUT_H_
