// ParallelFor: a loop over [0, n) split into contiguous ranges run on several threads, for
// the memory-bound passes over a model's worth of bytes that sit outside LibTorch (weight
// conversion, checksums) and would otherwise run on one core while the others idle.
// Torch-free: plain std::thread, started per call (tens of microseconds against the
// hundreds of milliseconds such a pass takes).
#ifndef GRPO_BASE_PARALLEL_H_
#define GRPO_BASE_PARALLEL_H_

#include <cstddef>
#include <functional>

namespace grpo {

// Calls fn(begin, end) on disjoint ranges covering [0, n) exactly once, on at most
// ParallelThreads() threads, the caller's among them, and returns when every range is
// done. No more ranges than n / min_per_thread (so small loops stay on the caller's
// thread); where a thread cannot be started, the caller runs what is left itself.
// fn must not throw.
void ParallelFor(size_t n, size_t min_per_thread,
                 const std::function<void(size_t begin, size_t end)>& fn);

// The cores this process may use (its affinity mask and its cgroup's CPU quota), at most
// 8: beyond that such passes are bound by memory bandwidth, not cores.
size_t ParallelThreads();

}  // namespace grpo

#endif  // GRPO_BASE_PARALLEL_H_
