// DecodeAttention: attention for one new query token per sequence against the KV cache,
// as a direct loop. LibTorch 1.13's CPU bmm runs a [batch, 1, hd] x [batch, hd, S]
// product as one dispatched mm per batch element (N x kv_heads of them per layer per
// token), which cost more than all the decode matmuls together; this computes the same
// softmax(q·Kᵀ)·V in one parallel pass. Inference only (no autograd).
#ifndef GRPO_MODEL_DECODE_ATTENTION_H_
#define GRPO_MODEL_DECODE_ATTENTION_H_

#include <ATen/core/Tensor.h>

namespace grpo {

// query:   float [B, R, hd] contiguous (B = N x kv_heads, R query heads per kv head,
//          already scaled by 1/sqrt(hd));
// keys, values: float or bfloat16 (both the same) [N, kv_heads, capacity, hd] contiguous
//          caches, first `length` slots valid;
// key_is_pad: bool [N, capacity] contiguous; padded keys get no weight.
// prefix_rows: undefined, or int64 [N] on the CPU: row n reads slots [0, prefix_length)
//          from row prefix_rows[n], which must hold the same keys, values and padding there
//          (the samples of one prompt, whose prefill was copied to each: KvCache::
//          SharePrefix). Those rows are computed together, head by head, so the prompt's
//          cache comes from memory once per kv head instead of once per sample; the result
//          is what reading each row's own slots gives, bit for bit.
// Returns float [B, R, hd].
at::Tensor DecodeAttention(const at::Tensor& query, const at::Tensor& keys,
                           const at::Tensor& values, const at::Tensor& key_is_pad,
                           int64_t length, const at::Tensor& prefix_rows = at::Tensor(),
                           int64_t prefix_length = 0);

}  // namespace grpo

#endif  // GRPO_MODEL_DECODE_ATTENTION_H_
