#include "core/decode_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

namespace grpo {
namespace {

// One (sequence, kv head) pair: `rep` query rows against `length` cached keys/values.
// Compiled twice (AVX2+FMA and baseline x86-64) and picked at load time, since Debian
// builds for the baseline; the fixed-width lanes let both versions vectorise.
__attribute__((target_clones("arch=haswell", "default")))
void AttendOne(const float* __restrict query, const float* __restrict keys,
               const float* __restrict values, const bool* __restrict is_pad,
               int64_t rep, int64_t length, int64_t hd, float* __restrict weights,
               float* __restrict out) {
  constexpr int kLanes = 8;
  for (int64_t r = 0; r < rep; ++r) {
    const float* __restrict q = query + r * hd;
    float* __restrict o = out + r * hd;
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < length; ++j) {
      const float* __restrict kj = keys + j * hd;
      float lanes[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t d = 0;
      for (; d + kLanes <= hd; d += kLanes)
        for (int l = 0; l < kLanes; ++l) lanes[l] += q[d + l] * kj[d + l];
      float score = 0;
      for (; d < hd; ++d) score += q[d] * kj[d];
      for (int l = 0; l < kLanes; ++l) score += lanes[l];
      weights[j] = score;
      if (!is_pad[j]) max_score = std::max(max_score, score);
    }
    for (int64_t d = 0; d < hd; ++d) o[d] = 0;
    if (max_score == -std::numeric_limits<float>::infinity()) continue;  // all padding
    float total = 0;
    for (int64_t j = 0; j < length; ++j) {
      const float w = is_pad[j] ? 0.0f : std::exp(weights[j] - max_score);
      weights[j] = w;
      total += w;
    }
    for (int64_t j = 0; j < length; ++j) {
      const float w = weights[j];
      const float* __restrict vj = values + j * hd;
      for (int64_t d = 0; d < hd; ++d) o[d] += w * vj[d];
    }
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
  }
}

}  // namespace

at::Tensor DecodeAttention(const at::Tensor& query, const at::Tensor& keys,
                           const at::Tensor& values, const at::Tensor& key_is_pad,
                           int64_t length) {
  TORCH_CHECK(query.dim() == 3 && query.is_contiguous() && query.scalar_type() == at::kFloat,
              "DecodeAttention: query must be contiguous float [B, R, hd]");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous() && key_is_pad.is_contiguous(),
              "DecodeAttention: caches must be contiguous");
  const int64_t batch = query.size(0), rep = query.size(1), hd = query.size(2);
  const int64_t kv_heads = keys.size(1), capacity = keys.size(2);
  TORCH_CHECK(keys.size(0) * kv_heads == batch && keys.size(3) == hd && length <= capacity,
              "DecodeAttention: shapes do not match");

  at::Tensor out = at::empty_like(query);
  const float* q = query.data_ptr<float>();
  const float* k = keys.data_ptr<float>();
  const float* v = values.data_ptr<float>();
  const bool* pad = key_is_pad.data_ptr<bool>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, batch, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> weights(length);
    for (int64_t b = begin; b < end; ++b) {
      AttendOne(q + b * rep * hd, k + b * capacity * hd, v + b * capacity * hd,
                pad + (b / kv_heads) * capacity, rep, length, hd, weights.data(),
                o + b * rep * hd);
    }
  });
  return out;
}

}  // namespace grpo
