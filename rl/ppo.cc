#include "rl/ppo.h"

#include <torch/torch.h>

#include <algorithm>

namespace grpo {

// ---------------------------------------------------------------------------------------
// 1. GAE, backwards over the completion positions. Masked-off positions hold no token:
//    their value counts as 0 for the token before them and their advantage stays 0.

GaeResult GeneralizedAdvantages(const at::Tensor& rewards, const at::Tensor& values,
                                const at::Tensor& mask, double gamma, double lambda) {
  at::NoGradGuard no_grad;
  const int64_t m = rewards.size(1);
  const at::Tensor v = values * mask;
  at::Tensor advantages = at::zeros_like(rewards);
  at::Tensor next_value = at::zeros_like(rewards.select(1, 0));
  at::Tensor next_advantage = at::zeros_like(next_value);
  for (int64_t t = m - 1; t >= 0; --t) {
    const at::Tensor here = mask.select(1, t);
    const at::Tensor delta = rewards.select(1, t) + gamma * next_value - v.select(1, t);
    const at::Tensor a = (delta + gamma * lambda * next_advantage) * here;
    advantages.select(1, t).copy_(a);
    next_value = v.select(1, t);
    next_advantage = a;
  }
  return {advantages, (advantages + v) * mask};
}

// ---------------------------------------------------------------------------------------
// 2. Whitening.

at::Tensor WhitenMasked(const at::Tensor& x, const at::Tensor& mask) {
  const at::Tensor count = mask.sum();
  const at::Tensor mean = (x * mask).sum() / count;
  const at::Tensor var = (((x - mean) * mask).pow(2)).sum() / (count - 1).clamp_min(1);
  return (x - mean) / (var.sqrt() + 1e-8) * mask;
}

// ---------------------------------------------------------------------------------------
// 3. The clipped value loss (PPO2 / verl's `cliprange_value`) and explained variance.

ValueLossTerms ClippedValueLoss(const at::Tensor& values, const at::Tensor& old_values,
                                const at::Tensor& returns, const at::Tensor& mask,
                                double epsilon) {
  const at::Tensor clipped = old_values + (values - old_values).clamp(-epsilon, epsilon);
  const at::Tensor plain_loss = (values - returns).pow(2);
  const at::Tensor clipped_loss = (clipped - returns).pow(2);
  const at::Tensor tokens = mask.sum().clamp_min(1.0);
  ValueLossTerms out;
  out.loss = 0.5 * (at::max(plain_loss, clipped_loss) * mask).sum() / tokens;
  at::NoGradGuard no_grad;
  out.clip_fraction = ((clipped_loss > plain_loss).to(mask.scalar_type()) * mask)
                          .sum()
                          .to(at::kDouble) /
                      tokens.to(at::kDouble);
  return out;
}

double ExplainedVariance(const at::Tensor& values, const at::Tensor& returns,
                         const at::Tensor& mask) {
  at::NoGradGuard no_grad;
  auto masked_var = [&](const at::Tensor& x) {
    const at::Tensor count = mask.sum();
    const at::Tensor mean = (x * mask).sum() / count;
    return ((((x - mean) * mask).pow(2)).sum() / count).item<double>();
  };
  const double var_returns = masked_var(returns);
  if (var_returns == 0) return 0;
  return 1.0 - masked_var(returns - values) / var_returns;
}

}  // namespace grpo
