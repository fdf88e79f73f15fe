// Exponential backoff with full jitter for retrying idempotent calls (docs/design.md §7): the
// n-th delay is uniform in [0, min(max, initial · 2^n)]. Retry only UNAVAILABLE,
// RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED (RetryableCode); everything else is an answer.
// Not thread-safe: one per retry loop.
#ifndef GRPO_RPC_BACKOFF_H_
#define GRPO_RPC_BACKOFF_H_

#include <chrono>
#include <cstdint>
#include <random>

#include "absl/status/status.h"

namespace grpo {

class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
          uint64_t seed = std::random_device{}())
      : initial_(initial), max_(max), rng_(seed) {}

  std::chrono::milliseconds Next();
  void Reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }

 private:
  std::chrono::milliseconds initial_, max_;
  std::mt19937_64 rng_;
  int attempt_ = 0;
};

bool RetryableCode(absl::StatusCode code);

}  // namespace grpo

#endif  // GRPO_RPC_BACKOFF_H_
