#include "rpc/backoff.h"

#include <algorithm>

namespace grpo {

std::chrono::milliseconds Backoff::Next() {
  const int64_t ceiling = std::min<int64_t>(
      max_.count(), initial_.count() << std::min(attempt_, 20));
  ++attempt_;
  std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(1, ceiling));
  return std::chrono::milliseconds(jitter(rng_));
}

bool RetryableCode(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable ||
         code == absl::StatusCode::kResourceExhausted ||
         code == absl::StatusCode::kDeadlineExceeded;
}

}  // namespace grpo
