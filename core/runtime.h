// Process-wide runtime settings every binary applies first thing in main (DESIGN.md §8):
// OpenMP threads that wait passively (2.7x faster decode here), an explicit LibTorch
// intra-op thread count, and an allocator that keeps large buffers instead of returning
// them to the kernel after every op.
#ifndef GRPO_CORE_RUNTIME_H_
#define GRPO_CORE_RUNTIME_H_

namespace grpo {

// libgomp reads OMP_WAIT_POLICY when it is loaded, before main: if it is unset, set it
// to PASSIVE and re-exec this binary with the same arguments. Returns only when the
// environment is right (or re-exec failed, which is reported on stderr).
void EnsurePassiveOpenMp(char** argv);

// threads <= 0 means all online cores. Returns the number of intra-op threads in use.
int ConfigureRuntime(int threads);

}  // namespace grpo

#endif  // GRPO_CORE_RUNTIME_H_
