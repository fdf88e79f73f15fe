#include "learner/grpo_trainer.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/batch.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

ModelConfig TinyConfig() {
  return testing_util::SmallModel({.d_model = 16, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                                   .ffn_hidden = 24, .vocab_size = 16, .max_seq_len = 32,
                                   .tie_embeddings = false});
}

// Two groups of different prompt lengths and completion lengths, so the batch has left
// and right padding. Token 0 (padding) never appears as a real token.
std::vector<ScoredGroup> Groups(double reward_offset = 0) {
  std::vector<ScoredGroup> groups;
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> token(3, 15), length(1, 6);
  for (int g = 0; g < 2; ++g) {
    ScoredGroup group;
    group.prompt_id = "p" + std::to_string(g);
    group.prompt.assign(2 + 3 * g, 0);
    for (auto& t : group.prompt) t = token(rng);
    for (int i = 0; i < 4; ++i) {
      ScoredSample s;
      s.completion.resize(length(rng));
      for (auto& t : s.completion) t = token(rng);
      s.logprobs.assign(s.completion.size(), -2.5f);
      s.reward = i % 2 + reward_offset * i;
      group.samples.push_back(s);
    }
    groups.push_back(group);
  }
  return groups;
}

// One row per sample: its group's prompt and its completion.
void Flatten(const std::vector<ScoredGroup>& groups, std::vector<std::vector<int32_t>>* prompts,
             std::vector<std::vector<int32_t>>* completions) {
  for (const auto& g : groups) {
    for (const auto& s : g.samples) {
      prompts->push_back(g.prompt);
      completions->push_back(s.completion);
    }
  }
}

