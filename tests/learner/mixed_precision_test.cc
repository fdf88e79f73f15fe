// The learner's precision settings: activation checkpointing gives the same gradients,
// bfloat16 mixed precision trains with float32 master weights, and the sampler/learner
// mismatch metrics (and TIS) see what precision the samples came from. Device and dtype
// are parameters of the one code path these tests run (docs/design.md §9).
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "learner/batch.h"
#include "learner/grpo_trainer.h"
#include "model/sampler.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

ModelConfig Config() {
  ModelConfig c = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48,
       .tie_embeddings = false});
  return c;
}

std::vector<at::Tensor> Snapshot(const Transformer& m) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

// Checkpointed layers run the same float64 operations again in the backward pass, so the
// gradients agree to float64 rounding (they are in fact identical here); a layer whose
// parameters lost their gradient route, or a recomputation with other inputs, differs by
// O(1). Every parameter kind is covered: q/k norms and the qkv bias included.
TEST(ActivationCheckpointingTest, GivesTheSameGradients) {
  ModelConfig config = Config();
  config.qkv_bias = true;
  config.qk_norm = true;
  Transformer plain(config, 5), checkpointed(config, 5);
  ASSERT_TRUE(plain.To(at::kCPU, at::kDouble).ok());
  ASSERT_TRUE(checkpointed.To(at::kCPU, at::kDouble).ok());
  checkpointed.SetActivationCheckpointing(true);
  at::manual_seed(3);
  const at::Tensor ids = at::randint(config.vocab_size, {3, 9}, at::kLong);
  at::Tensor is_pad = at::zeros({3, 9}, at::kBool);
  is_pad[0][0] = true;  // a left-padded row: the attention bias is recomputed too
  const at::Tensor upstream = at::randn({3, 9, config.vocab_size}, at::kDouble);
  for (Transformer* m : {&plain, &checkpointed})
    (m->Logits(m->Forward(ids, is_pad)) * upstream).sum().backward();
  const auto& a = plain.named_parameters();
  const auto& b = checkpointed.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(b[i].second.grad().defined()) << a[i].first;
    const double scale = a[i].second.grad().abs().max().item<double>();
    ASSERT_GT(scale, 0) << a[i].first;
    EXPECT_LE((a[i].second.grad() - b[i].second.grad()).abs().max().item<double>(),
              1e-12 * scale)
        << a[i].first;
  }
}

// One group: two completions of token 9 rewarded, two of token 10 not.
std::vector<ScoredGroup> Preference() {
  ScoredGroup group;
  group.prompt_id = "p";
  group.prompt = {5, 6, 7};
  for (int i = 0; i < 4; ++i) {
    ScoredSample s;
    s.completion.assign(3, i < 2 ? 9 : 10);
    s.logprobs.assign(3, -4.0f);
    s.reward = i < 2 ? 1.0 : 0.0;
    group.samples.push_back(s);
  }
  return {group};
}

// log π(9 9 9) − log π(10 10 10) after the prompt, in float32.
double Preferred(const Transformer& model) {
  at::NoGradGuard no_grad;
  auto batch = PackBatch({{5, 6, 7}, {5, 6, 7}}, {{9, 9, 9}, {10, 10, 10}}, 0,
                         model.config().vocab_size);
  EXPECT_TRUE(batch.ok());
  at::Tensor logprobs = CompletionLogprobs(model, *batch, 1.0).sum(-1);
  return (logprobs[0] - logprobs[1]).item<double>();
}

