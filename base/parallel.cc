#include "base/parallel.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace grpo {

namespace {

// The CPU quota of this process's cgroup (a Kubernetes CPU limit is one: the affinity mask
// still shows every core of the node), rounded up; 0 where there is none.
size_t CgroupCpuQuota() {
  std::ifstream v2("/sys/fs/cgroup/cpu.max");  // "max 100000" or "200000 100000"
  std::string quota;
  double period = 0;
  if (v2 >> quota >> period && quota != "max" && period > 0)
    return static_cast<size_t>(std::ceil(std::atof(quota.c_str()) / period));
  std::ifstream v1_quota("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
  std::ifstream v1_period("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  double q = 0;
  if (v1_quota >> q && v1_period >> period && q > 0 && period > 0)
    return static_cast<size_t>(std::ceil(q / period));
  return 0;
}

}  // namespace

size_t ParallelThreads() {
  static const size_t threads = [] {
    // The affinity mask, not the machine (taskset, cpusets), and the cgroup's quota.
    cpu_set_t set;
    size_t cores = std::thread::hardware_concurrency();
    if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
    if (const size_t quota = CgroupCpuQuota(); quota > 0) cores = std::min(cores, quota);
    return std::clamp<size_t>(cores, 1, 8);
  }();
  return threads;
}

void ParallelFor(size_t n, size_t min_per_thread,
                 const std::function<void(size_t begin, size_t end)>& fn) {
  if (n == 0) return;
  const size_t ranges =
      std::clamp<size_t>(n / std::max<size_t>(min_per_thread, 1), 1, ParallelThreads());
  const size_t per = (n + ranges - 1) / ranges;
  std::vector<std::thread> threads;
  threads.reserve(ranges - 1);
  size_t begin = per;
  for (; begin < n; begin += per) {
    try {
      threads.emplace_back(fn, begin, std::min(n, begin + per));
    } catch (const std::system_error&) {
      break;  // no thread to be had (a process or pid limit): the rest run here
    }
  }
  fn(0, std::min(n, per));
  if (begin < n) fn(begin, n);
  for (std::thread& t : threads) t.join();
}

}  // namespace grpo
