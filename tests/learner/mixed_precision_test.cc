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

}  // namespace
}  // namespace grpo
