// PPO with a critic (GrpoTrainer with options.ppo): the wiring of the critic's values,
// GAE and whitening into the step, checked where it is exact; micro-batches and learner
// ranks against the one-shot step (float64, AdamW in its linear regime as in
// memory_bounded_step_test.cc); the critic learning the returns; bit-identical resume; and
// the critic's starting points (the policy, a reward model) with their errors.
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/batch.h"
#include "learner/grpo_trainer.h"
#include "learner/value_model.h"
#include "rewards/reward_model.h"
#include "tests/testing/on_ranks.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

double MaxAbs(const at::Tensor& t) { return t.abs().max().item<double>(); }

ModelConfig Config() {
  return testing_util::SmallModel({.d_model = 32, .n_layers = 2, .n_heads = 4,
                                   .n_kv_heads = 2, .ffn_hidden = 48,
                                   .tie_embeddings = false});
}

// Three prompts of different lengths, four samples each of lengths 1..6 and rewards that
// differ within each group; old log-probs away from the model's, so ratios clip.
std::vector<ScoredGroup> Batch() {
  std::vector<ScoredGroup> groups;
  for (int g = 0; g < 3; ++g) {
    ScoredGroup group;
    group.prompt_id = "p" + std::to_string(g);
    group.prompt.assign(2 + 2 * g, static_cast<int32_t>(5 + g));
    for (int i = 0; i < 4; ++i) {
      ScoredSample s;
      s.completion.assign(1 + (g * 5 + i * 3) % 6, 9 + i);
      s.logprobs.assign(s.completion.size(), -1.5f - 0.4f * i);
      s.reward = (i * 7 + g) % 3;
      group.samples.push_back(s);
    }
    groups.push_back(group);
  }
  return groups;
}

TrainerOptions PpoOptions() {
  TrainerOptions o;
  o.ppo.enabled = true;
  o.ppo.gamma = 0.9;
  o.ppo.lambda = 0.8;
  o.ppo.kl_coef = 0.1;
  o.ppo.value_clip = 0.05;
  o.loss.beta = 0;
  o.loss.aggregation = Aggregation::kTokenMean;
  o.optimizer.learning_rate = 1e-2;
  o.ppo.optimizer = o.optimizer;
  o.max_policy_lag = 100;  // the same batch may feed several steps
  return o;
}

std::vector<at::Tensor> Clone(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : params) out.push_back(p.detach().clone());
  return out;
}

struct Outcome {
  std::vector<at::Tensor> policy_updates, critic_updates;
  StepMetrics metrics;
};

// `steps` steps of a fresh float64 policy (seed 7) and its critic; the updates of the last.
Outcome RunPpo(const TrainerOptions& options, int steps = 1) {
  Transformer model(Config(), 7);
  EXPECT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  auto trainer = GrpoTrainer::Create(&model, options);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  Outcome out;
  for (int s = 0; s < steps; ++s) {
    const std::vector<at::Tensor> policy = Clone(model.parameters());
    const std::vector<at::Tensor> critic = Clone((*trainer)->critic()->parameters());
    absl::StatusOr<StepMetrics> m = (*trainer)->Step(Batch());
    EXPECT_TRUE(m.ok()) << m.status();
    out.metrics = m.ok() ? *m : StepMetrics{};
    out.policy_updates.clear();
    out.critic_updates.clear();
    for (size_t i = 0; i < policy.size(); ++i)
      out.policy_updates.push_back(model.parameters()[i].detach() - policy[i]);
    for (size_t i = 0; i < critic.size(); ++i)
      out.critic_updates.push_back((*trainer)->critic()->parameters()[i].detach() - critic[i]);
  }
  return out;
}

// With a zero critic, β = 0 and γ = λ = 1, every token's return is its sample's reward and
// the first values are 0: the metrics show the critic's inputs exactly.
TEST(PpoTrainerTest, AZeroCriticSeesTheRewardAtEveryToken) {
  TrainerOptions o = PpoOptions();
  o.ppo.gamma = o.ppo.lambda = 1;
  o.ppo.kl_coef = 0;
  const Outcome out = RunPpo(o);
  double reward_tokens = 0, tokens = 0;
  for (const ScoredGroup& g : Batch())
    for (const ScoredSample& s : g.samples) {
      reward_tokens += s.reward * s.completion.size();
      tokens += s.completion.size();
    }
  EXPECT_TRUE(out.metrics.has_critic);
  EXPECT_EQ(out.metrics.value_mean, 0);
  EXPECT_NEAR(out.metrics.return_mean, reward_tokens / tokens, 1e-12);
  EXPECT_EQ(out.metrics.explained_variance, 0);  // 1 − Var(R)/Var(R)
  EXPECT_GT(out.metrics.value_loss, 0);
  EXPECT_EQ(out.metrics.kl, 0);  // the KL is in the reward, not the loss
  // Only the head can move at first (a zero head passes no gradient to the backbone).
  const size_t head = out.critic_updates.size() - 2;
  EXPECT_GT(MaxAbs(out.critic_updates[head]), 0);
  EXPECT_EQ(MaxAbs(out.critic_updates[0]), 0);
}

