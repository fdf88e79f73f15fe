#include "model/packed_matmul.h"

#include <ATen/ATen.h>
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "model/runtime.h"

namespace grpo {
namespace {

constexpr int64_t kPanel = 16;  // output columns per panel: two 8-float AVX registers
constexpr int64_t kTileRows = 6;  // 12 accumulators, 2 weight rows, 1 broadcast: 15 of 16 registers
// Input rows per chunk: a chunk of x stays in a core's L2 while every panel of that
// thread's share passes over it.
constexpr int64_t kChunkBytes = 384 << 10;

// Stores one tile row's 16 results, or its first `cols` where the panel runs past N, each
// plus the residual's element when there is one (r: that row of the residual, or null).
__attribute__((target("avx2,fma"))) inline void StoreRow(float* c, const float* r, __m256 lo,
                                                          __m256 hi, int64_t cols) {
  if (cols == kPanel) {
    if (r != nullptr) {
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(r));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(r + 8));
    }
    _mm256_storeu_ps(c, lo);
    _mm256_storeu_ps(c + 8, hi);
    return;
  }
  alignas(32) float row[kPanel];
  _mm256_store_ps(row, lo);
  _mm256_store_ps(row + 8, hi);
  if (r != nullptr) {
    for (int64_t j = 0; j < cols; ++j) row[j] += r[j];
  }
  std::memcpy(c, row, cols * sizeof(float));
}

// c[r][0..cols) = res[r][·] + Σ_k a[r][k] · panel[k][·] for the R (≤ 6) rows of a at
// stride lda (res, at c's stride ldc, may be null: no residual). The
// accumulators are named registers: an array of them gets spilled to the stack by GCC.
#define GRPO_TILE_ROW(i)                                        \
  if constexpr (R > i) {                                        \
    const __m256 v = _mm256_broadcast_ss(a##i + k);             \
    c##i##0 = _mm256_fmadd_ps(v, b0, c##i##0);                  \
    c##i##1 = _mm256_fmadd_ps(v, b1, c##i##1);                  \
  }
#define GRPO_STORE_ROW(i) \
  if constexpr (R > i)     \
    StoreRow(c + i * ldc, res ? res + i * ldc : nullptr, c##i##0, c##i##1, cols);

template <int R>
__attribute__((target("avx2,fma"))) void Tile(const float* a, int64_t lda,
                                              const float* panel, int64_t depth, float* c,
                                              const float* res, int64_t ldc, int64_t cols) {
  const __m256 zero = _mm256_setzero_ps();
  [[maybe_unused]] __m256 c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero,
                          c21 = zero, c30 = zero, c31 = zero, c40 = zero, c41 = zero,
                          c50 = zero, c51 = zero;
  // Rows past R alias row 0 (never read): no pointer past the input is formed.
  [[maybe_unused]] const float *a0 = a, *a1 = R > 1 ? a + lda : a,
                               *a2 = R > 2 ? a + 2 * lda : a, *a3 = R > 3 ? a + 3 * lda : a,
                               *a4 = R > 4 ? a + 4 * lda : a, *a5 = R > 5 ? a + 5 * lda : a;
  for (int64_t k = 0; k < depth; ++k) {
    const __m256 b0 = _mm256_loadu_ps(panel + k * kPanel);
    const __m256 b1 = _mm256_loadu_ps(panel + k * kPanel + 8);
    GRPO_TILE_ROW(0)
    GRPO_TILE_ROW(1)
    GRPO_TILE_ROW(2)
    GRPO_TILE_ROW(3)
    GRPO_TILE_ROW(4)
    GRPO_TILE_ROW(5)
  }
  GRPO_STORE_ROW(0)
  GRPO_STORE_ROW(1)
  GRPO_STORE_ROW(2)
  GRPO_STORE_ROW(3)
  GRPO_STORE_ROW(4)
  GRPO_STORE_ROW(5)
}
#undef GRPO_TILE_ROW
#undef GRPO_STORE_ROW

// The AVX-512 kernel: 8 rows × NP (≤ 2) panels, a panel's 16 columns one register, so 16
// accumulators of 32 registers. Where a core has full-width 512-bit FMA units (AMD Zen 5,
// Intel server cores) it does twice the AVX2 kernel's work per cycle. Each lane runs the
// AVX2 kernel's chain of fused multiply-adds over k in the same order, and the residual is
// added as that kernel adds it, so the two give the same bits.
constexpr int64_t kWideRows = 8;

template <int R, int NP>
__attribute__((target("avx512f"))) void WideTile(const float* a, int64_t lda,
                                                 const float* panels, int64_t depth, float* c,
                                                 const float* res, int64_t ldc, int64_t cols) {
  __m512 acc[R][NP];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < depth; ++k) {
    __m512 b[NP];
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) b[j] = _mm512_loadu_ps(panels + (j * depth + k) * kPanel);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 v = _mm512_set1_ps(a[i * lda + k]);
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_fmadd_ps(v, b[j], acc[i][j]);
    }
  }
