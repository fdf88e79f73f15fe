// Every GRPO formula against a float64 reference written independently here, with loops.
#include "rl/grpo.h"

#include <torch/torch.h>

#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

ScoredSample MakeSample(double reward, int length) {
  ScoredSample s;
  s.reward = reward;
  s.completion.assign(length, 7);
  s.logprobs.assign(length, -1.0f);
  return s;
}

std::vector<ScoredGroup> RandomGroups(std::mt19937& rng) {
  std::uniform_real_distribution<double> reward(0, 1);
  std::uniform_int_distribution<int> length(1, 9);
  std::vector<ScoredGroup> groups(3);
  for (size_t g = 0; g < groups.size(); ++g) {
    groups[g].prompt_id = "p" + std::to_string(g);
    groups[g].prompt = {1, 2};
    for (int i = 0; i < 4 + static_cast<int>(g); ++i)
      groups[g].samples.push_back(MakeSample(reward(rng), length(rng)));
  }
  return groups;
}

double Mean(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return s / x.size();
}
double SampleStd(const std::vector<double>& x) {
  const double m = Mean(x);
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return std::sqrt(s / (x.size() - 1));
}

TEST(AdvantageTest, OutcomeGroupBatchAndNoneScalesMatchReference) {
  std::mt19937 rng(1);
  const auto groups = RandomGroups(rng);
  std::vector<double> all;
  for (const auto& g : groups)
    for (const auto& s : g.samples) all.push_back(s.reward);
  for (AdvantageScale scale :
       {AdvantageScale::kGroup, AdvantageScale::kBatch, AdvantageScale::kNone}) {
    AdvantageOptions o;
    o.scale = scale;
    auto adv = ComputeAdvantages(groups, o);
    ASSERT_TRUE(adv.ok());
    size_t row = 0;
    for (const auto& g : groups) {
      std::vector<double> r;
      for (const auto& s : g.samples) r.push_back(s.reward);
      for (const auto& s : g.samples) {
        double expected = s.reward - Mean(r);
        if (scale == AdvantageScale::kGroup) expected /= SampleStd(r) + 1e-4;
        if (scale == AdvantageScale::kBatch) expected /= SampleStd(all) + 1e-4;
        ASSERT_EQ((*adv)[row].size(), s.completion.size());
        for (float a : (*adv)[row]) EXPECT_NEAR(a, expected, 1e-5);
        ++row;
      }
    }
    EXPECT_EQ(row, (*adv).size());
  }
}

TEST(AdvantageTest, ZeroVarianceGroupHasExactlyZeroAdvantage) {
  ScoredGroup flat{"flat", {1}, {MakeSample(0.7, 3), MakeSample(0.7, 2), MakeSample(0.7, 4)}};
  EXPECT_TRUE(HasZeroVariance(flat));
  for (AdvantageScale scale :
       {AdvantageScale::kGroup, AdvantageScale::kBatch, AdvantageScale::kNone}) {
    AdvantageOptions o;
    o.scale = scale;
    auto adv = ComputeAdvantages({flat}, o);
    ASSERT_TRUE(adv.ok());
    for (const auto& row : *adv)
      for (float a : row) EXPECT_EQ(a, 0.0f);
  }
  ScoredGroup varied{"v", {1}, {MakeSample(0.0, 3), MakeSample(1.0, 2)}};
  EXPECT_FALSE(HasZeroVariance(varied));
}

// Sample 1's last step ends two tokens before its end (its stop token and a trailing one):
// they get that step's advantage.
TEST(AdvantageTest, ProcessAdvantagesAreSuffixSumsOfNormalisedStepRewards) {
  ScoredGroup g{"p", {1, 2}, {MakeSample(0, 10), MakeSample(0, 8), MakeSample(0, 8)}};
  g.samples[0].steps = {{1.0, 3}, {0.0, 6}, {1.0, 9}};
  g.samples[1].steps = {{0.0, 2}, {0.0, 5}};
  g.samples[2].steps = {{1.0, 4}, {1.0, 7}};
  std::vector<double> all = {1, 0, 1, 0, 0, 1, 1};
  const double mean = Mean(all), std = SampleStd(all);
  AdvantageOptions o;
  o.estimator = AdvantageEstimator::kProcess;
  auto adv = ComputeAdvantages({g}, o);
  ASSERT_TRUE(adv.ok());
  for (size_t i = 0; i < g.samples.size(); ++i) {
    const auto& s = g.samples[i];
    for (size_t t = 0; t < s.completion.size(); ++t) {
      double expected = 0;
      for (const auto& step : s.steps) {
        const int end = &step == &s.steps.back() ? static_cast<int>(s.completion.size()) - 1
                                                 : step.end_offset;
        if (end >= static_cast<int>(t)) expected += (step.reward - mean) / (std + 1e-4);
      }
      EXPECT_NEAR((*adv)[i][t], expected, 1e-5) << "sample " << i << " token " << t;
    }
  }
}