// The second step (a trained critic, whitening, value clipping, the KL penalty) in
// micro-batches with chunked log-probs and checkpointed layers, and over two learner
// ranks, equals the one-shot step.
TEST(PpoTrainerTest, MicroBatchesAndTwoRanksGiveTheOneShotStep) {
  TrainerOptions options = PpoOptions();
  options.optimizer.epsilon = options.ppo.optimizer.epsilon = 1e3;  // linear update
  options.inner_iterations = 2;
  // Linear updates are small: a clip this tight binds in the second pass.
  options.ppo.value_clip = 1e-7;
  const Outcome one_shot = RunPpo(options, 2);
  ASSERT_NE(one_shot.metrics.value_mean, 0);
  {
    TrainerOptions unclipped = options;
    unclipped.ppo.value_clip = 1e3;
    const Outcome free = RunPpo(unclipped, 2);  // the comparison covers value clipping
    ASSERT_GT(MaxAbs(free.critic_updates.back() - one_shot.critic_updates.back()), 0);
  }

  TrainerOptions bounded_options = options;
  bounded_options.micro_batch_tokens = 16;
  bounded_options.logprob_chunk = 3;
  bounded_options.activation_checkpointing = true;
  const Outcome bounded = RunPpo(bounded_options, 2);

  Outcome per_rank[2];
  testing_util::OnRanks(2, [&](int rank, LearnerGroup& group) {
    TrainerOptions o = options;
    o.group = &group;
    o.shard_optimizer = true;
    per_rank[rank] = RunPpo(o, 2);
  });
  const Outcome& ranked = per_rank[0];
  for (size_t i = 0; i < ranked.critic_updates.size(); ++i)  // the ranks' critics agree
    EXPECT_TRUE(at::equal(per_rank[1].critic_updates[i], ranked.critic_updates[i])) << i;

  auto expect_same = [](const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want,
                        const char* what) {
    double largest = 0;
    for (const at::Tensor& u : want) largest = std::max(largest, MaxAbs(u));
    ASSERT_GT(largest, 0) << what;
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_LE(MaxAbs(got[i] - want[i]), 1e-9 * largest + 8 * std::numeric_limits<double>::epsilon())
          << what << " parameter " << i;
  };
  for (const auto& [other, name] : {std::pair{&bounded, "micro-batched"}, {&ranked, "2 ranks"}}) {
    SCOPED_TRACE(name);
    expect_same(other->policy_updates, one_shot.policy_updates, "policy");
    expect_same(other->critic_updates, one_shot.critic_updates, "critic");
    const StepMetrics &a = one_shot.metrics, &b = other->metrics;
    for (auto [got, want, metric] :
         {std::tuple{b.loss, a.loss, "loss"}, {b.value_loss, a.value_loss, "value_loss"},
          {b.value_clip_fraction, a.value_clip_fraction, "value_clip_fraction"},
          {b.value_mean, a.value_mean, "value_mean"}, {b.return_mean, a.return_mean, "return_mean"},
          {b.explained_variance, a.explained_variance, "explained_variance"},
          {b.grad_norm, a.grad_norm, "grad_norm"}})
      EXPECT_NEAR(got, want, 1e-10 * std::max(1.0, std::abs(want))) << metric;
  }
}

// On a fixed batch whose reward is its prompt's (so every state can predict its return)
// the critic fits the returns: its loss falls and it explains most of their variance.
TEST(PpoTrainerTest, TheCriticLearnsTheReturns) {
  TrainerOptions o = PpoOptions();
  o.ppo.value_clip = 1e3;  // plain regression
  o.ppo.kl_coef = 0;
  o.ppo.gamma = o.ppo.lambda = 1;  // returns = rewards, whatever the values
  o.optimizer.learning_rate = 0;   // a fixed policy
  o.ppo.optimizer.learning_rate = 3e-3;
  std::vector<ScoredGroup> batch = Batch();
  for (size_t g = 0; g < batch.size(); ++g)
    for (ScoredSample& s : batch[g].samples) s.reward = static_cast<double>(g);
  Transformer model(Config(), 7);
  ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  auto trainer = GrpoTrainer::Create(&model, o);
  ASSERT_TRUE(trainer.ok());
  std::vector<StepMetrics> steps;
  for (int s = 0; s < 60; ++s) {
    absl::StatusOr<StepMetrics> m = (*trainer)->Step(batch);
    ASSERT_TRUE(m.ok()) << m.status();
    steps.push_back(*m);
  }
  EXPECT_LT(steps.back().value_loss, 0.05 * steps.front().value_loss);
  EXPECT_GT(steps.back().explained_variance, 0.9);
}

