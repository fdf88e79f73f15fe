#include "model/decode_attention.h"

#include <ATen/ATen.h>

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "model/runtime.h"
#include "model/simd_exp.h"

namespace grpo {
namespace {

// The cached positions [begin, end) of one (sequence, kv head) pair, read from `keys`,
// `values` and `is_pad` (each pointing at position 0 of the row they come from).
template <typename T>
struct Span {
  const T* keys;
  const T* values;
  const bool* is_pad;
  int64_t begin, end;
};

// A row's positions as two spans: the shared prefix [0, s) from the row that holds it,
// then its own [s, length). Every loop below walks them in that order, so the arithmetic
// for a position does not depend on where the split falls.
template <typename T>
using Spans = std::array<Span<T>, 2>;

// One (sequence, kv head) pair: `rep` query rows against `length` cached keys/values.
// Portable version; AttendAvx2 below is the same with the query and output rows held in
// registers and a vectorised exp (Debian builds for baseline x86-64, so it is chosen at
// run time).
template <typename T>
void AttendGeneric(const float* __restrict query, const Spans<T>& spans, int64_t rep,
                   int64_t hd, float* __restrict weights,
                   float* __restrict out) {
  constexpr int kLanes = 8;
  for (int64_t r = 0; r < rep; ++r) {
    const float* __restrict q = query + r * hd;
    float* __restrict o = out + r * hd;
    float max_score = -std::numeric_limits<float>::infinity();
    for (const Span<T>& span : spans) {
      for (int64_t j = span.begin; j < span.end; ++j) {
        const T* __restrict kj = span.keys + j * hd;
        float lanes[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t d = 0;
        for (; d + kLanes <= hd; d += kLanes)
          for (int l = 0; l < kLanes; ++l) lanes[l] += q[d + l] * static_cast<float>(kj[d + l]);
        float score = 0;
        for (; d < hd; ++d) score += q[d] * static_cast<float>(kj[d]);
        for (int l = 0; l < kLanes; ++l) score += lanes[l];
        weights[j] = score;
        if (!span.is_pad[j]) max_score = std::max(max_score, score);
      }
    }
    for (int64_t d = 0; d < hd; ++d) o[d] = 0;
    if (max_score == -std::numeric_limits<float>::infinity()) continue;  // all padding
    float total = 0;
    for (const Span<T>& span : spans) {
      for (int64_t j = span.begin; j < span.end; ++j) {
        const float w = span.is_pad[j] ? 0.0f : std::exp(weights[j] - max_score);
        weights[j] = w;
        total += w;
      }
    }
    for (const Span<T>& span : spans) {
      for (int64_t j = span.begin; j < span.end; ++j) {
        const float w = weights[j];
        const T* __restrict vj = span.values + j * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] += w * static_cast<float>(vj[d]);
      }
    }
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
  }
}

// Eight cached values as float32: bfloat16 is the high half of a float32.
__attribute__((target("avx2,fma"))) static inline __m256 Load8(const float* p) {
  return _mm256_loadu_ps(p);
}
__attribute__((target("avx2,fma"))) static inline __m256 Load8(const c10::BFloat16* p) {
  const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

// Lane u of the result: the sum of the eight lanes of v[u].
__attribute__((target("avx2,fma"))) static inline __m128 SumEach4(const __m256 v[4]) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  // t = [sums of the low halves of v0..v3 | of their high halves]
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// The scores of four positions (keys at k0..k3): four independent FMA chains over the
// head's blocks, each summed across its lanes by SumEach4.
template <typename T, int kBlocks>
__attribute__((target("avx2,fma"))) static inline __m128 FourScores(const __m256* qv,
                                                                   const T* k0, const T* k1,
                                                                   const T* k2, const T* k3) {
  const T* keys[4] = {k0, k1, k2, k3};
  __m256 acc[4];
  for (int u = 0; u < 4; ++u) acc[u] = _mm256_mul_ps(qv[0], Load8(keys[u]));
  for (int i = 1; i < kBlocks; ++i)
    for (int u = 0; u < 4; ++u) acc[u] = _mm256_fmadd_ps(qv[i], Load8(keys[u] + 8 * i), acc[u]);
  return SumEach4(acc);
}

// kBlocks = hd / 8 is a constant so that the query and the accumulators stay in the 16
// AVX2 registers (with a runtime count they spill to the stack and every FMA waits on a
// store); keys go four at a time (a span's last one to three repeat its last key, so every
// score is the same arithmetic wherever it falls), values eight blocks a pass.
template <typename T, int kBlocks>
__attribute__((target("avx2,fma")))
void AttendAvx2(const float* __restrict query, const Spans<T>& spans, int64_t rep,
                int64_t length, float* __restrict weights, float* __restrict out) {
  constexpr int64_t hd = 8 * kBlocks;
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rep; ++r) {
    const float* q = query + r * hd;
    __m256 qv[kBlocks];
    for (int i = 0; i < kBlocks; ++i) qv[i] = _mm256_loadu_ps(q + 8 * i);
    for (const Span<T>& span : spans) {
      const T* keys = span.keys;
      int64_t j = span.begin;
      for (; j + 4 <= span.end; j += 4) {
        _mm_storeu_ps(weights + j,
                      FourScores<T, kBlocks>(qv, keys + j * hd, keys + (j + 1) * hd,
                                             keys + (j + 2) * hd, keys + (j + 3) * hd));
      }
      if (j < span.end) {
        const int64_t last = span.end - 1;
        alignas(16) float tail[4];
        _mm_store_ps(tail, FourScores<T, kBlocks>(qv, keys + j * hd,
                                                  keys + std::min(j + 1, last) * hd,
                                                  keys + std::min(j + 2, last) * hd,
                                                  keys + last * hd));
        for (int64_t u = 0; j + u < span.end; ++u) weights[j + u] = tail[u];
      }
    }
    float max_score = kMasked;
    for (const Span<T>& span : spans) {
      for (int64_t j = span.begin; j < span.end; ++j) {
        if (span.is_pad[j]) weights[j] = kMasked;
        max_score = std::max(max_score, weights[j]);
      }
    }
    float* o = out + r * hd;
    if (max_score == kMasked) {  // all padding
      for (int64_t d = 0; d < hd; ++d) o[d] = 0;
      continue;
    }
    int64_t j = 0;
    __m256 total8 = _mm256_setzero_ps();
    const __m256 mx = _mm256_set1_ps(max_score);
    for (; j + 8 <= length; j += 8) {
      __m256 w = Exp8(_mm256_sub_ps(_mm256_loadu_ps(weights + j), mx));
      _mm256_storeu_ps(weights + j, w);
      total8 = _mm256_add_ps(total8, w);
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, total8);
    float total = tmp[0] + tmp[1] + tmp[2] + tmp[3] + tmp[4] + tmp[5] + tmp[6] + tmp[7];
    for (; j < length; ++j) {
      const float w = std::exp(weights[j] - max_score);
      weights[j] = w;
      total += w;
    }
    const __m256 inv = _mm256_set1_ps(1.0f / total);
    constexpr int kPass = kBlocks < 8 ? kBlocks : 8;
    static_assert(kBlocks % kPass == 0, "head_dim / 8 must be a multiple of the pass width");
    for (int c = 0; c < kBlocks; c += kPass) {
      __m256 ov[kPass];
      for (int i = 0; i < kPass; ++i) ov[i] = _mm256_setzero_ps();
      for (const Span<T>& span : spans) {
        for (int64_t k = span.begin; k < span.end; ++k) {
          const __m256 w = _mm256_set1_ps(weights[k]);
          const T* vk = span.values + k * hd + 8 * c;
          for (int i = 0; i < kPass; ++i) ov[i] = _mm256_fmadd_ps(w, Load8(vk + 8 * i), ov[i]);
        }
      }
      for (int i = 0; i < kPass; ++i)
        _mm256_storeu_ps(o + 8 * (c + i), _mm256_mul_ps(ov[i], inv));
    }
  }
}

// One (sequence, kv head) pair's kernel for this head size; null: the portable one.
template <typename T>
using AttendFn = void (*)(const float*, const Spans<T>&, int64_t, int64_t, float*, float*);

template <typename T>
AttendFn<T> PickAvx2(int64_t hd) {
  if (!HasAvx2Fma()) return nullptr;
  switch (hd) {
    case 16: return &AttendAvx2<T, 2>;
    case 32: return &AttendAvx2<T, 4>;
    case 64: return &AttendAvx2<T, 8>;
    case 128: return &AttendAvx2<T, 16>;
    default: return nullptr;
  }
}

// The (sequence, kv head) pairs b = n * kv_heads + h in the order they are computed. With
// shared prefixes, the rows reading one source row come together for each head, so that
// source's prefix comes from memory once and from the cache for the others.
std::vector<int64_t> WorkOrder(int64_t rows, int64_t kv_heads, const int64_t* source) {
  std::vector<int64_t> order;
  order.reserve(rows * kv_heads);
  if (source == nullptr) {
    for (int64_t b = 0; b < rows * kv_heads; ++b) order.push_back(b);
    return order;
  }
  std::vector<int64_t> by_source(rows);
  std::iota(by_source.begin(), by_source.end(), 0);
  std::stable_sort(by_source.begin(), by_source.end(),
                   [source](int64_t a, int64_t b) { return source[a] < source[b]; });
  for (int64_t first = 0; first < rows;) {
    int64_t last = first + 1;
    while (last < rows && source[by_source[last]] == source[by_source[first]]) ++last;
    for (int64_t h = 0; h < kv_heads; ++h)
      for (int64_t i = first; i < last; ++i) order.push_back(by_source[i] * kv_heads + h);
    first = last;
  }
  return order;
}

// Every (sequence, kv head) pair, split over the compute threads. Reading the cache is
// memory-bound (~22 GB/s from one core here, ~40 GB/s from two), so this always uses every
// compute thread, even when LibTorch's intra-op pool is kept at one thread to leave the
// cores to OpenBLAS. `source`: null, or each row's prefix row (DecodeAttention).
template <typename T>
void AttendAll(const float* q, const T* k, const T* v, const bool* pad, int64_t batch,
               int64_t rep, int64_t hd, int64_t kv_heads, int64_t capacity, int64_t length,
               const int64_t* source, int64_t prefix_length, float* o) {
  const AttendFn<T> avx2 = PickAvx2<T>(hd);
  const std::vector<int64_t> order = WorkOrder(batch / kv_heads, kv_heads, source);
  const int64_t shared = source == nullptr ? 0 : prefix_length;
  const int threads = static_cast<int>(std::min<int64_t>(ComputeThreads(), batch));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> weights(length);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t b = order[i], row = b / kv_heads, h = b % kv_heads;
      const int64_t from = source == nullptr ? row : source[row];
      const int64_t own = b * capacity * hd, prefix = (from * kv_heads + h) * capacity * hd;
      const Spans<T> spans = {Span<T>{k + prefix, v + prefix, pad + from * capacity, 0, shared},
                              Span<T>{k + own, v + own, pad + row * capacity, shared, length}};
      const float* qb = q + b * rep * hd;
      float* ob = o + b * rep * hd;
      if (avx2) {
        avx2(qb, spans, rep, length, weights.data(), ob);
      } else {
        AttendGeneric<T>(qb, spans, rep, hd, weights.data(), ob);
      }
    }
  }
}

}  // namespace

