// Float32 products with prepacked weights, for sampling on the CPU. LibTorch's float32
// linear (OpenBLAS here) repacks the whole weight matrix on every call; at decode shapes
// ([64, 512] rows against a [1536, 512] weight) that repacking, the zeroing of the output
// and the library's thread hand-offs cost about a fifth of the product. Packing each
// weight once (MatmulCopies, remade when the weights change) lets a small AVX2/FMA or
// AVX-512 kernel stream it straight from memory at the machine's matmul peak.
//
// The packed form of W [N, K] is [ceil(N / 16), K, 16]: panel p holds output columns
// 16p .. 16p + 15, one row of 16 per k, zero past N. The AVX2 kernel computes 6 × 16
// output tiles with the panel's rows broadcast against 6 input rows, the AVX-512 kernel
// 8 × 32 tiles over two panels; rows come in chunks sized to stay in cache, panels are
// split over the compute threads (runtime.h). The result equals x·Wᵀ up to float32
// rounding (another summation order than OpenBLAS's) and is the same bit for bit from
// either kernel and any thread count: every output element is one chain of fused
// multiply-adds over k in order.
#ifndef GRPO_MODEL_PACKED_MATMUL_H_
#define GRPO_MODEL_PACKED_MATMUL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace grpo {

// Whether this CPU runs the packed kernel (AVX2 and FMA, checked at run time: Debian
// builds for baseline x86-64). Where it does not, callers keep at::linear.
bool PackedMatmulSupported();

// Which kernel multiplies. kWidest: AVX-512 where the CPU has AVX-512F (on cores with
// full-width 512-bit FMA units, such as AMD Zen 5 and Intel's server cores, twice the
// AVX2 kernel's throughput), else AVX2. The others are for tests and benchmarks.
enum class PackedKernel { kWidest, kAvx2, kAvx512 };

// The kernel kWidest picks on this CPU (never kWidest).
PackedKernel WidestPackedKernel();

// "avx2" or "avx512" (kWidest: the one it picks), for logs and benchmark output.
const char* PackedKernelName(PackedKernel kernel);

// W: float32 [N, K] on the CPU (any strides). Returns the packed form above.
at::Tensor PackForMatmul(const at::Tensor& weight);

// x: float32 [..., K] on the CPU; packed: PackForMatmul of a [N, K] weight, whose N is
// `out_features`. Returns x·Wᵀ as float32 [..., N], plus `residual` ([..., N] float32;
// undefined: none) added as each result is stored, rounded as residual + x·Wᵀ would be
// (a decoder layer's skip connection without another pass over the rows). Checks shapes
// (c10::Error on a mismatch); needs PackedMatmulSupported(), and AVX-512F for kAvx512.
at::Tensor PackedLinear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                        const at::Tensor& residual = at::Tensor(),
                        PackedKernel kernel = PackedKernel::kWidest);

}  // namespace grpo

#endif  // GRPO_MODEL_PACKED_MATMUL_H_