// Save at step 1, train step 2; a fresh trainer loaded from step 1 trains the same step 2
// bit for bit, critic included.
TEST(PpoTrainerTest, ResumeFromACheckpointIsBitIdentical) {
  const std::string dir = testing::TempDir() + "/ppo_resume." + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const TrainerOptions o = PpoOptions();
  Transformer model(Config(), 7);
  auto trainer = GrpoTrainer::Create(&model, o);
  ASSERT_TRUE(trainer.ok());
  ASSERT_TRUE((*trainer)->Step(Batch()).ok());
  ASSERT_TRUE(model.Save(dir + "/model.pt").ok());
  ASSERT_TRUE((*trainer)->Save(dir).ok());
  EXPECT_TRUE(std::filesystem::exists(dir + "/critic.pt"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/critic_optimizer.pt"));
  ASSERT_TRUE((*trainer)->Step(Batch()).ok());
  ASSERT_TRUE((*trainer)->Step(Batch()).ok());

  Transformer resumed(Config(), 8);
  ASSERT_TRUE(resumed.Load(dir + "/model.pt").ok());
  auto again = GrpoTrainer::Create(&resumed, o);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->Load(dir).ok());
  ASSERT_TRUE((*again)->Step(Batch()).ok());
  ASSERT_TRUE((*again)->Step(Batch()).ok());  // equal AdamW moments show here
  for (size_t i = 0; i < model.parameters().size(); ++i)
    EXPECT_TRUE(at::equal(model.parameters()[i], resumed.parameters()[i])) << "policy " << i;
  const auto a = (*trainer)->critic()->parameters(), b = (*again)->critic()->parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << "critic " << i;

  // A GRPO checkpoint has no critic: refused, naming why.
  TrainerOptions grpo;
  Transformer plain(Config(), 7);
  auto grpo_trainer = GrpoTrainer::Create(&plain, grpo);
  ASSERT_TRUE((*grpo_trainer)->Step(Batch()).ok());
  std::filesystem::create_directories(dir + "/grpo");
  ASSERT_TRUE((*grpo_trainer)->Save(dir + "/grpo").ok());
  Transformer other(Config(), 7);
  auto ppo = GrpoTrainer::Create(&other, o);
  absl::Status refused = (*ppo)->Load(dir + "/grpo");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("critic.pt"));
}

// A critic from a reward model reads the reward model's scores at the positions that
// predict each completion token (the sequence's token p − 1 + t for token t).
TEST(PpoTrainerTest, ACriticFromARewardModelScoresWhereItPredicts) {
  const std::string dir = testing::TempDir() + "/ppo_rm." + std::to_string(getpid());
  RewardModel rm(Config(), 21);
  {
    at::NoGradGuard no_grad;
    const_cast<at::Tensor&>(rm.head_weight()).normal_(0, 1);  // a head that reads something
    const_cast<at::Tensor&>(rm.head_bias()).fill_(0.3);
  }
  ASSERT_TRUE(rm.Save(dir).ok());
  Transformer policy(Config(), 7);
  auto critic = ValueModel::FromRewardModel(dir, policy);
  ASSERT_TRUE(critic.ok()) << critic.status();

  std::vector<std::vector<int32_t>> prompts, completions, sequences;
  std::vector<std::vector<int>> positions;
  for (const ScoredGroup& g : Batch())
    for (const ScoredSample& s : g.samples) {
      prompts.push_back(g.prompt);
      completions.push_back(s.completion);
      sequences.push_back(g.prompt);
      sequences.back().insert(sequences.back().end(), s.completion.begin(), s.completion.end());
      positions.emplace_back();
      for (size_t t = 0; t < s.completion.size(); ++t)
        positions.back().push_back(static_cast<int>(g.prompt.size() - 1 + t));
    }
  auto batch = PackBatch(prompts, completions, 0, Config().vocab_size);
  ASSERT_TRUE(batch.ok());
  at::NoGradGuard no_grad;
  const at::Tensor values = (*critic)->Values(*batch);
  auto scores = rm.ScoreAt(sequences, positions);
  ASSERT_TRUE(scores.ok());
  for (size_t i = 0; i < scores->size(); ++i)
    for (size_t t = 0; t < (*scores)[i].size(); ++t)
      EXPECT_NEAR(values[i][t].item<double>(), (*scores)[i][t], 1e-5) << i << "," << t;
  EXPECT_EQ(values[0].narrow(0, completions[0].size(), values.size(1) - completions[0].size())
                .abs().sum().item<double>(), 0);  // nothing off the mask

  // Errors name the setting and the directory.
  absl::StatusOr<std::unique_ptr<ValueModel>> missing =
      ValueModel::FromRewardModel(dir + "/nowhere", policy);
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("ppo.critic_init"));
  ModelConfig wider = Config();
  wider.d_model = 48;
  Transformer other(wider, 7);
  absl::StatusOr<std::unique_ptr<ValueModel>> mismatched =
      ValueModel::FromRewardModel(dir, other);
  EXPECT_FALSE(mismatched.ok());
  EXPECT_THAT(mismatched.status().message(), HasSubstr("not of the policy's shape"));
}

}  // namespace
}  // namespace grpo
