#include "base/parallel.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace grpo {
namespace {

// Every index once, in ranges that tile [0, n); as many ranges as the work and the cores
// allow; work too small for two ranges stays on the caller's thread.
TEST(ParallelForTest, EveryIndexOnceInContiguousRanges) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{1001}, size_t{65537}}) {
    std::vector<std::atomic<int>> seen(n);
    std::mutex mu;
    std::vector<std::pair<size_t, size_t>> ranges;
    std::set<std::thread::id> threads;
    ParallelFor(n, 100, [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) seen[i].fetch_add(1);
      std::lock_guard<std::mutex> lock(mu);
      ranges.emplace_back(begin, end);
      threads.insert(std::this_thread::get_id());
    });
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "n " << n << ", index " << i;
    size_t covered = 0;
    for (const auto& [begin, end] : ranges) {
      EXPECT_LT(begin, end) << "n " << n;
      covered += end - begin;
    }
    EXPECT_EQ(covered, n);
    const size_t expected =
        n == 0 ? 0 : std::min<size_t>(std::max<size_t>(n / 100, 1), ParallelThreads());
    EXPECT_EQ(ranges.size(), expected) << "n " << n;
    EXPECT_EQ(threads.size(), ranges.size()) << "one thread a range, the caller's among them";
  }
}

TEST(ParallelForTest, ThreadsAreBetweenOneAndEight) {
  EXPECT_GE(ParallelThreads(), 1u);
  EXPECT_LE(ParallelThreads(), 8u);
}

}  // namespace
}  // namespace grpo
