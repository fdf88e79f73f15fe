// ChooseTokens: the next token of every row from its logits, as SamplingOptions asks
// (temperature, top-k, top-p, sample_vocab), and the log-prob the sampler records for it.
// The random draw is the caller's, so the eager sampler (a multinomial draw from a seeded
// generator) and the static decoder (an exponential race over noise drawn beforehand,
// which a CUDA graph can replay) share every other operation.
#ifndef GRPO_MODEL_TOKEN_CHOICE_H_
#define GRPO_MODEL_TOKEN_CHOICE_H_

#include <ATen/core/Tensor.h>

#include <functional>
#include <utility>

#include "model/sampler.h"

namespace grpo {

// probs: float [N, V], rows summing to 1 over the ids that may be drawn (0 elsewhere);
// returns int64 [N, 1], one id drawn from each row.
using TokenDraw = std::function<at::Tensor(const at::Tensor& probs)>;

// logits: float32 [N, V] on any device. Returns {token int64 [N], logprob float [N]}, on
// the logits' device; the log-prob is that of softmax(logits / T) (T = 1 when greedy),
// before any filtering. Reads nothing back to the host.
std::pair<at::Tensor, at::Tensor> ChooseTokens(const at::Tensor& logits,
                                               const SamplingOptions& options,
                                               const TokenDraw& draw);

}  // namespace grpo

#endif  // GRPO_MODEL_TOKEN_CHOICE_H_
