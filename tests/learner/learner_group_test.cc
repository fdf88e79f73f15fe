// Two learner ranks as two threads of this process (tests/testing/on_ranks.h).
#include "learner/learner_group.h"

#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <limits>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/grpo_trainer.h"
#include "learner/optimizer.h"
#include "tests/testing/on_ranks.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

using testing_util::OnRanks;

TEST(LearnerGroupTest, AllReduceSumsAndBroadcastCopies) {
  OnRanks(2, [](int rank, LearnerGroup& group) {
    EXPECT_EQ(group.world_size(), 2);
    std::vector<at::Tensor> tensors{at::full({3}, rank + 1.0), at::full({2, 2}, 10.0 * rank)};
    ASSERT_TRUE(group.AllReduceSum(tensors).ok());
    EXPECT_TRUE(at::equal(tensors[0], at::full({3}, 3.0)));
    EXPECT_TRUE(at::equal(tensors[1], at::full({2, 2}, 10.0)));
    std::vector<at::Tensor> b{at::full({4}, static_cast<double>(rank + 5))};
    ASSERT_TRUE(group.Broadcast(b, 1).ok());
    EXPECT_TRUE(at::equal(b[0], at::full({4}, 6.0)));
  });
}

std::vector<ScoredGroup> Batch() {
  std::vector<ScoredGroup> groups;
  for (int g = 0; g < 3; ++g) {
    ScoredGroup group;
    group.prompt_id = "p" + std::to_string(g);
    group.prompt = {5, 6, static_cast<int32_t>(7 + g)};
    for (int i = 0; i < 4; ++i) {
      ScoredSample s;
      s.completion.assign(1 + (g + i) % 4, 9 + i);
      s.logprobs.assign(s.completion.size(), -2.0f - 0.1f * i);
      s.reward = (i * 7 + g) % 3;
      group.samples.push_back(s);
    }
    groups.push_back(group);
  }
  return groups;
}

