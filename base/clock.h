// Elapsed time on the monotonic clock, in seconds: what progress lines and metrics report.
#ifndef GRPO_BASE_CLOCK_H_
#define GRPO_BASE_CLOCK_H_

#include <chrono>

namespace grpo {

inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace grpo

#endif  // GRPO_BASE_CLOCK_H_
