#include "model/runtime.h"

#include <ATen/Parallel.h>
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "model/packed_matmul.h"

namespace grpo {
namespace {

int OnlineCores() {
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? static_cast<int>(cores) : 1;
}

std::atomic<int> compute_threads{0};

}  // namespace

void EnsureThreadEnvironment(char** argv, MatmulThreads matmuls) {
  bool changed = false;
  // Idle OpenMP threads sleep instead of spinning on the cores OpenBLAS needs.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1);
    changed = true;
  }
  // OpenBLAS workers spin (sched_yield) ~2^28 cycles between calls by default, holding a
  // core while our own kernels (decode attention) want it: 2^4 lets them sleep at once.
  // Measured on bench-26m decode: ~1290 -> ~1400 tokens/s.
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT") == nullptr) {
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", /*overwrite=*/1);
    changed = true;
  }
  if (matmuls == MatmulThreads::kOpenMp && std::getenv("GOMP_SPINCOUNT") == nullptr) {
    setenv("GOMP_SPINCOUNT", "30000", /*overwrite=*/1);
    changed = true;
  }
  if (!changed) return;
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "warning: could not re-exec with OMP_WAIT_POLICY / "
               "OPENBLAS_THREAD_TIMEOUT / GOMP_SPINCOUNT set (%s); threads will spin or "
               "sleep where they should not, and slow decoding\n",
               std::strerror(errno));
}

MatmulThreads MatmulThreadsFor(const std::string& matmul_dtype, bool packed_matmuls,
                               const std::string& device, const std::string& dtype) {
  const bool cpu_float32 = device == "cpu" && (dtype.empty() || dtype == "float32");
  const bool on_openmp = matmul_dtype == "bfloat16" ||
                         (matmul_dtype == "float32" && packed_matmuls && cpu_float32 &&
                          PackedMatmulSupported());
  return on_openmp ? MatmulThreads::kOpenMp : MatmulThreads::kOpenBlas;
}

int ConfigureRuntime(int threads) {
  // Activations of a training step are MBs each: with glibc's default dynamic mmap
  // threshold every such tensor is a fresh mmap whose pages fault in on first touch.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (threads <= 0) threads = OnlineCores();
  compute_threads = threads;
  at::set_num_threads(threads);
  return threads;
}

bool HasAvx2Fma() {
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
}

bool HasAvx512() {
  // libgcc's check includes the OS saving the 512-bit registers (XCR0).
  static const bool supported = HasAvx2Fma() && __builtin_cpu_supports("avx512f");
  return supported;
}

int ComputeThreads() {
  const int threads = compute_threads;
  return threads > 0 ? threads : OnlineCores();
}

}  // namespace grpo
