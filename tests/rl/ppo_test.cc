// PPO's critic-side pieces against float64 references written here as plain loops.
#include "rl/ppo.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace grpo {
namespace {

struct Case {
  at::Tensor rewards, values, old_values, returns, mask;
  std::vector<int> lengths;
};

// Rows of different lengths (1..7 of 7), a sequence reward at each row's last token plus a
// small per-token penalty elsewhere, as a KL-in-reward PPO has.
Case RandomCase() {
  at::manual_seed(21);
  Case c;
  c.lengths = {7, 1, 4, 6, 2};
  const int64_t n = c.lengths.size(), m = 7;
  c.mask = at::zeros({n, m}, at::kDouble);
  c.rewards = at::zeros({n, m}, at::kDouble);
  c.values = at::randn({n, m}, at::kDouble);
  for (int64_t i = 0; i < n; ++i) {
    c.mask[i].narrow(0, 0, c.lengths[i]).fill_(1);
    c.rewards[i].narrow(0, 0, c.lengths[i]).copy_(-0.05 * at::rand({c.lengths[i]}, at::kDouble));
    c.rewards[i][c.lengths[i] - 1] += at::randn({}, at::kDouble);
  }
  c.old_values = c.values + 0.3 * at::randn({n, m}, at::kDouble);
  c.returns = at::randn({n, m}, at::kDouble);
  return c;
}

TEST(GaeTest, MatchesTheRecursionOnEveryRow) {
  const Case c = RandomCase();
  for (auto [gamma, lambda] : {std::pair{1.0, 1.0}, {0.99, 0.95}, {0.9, 0.0}}) {
    SCOPED_TRACE(testing::Message() << "gamma " << gamma << " lambda " << lambda);
    GaeResult got = GeneralizedAdvantages(c.rewards, c.values * c.mask, c.mask, gamma, lambda);
    auto r = c.rewards.accessor<double, 2>();
    auto v = c.values.accessor<double, 2>();
    for (size_t i = 0; i < c.lengths.size(); ++i) {
      const int len = c.lengths[i];
      double next_a = 0;
      std::vector<double> expected(7, 0.0);
      for (int t = len - 1; t >= 0; --t) {
        const double next_v = t + 1 < len ? v[i][t + 1] : 0.0;
        const double delta = r[i][t] + gamma * next_v - v[i][t];
        next_a = delta + gamma * lambda * next_a;
        expected[t] = next_a;
      }
      for (int t = 0; t < 7; ++t) {
        EXPECT_NEAR(got.advantages[i][t].item<double>(), expected[t], 1e-12) << i << "," << t;
        const double ret = t < len ? expected[t] + v[i][t] : 0.0;
        EXPECT_NEAR(got.returns[i][t].item<double>(), ret, 1e-12) << i << "," << t;
      }
    }
  }
  // λ = 1, γ = 1: the advantage is the reward-to-go minus the value.
  GaeResult mc = GeneralizedAdvantages(c.rewards, c.values, c.mask, 1.0, 1.0);
  const at::Tensor to_go = c.rewards.flip(1).cumsum(1).flip(1) * c.mask;
  EXPECT_LE((mc.advantages - (to_go - c.values * c.mask)).abs().max().item<double>(), 1e-12);
}

TEST(GaeTest, WhitenedAdvantagesHaveZeroMeanAndUnitStdOnTheMask) {
  const Case c = RandomCase();
  const at::Tensor w = WhitenMasked(c.values, c.mask);
  std::vector<double> kept;
  for (int64_t i = 0; i < c.mask.size(0); ++i)
    for (int64_t t = 0; t < c.mask.size(1); ++t)
      if (c.mask[i][t].item<double>() > 0) {
        kept.push_back(w[i][t].item<double>());
      } else {
        EXPECT_EQ(w[i][t].item<double>(), 0.0);
      }
  double mean = 0, var = 0;
  for (double x : kept) mean += x / kept.size();
  for (double x : kept) var += (x - mean) * (x - mean) / (kept.size() - 1);
  EXPECT_NEAR(mean, 0, 1e-12);
  EXPECT_NEAR(var, 1, 1e-6);
}

TEST(ValueLossTest, MatchesTheReferenceAndClipsTheGradient) {
  const Case c = RandomCase();
  const double epsilon = 0.2;
  at::Tensor values = c.values.clone().requires_grad_(true);
  ValueLossTerms got = ClippedValueLoss(values, c.old_values, c.returns, c.mask, epsilon);
  got.loss.backward();
  auto v = c.values.accessor<double, 2>(), old = c.old_values.accessor<double, 2>(),
       ret = c.returns.accessor<double, 2>(), mask = c.mask.accessor<double, 2>();
  double total = 0, tokens = 0, clipped_count = 0;
  std::vector<std::vector<double>> grad(5, std::vector<double>(7, 0.0));
  for (int i = 0; i < 5; ++i)
    for (int t = 0; t < 7; ++t) {
      if (mask[i][t] == 0) continue;
      const double vc = old[i][t] + std::clamp(v[i][t] - old[i][t], -epsilon, epsilon);
      const double plain = (v[i][t] - ret[i][t]) * (v[i][t] - ret[i][t]);
      const double clip = (vc - ret[i][t]) * (vc - ret[i][t]);
      total += 0.5 * std::max(plain, clip);
      tokens += 1;
      const bool clipped_wins = clip > plain;
      clipped_count += clipped_wins;
      // The clipped branch moves with V only inside the clip range.
      const bool inside = std::abs(v[i][t] - old[i][t]) < epsilon;
      grad[i][t] = clipped_wins ? (inside ? vc - ret[i][t] : 0.0) : v[i][t] - ret[i][t];
    }
  EXPECT_NEAR(got.loss.item<double>(), total / tokens, 1e-12);
  EXPECT_NEAR(got.clip_fraction.item<double>(), clipped_count / tokens, 1e-12);
  EXPECT_GT(clipped_count, 0);  // the case exercises the clip
  for (int i = 0; i < 5; ++i)
    for (int t = 0; t < 7; ++t)
      EXPECT_NEAR(values.grad()[i][t].item<double>(), grad[i][t] / tokens, 1e-12) << i << "," << t;
}

TEST(ValueLossTest, ExplainedVarianceIsOneForAPerfectCriticAndZeroForTheMean) {
  const Case c = RandomCase();
  EXPECT_NEAR(ExplainedVariance(c.returns, c.returns, c.mask), 1.0, 1e-12);
  const double mean = (c.returns * c.mask).sum().item<double>() / c.mask.sum().item<double>();
  EXPECT_NEAR(ExplainedVariance(at::full_like(c.returns, mean), c.returns, c.mask), 0.0, 1e-12);
  EXPECT_LT(ExplainedVariance(c.values, c.returns, c.mask), 0.5);  // unrelated noise
}

}  // namespace
}  // namespace grpo