TEST(MixedPrecisionTest, Bf16TrainsWithFloat32MasterWeights) {
  TrainerOptions options;
  options.bf16_mixed = true;
  options.recompute_old_logprobs = true;
  options.optimizer.learning_rate = 1e-2;
  options.max_policy_lag = 100;  // the same batch every step
  Transformer policy(Config(), 11);
  const double before = Preferred(policy);
  auto trainer = GrpoTrainer::Create(&policy, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_EQ(policy.compute_dtype(), at::kBFloat16);
  for (int step = 0; step < 10; ++step) {
    auto m = (*trainer)->Step(Preference());
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE(m->trained);
  }
  for (const auto& [name, p] : policy.named_parameters()) {
    EXPECT_EQ(p.scalar_type(), at::kFloat) << name;
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_EQ(p.grad().scalar_type(), at::kFloat) << name;
  }
  // Ten Adam steps at 1e-2 move the preferred completion's log-prob by several nats;
  // before training the random model is indifferent (a fraction of a nat either way).
  ASSERT_TRUE(policy.SetComputeDtype(at::ScalarType::Undefined).ok());
  EXPECT_GT(Preferred(policy) - before, 2.0) << "before " << before;
}

// The first update of bfloat16 mixed precision points where the float32 one does. AdamW in
// its linear regime (ε far above every |g|, as in memory_bounded_step_test.cc) makes the
// update proportional to the gradient, so this compares the two gradients: bfloat16
// matmuls carry ~0.4% relative error per operation, which leaves the cosine near 1, where
// a lost gradient route or a wrongly scaled cast would not.
TEST(MixedPrecisionTest, Bf16UpdateFollowsTheFloat32One) {
  auto update = [](bool bf16) {
    TrainerOptions options;
    options.bf16_mixed = bf16;
    options.recompute_old_logprobs = true;
    options.optimizer.learning_rate = 1e-2;
    options.optimizer.epsilon = 1e3;
    options.loss.beta = 0.1;
    Transformer policy(Config(), 11);
    const std::vector<at::Tensor> before = Snapshot(policy);
    auto trainer = GrpoTrainer::Create(&policy, options);
    EXPECT_TRUE(trainer.ok());
    EXPECT_TRUE((*trainer)->Step(Preference()).ok());
    std::vector<at::Tensor> moved;
    const std::vector<at::Tensor> after = Snapshot(policy);
    for (size_t i = 0; i < after.size(); ++i)
      moved.push_back((after[i] - before[i]).to(at::kDouble).reshape({-1}));
    return at::cat(moved);
  };
  const at::Tensor wide = update(false), mixed = update(true);
  const double cosine =
      (wide.dot(mixed) / (wide.norm() * mixed.norm())).item<double>();
  EXPECT_GT(cosine, 0.999);  // 0.99999 measured
}

// Two prompts, four samples each, drawn from `sampler` (six tokens each, no stop), scored
// so that every group has spread.
std::vector<ScoredGroup> Sampled(const Transformer& sampler) {
  SamplingOptions sampling;
  sampling.max_new_tokens = 6;
  sampling.stop_token = -1;
  sampling.seed = 4;
  const std::vector<std::vector<int32_t>> prompts{{5, 6, 7}, {5, 6, 7}, {5, 6, 7}, {5, 6, 7},
                                                  {8, 9}, {8, 9}, {8, 9}, {8, 9}};
  auto result = Sample(sampler, prompts, sampling);
  EXPECT_TRUE(result.ok()) << result.status();
  std::vector<ScoredGroup> groups(2);
  for (int g = 0; g < 2; ++g) {
    groups[g].prompt_id = std::to_string(g);
    groups[g].prompt = prompts[4 * g];
    groups[g].sampling_precision = sampler.sampling_precision();
    for (int i = 0; i < 4; ++i) {
      ScoredSample s;
      s.completion = result->Completion(4 * g + i);
      s.logprobs = result->CompletionLogprobs(4 * g + i);
      s.reward = i % 2;
      groups[g].samples.push_back(s);
    }
  }
  return groups;
}

absl::StatusOr<StepMetrics> TrainOn(const std::vector<ScoredGroup>& groups, double tis_cap) {
  Transformer learner(Config(), 11);
  TrainerOptions options;
  options.recompute_old_logprobs = true;
  options.tis_cap = tis_cap;
  auto trainer = GrpoTrainer::Create(&learner, options);
  if (!trainer.ok()) return trainer.status();
  return (*trainer)->Step(groups);
}

// Recomputed log-probs equal the sampler's when both run in float32 (to float32 rounding
// of a different batch shape: ~1e-7), and differ by bfloat16's rounding (~4e-4 for this
// model) when the
// worker samples in bfloat16. The KL is then positive, and with TIS capped at 1 the tokens
// the learner finds likelier than the sampler did are truncated: some, not all.
TEST(MismatchTest, RecomputedLogprobsSeeTheSamplersPrecision) {
  const Transformer sampler(Config(), 11);
  auto same = TrainOn(Sampled(sampler), 0);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_LT(same->logprob_mismatch, 1e-5) << same->logprob_mismatch;
  EXPECT_LT(same->sampler_kl, 1e-9) << same->sampler_kl;

  Transformer bf16(Config(), 11);
  ASSERT_TRUE(bf16.To(at::kCPU, at::kBFloat16).ok());
  auto mixed = TrainOn(Sampled(bf16), 1.0);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_GT(mixed->logprob_mismatch, 1e-4) << mixed->logprob_mismatch;
  EXPECT_GT(mixed->sampler_kl, 1e-9) << mixed->sampler_kl;
  EXPECT_GT(mixed->tis_truncated_fraction, 0);
  EXPECT_LT(mixed->tis_truncated_fraction, 1);
}

// The stamp a sampler gives its groups names what its log-probs were computed in.
TEST(MismatchTest, ASamplerStampsItsPrecision) {
  Transformer model(Config(), 11);
  EXPECT_EQ(model.sampling_precision(), v1::COMPUTE_PRECISION_FLOAT32);
  ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kBFloat16).ok());
  EXPECT_EQ(model.sampling_precision(), v1::COMPUTE_PRECISION_FLOAT32_BF16_MATMULS);
  EXPECT_EQ(model.training_precision(), v1::COMPUTE_PRECISION_FLOAT32);  // autograd: float32
  ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kFloat).ok());
  ASSERT_TRUE(model.SetComputeDtype(at::kBFloat16).ok());  // a bfloat16-mixed learner
  EXPECT_EQ(model.training_precision(), v1::COMPUTE_PRECISION_BFLOAT16);
  ASSERT_TRUE(model.SetComputeDtype(at::ScalarType::Undefined).ok());
  ASSERT_TRUE(model.To(at::kCPU, at::kBFloat16).ok());
  EXPECT_EQ(model.sampling_precision(), v1::COMPUTE_PRECISION_BFLOAT16);
  EXPECT_EQ(Sampled(model)[0].sampling_precision, v1::COMPUTE_PRECISION_BFLOAT16);
}

