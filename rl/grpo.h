// The GRPO mathematics (docs/design.md §3), in one place: advantages from group rewards
// (outcome, process, Online RFT), the clipped-ratio policy loss with a KL penalty to the
// reference, the three aggregation modes, and the clip-fraction metrics (the entropy is
// computed with the log-probs, in the learner).
// grpo.cc reads top to bottom in that order. Stateless functions; no ownership.
#ifndef GRPO_RL_GRPO_H_
#define GRPO_RL_GRPO_H_

#include <ATen/core/Tensor.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rl/scored_group.h"

namespace grpo {

enum class AdvantageEstimator { kOutcome, kProcess, kOnlineRft };
enum class AdvantageScale { kGroup, kBatch, kNone };
enum class KlEstimator { kK1, kK2, kK3 };
enum class Aggregation { kSeqMeanTokenMean, kTokenMean, kSeqMeanTokenSumNorm };
enum class RatioLevel { kToken, kSequence };

struct AdvantageOptions {
  AdvantageEstimator estimator = AdvantageEstimator::kOutcome;
  AdvantageScale scale = AdvantageScale::kGroup;
  double epsilon = 1e-4;           // added to the std
  double rft_negative = 0.0;       // Online RFT coefficient of an incorrect sample: 0 or -1
  double correct_threshold = 1.0;  // Online RFT: reward >= this is correct
};

struct LossOptions {
  double epsilon_low = 0.2;
  double epsilon_high = 0.2;
  bool clip = true;  // Online RFT turns clipping off
  RatioLevel ratio = RatioLevel::kToken;  // kSequence: GSPO
  double beta = 0.04;
  KlEstimator kl_estimator = KlEstimator::kK3;
  Aggregation aggregation = Aggregation::kSeqMeanTokenMean;
  int64_t max_new_tokens = 0;  // Dr. GRPO's constant normaliser
  // Normalisers over the whole (global) batch when the batch is sharded over ranks;
  // 0 = this call's own sequence / token count.
  double global_sequences = 0;
  double global_tokens = 0;
};

// Rejects empty groups, samples whose log-probs do not match their completion, and NaN or
// infinite rewards (INVALID_ARGUMENT naming group and sample). Never trains on them.
absl::Status ValidateGroups(const std::vector<ScoredGroup>& groups);

// The group's advantages are all zero (DAPO drops it): all its rewards equal, or under
// the PROCESS estimator all its step rewards.
bool HasZeroVariance(const ScoredGroup& group,
                     AdvantageEstimator estimator = AdvantageEstimator::kOutcome);

// Per-token advantages, one vector per sample (groups in order, samples in order), each as
// long as the sample's completion.
absl::StatusOr<std::vector<std::vector<float>>> ComputeAdvantages(
    const std::vector<ScoredGroup>& groups, const AdvantageOptions& options);

// log softmax(logits / temperature) at the target tokens: logits [N, M, V], targets int64
// [N, M] -> [N, M]. Differentiable.
at::Tensor TokenLogprobs(const at::Tensor& logits, const at::Tensor& targets,
                         double temperature);

struct LossTerms {
  at::Tensor loss;  // scalar, differentiable w.r.t. logprobs
  // The metrics: detached float64 scalars on the inputs' device. Left there, so that a
  // trainer adds up a step's micro-batches without waiting for the device each time
  // (reading one with item() is a host sync on a GPU).
  at::Tensor policy_loss;
  at::Tensor kl;                  // mean over completion tokens
  at::Tensor clip_low_fraction;   // ρ < 1 − ε_low with A < 0
  at::Tensor clip_high_fraction;  // ρ > 1 + ε_high with A > 0
  at::Tensor clip_fraction;
};

// logprobs (policy, differentiable), old_logprobs (sampler), ref_logprobs (reference; may
// be undefined when beta == 0), advantages, mask: all float [N, M]. The mask is 1 on
// completion tokens only; everything else carries no loss and no gradient.
LossTerms GrpoLoss(const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                   const at::Tensor& ref_logprobs, const at::Tensor& advantages,
                   const at::Tensor& mask, const LossOptions& options);

}  // namespace grpo

#endif  // GRPO_RL_GRPO_H_