std::vector<at::Tensor> Snapshot(const Transformer& m) {
  std::vector<at::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

bool SameParameters(const Transformer& m, const std::vector<at::Tensor>& snapshot) {
  auto params = m.parameters();
  for (size_t i = 0; i < params.size(); ++i)
    if (!at::equal(params[i], snapshot[i])) return false;
  return true;
}

// The learner's loss as a function of the model: what the finite differences probe.
at::Tensor Loss(const Transformer& model, const TokenBatch& batch, const at::Tensor& old_lp,
                const at::Tensor& adv, const at::Tensor& ref_lp) {
  LossOptions o;
  o.beta = 0.1;
  o.epsilon_low = o.epsilon_high = 10;  // keep every ratio inside the clip: differentiable
  return GrpoLoss(CompletionLogprobs(model, batch, 1.0), old_lp, ref_lp, adv, batch.mask, o)
      .loss;
}

TEST(GrpoGradientTest, FiniteDifferencesMatchBackprop) {
  Transformer model(TinyConfig(), 5);
  // Float64 parameters so central differences are accurate.
  for (at::Tensor p : model.parameters()) p.set_data(p.detach().to(at::kDouble));
  const auto groups = Groups();
  std::vector<std::vector<int32_t>> prompts, completions;
  Flatten(groups, &prompts, &completions);
  auto batch = PackBatch(prompts, completions, 0, 16);
  ASSERT_TRUE(batch.ok());
  at::manual_seed(2);
  const auto shape = batch->mask.sizes();
  at::Tensor old_lp = -at::rand(shape, at::kDouble) - 2;
  at::Tensor ref_lp = -at::rand(shape, at::kDouble) - 2;
  at::Tensor adv = at::randn(shape, at::kDouble);

  at::Tensor loss = Loss(model, *batch, old_lp, adv, ref_lp);
  loss.backward();
  std::mt19937 rng(7);
  int checked = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    at::Tensor flat = p.detach().view({-1});
    at::Tensor grad = p.grad().view({-1});
    std::uniform_int_distribution<int64_t> pick(0, flat.numel() - 1);
    for (int trial = 0; trial < 3; ++trial) {
      const int64_t i = pick(rng);
      const double h = 1e-5, saved = flat[i].item<double>();
      double up, down;
      {
        at::NoGradGuard no_grad;
        flat[i].fill_(saved + h);
        up = Loss(model, *batch, old_lp, adv, ref_lp).item<double>();
        flat[i].fill_(saved - h);
        down = Loss(model, *batch, old_lp, adv, ref_lp).item<double>();
        flat[i].fill_(saved);
      }
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grad[i].item<double>(), numeric, 1e-6 + 1e-4 * std::abs(numeric))
          << name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

TEST(GrpoGradientTest, PromptAndPaddingCarryNoLoss) {
  Transformer model(TinyConfig(), 6);
  // Float64: the batched and the single-row pass have different shapes (padding, softmax
  // lengths), so only their rounding differs, ~1e-15 here; a leak of padding or prompt
  // predictions into the loss moves a log-prob by 1e-3 or more.
  ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  const auto groups = Groups();
  std::vector<std::vector<int32_t>> prompts, completions;
  Flatten(groups, &prompts, &completions);
  auto batch = PackBatch(prompts, completions, 0, 16);
  ASSERT_TRUE(batch.ok());
  at::Tensor lp = CompletionLogprobs(model, *batch, 1.0);

  // Each row alone, unpadded: the completion log-probs must be the same numbers, so
  // neither padding nor the prompt's own predictions enter the loss.
  at::NoGradGuard no_grad;
  for (size_t row = 0; row < prompts.size(); ++row) {
    std::vector<int64_t> seq(prompts[row].begin(), prompts[row].end());
    seq.insert(seq.end(), completions[row].begin(), completions[row].end());
    at::Tensor ids = at::tensor(seq, at::kLong).view({1, -1});
    at::Tensor logp = at::log_softmax(model.Logits(model.Forward(ids, at::Tensor())), -1);
    for (size_t j = 0; j < completions[row].size(); ++j) {
      EXPECT_NEAR(lp[row][j].item<double>(),
                  logp[0][prompts[row].size() - 1 + j][completions[row][j]].item<double>(),
                  1e-10);
    }
  }
}

TEST(GrpoGradientTest, PaddingEmbeddingGetsNoGradient) {
  Transformer model(TinyConfig(), 6);
  auto batch = PackBatch({{3, 4}, {5, 6, 7, 8}}, {{9}, {10, 11, 12}}, 0, 16);
  ASSERT_TRUE(batch.ok());
  at::Tensor lp = CompletionLogprobs(model, *batch, 1.0);
  (-(lp * batch->mask).sum()).backward();
  at::Tensor embedding_grad = model.named_parameters()[0].second.grad();
  EXPECT_EQ(embedding_grad[0].abs().sum().item<double>(), 0.0);  // the pad token's row
  EXPECT_GT(embedding_grad[3].abs().sum().item<double>(), 0.0);  // a prompt token's row
}

TEST(PackBatchTest, PositionsAreTheMasksCompletionTokens) {
  auto batch = PackBatch({{3, 4}, {5, 6, 7, 8}, {1}}, {{9}, {10, 11, 12}, {13, 14}}, 0, 16);
  ASSERT_TRUE(batch.ok());
  // M = 3: row 0's one token, row 1's three, row 2's two.
  EXPECT_TRUE(at::equal(batch->positions, at::tensor({0, 3, 4, 5, 6, 7}, at::kLong)));
  EXPECT_TRUE(at::equal(batch->positions, batch->mask.reshape({-1}).nonzero().squeeze(1)));
  // The chunked log-probs select by them; without them (a batch built by hand) by the mask.
  Transformer model(TinyConfig(), 6);
  at::NoGradGuard no_grad;
  const at::Tensor with = CompletionLogprobsChunked(model, *batch, 1.0, 2).logprobs;
  TokenBatch by_mask = *batch;
  by_mask.positions = at::Tensor();
  EXPECT_TRUE(at::equal(with, CompletionLogprobsChunked(model, by_mask, 1.0, 2).logprobs));
  EXPECT_TRUE(at::allclose(with, CompletionLogprobs(model, *batch, 1.0) * batch->mask, 1e-5,
                           1e-6));
}

TrainerOptions Options() {
  TrainerOptions o;
  o.optimizer.learning_rate = 1e-2;
  return o;
}

TEST(GrpoTrainerTest, StepUpdatesPolicyAndVersion) {
  Transformer model(TinyConfig(), 7);
  auto trainer = GrpoTrainer::Create(&model, Options());
  ASSERT_TRUE(trainer.ok());
  const auto before = Snapshot(model);
  auto m = (*trainer)->Step(Groups());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->trained);
  EXPECT_EQ(m->policy_version, 1);
  EXPECT_EQ((*trainer)->policy_version(), 1);
  EXPECT_FALSE(SameParameters(model, before));
  EXPECT_GT(m->grad_norm, 0);
  EXPECT_NEAR(m->reward_mean, 0.5, 1e-12);
  EXPECT_EQ(m->samples, 8);
  EXPECT_GT(m->entropy, 0);
}

TEST(GrpoTrainerTest, BadGroupChangesNothing) {
  Transformer model(TinyConfig(), 8);
  auto trainer = GrpoTrainer::Create(&model, Options());
  ASSERT_TRUE(trainer.ok());
  const auto before = Snapshot(model);
  auto groups = Groups();
  groups[1].samples[2].reward = std::nan("");
  auto m = (*trainer)->Step(groups);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), testing::HasSubstr("p1"));
  groups = Groups();
  groups[0].samples[0].completion.push_back(99);  // outside the vocabulary
  groups[0].samples[0].logprobs.push_back(-1);
  EXPECT_FALSE((*trainer)->Step(groups).ok());
  EXPECT_TRUE(SameParameters(model, before));
  EXPECT_EQ((*trainer)->policy_version(), 0);
}

