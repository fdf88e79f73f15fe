#include "model/decode_kernels.h"

#include <ATen/ATen.h>

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "model/runtime.h"
#include "model/simd_exp.h"

namespace grpo {
namespace {

// A few rows are not worth waking a thread for.
int ThreadsFor(int64_t rows) {
  return static_cast<int>(std::clamp<int64_t>(rows / 4, 1, ComputeThreads()));
}

}  // namespace

at::Tensor RmsNormRows(const at::Tensor& x, const at::Tensor& weight, float eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && weight.is_contiguous(),
              "RmsNormRows: contiguous [N, d] input expected");
  const int64_t rows = x.size(0), d = x.size(1);
  at::Tensor out = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  float* o = out.data_ptr<float>();
  // Rows split over the compute threads: run on one, the other waits out this and every
  // other small step of a decode layer (~15% of a bench-26m decode step on 2 cores).
#pragma omp parallel for num_threads(ThreadsFor(rows)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = in + r * d;
    float sum = 0;
    for (int64_t i = 0; i < d; ++i) sum += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(sum / d + eps);
    float* orow = o + r * d;
    for (int64_t i = 0; i < d; ++i) orow[i] = xr[i] * inv * w[i];
  }
  return out;
}

namespace {

// out[j] = silu(gate[j]) * up[j] = gate / (1 + e^-gate) * up for j < f.
__attribute__((target("avx2,fma"))) void SwiGluAvx2(const float* gate, const float* up,
                                                     int64_t f, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t j = 0;
  for (; j + 8 <= f; j += 8) {
    const __m256 g = _mm256_loadu_ps(gate + j);
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + j, _mm256_mul_ps(silu, _mm256_loadu_ps(up + j)));
  }
  for (; j < f; ++j) out[j] = gate[j] / (1.0f + std::exp(-gate[j])) * up[j];
}

void SwiGluPortable(const float* gate, const float* up, int64_t f, float* out) {
  for (int64_t j = 0; j < f; ++j) out[j] = gate[j] / (1.0f + std::exp(-gate[j])) * up[j];
}

// RotateAndCache with caches of element type T (float, or bfloat16 rounded to nearest even).
template <typename T>
void RotateAndCacheAs(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                      float q_scale, int64_t pos, int64_t n_heads, at::Tensor& keys,
                      at::Tensor& values, at::Tensor& q_out) {
  const int64_t n = qkv.size(0), kv_heads = keys.size(1), capacity = keys.size(2),
                hd = keys.size(3), half = hd / 2;
  const float* src = qkv.data_ptr<float>();
  const float* c = cos.data_ptr<float>();
  const float* s = sin.data_ptr<float>();
  float* q = q_out.data_ptr<float>();
  T* k_cache = keys.data_ptr<T>();
  T* v_cache = values.data_ptr<T>();
  // rotate_half(x) = [-x2, x1]: out = x * cos + rotate_half(x) * sin.
  auto rotate = [&](const float* x, auto* out, float scale) {
    using Out = std::remove_pointer_t<decltype(out)>;
    for (int64_t i = 0; i < half; ++i) {
      out[i] = static_cast<Out>((x[i] * c[i] - x[i + half] * s[i]) * scale);
      out[i + half] = static_cast<Out>((x[i + half] * c[i + half] + x[i] * s[i + half]) * scale);
    }
  };
  const int64_t width = (n_heads + 2 * kv_heads) * hd;
#pragma omp parallel for num_threads(ThreadsFor(n)) schedule(static)
  for (int64_t row = 0; row < n; ++row) {
    const float* r = src + row * width;
    // q heads are kv-major (head = kv * rep + j), which is [N * K, rep, hd] row order.
    for (int64_t h = 0; h < n_heads; ++h) rotate(r + h * hd, q + (row * n_heads + h) * hd, q_scale);
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t slot = ((row * kv_heads + h) * capacity + pos) * hd;
      rotate(r + (n_heads + h) * hd, k_cache + slot, 1.0f);
      const float* v = r + (n_heads + kv_heads + h) * hd;
      for (int64_t i = 0; i < hd; ++i) v_cache[slot + i] = static_cast<T>(v[i]);
    }
  }
}

}  // namespace

at::Tensor SwiGluRows(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() &&
                  gate_up.scalar_type() == at::kFloat && gate_up.size(1) % 2 == 0,
              "SwiGluRows: contiguous float [N, 2f] input expected, got ", gate_up.sizes());
  const int64_t rows = gate_up.size(0), f = gate_up.size(1) / 2;
  at::Tensor out = at::empty({rows, f}, gate_up.options());
  const float* in = gate_up.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const auto kernel = HasAvx2Fma() ? &SwiGluAvx2 : &SwiGluPortable;
#pragma omp parallel for num_threads(ThreadsFor(rows)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) kernel(in + r * 2 * f, in + r * 2 * f + f, f, o + r * f);
  return out;
}

at::Tensor RotateAndCache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                          float q_scale, int64_t pos, int64_t n_heads, at::Tensor& keys,
                          at::Tensor& values) {
  const int64_t n = qkv.size(0), kv_heads = keys.size(1), capacity = keys.size(2),
                hd = keys.size(3);
  TORCH_CHECK(qkv.is_contiguous() && keys.is_contiguous() && values.is_contiguous() &&
                  qkv.size(1) == (n_heads + 2 * kv_heads) * hd && pos < capacity,
              "RotateAndCache: shapes do not match");
  TORCH_CHECK(keys.scalar_type() == values.scalar_type() &&
                  (keys.scalar_type() == at::kFloat || keys.scalar_type() == at::kBFloat16),
              "RotateAndCache: caches must both be float32 or both bfloat16");
  at::Tensor q_out = at::empty({n * kv_heads, n_heads / kv_heads, hd});
  if (keys.scalar_type() == at::kFloat) {
    RotateAndCacheAs<float>(qkv, cos, sin, q_scale, pos, n_heads, keys, values, q_out);
  } else {
    RotateAndCacheAs<c10::BFloat16>(qkv, cos, sin, q_scale, pos, n_heads, keys, values, q_out);
  }
  return q_out;
}

}  // namespace grpo