// Under PROCESS the advantages come from the step rewards: a group whose outcomes tie but
// whose steps differ has something to learn, and one whose steps all tie has not.
TEST(AdvantageTest, ProcessZeroVarianceLooksAtStepRewards) {
  ScoredGroup g{"p", {1, 2}, {MakeSample(1, 6), MakeSample(1, 6)}};
  g.samples[0].steps = {{1.0, 2}, {0.0, 5}};
  g.samples[1].steps = {{1.0, 2}, {1.0, 5}};
  EXPECT_TRUE(HasZeroVariance(g));
  EXPECT_FALSE(HasZeroVariance(g, AdvantageEstimator::kProcess));
  g.samples[0].reward = 0;
  g.samples[0].steps = {{1.0, 3}};
  EXPECT_FALSE(HasZeroVariance(g));
  EXPECT_TRUE(HasZeroVariance(g, AdvantageEstimator::kProcess));
  AdvantageOptions o;
  o.estimator = AdvantageEstimator::kProcess;
  auto adv = ComputeAdvantages({g}, o);
  ASSERT_TRUE(adv.ok());
  for (const auto& row : *adv)
    for (float a : row) EXPECT_EQ(a, 0.0f);
}

TEST(AdvantageTest, OnlineRftCoefficients) {
  ScoredGroup g{"p", {1}, {MakeSample(1.0, 2), MakeSample(0.2, 2), MakeSample(1.5, 1)}};
  for (double negative : {0.0, -1.0}) {
    AdvantageOptions o;
    o.estimator = AdvantageEstimator::kOnlineRft;
    o.rft_negative = negative;
    auto adv = ComputeAdvantages({g}, o);
    ASSERT_TRUE(adv.ok());
    EXPECT_THAT((*adv)[0], testing::Each(1.0f));
    EXPECT_THAT((*adv)[1], testing::Each(static_cast<float>(negative)));
    EXPECT_THAT((*adv)[2], testing::Each(1.0f));
  }
}

TEST(AdvantageTest, NonFiniteRewardsAreRejectedNamingTheSample) {
  for (double bad : {std::nan(""), double{INFINITY}, -double{INFINITY}}) {
    ScoredGroup g{"prompt-9", {1}, {MakeSample(1.0, 2), MakeSample(bad, 2)}};
    auto adv = ComputeAdvantages({g}, AdvantageOptions{});
    ASSERT_EQ(adv.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(adv.status().message()), testing::HasSubstr("prompt-9"));
    EXPECT_THAT(std::string(adv.status().message()), testing::HasSubstr("sample 1"));
  }
  ScoredGroup step{"s", {1}, {MakeSample(1.0, 4)}};
  step.samples[0].steps = {{std::nan(""), 2}};
  EXPECT_FALSE(ValidateGroups({step}).ok());
  step.samples[0].steps = {{1.0, 4}};  // past the completion
  EXPECT_THAT(std::string(ValidateGroups({step}).message()), testing::HasSubstr("end_offset"));
}

// --- The loss.

struct LossCase {
  at::Tensor lp, old_lp, ref_lp, adv, mask;
};