// The parameters' change after one step from the same float32 learner. AdamW in its linear
// regime (ε far above every |g|), so the change is proportional to the gradient and small
// differences in π_old show in it rather than vanishing in Adam's sign-like first update.
struct AutoStep {
  at::Tensor update;  // float64, all parameters flattened
  StepMetrics metrics;
};
AutoStep StepWith(const std::vector<ScoredGroup>& groups, bool recompute, bool automatic,
                  double tis_cap = 0) {
  Transformer learner(Config(), 11);
  const std::vector<at::Tensor> before = Snapshot(learner);
  TrainerOptions options;
  options.recompute_old_logprobs = recompute;
  options.recompute_on_precision_mismatch = automatic;
  options.tis_cap = tis_cap;
  options.optimizer.learning_rate = 1e-2;
  options.optimizer.epsilon = 1e3;
  options.loss.beta = 0;
  auto trainer = GrpoTrainer::Create(&learner, options);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  auto m = (*trainer)->Step(groups);
  EXPECT_TRUE(m.ok()) << m.status();
  std::vector<at::Tensor> moved;
  const std::vector<at::Tensor> after = Snapshot(learner);
  for (size_t i = 0; i < after.size(); ++i)
    moved.push_back((after[i] - before[i]).to(at::kDouble).reshape({-1}));
  return {at::cat(moved), m.ok() ? *m : StepMetrics()};
}

