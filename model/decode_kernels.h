// Fused kernels for one decode step (one new token per sequence, no autograd). Each
// replaces a chain of small LibTorch ops whose dispatch and temporaries cost more than
// their arithmetic at decode shapes ([N, d] with N = B x G rows). They compute exactly what
// the op chains in model.cc compute; the decode-vs-full-forward tests hold them to it.
#ifndef GRPO_MODEL_DECODE_KERNELS_H_
#define GRPO_MODEL_DECODE_KERNELS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace grpo {

// x: float [N, d] contiguous; weight [d]. x * rsqrt(mean(x²) + eps) * weight.
at::Tensor RmsNormRows(const at::Tensor& x, const at::Tensor& weight, float eps);

// gate_up: float [N, 2f] contiguous, the fused gate and up projections. Returns
// silu(gate) * up as [N, f], within a few float32 ulp of the exact value (e^x a vectorised
// polynomial where the CPU has AVX2/FMA), rows split over the compute threads.
at::Tensor SwiGluRows(const at::Tensor& gate_up);

// qkv: float [N, (H + 2K) * hd] contiguous, the fused projection of one token per row.
// Rotates q and k by the rotary angles of position `pos` (cos/sin: [hd] rows of the
// tables), writes k and v into slot `pos` of the caches ([N, K, capacity, hd], float32, or
// bfloat16 rounded to nearest even) and returns
// q * q_scale as [N * K, H / K, hd] (the layout DecodeAttention takes).
at::Tensor RotateAndCache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                          float q_scale, int64_t pos, int64_t n_heads, at::Tensor& keys,
                          at::Tensor& values);

}  // namespace grpo

#endif  // GRPO_MODEL_DECODE_KERNELS_H_
