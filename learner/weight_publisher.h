// WeightPublisher: the newest policy weights of learner rank 0, as the serialized bytes
// StreamWeights sends (docs/design.md §7). Publishing swaps a shared pointer, so a stream in
// flight keeps sending the version it started with while the next one is published.
// Thread-safe.
#ifndef GRPO_LEARNER_WEIGHT_PUBLISHER_H_
#define GRPO_LEARNER_WEIGHT_PUBLISHER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"

namespace grpo {

struct PublishedWeights {
  std::string job_id;
  int64_t version = -1;  // -1: nothing published
  std::shared_ptr<const std::string> payload;
  uint64_t checksum = 0;  // Fnv1a64(*payload)
};

class WeightPublisher {
 public:
  void Publish(const std::string& job_id, int64_t version, std::string payload);
  void Clear();
  PublishedWeights Latest() const;

 private:
  mutable absl::Mutex mu_;
  PublishedWeights latest_ ABSL_GUARDED_BY(mu_);
};

}  // namespace grpo

#endif  // GRPO_LEARNER_WEIGHT_PUBLISHER_H_