LossCase RandomLossCase(int64_t n, int64_t m) {
  at::manual_seed(11);
  LossCase c;
  c.lp = -at::rand({n, m}, at::kDouble) * 3;
  c.old_lp = c.lp + at::randn({n, m}, at::kDouble) * 0.3;  // ratios both sides of the clip
  c.ref_lp = c.lp + at::randn({n, m}, at::kDouble) * 0.2;
  c.adv = at::randn({n, m}, at::kDouble);
  c.mask = at::zeros({n, m}, at::kDouble);
  for (int64_t i = 0; i < n; ++i) c.mask[i].narrow(0, 0, 1 + (i * 3) % m).fill_(1);
  return c;
}

double ReferenceLoss(const LossCase& c, const LossOptions& o, double* kl_mean,
                     double* clip_low, double* clip_high) {
  auto lp = c.lp.accessor<double, 2>(), old = c.old_lp.accessor<double, 2>(),
       ref = c.ref_lp.accessor<double, 2>(), adv = c.adv.accessor<double, 2>(),
       mask = c.mask.accessor<double, 2>();
  const int64_t n = c.lp.size(0), m = c.lp.size(1);
  double total = 0, tokens = 0, kl_sum = 0, low = 0, high = 0;
  for (int64_t i = 0; i < n; ++i) {
    double seq_sum = 0, seq_len = 0;
    // GSPO: one ratio for the sequence, the geometric mean of its tokens' ratios.
    double log_ratio_sum = 0, count = 0;
    for (int64_t t = 0; t < m; ++t)
      if (mask[i][t] != 0) log_ratio_sum += lp[i][t] - old[i][t], count += 1;
    const double sequence_rho = std::exp(log_ratio_sum / std::max(1.0, count));
    for (int64_t t = 0; t < m; ++t) {
      if (mask[i][t] == 0) continue;
      const double rho = o.ratio == RatioLevel::kSequence ? sequence_rho
                                                          : std::exp(lp[i][t] - old[i][t]);
      const double clipped = std::min(std::max(rho, 1 - o.epsilon_low), 1 + o.epsilon_high);
      const double a = adv[i][t];
      const double policy = -std::min(rho * a, clipped * a);
      const double d = ref[i][t] - lp[i][t];
      double kl = 0;
      if (o.kl_estimator == KlEstimator::kK1) kl = lp[i][t] - ref[i][t];
      if (o.kl_estimator == KlEstimator::kK2) kl = 0.5 * d * d;
      if (o.kl_estimator == KlEstimator::kK3) kl = std::exp(d) - d - 1;
      seq_sum += policy + o.beta * kl;
      seq_len += 1;
      kl_sum += kl;
      low += (rho < 1 - o.epsilon_low && a < 0);
      high += (rho > 1 + o.epsilon_high && a > 0);
    }
    tokens += seq_len;
    if (o.aggregation == Aggregation::kSeqMeanTokenMean) total += seq_sum / seq_len / n;
    if (o.aggregation == Aggregation::kTokenMean) total += seq_sum;
    if (o.aggregation == Aggregation::kSeqMeanTokenSumNorm)
      total += seq_sum / o.max_new_tokens / n;
  }
  if (o.aggregation == Aggregation::kTokenMean) total /= tokens;
  *kl_mean = kl_sum / tokens;
  *clip_low = low / tokens;
  *clip_high = high / tokens;
  return total;
}

TEST(GrpoLossTest, MatchesFloat64ReferenceForEveryAggregationAndEstimator) {
  const LossCase c = RandomLossCase(6, 7);
  for (RatioLevel level : {RatioLevel::kToken, RatioLevel::kSequence})
  for (Aggregation agg : {Aggregation::kSeqMeanTokenMean, Aggregation::kTokenMean,
                          Aggregation::kSeqMeanTokenSumNorm}) {
    for (KlEstimator kl : {KlEstimator::kK1, KlEstimator::kK2, KlEstimator::kK3}) {
      SCOPED_TRACE(testing::Message() << "sequence ratio " << (level == RatioLevel::kSequence));
      LossOptions o;
      o.ratio = level;
      o.aggregation = agg;
      o.kl_estimator = kl;
      o.beta = 0.3;
      // Sequence ratios average the token noise away: a narrower clip still clips some.
      o.epsilon_low = level == RatioLevel::kSequence ? 0.05 : 0.15;
      o.epsilon_high = level == RatioLevel::kSequence ? 0.08 : 0.28;
      o.max_new_tokens = 10;
      double kl_mean, low, high;
      const double expected = ReferenceLoss(c, o, &kl_mean, &low, &high);
      LossTerms t = GrpoLoss(c.lp, c.old_lp, c.ref_lp, c.adv, c.mask, o);
      EXPECT_NEAR(t.loss.item<double>(), expected, 1e-10);
      EXPECT_NEAR(t.kl.item<double>(), kl_mean, 1e-10);
      EXPECT_NEAR(t.clip_low_fraction.item<double>(), low, 1e-12);
      EXPECT_NEAR(t.clip_high_fraction.item<double>(), high, 1e-12);
      EXPECT_GT(low + high, 0);  // the case does exercise clipping
    }
  }
}

