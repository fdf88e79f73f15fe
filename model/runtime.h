// Process-wide runtime settings every binary applies first thing in main (docs/design.md §8):
// OpenMP threads that wait passively (2.7x faster decode here), an explicit LibTorch
// intra-op thread count, and an allocator that keeps large buffers instead of returning
// them to the kernel after every op.
#ifndef GRPO_MODEL_RUNTIME_H_
#define GRPO_MODEL_RUNTIME_H_

#include <string>

namespace grpo {

// Where a process's matmuls run, for EnsureThreadEnvironment.
enum class MatmulThreads {
  // float32 matmuls in OpenBLAS's own threads: idle OpenMP threads sleep at once, so they
  // do not hold the cores OpenBLAS needs.
  kOpenBlas,
  // A sampler's matmuls on the OpenMP threads themselves (Transformer::
  // SetInferenceMatmulDtype: bfloat16 in oneDNN, or float32 with packed weights in
  // packed_matmul.cc): those spin briefly (GOMP_SPINCOUNT=30000) before sleeping, since a
  // decode step is hundreds of short parallel regions and waking a sleeping thread for
  // each costs more than the work (bench-26m rollout in bfloat16: ~2,150 -> ~2,900
  // tokens/s on 2 cores; packed float32 decode ~1,890 -> ~1,975). The same spin slows
  // OpenBLAS's float32 decode ~20% (its threads need the cores), hence not the default;
  // a learner step was not measurably slower with it (bench-26m, 9.0 s either way).
  kOpenMp,
};

// libgomp and OpenBLAS read their threading variables when they are loaded, before main:
// if OMP_WAIT_POLICY or OPENBLAS_THREAD_TIMEOUT is unset (or GOMP_SPINCOUNT, for kOpenMp),
// set it (PASSIVE, 4, 30000) and re-exec this binary with the same arguments. Values
// already in the environment are respected. Returns only when the environment is right
// (or re-exec failed: reported on stderr).
void EnsureThreadEnvironment(char** argv, MatmulThreads matmuls = MatmulThreads::kOpenBlas);

// Where the sampler's matmuls run for the --matmul_dtype and --packed_matmuls flags and a
// policy on `device` in `dtype` (empty: the device's default, float32 on the CPU): kOpenMp
// for "bfloat16", and for a packed float32 policy on a CPU that runs the packed kernel
// (the condition under which SetSamplerMatmuls packs).
MatmulThreads MatmulThreadsFor(const std::string& matmul_dtype, bool packed_matmuls,
                               const std::string& device = "cpu",
                               const std::string& dtype = "float32");

// Whether this CPU has AVX2 and FMA, which the hand-written decode kernels and the packed
// matmul need (checked at run time: Debian builds for baseline x86-64).
bool HasAvx2Fma();

// Whether this CPU (and its OS) runs AVX-512F, which the wide packed matmul kernel needs.
bool HasAvx512();

// threads <= 0 means all online cores. Sets the compute threads (our kernels, LibTorch's
// intra-op pool). Returns the number in use.
int ConfigureRuntime(int threads);

// The thread count ConfigureRuntime set (all online cores before it is called).
int ComputeThreads();

}  // namespace grpo

#endif  // GRPO_MODEL_RUNTIME_H_
