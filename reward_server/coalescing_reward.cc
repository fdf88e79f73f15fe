#include "reward_server/coalescing_reward.h"

#include <utility>

namespace grpo {

CoalescingRewardFunction::CoalescingRewardFunction(std::shared_ptr<const RewardFunction> inner,
                                                   size_t max_batch)
    : inner_(std::move(inner)), max_batch_(max_batch > 0 ? max_batch : 1) {
  worker_ = std::thread([this] { Loop(); });
}

CoalescingRewardFunction::~CoalescingRewardFunction() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  worker_.join();
}

absl::StatusOr<RewardOutput> CoalescingRewardFunction::Score(const RewardInput& input) const {
  absl::StatusOr<std::vector<RewardOutput>> out = ScoreBatch({input});
  if (!out.ok()) return out.status();
  return std::move(out->front());
}

absl::StatusOr<std::vector<RewardOutput>> CoalescingRewardFunction::ScoreBatch(
    const std::vector<RewardInput>& inputs) const {
  if (inputs.empty()) return std::vector<RewardOutput>{};
  Pending pending{&inputs, std::vector<RewardOutput>{}};
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("reward function is shutting down");
  queue_.push_back(&pending);
  mu_.Await(absl::Condition(&pending.done));
  return std::move(pending.result);
}

int64_t CoalescingRewardFunction::batches() const {
  absl::MutexLock lock(&mu_);
  return batches_;
}

void CoalescingRewardFunction::Loop() {
  auto has_work_or_stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !queue_.empty();
  };
  while (true) {
    std::vector<Pending*> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&has_work_or_stopping));
      if (queue_.empty()) return;  // stopping, nothing left to serve
      // Whole requests only; at least one even if it alone exceeds max_batch.
      size_t size = 0;
      while (!queue_.empty() &&
             (batch.empty() || size + queue_.front()->inputs->size() <= max_batch_)) {
        size += queue_.front()->inputs->size();
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
      ++batches_;
    }
    std::vector<RewardInput> all;
    for (const Pending* p : batch) all.insert(all.end(), p->inputs->begin(), p->inputs->end());
    absl::StatusOr<std::vector<RewardOutput>> scored = inner_->ScoreBatch(all);
    absl::MutexLock lock(&mu_);
    size_t offset = 0;
    for (Pending* p : batch) {
      if (scored.ok()) {
        p->result = std::vector<RewardOutput>(scored->begin() + offset,
                                              scored->begin() + offset + p->inputs->size());
      } else {
        p->result = scored.status();
      }
      offset += p->inputs->size();
      p->done = true;
    }
  }
}

}  // namespace grpo
