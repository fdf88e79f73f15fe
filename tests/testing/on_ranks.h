// Learner ranks as threads of one test process, rendezvous on a kernel-picked port.
#ifndef GRPO_TESTS_TESTING_ON_RANKS_H_
#define GRPO_TESTS_TESTING_ON_RANKS_H_

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "learner/learner_group.h"

namespace grpo::testing_util {

// Runs fn(rank, group) on `world` ranks, each in its own thread, once they have joined.
inline void OnRanks(int world, const std::function<void(int, LearnerGroup&)>& fn) {
  std::promise<int> port;
  std::shared_future<int> port_ready = port.get_future().share();
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      LearnerGroupOptions o;
      o.world_size = world;
      o.rank = r;
      o.timeout = std::chrono::seconds(60);
      if (r == 0) {
        o.master_port = 0;
        o.on_listening = [&](int p) { port.set_value(p); };
      } else {
        o.master_port = port_ready.get();
      }
      absl::StatusOr<std::unique_ptr<LearnerGroup>> group = LearnerGroup::Join(o);
      ASSERT_TRUE(group.ok()) << group.status();
      fn(r, **group);
    });
  }
  for (auto& t : ranks) t.join();
}

}  // namespace grpo::testing_util

#endif  // GRPO_TESTS_TESTING_ON_RANKS_H_
