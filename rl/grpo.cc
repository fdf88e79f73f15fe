// GRPO, top to bottom (docs/design.md §3; DeepSeekMath arXiv 2402.03300, with the DAPO and
// Dr. GRPO variants). Dimensions, named once:
//   B  prompts (groups) in the batch      G  samples per group (may differ per group)
//   N  sequences = Σ group sizes          M  completion positions (padded)
//   V  vocabulary
// Advantages are computed in float64 on the host (they are B×G numbers); the loss runs in
// LibTorch on [N, M] tensors.
#include "rl/grpo.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace grpo {
namespace {

struct Moments {
  double mean = 0;
  double std = 0;  // Bessel-corrected (n − 1), as TRL and verl; 0 when n < 2
};

Moments ComputeMoments(const std::vector<double>& xs) {
  Moments m;
  if (xs.empty()) return m;
  for (double x : xs) m.mean += x;
  m.mean /= xs.size();
  if (xs.size() < 2) return m;
  double ss = 0;
  for (double x : xs) ss += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(ss / (xs.size() - 1));
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// 0. Input checks: never train on a malformed group or a non-finite reward.

absl::Status ValidateGroups(const std::vector<ScoredGroup>& groups) {
  for (size_t g = 0; g < groups.size(); ++g) {
    const ScoredGroup& group = groups[g];
    if (group.samples.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("group ", g, " (prompt ", group.prompt_id, "): no samples"));
    if (group.prompt.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("group ", g, " (prompt ", group.prompt_id, "): empty prompt"));
    for (size_t i = 0; i < group.samples.size(); ++i) {
      const ScoredSample& s = group.samples[i];
      auto where = [&] {
        return absl::StrCat("group ", g, " (prompt ", group.prompt_id, ") sample ", i, ": ");
      };
      if (!std::isfinite(s.reward))
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "reward is ", s.reward, "; rewards must be finite"));
      if (s.completion.empty())
        return absl::InvalidArgumentError(absl::StrCat(where(), "empty completion"));
      if (s.logprobs.size() != s.completion.size())
        return absl::InvalidArgumentError(
            absl::StrCat(where(), s.logprobs.size(), " log-probs for ",
                         s.completion.size(), " completion tokens"));
      for (float lp : s.logprobs) {
        if (!std::isfinite(lp) || lp > 0)
          return absl::InvalidArgumentError(
              absl::StrCat(where(), "log-prob ", lp, " is not a finite value <= 0"));
      }
      for (const StepReward& step : s.steps) {
        if (!std::isfinite(step.reward))
          return absl::InvalidArgumentError(
              absl::StrCat(where(), "step reward is ", step.reward, "; must be finite"));
        if (step.end_offset < 0 ||
            step.end_offset >= static_cast<int>(s.completion.size()))
          return absl::InvalidArgumentError(
              absl::StrCat(where(), "step end_offset ", step.end_offset,
                           " outside the completion of ", s.completion.size(), " tokens"));
      }
    }
  }
  return absl::OkStatus();
}