at::Tensor DecodeAttention(const at::Tensor& query, const at::Tensor& keys,
                           const at::Tensor& values, const at::Tensor& key_is_pad,
                           int64_t length, const at::Tensor& prefix_rows,
                           int64_t prefix_length) {
  TORCH_CHECK(query.dim() == 3 && query.is_contiguous() && query.scalar_type() == at::kFloat,
              "DecodeAttention: query must be contiguous float [B, R, hd]");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous() && key_is_pad.is_contiguous(),
              "DecodeAttention: caches must be contiguous");
  const int64_t batch = query.size(0), rep = query.size(1), hd = query.size(2);
  const int64_t rows = keys.size(0), kv_heads = keys.size(1), capacity = keys.size(2);
  TORCH_CHECK(rows * kv_heads == batch && keys.size(3) == hd && length <= capacity,
              "DecodeAttention: shapes do not match");
  TORCH_CHECK(keys.scalar_type() == values.scalar_type() &&
                  (keys.scalar_type() == at::kFloat || keys.scalar_type() == at::kBFloat16),
              "DecodeAttention: caches must both be float32 or both bfloat16");
  const int64_t* source = nullptr;
  if (prefix_rows.defined()) {
    TORCH_CHECK(prefix_rows.dim() == 1 && prefix_rows.size(0) == rows &&
                    prefix_rows.scalar_type() == at::kLong && prefix_rows.is_contiguous() &&
                    prefix_rows.device().is_cpu(),
                "DecodeAttention: prefix_rows must be contiguous int64 [", rows,
                "] on the CPU, got ", prefix_rows.sizes());
    TORCH_CHECK(prefix_length >= 0 && prefix_length <= length,
                "DecodeAttention: prefix_length ", prefix_length, " outside [0, ", length, "]");
    source = prefix_rows.data_ptr<int64_t>();
    for (int64_t n = 0; n < rows; ++n)
      TORCH_CHECK(source[n] >= 0 && source[n] < rows, "DecodeAttention: prefix_rows[", n,
                  "] = ", source[n], " outside [0, ", rows, ")");
  }
  at::Tensor out = at::empty_like(query);
  if (keys.scalar_type() == at::kFloat) {
    AttendAll(query.data_ptr<float>(), keys.data_ptr<float>(), values.data_ptr<float>(),
              key_is_pad.data_ptr<bool>(), batch, rep, hd, kv_heads, capacity, length, source,
              prefix_length, out.data_ptr<float>());
  } else {
    AttendAll(query.data_ptr<float>(), keys.data_ptr<c10::BFloat16>(),
              values.data_ptr<c10::BFloat16>(), key_is_pad.data_ptr<bool>(), batch, rep, hd,
              kv_heads, capacity, length, source, prefix_length, out.data_ptr<float>());
  }
  return out;
}

}  // namespace grpo
