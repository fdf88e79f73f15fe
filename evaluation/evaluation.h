// Held-out evaluation: k samples per prompt at a temperature plus one greedy decode. A
// completion of an example with an answer is correct when its final answer equals it
// (data/dataset.h); one of an example with tests when it passes every test, as judged by
// options.tests_judge (code_tests: a reward of at least 1). Reports pass@1 (mean
// correctness of the k samples), pass@k (any of k correct), maj@k (the most frequent final
// answer, or program text, among the k is correct) and greedy accuracy. Deterministic for
// a given seed when the judge is.
#ifndef GRPO_EVALUATION_EVALUATION_H_
#define GRPO_EVALUATION_EVALUATION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "model/model.h"
#include "rewards/rewards.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {

struct EvalOptions {
  int k = 8;
  float temperature = 1.0f;
  int max_new_tokens = 48;
  int prompts_per_batch = 32;  // bounds the decode batch at prompts_per_batch * k rows
  uint64_t seed = 0;
  // Judges examples with tests (not owned; required when one has tests, else
  // INVALID_ARGUMENT).
  const RewardFunction* tests_judge = nullptr;
};

struct EvalResult {
  int num_prompts = 0;
  int k = 0;
  double pass_at_1 = 0;
  double pass_at_k = 0;
  double maj_at_k = 0;
  double greedy_accuracy = 0;
  double mean_completion_tokens = 0;
};

absl::StatusOr<EvalResult> Evaluate(const Transformer& policy, const TextTokenizer& tokenizer,
                                    const std::vector<Example>& examples,
                                    const EvalOptions& options);

}  // namespace grpo

#endif  // GRPO_EVALUATION_EVALUATION_H_