// An update whose loss is not finite is skipped and counted, leaving the weights and the
// optimiser as they were; a run of them fails the step with a clear error.
TEST(GrpoTrainerTest, NonFiniteLossSkipsTheUpdateAndCountsIt) {
  Transformer model(TinyConfig(), 9);
  auto trainer = GrpoTrainer::Create(&model, Options());
  ASSERT_TRUE(trainer.ok());
  const auto before = Snapshot(model);
  // A sampler log-prob of -1e30 makes the ratio infinite; with a negative advantage the
  // clipped objective keeps the infinity and the loss is not finite.
  std::vector<ScoredGroup> poisoned = Groups();
  for (ScoredSample& s : poisoned[0].samples) s.logprobs.assign(s.completion.size(), -1e30f);
  auto m = (*trainer)->Step(poisoned);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->trained);
  EXPECT_TRUE(m->skipped_nonfinite);
  EXPECT_EQ(m->nonfinite_skips, 1);
  EXPECT_TRUE(SameParameters(model, before));
  EXPECT_EQ((*trainer)->policy_version(), 0);
  EXPECT_EQ((*trainer)->step(), 0);

  // The next good batch trains as if nothing had happened: same parameters as a trainer
  // that never saw the poisoned batch.
  Transformer twin(TinyConfig(), 9);
  auto clean = GrpoTrainer::Create(&twin, Options());
  ASSERT_TRUE(clean.ok());
  auto good = (*trainer)->Step(Groups());
  ASSERT_TRUE(good.ok()) << good.status();
  ASSERT_TRUE((*clean)->Step(Groups()).ok());
  EXPECT_TRUE(good->trained);
  EXPECT_EQ(good->nonfinite_skips, 1);
  EXPECT_TRUE(SameParameters(model, Snapshot(twin)));

  for (ScoredGroup& g : poisoned)
    for (ScoredSample& s : g.samples) s.policy_version = 1;  // fresh, not dropped as stale
  absl::Status last;
  int calls = 0;
  for (; calls < 10 && last.ok(); ++calls) last = (*trainer)->Step(poisoned).status();
  EXPECT_EQ(calls, 8);
  EXPECT_EQ(last.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(last.message()), testing::HasSubstr("non-finite"));
  EXPECT_EQ((*trainer)->policy_version(), 1);
}

TEST(GrpoTrainerTest, ZeroVarianceGroupsAreFilteredWhenAsked) {
  Transformer model(TinyConfig(), 9);
  TrainerOptions o = Options();
  o.filter_zero_variance_groups = true;
  auto trainer = GrpoTrainer::Create(&model, o);
  ASSERT_TRUE(trainer.ok());
  auto groups = Groups();
  for (auto& g : groups)
    for (auto& s : g.samples) s.reward = 1.0;
  const auto before = Snapshot(model);
  auto m = (*trainer)->Step(groups);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->trained);
  EXPECT_EQ(m->zero_variance_fraction, 1.0);
  EXPECT_TRUE(SameParameters(model, before));
  EXPECT_EQ((*trainer)->policy_version(), 0);
}

TEST(GrpoTrainerTest, StaleSamplesAreDropped) {
  Transformer model(TinyConfig(), 10);
  auto trainer = GrpoTrainer::Create(&model, Options());
  ASSERT_TRUE(trainer.ok());
  ASSERT_TRUE((*trainer)->Step(Groups()).ok());
  ASSERT_TRUE((*trainer)->Step(Groups()).ok());  // version 2; samples still say version 0
  auto m = (*trainer)->Step(Groups());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->dropped_stale_samples, 8);
  EXPECT_FALSE(m->trained);
}