double RelativeDistance(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

// OLD_LOGPROBS_AUTO: a float32 learner keeps the sampler's log-probs for a float32 worker's
// groups and takes its own for groups stamped with another precision, group by group.
// Here the second group is stamped bfloat16 and its sampler log-probs are 0.3 nats off (a
// sampler far from the learner), so using them or not changes the update by O(10%), while
// the reference (the learner's own log-probs written into that group beforehand, then
// SAMPLER) differs from AUTO only by float32 rounding of another batch order (~1e-6).
TEST(MismatchTest, AutoRecomputesExactlyTheGroupsOfAnotherPrecision) {
  const Transformer sampler(Config(), 11);
  std::vector<ScoredGroup> groups = Sampled(sampler);
  ASSERT_EQ(groups[0].sampling_precision, v1::COMPUTE_PRECISION_FLOAT32);
  groups[1].sampling_precision = v1::COMPUTE_PRECISION_BFLOAT16;
  for (ScoredSample& s : groups[1].samples)
    for (float& lp : s.logprobs) lp -= 0.3f;

  // Unstamped and same-precision groups keep the sampler's: AUTO is then SAMPLER exactly.
  std::vector<ScoredGroup> float32_only{groups[0]};
  const AutoStep kept = StepWith(float32_only, false, true);
  EXPECT_EQ(kept.metrics.recomputed_old_fraction, 0);
  EXPECT_TRUE(at::equal(kept.update, StepWith(float32_only, false, false).update));
  std::vector<ScoredGroup> unstamped{groups[1]};
  unstamped[0].sampling_precision = v1::COMPUTE_PRECISION_UNSPECIFIED;
  EXPECT_EQ(StepWith(unstamped, false, true).metrics.recomputed_old_fraction, 0);
  // Groups all of another precision: AUTO is RECOMPUTE exactly.
  std::vector<ScoredGroup> bf16_only{groups[1]};
  const AutoStep all = StepWith(bf16_only, false, true);
  EXPECT_EQ(all.metrics.recomputed_old_fraction, 1);
  EXPECT_TRUE(at::equal(all.update, StepWith(bf16_only, true, false).update));

  // Both: only the second group's π_old is the learner's.
  const AutoStep mixed = StepWith(groups, false, true);
  EXPECT_EQ(mixed.metrics.recomputed_old_fraction, 0.5);
  std::vector<ScoredGroup> reference = groups;
  {
    Transformer learner(Config(), 11);
    at::NoGradGuard no_grad;
    std::vector<std::vector<int32_t>> prompts, completions;
    for (const ScoredSample& s : groups[1].samples) {
      prompts.push_back(groups[1].prompt);
      completions.push_back(s.completion);
    }
    auto batch = PackBatch(prompts, completions, 0, learner.config().vocab_size);
    ASSERT_TRUE(batch.ok());
    const at::Tensor own = CompletionLogprobs(learner, *batch, 1.0).contiguous();
    for (size_t i = 0; i < reference[1].samples.size(); ++i) {
      std::vector<float>& lp = reference[1].samples[i].logprobs;
      for (size_t t = 0; t < lp.size(); ++t) lp[t] = own[i][t].item<float>();
    }
  }
  const at::Tensor expected = StepWith(reference, false, false).update;
  const at::Tensor sampler_only = StepWith(groups, false, false).update;
  EXPECT_LT(RelativeDistance(mixed.update, expected), 1e-4);
  EXPECT_GT(RelativeDistance(sampler_only, expected), 1e-2);  // the test can tell them apart

  // TIS weighs the recomputed group only: its every token has π_old / π_sampler = e^0.3 > 1
  // and is truncated at 1, the float32 group's (ratio 1 ± rounding) never counted.
  EXPECT_EQ(StepWith(groups, false, true, /*tis_cap=*/1.0).metrics.tis_truncated_fraction,
            0.5);
}

}  // namespace
}  // namespace grpo