std::vector<at::Tensor> Parameters(const Transformer& m) {
  std::vector<at::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

// What one step moved each parameter by.
std::vector<at::Tensor> Updates(const Transformer& m, const std::vector<at::Tensor>& before) {
  std::vector<at::Tensor> out = Parameters(m);
  for (size_t i = 0; i < out.size(); ++i) out[i] -= before[i];
  return out;
}

// The sharded step must be the one-rank step on the same global batch. Compared so that
// the comparison is well-conditioned on any CPU:
// - float64 model (and so float64 reference and loss): the two sides differ only in the
//   order of float64 sums (each rank's shard is a different padded batch, then the
//   gradients are summed over ranks);
// - AdamW with epsilon far above every gradient entry (after clipping to norm 1 every
//   |g| <= 1, and ε = 1e3): the first update lr·g/(|g| + ε) is then about lr·g/ε, linear
//   in g. With the default ε Adam's first update is about lr·sign(g), and a near-zero
//   gradient summed in another order can move its parameter by up to 2·lr.
// Then an update differs by at most lr/ε times the gradient's rounding, and that
// rounding is bounded by a few thousand float64 ulps (~1e-12) of the largest gradient
// term; 1e-9 of the largest update leaves a thousandfold margin. A real sharding bug
// (a wrong normaliser, a sample trained twice) moves updates by O(1) of their size.
TEST(LearnerGroupTest, TwoRanksMatchOneRankOnTheSameGlobalBatch) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48});
  for (Aggregation aggregation : {Aggregation::kSeqMeanTokenMean, Aggregation::kTokenMean,
                                  Aggregation::kSeqMeanTokenSumNorm}) {
    SCOPED_TRACE(static_cast<int>(aggregation));
    TrainerOptions options;
    options.optimizer.learning_rate = 1e-2;
    options.optimizer.epsilon = 1e3;
    options.advantage.scale = AdvantageScale::kBatch;  // needs the whole batch on every rank
    options.loss.aggregation = aggregation;
    options.loss.max_new_tokens = 4;
    options.loss.beta = 0.1;

    Transformer single(config, 7);
    ASSERT_TRUE(single.To(at::kCPU, at::kDouble).ok());
    const std::vector<at::Tensor> initial = Parameters(single);
    auto trainer = GrpoTrainer::Create(&single, options);
    ASSERT_TRUE(trainer.ok());
    absl::StatusOr<StepMetrics> one_rank = (*trainer)->Step(Batch());
    ASSERT_TRUE(one_rank.ok());
    const std::vector<at::Tensor> expected = Updates(single, initial);

    std::vector<std::vector<at::Tensor>> after(2);
    std::vector<StepMetrics> reported(2);
    OnRanks(2, [&](int rank, LearnerGroup& group) {
      Transformer model(config, 7);
      ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
      TrainerOptions ranked = options;
      ranked.group = &group;
      auto t = GrpoTrainer::Create(&model, ranked);
      ASSERT_TRUE(t.ok());
      auto m = (*t)->Step(Batch());
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(m->samples, 12);
      after[rank] = Updates(model, initial);
      reported[rank] = *m;
    });
    // Every rank reports the global batch's metrics, as the one rank does: the same
    // float64 sums in another order (1e-12 relative leaves a thousandfold margin).
    ASSERT_GT(one_rank->clip_fraction, 0);  // the comparison covers clipping
    for (int rank = 0; rank < 2; ++rank) {
      SCOPED_TRACE(rank);
      const StepMetrics& m = reported[rank];
      for (auto [got, want, name] :
           {std::tuple{m.loss, one_rank->loss, "loss"},
            {m.policy_loss, one_rank->policy_loss, "policy_loss"},
            {m.kl, one_rank->kl, "kl"},
            {m.clip_fraction, one_rank->clip_fraction, "clip_fraction"},
            {m.clip_low_fraction, one_rank->clip_low_fraction, "clip_low_fraction"},
            {m.clip_high_fraction, one_rank->clip_high_fraction, "clip_high_fraction"},
            {m.entropy, one_rank->entropy, "entropy"},
            {m.grad_norm, one_rank->grad_norm, "grad_norm"}})
        EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::abs(want))) << name;
      EXPECT_EQ(m.completion_tokens, one_rank->completion_tokens);
    }
    ASSERT_EQ(after[0].size(), expected.size());
    double largest = 0;
    for (const at::Tensor& e : expected) largest = std::max(largest, e.abs().max().item<double>());
    ASSERT_GT(largest, 0);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_TRUE(at::equal(after[0][i], after[1][i])) << "parameter " << i << " differs across ranks";
      // Updates are read back as fl(p + u) − p: storing p + u may round two nearly equal
      // updates to neighbouring doubles, a few ulps of |p| however small u is.
      const double stored = 4 * std::numeric_limits<double>::epsilon() *
                            initial[i].abs().max().item<double>();
      const double error = (after[0][i] - expected[i]).abs().max().item<double>();
      EXPECT_LE(error, 1e-9 * largest + stored)
          << "parameter " << i << " (largest update " << largest << ")";
    }
  }
}

