// TokenBatch: prompts and completions packed into the model's padded layout (prompts
// left-padded, completions right-padded, see model/model.h), and the log-probs a model
// assigns to the completion tokens. Shared by GRPO and SFT.
#ifndef GRPO_LEARNER_BATCH_H_
#define GRPO_LEARNER_BATCH_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model.h"

namespace grpo {

struct TokenBatch {
  at::Tensor tokens;  // int64 [N, P + M]
  at::Tensor is_pad;  // bool [N, P + M]
  at::Tensor mask;    // float [N, M]: 1 on completion tokens
  // int64 [Σ|o_i|]: the flat indices (row · M + t) of the completion tokens, counted on the
  // host when packing: selecting them from a device mask (nonzero) would stall the host
  // until the device got there, once per micro-batch. Moved with the rest of the batch.
  at::Tensor positions;
  int64_t prompt_length = 0;      // P
  int64_t completion_length = 0;  // M
};

// INVALID_ARGUMENT for mismatched sizes, empty rows or token ids outside [0, vocab).
absl::StatusOr<TokenBatch> PackBatch(const std::vector<std::vector<int32_t>>& prompts,
                                     const std::vector<std::vector<int32_t>>& completions,
                                     int pad_token, int vocab_size);

// Rows right-padded with zeros to [N, width].
at::Tensor PadRows(const std::vector<std::vector<float>>& rows, int64_t width);

// log softmax(logits / temperature) of each completion token under `model`: [N, M], from
// the whole [N, M, V] logits (SFT and the gradient checks; GRPO uses the chunked form).
// Differentiable unless called under NoGradGuard.
at::Tensor CompletionLogprobs(const Transformer& model, const TokenBatch& batch,
                              double temperature);

// The same log-probs and the entropy (nats) of each completion position, [N, M] both, zero
// off the mask. Only completion positions reach the LM head, `chunk` of them at a time
// forward and backward (learner/chunked_logprobs.h; 0 = all at once), so no [N, M, V]
// logits tensor is held. Differentiable in the log-probs unless under NoGradGuard.
struct CompletionOutputs {
  at::Tensor logprobs;
  at::Tensor entropy;
};
CompletionOutputs CompletionLogprobsChunked(const Transformer& model, const TokenBatch& batch,
                                            double temperature, int64_t chunk);

}  // namespace grpo

#endif  // GRPO_LEARNER_BATCH_H_
