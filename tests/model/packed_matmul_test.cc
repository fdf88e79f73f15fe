#include "model/packed_matmul.h"

#include <torch/torch.h>

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/runtime.h"

namespace grpo {
namespace {

// |y - x·Wᵀ| within the float32 rounding any summation order allows,
// k · 2⁻²³ · (|x|·|W|ᵀ), against the float64 product. A wrong element (a missed row, a
// stale panel, a column from the padding) is off by O(1) and fails it.
void ExpectProduct(const at::Tensor& y, const at::Tensor& x, const at::Tensor& w,
                   const std::string& what) {
  const at::Tensor x64 = x.to(at::kDouble), w64 = w.to(at::kDouble);
  const at::Tensor exact = at::matmul(x64, w64.t());
  const at::Tensor bound =
      at::matmul(x64.abs(), w64.abs().t()) * (x.size(-1) * std::ldexp(1.0, -23)) + 1e-30;
  ASSERT_EQ(y.sizes(), exact.sizes()) << what;
  const at::Tensor excess = (y.to(at::kDouble) - exact).abs() - bound;
  EXPECT_LE(excess.max().item<double>(), 0) << what;
}

// Every test runs each kernel (where the CPU has it).
class PackedMatmulTest : public testing::TestWithParam<PackedKernel> {
 protected:
  void SetUp() override {
    if (!PackedMatmulSupported()) GTEST_SKIP() << "this CPU lacks AVX2/FMA";
    if (GetParam() == PackedKernel::kAvx512 && !HasAvx512())
      GTEST_SKIP() << "this CPU lacks AVX-512F";
  }
  at::Tensor Linear(const at::Tensor& x, const at::Tensor& packed, int64_t n,
                    const at::Tensor& residual = at::Tensor()) {
    return PackedLinear(x, packed, n, residual, GetParam());
  }
};

// Rows fewer than a tile, a tile and one, many chunks; outputs short of a panel, a panel
// and a half, many panels; depths of 1 and odd.
TEST_P(PackedMatmulTest, EqualsTheProductWithinFloat32Rounding) {
  const int64_t shapes[][3] = {{1, 7, 16},    {5, 1, 24},   {6, 33, 40},  {7, 64, 1},
                               {13, 48, 96},  {64, 512, 1536}, {400, 512, 40}};
  for (const auto& [m, k, n] : shapes) {
    const at::Tensor x = at::randn({m, k}), w = at::randn({n, k});
    const at::Tensor packed = PackForMatmul(w);
    EXPECT_EQ(packed.sizes(), (at::IntArrayRef{(n + 15) / 16, k, 16}));
    ExpectProduct(Linear(x, packed, n), x, w,
                  "m=" + std::to_string(m) + " k=" + std::to_string(k) + " n=" + std::to_string(n));
  }
}

// Batched and strided inputs; every element computed by one thread in one order, so the
// thread count does not change a bit.
TEST_P(PackedMatmulTest, TakesAnyLayoutAndThreadCount) {
  const at::Tensor w = at::randn({40, 24}), packed = PackForMatmul(w);
  const at::Tensor x = at::randn({2, 9, 24});
  const at::Tensor y = Linear(x, packed, 40);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 9, 40}));
  ExpectProduct(y.view({18, 40}), x.view({18, 24}), w, "batched");
  const at::Tensor strided = at::randn({24, 18}).t();  // [18, 24], not contiguous
  ExpectProduct(Linear(strided, packed, 40), strided, w, "strided");
  // A strided weight packs as its contiguous copy does (padded to whole panels or not).
  EXPECT_TRUE(at::equal(PackForMatmul(w.t().contiguous().t()), packed));
  const at::Tensor whole = at::randn({32, 24});
  EXPECT_TRUE(at::equal(PackForMatmul(whole.t().contiguous().t()), PackForMatmul(whole)));

  const int threads = ComputeThreads();
  const at::Tensor rows = at::randn({70, 24});
  ConfigureRuntime(1);
  const at::Tensor one = Linear(rows, packed, 40);
  ConfigureRuntime(2);
  const at::Tensor two = Linear(rows, packed, 40);
  ConfigureRuntime(threads);
  EXPECT_TRUE(at::equal(one, two));
}

