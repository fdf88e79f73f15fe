// PPO's critic-side mathematics (docs/design.md §3), the part GRPO drops: generalised
// advantage estimation over a value model's per-token estimates, whitening, the clipped
// value loss and explained variance. Stateless functions over masked [N, M] completion
// grids (the layout of rl/grpo.h); no ownership. The PPO step that uses them is
// learner/grpo_trainer.h's (options.ppo), with its critic in learner/value_model.h.
#ifndef GRPO_RL_PPO_H_
#define GRPO_RL_PPO_H_

#include <ATen/core/Tensor.h>

namespace grpo {

struct GaeResult {
  at::Tensor advantages;  // [N, M], 0 off the mask
  at::Tensor returns;     // advantages + values: the value model's targets
};

// rewards, values, mask: float [N, M]; row i's tokens are the mask's first |o_i| columns
// (completions right-padded). δ_t = r_t + γ·V_{t+1} − V_t with V past the row's last token
// 0 (the episode ends), A_t = δ_t + γλ·A_{t+1}. rewards carry the sequence reward at the
// last token (and, InstructGPT-style, any per-token KL penalty). No gradient.
GaeResult GeneralizedAdvantages(const at::Tensor& rewards, const at::Tensor& values,
                                const at::Tensor& mask, double gamma, double lambda);

// (x − mean) / (std + 1e-8) over the masked entries (std with Bessel's correction), 0 off
// the mask: PPO's advantage whitening.
at::Tensor WhitenMasked(const at::Tensor& x, const at::Tensor& mask);

struct ValueLossTerms {
  at::Tensor loss;             // scalar, differentiable w.r.t. values
  // Tokens where the clipped branch was the larger: a detached float64 scalar on the
  // device (GrpoLoss's metrics say why).
  at::Tensor clip_fraction;
};

// ½·max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²), mean over the masked tokens.
ValueLossTerms ClippedValueLoss(const at::Tensor& values, const at::Tensor& old_values,
                                const at::Tensor& returns, const at::Tensor& mask,
                                double epsilon);

// 1 − Var(R − V) / Var(R) over the masked entries: 1 for a perfect critic, ≤ 0 for one no
// better than the mean.
double ExplainedVariance(const at::Tensor& values, const at::Tensor& returns,
                         const at::Tensor& mask);

}  // namespace grpo

#endif  // GRPO_RL_PPO_H_
