#include "base/parallel.h"

#include <sched.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace grpo {

size_t ParallelThreads() {
  // The affinity mask, not the machine: a container or taskset may allow fewer cores.
  cpu_set_t set;
  size_t cores = std::thread::hardware_concurrency();
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  return std::clamp<size_t>(cores, 1, 8);
}

void ParallelFor(size_t n, size_t min_per_thread,
                 const std::function<void(size_t begin, size_t end)>& fn) {
  if (n == 0) return;
  const size_t ranges =
      std::clamp<size_t>(n / std::max<size_t>(min_per_thread, 1), 1, ParallelThreads());
  const size_t per = (n + ranges - 1) / ranges;
  std::vector<std::thread> threads;
  threads.reserve(ranges - 1);
  for (size_t begin = per; begin < n; begin += per)
    threads.emplace_back(fn, begin, std::min(n, begin + per));
  fn(0, std::min(n, per));
  for (std::thread& t : threads) t.join();
}

}  // namespace grpo