// Rank 1 alone sees a non-finite loss (its shard holds the poisoned sample): both ranks
// skip the update together, so their collectives stay in step and their weights equal.
TEST(LearnerGroupTest, ANonFiniteLossOnOneRankSkipsTheUpdateOnEveryRank) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48});
  std::vector<ScoredGroup> poisoned = Batch();
  // Global sample 3 (odd: rank 1's shard) has reward 0, below its group's mean: with an
  // infinite ratio the clipped objective keeps -inf.
  ASSERT_EQ(poisoned[0].samples[3].reward, 0);
  poisoned[0].samples[3].logprobs.assign(poisoned[0].samples[3].completion.size(), -1e30f);
  const std::vector<at::Tensor> initial = Parameters(Transformer(config, 7));

  std::vector<std::vector<at::Tensor>> skipped(2), trained(2);
  OnRanks(2, [&](int rank, LearnerGroup& group) {
    Transformer model(config, 7);
    TrainerOptions options;
    options.group = &group;
    auto t = GrpoTrainer::Create(&model, options);
    ASSERT_TRUE(t.ok());
    auto m = (*t)->Step(poisoned);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_TRUE(m->skipped_nonfinite) << "rank " << rank;
    EXPECT_FALSE(m->trained);
    skipped[rank] = Parameters(model);
    auto good = (*t)->Step(Batch());  // the collectives still line up
    ASSERT_TRUE(good.ok()) << good.status();
    EXPECT_TRUE(good->trained);
    trained[rank] = Parameters(model);
  });
  for (size_t i = 0; i < initial.size(); ++i) {
    EXPECT_TRUE(at::equal(skipped[0][i], initial[i])) << "parameter " << i;
    EXPECT_TRUE(at::equal(skipped[1][i], initial[i])) << "parameter " << i;
    EXPECT_TRUE(at::equal(trained[0][i], trained[1][i])) << "parameter " << i;
  }
}

// Gradients of more than one bucket and of two dtypes reduce like one small tensor.
TEST(LearnerGroupTest, AllReduceSumsAcrossBucketsAndDtypes) {
  OnRanks(2, [](int rank, LearnerGroup& group) {
    const int64_t big = 20 << 20;  // 80 MB of float32: a bucket each (64 MiB)
    std::vector<at::Tensor> tensors{at::full({big}, rank + 1.0f), at::full({3}, rank + 0.5, at::kDouble),
                                    at::full({big}, 2.0f * rank), at::full({5}, 1.0f)};
    ASSERT_TRUE(group.AllReduceSum(tensors).ok());
    EXPECT_TRUE(at::equal(tensors[0], at::full({big}, 3.0f)));
    EXPECT_EQ(tensors[1].scalar_type(), at::kDouble);
    EXPECT_TRUE(at::equal(tensors[1], at::full({3}, 2.0, at::kDouble)));
    EXPECT_TRUE(at::equal(tensors[2], at::full({big}, 2.0f)));
    EXPECT_TRUE(at::equal(tensors[3], at::full({5}, 2.0f)));
  });
}