// A residual is added as each result is stored: exactly residual + x·Wᵀ, bit for bit,
// full panels and the last partial one, whole tiles and a short one, any residual layout.
TEST_P(PackedMatmulTest, AddsAResidualAsTheSumWouldRoundIt) {
  for (int64_t n : {40, 48}) {
    const at::Tensor w = at::randn({n, 24}), packed = PackForMatmul(w);
    const at::Tensor x = at::randn({2, 7, 24});
    const at::Tensor residual = at::randn({2, 7, n});
    const at::Tensor product = Linear(x, packed, n);
    EXPECT_TRUE(at::equal(Linear(x, packed, n, residual), residual + product)) << n;
    const at::Tensor strided = at::randn({n, 2, 7}).permute({1, 2, 0});
    EXPECT_TRUE(at::equal(Linear(x, packed, n, strided), strided + product)) << n;
  }
  const at::Tensor packed = PackForMatmul(at::randn({40, 24}));
  EXPECT_THAT([&] { Linear(at::randn({3, 24}), packed, 40, at::randn({3, 41})); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("residual")));
  EXPECT_THAT(
      [&] { Linear(at::randn({3, 24}), packed, 40, at::randn({3, 40}, at::kDouble)); },
      testing::ThrowsMessage<c10::Error>(testing::HasSubstr("residual")));
}

TEST_P(PackedMatmulTest, RefusesWhatDoesNotFit) {
  const at::Tensor packed = PackForMatmul(at::randn({40, 24}));
  EXPECT_THAT([&] { Linear(at::randn({3, 25}), packed, 40); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("does not fit")));
  EXPECT_THAT([&] { Linear(at::randn({3, 24}), packed, 60); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("does not fit")));
  EXPECT_THAT([&] { Linear(at::randn({3, 24}, at::kDouble), packed, 40); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("float32")));
  EXPECT_THAT([&] { PackForMatmul(at::randn({4, 4, 4})); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("[N, K]")));
}

INSTANTIATE_TEST_SUITE_P(Kernels, PackedMatmulTest,
                         testing::Values(PackedKernel::kAvx2, PackedKernel::kAvx512),
                         [](const testing::TestParamInfo<PackedKernel>& info) {
                           return std::string(PackedKernelName(info.param));
                         });

TEST(PackedKernelTest, RefusesAKernelTheCpuLacks) {
  if (!PackedMatmulSupported()) GTEST_SKIP() << "this CPU lacks AVX2/FMA";
  const at::Tensor packed = PackForMatmul(at::randn({40, 24})), x = at::randn({3, 24});
  EXPECT_NE(WidestPackedKernel(), PackedKernel::kWidest);
  if (HasAvx512()) {
    EXPECT_EQ(WidestPackedKernel(), PackedKernel::kAvx512);
    EXPECT_STREQ(PackedKernelName(PackedKernel::kWidest), "avx512");
  } else {
    EXPECT_EQ(WidestPackedKernel(), PackedKernel::kAvx2);
    EXPECT_THAT([&] { PackedLinear(x, packed, 40, at::Tensor(), PackedKernel::kAvx512); },
                testing::ThrowsMessage<c10::Error>(testing::HasSubstr("AVX-512")));
  }
}

// The AVX-512 kernel gives the AVX2 kernel's bits: row counts through two of its tiles
// and every short tile, outputs in pairs of panels, an odd panel, a partial one; with and
// without a residual; on one thread and two (whose panel ranges then split unevenly); rows
// in several cache-sized chunks.
TEST(PackedKernelTest, Avx512GivesTheAvx2KernelsBits) {
  if (!HasAvx512()) GTEST_SKIP() << "this CPU lacks AVX-512F";
  const int threads = ComputeThreads();
  for (int64_t n : {1, 16, 40, 64, 80, 100}) {
    const at::Tensor w = at::randn({n, 33}), packed = PackForMatmul(w);
    for (int64_t m = 1; m <= 17; ++m) {
      const at::Tensor x = at::randn({m, 33}), residual = at::randn({m, n});
      for (int t : {1, 2}) {
        ConfigureRuntime(t);
        const std::string what = "m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                 " threads=" + std::to_string(t);
        EXPECT_TRUE(at::equal(PackedLinear(x, packed, n, at::Tensor(), PackedKernel::kAvx512),
                              PackedLinear(x, packed, n, at::Tensor(), PackedKernel::kAvx2)))
            << what;
        EXPECT_TRUE(at::equal(PackedLinear(x, packed, n, residual, PackedKernel::kAvx512),
                              PackedLinear(x, packed, n, residual, PackedKernel::kAvx2)))
            << what;
      }
    }
  }
  ConfigureRuntime(threads);
  // Rows in several chunks (the kernels cut them at different rows).
  const at::Tensor packed = PackForMatmul(at::randn({40, 512})), x = at::randn({400, 512});
  EXPECT_TRUE(at::equal(PackedLinear(x, packed, 40, at::Tensor(), PackedKernel::kAvx512),
                        PackedLinear(x, packed, 40, at::Tensor(), PackedKernel::kAvx2)));
}

}  // namespace
}  // namespace grpo