#pragma GCC unroll 2
  for (int j = 0; j < NP; ++j) {
    const int64_t valid = std::clamp<int64_t>(cols - j * kPanel, 0, kPanel);
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      __m512 v = acc[i][j];
      if (res != nullptr)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res + i * ldc + j * kPanel));
      _mm512_mask_storeu_ps(c + i * ldc + j * kPanel, mask, v);
    }
  }
}

// A kernel for R rows against the panels a tile covers (its first `cols` columns), indexed
// by R: tiles[R] for R in [1, tile rows].
using TileFn = void (*)(const float* a, int64_t lda, const float* panels, int64_t depth,
                        float* c, const float* res, int64_t ldc, int64_t cols);
constexpr TileFn kAvx2Tiles[kTileRows + 1] = {nullptr, Tile<1>, Tile<2>, Tile<3>,
                                              Tile<4>, Tile<5>, Tile<6>};
template <int NP>
constexpr TileFn kWideTiles[kWideRows + 1] = {nullptr,         WideTile<1, NP>, WideTile<2, NP>,
                                              WideTile<3, NP>, WideTile<4, NP>, WideTile<5, NP>,
                                              WideTile<6, NP>, WideTile<7, NP>, WideTile<8, NP>};

// Rows [begin, end) of y: whole tiles of tile_rows rows, then one of the rest.
void TileRows(const TileFn* tiles, int64_t tile_rows, const float* x, int64_t begin,
              int64_t end, int64_t depth, const float* panels, float* y, const float* res,
              int64_t ldy, int64_t cols) {
  for (int64_t i = begin; i < end; i += tile_rows) {
    tiles[std::min(tile_rows, end - i)](x + i * depth, depth, panels, depth, y + i * ldy,
                                        res ? res + i * ldy : nullptr, ldy, cols);
  }
}

// y [m, n] = res [m, n] (or 0 where null) + x [m, depth] · packed panels. Each thread owns
// a contiguous range of panels (so no two threads write one output element; the wide
// kernel's ranges are in pairs) and walks the rows chunk by chunk.
void PackedMatmul(const float* x, int64_t m, int64_t depth, const float* packed, int64_t n,
                  const float* res, float* y, bool wide) {
  const int64_t panels = (n + kPanel - 1) / kPanel;
  const int64_t step = wide ? 2 : 1;  // panels per tile
  const int64_t units = (panels + step - 1) / step;
  const int64_t max_rows = std::max<int64_t>(
      kTileRows, kChunkBytes / static_cast<int64_t>(sizeof(float) * std::max<int64_t>(depth, 1)));
  const int64_t chunks = (m + max_rows - 1) / max_rows;
  // Equal chunks, whole tiles each, so that no chunk is a short tail.
  const int64_t tile_rows = wide ? kWideRows : kTileRows;
  const int64_t per_chunk = ((m + chunks - 1) / chunks + tile_rows - 1) / tile_rows * tile_rows;
  auto run = [&](int64_t first_unit, int64_t last_unit) {
    const int64_t first = first_unit * step, last = std::min(panels, last_unit * step);
    for (int64_t r = 0; r < m; r += per_chunk) {
      const int64_t rows_end = std::min(m, r + per_chunk);
      for (int64_t p = first; p < last; p += step) {
        const float* panel = packed + p * depth * kPanel;
        float* out = y + p * kPanel;
        const float* in = res ? res + p * kPanel : nullptr;
        const int64_t cols = std::min(step * kPanel, n - p * kPanel);
        const TileFn* tiles = !wide ? kAvx2Tiles : last - p >= 2 ? kWideTiles<2> : kWideTiles<1>;
        TileRows(tiles, tile_rows, x, r, rows_end, depth, panel, out, in, n, cols);
      }
    }
  };
#ifdef _OPENMP  // model/CMakeLists.txt compiles this file with OpenMP
  const int threads = static_cast<int>(std::min<int64_t>(ComputeThreads(), units));
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      const int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
      run(units * t / count, units * (t + 1) / count);
    }
    return;
  }