// GSPO's ratio couples a sequence's tokens (each token's log-prob moves the shared ratio):
// autograd's gradient against central differences of the float64 reference.
TEST(GrpoLossTest, SequenceRatioGradientMatchesFiniteDifferences) {
  const LossCase c = RandomLossCase(4, 5);
  LossOptions o;
  o.ratio = RatioLevel::kSequence;
  o.epsilon_low = 0.05;
  o.epsilon_high = 0.08;
  o.beta = 0.1;
  at::Tensor lp = c.lp.clone().requires_grad_(true);
  GrpoLoss(lp, c.old_lp, c.ref_lp, c.adv, c.mask, o).loss.backward();
  double unused[3];
  const double h = 1e-6;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t t = 0; t < 5; ++t) {
      LossCase plus = c, minus = c;
      plus.lp = c.lp.clone(), minus.lp = c.lp.clone();
      plus.lp[i][t] += h;
      minus.lp[i][t] -= h;
      const double numeric = (ReferenceLoss(plus, o, &unused[0], &unused[1], &unused[2]) -
                              ReferenceLoss(minus, o, &unused[0], &unused[1], &unused[2])) /
                             (2 * h);
      EXPECT_NEAR(lp.grad()[i][t].item<double>(), numeric, 1e-7) << i << "," << t;
    }
}

TEST(GrpoLossTest, MaskedTokensGetNoGradient) {
  LossCase c = RandomLossCase(5, 6);
  at::Tensor lp = c.lp.clone().requires_grad_(true);
  LossTerms t = GrpoLoss(lp, c.old_lp, c.ref_lp, c.adv, c.mask, LossOptions{});
  t.loss.backward();
  at::Tensor masked_grad = lp.grad() * (1 - c.mask);
  EXPECT_EQ(masked_grad.abs().sum().item<double>(), 0.0);
  EXPECT_GT((lp.grad() * c.mask).abs().sum().item<double>(), 0.0);
}

TEST(GrpoLossTest, OnPolicyLossIsZeroButGradientIsNot) {
  // μ = 1, first pass: ρ = 1, so Σ A over a zero-mean group vanishes; the gradient is A.
  at::Tensor lp = (-at::rand({4, 3}, at::kDouble)).requires_grad_(true);
  at::Tensor adv = at::tensor({1.0, -1.0, 0.5, -0.5}, at::kDouble).view({4, 1}).expand({4, 3});
  LossOptions o;
  o.beta = 0;
  LossTerms t = GrpoLoss(lp, lp.detach(), at::Tensor(), adv, at::ones({4, 3}, at::kDouble), o);
  EXPECT_NEAR(t.loss.item<double>(), 0.0, 1e-12);
  t.loss.backward();
  // d/dlp of −(1/4)Σ_i (1/3)Σ_t ρ A = −A/12 at ρ = 1.
  EXPECT_TRUE(at::allclose(lp.grad(), -adv / 12.0));
}

TEST(GrpoLossTest, TokenLogprobsMatchLogSoftmax) {
  at::Tensor logits = at::randn({2, 3, 11}, at::kDouble);
  at::Tensor targets = at::randint(0, 11, {2, 3}, at::kLong);
  for (double temperature : {1.0, 0.7}) {
    at::Tensor expected =
        at::log_softmax(logits / temperature, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1);
    EXPECT_TRUE(at::allclose(TokenLogprobs(logits, targets, temperature), expected));
  }
}

}  // namespace
}  // namespace grpo
