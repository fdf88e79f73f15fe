// ChunkedTokenLogprobs: log softmax(h·Wᵀ / T)[y] and the entropy of softmax(h·Wᵀ / T) for
// rows of final hidden states h (after the final norm) and the LM head W, computed `chunk`
// rows at a time in the forward pass and again in the backward pass, so that at most
// [chunk, V] logits exist at once. At Qwen's 151,936-token vocabulary one 128 × 512 batch
// of float32 logits is ~40 GB; chunked at 1,024 positions it is ~0.6 GB.
//
// The backward pass recomputes each chunk's logits z and uses
//   ∂ log softmax(z)[y] / ∂z = onehot(y) − softmax(z),
// with the row's logsumexp kept from the forward pass, then ∂h = ∂z·W and ∂W = ∂zᵀ·h.
// Differentiable in h and W through the log-probs; the entropy is a metric (no gradient).
// Mixed precision: h in bfloat16 and W in float32 (the master weights) run the matmuls in
// bfloat16 and the softmax in float32; the log-probs come out in float32 (float64 for
// float64 inputs) and W's gradient is summed in W's dtype.
// Pure function; no ownership.
#ifndef GRPO_LEARNER_CHUNKED_LOGPROBS_H_
#define GRPO_LEARNER_CHUNKED_LOGPROBS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace grpo {

struct LogprobsAndEntropy {
  at::Tensor logprobs;  // [R]
  at::Tensor entropy;   // [R], nats, no gradient
};

// hidden [R, d], head [V, d], targets int64 [R]; chunk <= 0 means all R rows at once.
LogprobsAndEntropy ChunkedTokenLogprobs(const at::Tensor& hidden, const at::Tensor& head,
                                        const at::Tensor& targets, double temperature,
                                        int64_t chunk);

}  // namespace grpo

#endif  // GRPO_LEARNER_CHUNKED_LOGPROBS_H_