#endif
  run(0, units);
}

}  // namespace

bool PackedMatmulSupported() { return HasAvx2Fma(); }

PackedKernel WidestPackedKernel() {
  return HasAvx512() ? PackedKernel::kAvx512 : PackedKernel::kAvx2;
}

const char* PackedKernelName(PackedKernel kernel) {
  switch (kernel) {
    case PackedKernel::kWidest: return PackedKernelName(WidestPackedKernel());
    case PackedKernel::kAvx2: return "avx2";
    case PackedKernel::kAvx512: return "avx512";
  }
  return "unknown";
}

at::Tensor PackForMatmul(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
              "PackForMatmul: weight must be float32 [N, K] on the CPU");
  const int64_t n = weight.size(0), depth = weight.size(1);
  const int64_t panels = (n + kPanel - 1) / kPanel;
  at::Tensor padded = weight;
  if (panels * kPanel != n) {
    padded = at::zeros({panels * kPanel, depth}, weight.options());
    padded.narrow(0, 0, n).copy_(weight);
  }
  return padded.reshape({panels, kPanel, depth}).transpose(1, 2).contiguous();
}

at::Tensor PackedLinear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                        const at::Tensor& residual, PackedKernel kernel) {
  TORCH_CHECK(PackedMatmulSupported(), "PackedLinear: this CPU lacks AVX2/FMA");
  if (kernel == PackedKernel::kWidest) kernel = WidestPackedKernel();
  TORCH_CHECK(kernel != PackedKernel::kAvx512 || HasAvx512(),
              "PackedLinear: this CPU lacks AVX-512F for the avx512 kernel");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu() && x.dim() >= 1,
              "PackedLinear: x must be float32 on the CPU");
  const int64_t depth = x.size(-1);
  TORCH_CHECK(packed.dim() == 3 && packed.size(1) == depth && packed.size(2) == kPanel &&
                  packed.is_contiguous() && packed.scalar_type() == at::kFloat &&
                  (out_features + kPanel - 1) / kPanel == packed.size(0),
              "PackedLinear: packed weight ", packed.sizes(), " does not fit x ", x.sizes(),
              " and ", out_features, " outputs");
  const at::Tensor rows = x.reshape({-1, depth}).contiguous();
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out_features;
  at::Tensor res;
  if (residual.defined()) {
    TORCH_CHECK(residual.scalar_type() == at::kFloat && residual.device().is_cpu() &&
                    residual.sizes() == at::IntArrayRef(shape),
                "PackedLinear: residual ", residual.sizes(), " must be float32 ",
                at::IntArrayRef(shape), " on the CPU");
    res = residual.reshape({-1, out_features}).contiguous();
  }
  at::Tensor y = at::empty({rows.size(0), out_features}, x.options());
  if (rows.size(0) > 0 && out_features > 0) {
    PackedMatmul(rows.data_ptr<float>(), rows.size(0), depth, packed.data_ptr<float>(),
                 out_features, res.defined() ? res.data_ptr<float>() : nullptr,
                 y.data_ptr<float>(), kernel == PackedKernel::kAvx512);
  }
  return y.view(shape);
}

}  // namespace grpo
