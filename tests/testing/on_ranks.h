// Learner ranks as threads of one test process, rendezvous on a kernel-picked port.
#ifndef GRPO_TESTS_TESTING_ON_RANKS_H_
#define GRPO_TESTS_TESTING_ON_RANKS_H_

#include <chrono>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "learner/learner_group.h"

namespace grpo::testing_util {

// One rendezvous of `world` ranks, each joining from its own thread; every rank's outcome.
inline std::vector<absl::StatusOr<std::unique_ptr<LearnerGroup>>> JoinOnce(int world) {
  std::promise<int> port;
  std::shared_future<int> port_ready = port.get_future().share();
  std::vector<absl::StatusOr<std::unique_ptr<LearnerGroup>>> groups;
  for (int r = 0; r < world; ++r) groups.emplace_back(absl::UnknownError("not joined"));
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      LearnerGroupOptions o;
      o.world_size = world;
      o.rank = r;
      o.timeout = std::chrono::seconds(30);
      bool listening = false;
      if (r == 0) {
        o.master_port = 0;
        o.on_listening = [&](int p) {
          listening = true;
          port.set_value(p);
        };
      } else {
        o.master_port = port_ready.get();
        if (o.master_port < 0) {
          groups[r] = absl::AbortedError("rank 0 never listened");
          return;
        }
      }
      groups[r] = LearnerGroup::Join(o);
      if (r == 0 && !listening) port.set_value(-1);  // releases the ranks waiting for it
    });
  }
  for (auto& t : ranks) t.join();
  return groups;
}

// Joined groups for ranks 0..world-1, or none after a failed test assertion. A join can
// fail for a reason outside the test: Gloo's pairs listen on kernel-picked loopback ports,
// and another test's client retrying a port of a service it just killed may connect to one
// the kernel has given Gloo ("Connection closed by peer"). So a failed rendezvous is tried
// again, with a fresh store, up to three times.
inline std::vector<std::unique_ptr<LearnerGroup>> JoinRanks(int world) {
  constexpr int kAttempts = 3;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    std::vector<absl::StatusOr<std::unique_ptr<LearnerGroup>>> joined = JoinOnce(world);
    std::vector<std::unique_ptr<LearnerGroup>> groups;
    for (int r = 0; r < world; ++r) {
      if (!joined[r].ok()) {
        std::cerr << "rendezvous attempt " << attempt << ": rank " << r << ": "
                  << joined[r].status() << "\n";
        if (attempt == kAttempts) ADD_FAILURE() << "rank " << r << ": " << joined[r].status();
        continue;
      }
      groups.push_back(*std::move(joined[r]));
    }
    if (static_cast<int>(groups.size()) == world) return groups;
  }
  return {};
}

// Runs fn(rank, group) on `world` ranks, each in its own thread, once they have joined
// (not the threads that joined: for CPU groups, which keep no per-thread state).
inline void OnRanks(int world, const std::function<void(int, LearnerGroup&)>& fn) {
  std::vector<std::unique_ptr<LearnerGroup>> groups = JoinRanks(world);
  if (groups.empty()) return;
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back([&, r] { fn(r, *groups[r]); });
  for (auto& t : ranks) t.join();
}

}  // namespace grpo::testing_util

#endif  // GRPO_TESTS_TESTING_ON_RANKS_H_
