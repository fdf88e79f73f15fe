// Process-wide runtime settings every binary applies first thing in main (docs/design.md §8):
// OpenMP threads that wait passively (2.7x faster decode here), an explicit LibTorch
// intra-op thread count, and an allocator that keeps large buffers instead of returning
// them to the kernel after every op.
#ifndef GRPO_MODEL_RUNTIME_H_
#define GRPO_MODEL_RUNTIME_H_

namespace grpo {

// libgomp and OpenBLAS read their threading variables when they are loaded, before main:
// if OMP_WAIT_POLICY or OPENBLAS_THREAD_TIMEOUT is unset, set it (PASSIVE, 4) and re-exec
// this binary with the same arguments. Values already in the environment are respected.
// Returns only when the environment is right (or re-exec failed: reported on stderr).
void EnsureThreadEnvironment(char** argv);

// threads <= 0 means all online cores. Sets the compute threads (our kernels, LibTorch's
// intra-op pool). Returns the number in use.
int ConfigureRuntime(int threads);

// The thread count ConfigureRuntime set (all online cores before it is called).
int ComputeThreads();

}  // namespace grpo

#endif  // GRPO_MODEL_RUNTIME_H_