TEST(GrpoTrainerTest, ReferenceRefreshMakesKlZero) {
  Transformer model(TinyConfig(), 11);
  TrainerOptions o = Options();
  o.reference_refresh_steps = 1;
  o.max_policy_lag = 100;
  auto trainer = GrpoTrainer::Create(&model, o);
  ASSERT_TRUE(trainer.ok());
  ASSERT_TRUE((*trainer)->Step(Groups()).ok());
  auto second = (*trainer)->Step(Groups());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->kl, 0.0);

  // Without refresh the policy has moved away from the reference.
  Transformer other(TinyConfig(), 11);
  o.reference_refresh_steps = 0;
  auto frozen = GrpoTrainer::Create(&other, o);
  ASSERT_TRUE((*frozen)->Step(Groups()).ok());
  auto moved = (*frozen)->Step(Groups());
  ASSERT_TRUE(moved.ok());
  EXPECT_GT(moved->kl, 0.0);
}

TEST(GrpoTrainerTest, InnerIterationsAndSaveLoad) {
  Transformer model(TinyConfig(), 12);
  TrainerOptions o = Options();
  o.inner_iterations = 3;
  auto trainer = GrpoTrainer::Create(&model, o);
  ASSERT_TRUE(trainer.ok());
  ASSERT_TRUE((*trainer)->Step(Groups()).ok());
  const std::string dir = testing::TempDir();
  ASSERT_TRUE((*trainer)->Save(dir).ok());
  Transformer copy(TinyConfig(), 13);
  auto restored = GrpoTrainer::Create(&copy, o);
  ASSERT_TRUE((*restored)->Load(dir).ok());
  EXPECT_EQ((*restored)->policy_version(), 1);
  EXPECT_EQ((*restored)->step(), 1);
}


// Resume is exact: save at step N, run N+1; load N into a fresh model and trainer, run the
// same N+1: parameters and optimizer state come out bit-identical.
TEST(GrpoTrainerTest, ResumeFromACheckpointIsBitIdentical) {
  TrainerOptions o = Options();
  o.max_policy_lag = 100;  // the same groups feed every step
  const std::string dir = testing::TempDir() + "/resume_exact";
  std::filesystem::create_directories(dir + "/a");
  std::filesystem::create_directories(dir + "/b");
  Transformer model(TinyConfig(), 14);
  auto trainer = GrpoTrainer::Create(&model, o);
  ASSERT_TRUE(trainer.ok());
  ASSERT_TRUE((*trainer)->Step(Groups()).ok());
  ASSERT_TRUE(model.Save(dir + "/model.pt").ok());
  ASSERT_TRUE((*trainer)->Save(dir).ok());
  ASSERT_TRUE((*trainer)->Step(Groups()).ok());
  ASSERT_TRUE((*trainer)->Save(dir + "/a").ok());

  Transformer resumed(TinyConfig(), 15);  // other initial weights, all overwritten
  ASSERT_TRUE(resumed.Load(dir + "/model.pt").ok());
  auto again = GrpoTrainer::Create(&resumed, o);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->Load(dir).ok());
  ASSERT_TRUE((*again)->Step(Groups()).ok());
  ASSERT_TRUE((*again)->Save(dir + "/b").ok());

  EXPECT_TRUE(SameParameters(resumed, Snapshot(model)));
  EXPECT_EQ((*again)->policy_version(), (*trainer)->policy_version());
  auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  for (const char* file : {"reference.pt", "trainer_state.txt"}) {
    const std::string a = bytes(dir + "/a/" + file);
    EXPECT_FALSE(a.empty()) << file;
    EXPECT_TRUE(a == bytes(dir + "/b/" + file)) << file << " differs after resume";
  }
  // LibTorch keys optimizer state by tensor address, so optimizer.pt differs byte-wise
  // between two processes; equal moments show instead in one more identical step.
  ASSERT_TRUE((*trainer)->Step(Groups()).ok());
  ASSERT_TRUE((*again)->Step(Groups()).ok());
  EXPECT_TRUE(SameParameters(resumed, Snapshot(model)));
}

}  // namespace
}  // namespace grpo
