// Held-out evaluation: k samples per prompt at a temperature plus one greedy decode, scored
// by exact answer. Reports pass@1 (mean correctness of the k samples), pass@k (any of k
// correct), maj@k (the most frequent final answer among the k is correct) and greedy
// accuracy. Deterministic for a given seed.
#ifndef GRPO_EVALUATION_EVALUATION_H_
#define GRPO_EVALUATION_EVALUATION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "model/model.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {

struct EvalOptions {
  int k = 8;
  float temperature = 1.0f;
  int max_new_tokens = 48;
  int prompts_per_batch = 32;  // bounds the decode batch at prompts_per_batch * k rows
  uint64_t seed = 0;
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
