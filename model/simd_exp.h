// Exp8: e^x for eight float32 lanes (AVX2/FMA), the one vectorised exp the CPU decode
// kernels share (the attention softmax in decode_attention.cc, silu in decode_kernels.cc).
// Callers compile it for AVX2/FMA and run it only where HasAvx2Fma() (runtime.h).
#ifndef GRPO_MODEL_SIMD_EXP_H_
#define GRPO_MODEL_SIMD_EXP_H_

#include <immintrin.h>

namespace grpo {

// e^x for eight floats: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r is exact
// to float precision), e^r by its degree-7 Taylor polynomial (truncation < 6e-9, under
// float32's rounding), times 2^n built in the exponent bits. x is clamped to [-87, 88],
// where 2^n stays a normal float: a masked score (-inf) gets e^-87 ≈ 1.6e-38, and silu(g)
// for g < -88 comes out as g / (1 + e^88), both where the exact value is as negligible.
__attribute__((target("avx2,fma"))) inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

}  // namespace grpo

#endif  // GRPO_MODEL_SIMD_EXP_H_
