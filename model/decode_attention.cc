#include "model/decode_attention.h"

#include <ATen/ATen.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "model/runtime.h"

namespace grpo {
namespace {

// One (sequence, kv head) pair: `rep` query rows against `length` cached keys/values.
// Portable version; AttendAvx2 below is the same with the query and output rows held in
// registers and a vectorised exp (Debian builds for baseline x86-64, so it is chosen at
// run time).
void AttendGeneric(const float* __restrict query, const float* __restrict keys,
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

// exp(x) for x <= 0 (softmax after subtracting the max): 2^(x log2 e) by range reduction
// and a degree-5 polynomial for 2^f on [0, 1); relative error < 4e-6.
__attribute__((target("avx2,fma"))) static inline __m256 Exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
  const __m256 fi = _mm256_floor_ps(t);
  const __m256 f = _mm256_sub_ps(t, fi);  // [0, 1)
  // 2^f on [0,1): minimax polynomial
  __m256 p = _mm256_set1_ps(1.8775767e-3f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(8.9893397e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5826318e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4015361e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9315308e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.9999994e-1f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fi), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma")))
void AttendAvx2(const float* __restrict query, const float* __restrict keys,
               const float* __restrict values, const bool* __restrict is_pad,
               int64_t rep, int64_t length, int64_t hd, float* __restrict weights,
               float* __restrict out) {
  const int64_t blocks = hd / 8;  // hd % 8 == 0, hd <= 128
  for (int64_t r = 0; r < rep; ++r) {
    const float* q = query + r * hd;
    __m256 qv[16];
    for (int64_t i = 0; i < blocks; ++i) qv[i] = _mm256_loadu_ps(q + 8 * i);
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < length; ++j) {
      const float* kj = keys + j * hd;
      __m256 acc = _mm256_mul_ps(qv[0], _mm256_loadu_ps(kj));
      for (int64_t i = 1; i < blocks; ++i) acc = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(kj + 8 * i), acc);
      __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
      s = _mm_add_ps(s, _mm_movehl_ps(s, s));
      s = _mm_add_ss(s, _mm_movehdup_ps(s));
      const float score = is_pad[j] ? -std::numeric_limits<float>::infinity() : _mm_cvtss_f32(s);
      weights[j] = score;
      max_score = std::max(max_score, score);
    }
    float* o = out + r * hd;
    if (max_score == -std::numeric_limits<float>::infinity()) { for (int64_t d = 0; d < hd; ++d) o[d] = 0; continue; }
    int64_t j = 0;
    __m256 total8 = _mm256_setzero_ps();
    const __m256 mx = _mm256_set1_ps(max_score);
    for (; j + 8 <= length; j += 8) {
      __m256 w = Exp256(_mm256_sub_ps(_mm256_loadu_ps(weights + j), mx));
      _mm256_storeu_ps(weights + j, w);
      total8 = _mm256_add_ps(total8, w);
    }
    float tmp[8]; _mm256_storeu_ps(tmp, total8);
    float total = tmp[0]+tmp[1]+tmp[2]+tmp[3]+tmp[4]+tmp[5]+tmp[6]+tmp[7];
    for (; j < length; ++j) { const float w = std::exp(weights[j] - max_score); weights[j] = w; total += w; }
    __m256 ov[16];
    for (int64_t i = 0; i < blocks; ++i) ov[i] = _mm256_setzero_ps();
    for (int64_t j2 = 0; j2 < length; ++j2) {
      const __m256 w = _mm256_set1_ps(weights[j2]);
      const float* vj = values + j2 * hd;
      for (int64_t i = 0; i < blocks; ++i) ov[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 8 * i), ov[i]);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / total);
    for (int64_t i = 0; i < blocks; ++i) _mm256_storeu_ps(o + 8 * i, _mm256_mul_ps(ov[i], inv));
  }
}
bool UseAvx2(int64_t hd) {
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported && hd % 8 == 0 && hd <= 128;
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
  // Reading the cache is memory-bound (~22 GB/s from one core here, ~40 GB/s from two),
  // so this always uses every compute thread, even when LibTorch's intra-op pool is
  // kept at one thread to leave the cores to OpenBLAS.
  const bool avx2 = UseAvx2(hd);
  const int threads = static_cast<int>(std::min<int64_t>(ComputeThreads(), batch));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> weights(length);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      (avx2 ? AttendAvx2 : AttendGeneric)(q + b * rep * hd, k + b * capacity * hd, v + b * capacity * hd,
                pad + (b / kv_heads) * capacity, rep, length, hd, weights.data(),
                o + b * rep * hd);
    }
  }
  return out;
}

}  // namespace grpo