// ZeRO-1 (learner/optimizer.h): both sides sum the same gradients with the same
// all-reduce and apply the same per-parameter AdamW arithmetic; sharding changes only which
// rank computes a parameter's update and a broadcast copies it. So the parameters are
// compared bit for bit, with the default AdamW (not the linear regime), over four steps,
// and a sharded run resumed from a checkpoint at step 2 continues exactly.
TEST(ShardedOptimizerTest, MatchesUnshardedBitForBitAndResumes) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48});
  const std::string dir = testing::TempDir() + "/sharded_optimizer." + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  TrainerOptions options;
  options.optimizer.learning_rate = 1e-2;
  options.optimizer.warmup_steps = 2;
  options.max_policy_lag = 100;  // the same batch every step

  auto run = [&](bool shard, bool resume, int steps, bool checkpoint_at_2) {
    std::vector<at::Tensor> result;
    OnRanks(2, [&](int rank, LearnerGroup& group) {
      Transformer model(config, 7);
      if (resume) {
        ASSERT_TRUE(model.Load(dir + "/model.pt").ok());
      }
      TrainerOptions ranked = options;
      ranked.group = &group;
      ranked.shard_optimizer = shard;
      auto t = GrpoTrainer::Create(&model, ranked);
      ASSERT_TRUE(t.ok());
      if (resume) {
        ASSERT_TRUE((*t)->Load(dir).ok());
      }
      for (int step = 0; step < steps; ++step) {
        auto m = (*t)->Step(Batch());
        ASSERT_TRUE(m.ok()) << m.status();
        ASSERT_TRUE(m->trained);
        if (checkpoint_at_2 && (*t)->step() == 2) {
          ASSERT_TRUE((*t)->GatherForSave().ok());
          if (rank == 0) {
            ASSERT_TRUE(model.Save(dir + "/model.pt").ok());
            ASSERT_TRUE((*t)->Save(dir).ok());
          }
        }
      }
      if (rank == 0) result = Parameters(model);
      // Rank 1 must hold what rank 0 holds.
      std::vector<at::Tensor> mine = Parameters(model);
      std::vector<at::Tensor> theirs = Parameters(model);
      ASSERT_TRUE(group.Broadcast(theirs, 0).ok());
      for (size_t i = 0; i < mine.size(); ++i)
        EXPECT_TRUE(at::equal(mine[i], theirs[i])) << "rank " << rank << " parameter " << i;
    });
    return result;
  };
  const std::vector<at::Tensor> unsharded = run(false, false, 4, false);
  const std::vector<at::Tensor> sharded = run(true, false, 4, true);
  const std::vector<at::Tensor> resumed = run(true, true, 2, false);
  ASSERT_EQ(sharded.size(), unsharded.size());
  ASSERT_EQ(resumed.size(), unsharded.size());
  const std::vector<at::Tensor> initial = Parameters(Transformer(config, 7));
  for (size_t i = 0; i < unsharded.size(); ++i) {
    EXPECT_FALSE(at::equal(unsharded[i], initial[i])) << "parameter " << i << " never moved";
    EXPECT_TRUE(at::equal(sharded[i], unsharded[i])) << "parameter " << i;
    EXPECT_TRUE(at::equal(resumed[i], unsharded[i])) << "parameter " << i;
  }
  // The file a sharded run writes is the unsharded format: one rank alone reads it.
  Transformer alone(config, 7);
  auto t = GrpoTrainer::Create(&alone, options);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE((*t)->Load(dir).ok());
  EXPECT_EQ((*t)->step(), 2);
}

// Each rank keeps the moments of about half the parameters.
TEST(ShardedOptimizerTest, EachRankOwnsItsShareOfTheParameters) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48});
  std::vector<int64_t> owned(2);
  int64_t total = 0;
  OnRanks(2, [&](int rank, LearnerGroup& group) {
    Transformer model(config, 7);
    Optimizer sharded(model.parameters(), OptimizerOptions{}, &group);
    EXPECT_TRUE(sharded.sharded());
    owned[rank] = sharded.owned_parameter_elements();
    if (rank == 0) total = Optimizer(model.parameters(), OptimizerOptions{}).owned_parameter_elements();
  });
  EXPECT_EQ(owned[0] + owned[1], total);
  for (int rank = 0; rank < 2; ++rank) EXPECT_LT(owned[rank], 0.6 * total) << rank;
}

TEST(LearnerGroupEnvironmentTest, ReadsTorchrunVariablesAndRejectsBadOnes) {
  setenv("MASTER_ADDR", "10.0.0.7", 1);
  setenv("MASTER_PORT", "29511", 1);
  setenv("WORLD_SIZE", "4", 1);
  setenv("RANK", "3", 1);
  auto o = LearnerGroupOptionsFromEnvironment();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->master_addr, "10.0.0.7");
  EXPECT_EQ(o->master_port, 29511);
  EXPECT_EQ(o->world_size, 4);
  EXPECT_EQ(o->rank, 3);
  setenv("WORLD_SIZE", "four", 1);
  EXPECT_THAT(std::string(LearnerGroupOptionsFromEnvironment().status().message()),
              testing::HasSubstr("WORLD_SIZE"));
  setenv("WORLD_SIZE", "2", 1);
  EXPECT_THAT(std::string(LearnerGroupOptionsFromEnvironment().status().message()),
              testing::HasSubstr("RANK=3"));
  for (const char* name : {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"}) unsetenv(name);
}

}  // namespace
}  // namespace grpo
