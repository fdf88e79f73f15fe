// Supervised warm-up (docs/design.md §4): cross-entropy on reference solutions with the prompt
// tokens masked, the way DeepSeekMath starts GRPO from an instruct model. Borrows the
// policy and updates it in place.
#ifndef GRPO_LEARNER_SFT_H_
#define GRPO_LEARNER_SFT_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "learner/optimizer.h"
#include "model/model.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {

struct SftOptions {
  int steps = 300;
  int batch_size = 32;
  OptimizerOptions optimizer;
  uint64_t seed = 0;
};

struct SftProgress {
  int step = 0;
  double loss = 0;  // mean token cross-entropy (nats) of this batch
  double grad_norm = 0;
  int64_t tokens = 0;
  double seconds = 0;
};

// Trains on examples that have a solution (solution + EOS is the target). Returns the
// mean loss of the last 10% of steps. INVALID_ARGUMENT when no example has a solution.
absl::StatusOr<double> RunSft(Transformer* policy, const TextTokenizer& tokenizer,
                              const std::vector<Example>& examples, const SftOptions& options,
                              const std::function<void(const SftProgress&)>& on_step);

}  // namespace grpo

#endif  // GRPO_LEARNER_SFT_H_
