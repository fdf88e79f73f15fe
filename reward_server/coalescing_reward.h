// CoalescingRewardFunction: batches a reward function across concurrent calls. Each
// ScoreBatch call queues its inputs and blocks; one worker thread takes everything queued
// (up to max_batch inputs) as one batch, so concurrent requests to a neural reward model
// share forward passes. No timer: an idle server scores a lone request at once, a busy one
// batches whatever arrived during the previous pass.
//
// Thread-safe. Owns its worker thread; the destructor waits for the batch in progress.
#ifndef GRPO_REWARD_SERVER_COALESCING_REWARD_H_
#define GRPO_REWARD_SERVER_COALESCING_REWARD_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "rewards/rewards.h"

namespace grpo {

class CoalescingRewardFunction : public RewardFunction {
 public:
  CoalescingRewardFunction(std::shared_ptr<const RewardFunction> inner, size_t max_batch);
  ~CoalescingRewardFunction() override;

  std::string_view name() const override { return inner_->name(); }
  bool gives_step_rewards() const override { return inner_->gives_step_rewards(); }
  std::string step_rule() const override { return inner_->step_rule(); }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override;
  absl::StatusOr<std::vector<RewardOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override;

  // Batches run so far (each one call of the inner function).
  int64_t batches() const;

 private:
  struct Pending {
    const std::vector<RewardInput>* inputs;
    absl::StatusOr<std::vector<RewardOutput>> result;
    bool done = false;
  };

  void Loop();

  const std::shared_ptr<const RewardFunction> inner_;
  const size_t max_batch_;
  mutable absl::Mutex mu_;
  mutable std::deque<Pending*> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread worker_;
};

}  // namespace grpo

#endif  // GRPO_REWARD_SERVER_COALESCING_REWARD_H_
