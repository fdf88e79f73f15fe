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

// Calls fn(begin, end) on disjoint ranges covering [0, n) exactly once, each range at
// least min_per_thread long (so small loops stay on the caller's thread), on at most
// ParallelThreads() threads, the caller's among them; returns when every range is done.
// fn must not throw.
void ParallelFor(size_t n, size_t min_per_thread,
                 const std::function<void(size_t begin, size_t end)>& fn);

// The cores this process may use, at most 8: beyond that such passes are bound by memory
// bandwidth, not cores.
size_t ParallelThreads();

}  // namespace grpo

#endif  // GRPO_BASE_PARALLEL_H_