bool HasZeroVariance(const ScoredGroup& group, AdvantageEstimator estimator) {
  if (estimator == AdvantageEstimator::kProcess) {
    // Process advantages come from the step rewards alone.
    const StepReward* first = nullptr;
    for (const ScoredSample& s : group.samples)
      for (const StepReward& step : s.steps) {
        if (first == nullptr) first = &step;
        if (step.reward != first->reward) return false;
      }
    return true;
  }
  for (const ScoredSample& s : group.samples) {
    if (s.reward != group.samples.front().reward) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// 1. Advantages.
//
// Outcome: A_i = (r_i − mean_group(r)) / (std + ε), the same for every token of o_i.
//   scale = group: std of the group; batch: std of all rewards in the batch (TRL's
//   "batch"); none: no division (Dr. GRPO). A group of equal rewards gets exactly 0.
// Process: all step rewards of a group normalised together, r̃ = (r − mean) / (std + ε);
//   token t of o_i gets Σ over steps j of o_i with end(j) ≥ t of r̃_i^j, where the last
//   step's end is taken as o_i's last token: what follows the last step (the stop token,
//   trailing text) gets that step's r̃, so the model learns when to stop.
// Online RFT: 1 for a correct sample, rft_negative (0 in the paper, −1 signed) otherwise.

namespace {

double Scale(const AdvantageOptions& o, double group_std, double batch_std) {
  switch (o.scale) {
    case AdvantageScale::kGroup: return group_std + o.epsilon;
    case AdvantageScale::kBatch: return batch_std + o.epsilon;
    case AdvantageScale::kNone: return 1.0;
  }
  return 1.0;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<float>>> ComputeAdvantages(
    const std::vector<ScoredGroup>& groups, const AdvantageOptions& o) {
  if (absl::Status s = ValidateGroups(groups); !s.ok()) return s;
  std::vector<std::vector<float>> advantages;

  if (o.estimator == AdvantageEstimator::kOnlineRft) {
    for (const ScoredGroup& group : groups) {
      for (const ScoredSample& s : group.samples) {
        const double coef = s.reward >= o.correct_threshold ? 1.0 : o.rft_negative;
        advantages.emplace_back(s.completion.size(), static_cast<float>(coef));
      }
    }
    return advantages;
  }

  if (o.estimator == AdvantageEstimator::kOutcome) {
    std::vector<double> all;
    for (const ScoredGroup& group : groups)
      for (const ScoredSample& s : group.samples) all.push_back(s.reward);
    const double batch_std = ComputeMoments(all).std;
    for (const ScoredGroup& group : groups) {
      std::vector<double> rewards;
      for (const ScoredSample& s : group.samples) rewards.push_back(s.reward);
      const Moments m = ComputeMoments(rewards);
      const double scale = Scale(o, m.std, batch_std);
      for (const ScoredSample& s : group.samples) {
        // Equal rewards: r − mean is exactly 0 only if the mean is computed exactly; make
        // the zero-variance case exact rather than 1e-17.
        const double a = HasZeroVariance(group) ? 0.0 : (s.reward - m.mean) / scale;
        advantages.emplace_back(s.completion.size(), static_cast<float>(a));
      }
    }
    return advantages;
  }

  // Process supervision.
  std::vector<double> all_steps;
  for (const ScoredGroup& group : groups)
    for (const ScoredSample& s : group.samples)
      for (const StepReward& step : s.steps) all_steps.push_back(step.reward);
  const double batch_std = ComputeMoments(all_steps).std;
  for (const ScoredGroup& group : groups) {
    std::vector<double> step_rewards;
    for (const ScoredSample& s : group.samples)
      for (const StepReward& step : s.steps) step_rewards.push_back(step.reward);
    const Moments m = ComputeMoments(step_rewards);
    const double scale = Scale(o, m.std, batch_std);
    bool all_equal = true;
    for (double r : step_rewards) all_equal = all_equal && r == step_rewards.front();
    for (const ScoredSample& s : group.samples) {
      // Suffix sums: walk tokens backwards, adding a step's r̃ once t reaches its end.
      std::vector<double> at_end(s.completion.size(), 0.0);
      int last = -1;
      for (const StepReward& step : s.steps) last = std::max(last, step.end_offset);
      for (const StepReward& step : s.steps) {
        const int end = step.end_offset == last ? static_cast<int>(at_end.size()) - 1
                                                : step.end_offset;
        at_end[end] += all_equal ? 0.0 : (step.reward - m.mean) / scale;
      }
      std::vector<float> a(s.completion.size());
      double running = 0;
      for (int t = static_cast<int>(a.size()) - 1; t >= 0; --t) {
        running += at_end[t];
        a[t] = static_cast<float>(running);
      }
      advantages.push_back(std::move(a));
    }
  }
  return advantages;
}

// ---------------------------------------------------------------------------------------
// 2. Log-probabilities of the completion tokens under a model: logits [N, M, V].
//    log softmax(z)[y] = z[y] − logsumexp(z), without materialising the [N, M, V] log-softmax.

at::Tensor TokenLogprobs(const at::Tensor& logits, const at::Tensor& targets,
                         double temperature) {
  at::Tensor z = temperature == 1.0 ? logits : logits / temperature;
  return z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - z.logsumexp(-1);
}

// ---------------------------------------------------------------------------------------
// 3. Per-token loss: ρ = exp(logπθ − logπold) (GSPO: one ρ_i per sequence,
//    exp(1/|o_i| Σ_t (logπθ − logπold)), shared by its tokens, differentiable through the mean);
//    l = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) + β·KL(πθ ‖ πref), with
//    k1 = logπθ − logπref, k2 = ½(logπθ − logπref)², k3 = e^(ref − θ) − (ref − θ) − 1.
// 4. Aggregation over the masked [N, M] grid:
//    seq-mean-token-mean  1/N Σ_i 1/|o_i| Σ_t l_it        (the paper)
//    token-mean           Σ_i Σ_t l_it / Σ_i |o_i|        (DAPO)
//    seq-mean-token-sum-norm  1/N Σ_i Σ_t l_it / M_max    (Dr. GRPO)

namespace {

at::Tensor Aggregate(const at::Tensor& per_token, const at::Tensor& mask,
                     const LossOptions& o) {
  const double n = o.global_sequences > 0 ? o.global_sequences : per_token.size(0);
  switch (o.aggregation) {
    case Aggregation::kSeqMeanTokenMean:
      return ((per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).sum() / n;
    case Aggregation::kTokenMean:
      if (o.global_tokens > 0) return (per_token * mask).sum() / o.global_tokens;
      return (per_token * mask).sum() / mask.sum().clamp_min(1.0);
    case Aggregation::kSeqMeanTokenSumNorm: {
      const double norm = o.max_new_tokens > 0 ? o.max_new_tokens : per_token.size(1);
      return (per_token * mask).sum() / norm / n;
    }
  }
  return (per_token * mask).sum();
}

}  // namespace

LossTerms GrpoLoss(const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                   const at::Tensor& ref_logprobs, const at::Tensor& advantages,
                   const at::Tensor& mask, const LossOptions& o) {
  at::Tensor log_ratio_old = logprobs - old_logprobs;
  if (o.ratio == RatioLevel::kSequence) {
    const at::Tensor mean = (log_ratio_old * mask).sum(-1) / mask.sum(-1).clamp_min(1.0);
    log_ratio_old = mean.unsqueeze(-1).expand_as(logprobs);
  }
  at::Tensor ratio = log_ratio_old.exp();
  at::Tensor unclipped = ratio * advantages;
  at::Tensor policy = -unclipped;
  if (o.clip) {
    at::Tensor clipped = ratio.clamp(1.0 - o.epsilon_low, 1.0 + o.epsilon_high) * advantages;
    policy = -at::min(unclipped, clipped);
  }
  at::Tensor per_token = policy;
  at::Tensor kl;
  if (ref_logprobs.defined()) {
    at::Tensor log_ratio = ref_logprobs - logprobs;  // log πref/πθ
    switch (o.kl_estimator) {
      case KlEstimator::kK1: kl = -log_ratio; break;
      case KlEstimator::kK2: kl = 0.5 * log_ratio.pow(2); break;
      case KlEstimator::kK3: kl = log_ratio.exp() - log_ratio - 1.0; break;
    }
    if (o.beta != 0) per_token = per_token + o.beta * kl;
  }

  LossTerms terms;
  terms.loss = Aggregate(per_token, mask, o);

  // 5. Metrics (no gradient): over completion tokens only, divided in float64.
  at::NoGradGuard no_grad;
  auto wide_sum = [&](const at::Tensor& x) { return (x * mask).sum().to(at::kDouble); };
  const at::Tensor tokens = mask.sum().to(at::kDouble).clamp_min(1.0);
  terms.policy_loss = Aggregate(policy.detach(), mask, o).to(at::kDouble);
  terms.kl = kl.defined() ? wide_sum(kl.detach()) / tokens : at::zeros_like(tokens);
  at::Tensor low = (ratio < 1.0 - o.epsilon_low) & (advantages < 0);
  at::Tensor high = (ratio > 1.0 + o.epsilon_high) & (advantages > 0);
  terms.clip_low_fraction = wide_sum(low.to(mask.scalar_type())) / tokens;
  terms.clip_high_fraction = wide_sum(high.to(mask.scalar_type())) / tokens;
  terms.clip_fraction = terms.clip_low_fraction + terms.clip_high_fraction;
  return terms;
}

}  // namespace grpo
