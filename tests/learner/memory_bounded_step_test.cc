// Memory-bounded steps give the one-shot step: the chunked LM head against full logits,
// and micro-batched, chunked, layer-checkpointed GRPO steps against one-shot ones. Compared in float64 and
// with AdamW in its linear regime (ε far above every |gradient|, as in
// learner_group_test.cc), so the only differences are float64 sums taken in another
// order (rows sorted by length, chunks, accumulated micro-batch gradients): ~1e-15
// relative, where a wrong normaliser or a lost micro-batch moves results by O(1).
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "gtest/gtest.h"
#include "learner/batch.h"
#include "learner/chunked_logprobs.h"
#include "learner/grpo_trainer.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

double MaxAbs(const at::Tensor& t) { return t.abs().max().item<double>(); }

TEST(ChunkedLogprobsTest, EqualFullLogitsForwardAndBackward) {
  at::manual_seed(11);
  const int64_t rows = 10, d = 6, vocab = 13;
  const double temperature = 0.7;
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  at::Tensor upstream = at::randn({rows}, at::kDouble);  // an arbitrary loss's ∂/∂logprob
  at::Tensor h1 = at::randn({rows, d}, at::kDouble).requires_grad_(true);
  at::Tensor w1 = at::randn({vocab, d}, at::kDouble).requires_grad_(true);
  at::Tensor h2 = h1.detach().clone().requires_grad_(true);
  at::Tensor w2 = w1.detach().clone().requires_grad_(true);

  at::Tensor z = at::matmul(h1, w1.t()) / temperature;
  at::Tensor logp = at::log_softmax(z, -1);
  at::Tensor full = logp.gather(1, targets.unsqueeze(1)).squeeze(1);
  at::Tensor full_entropy = -(logp.exp() * logp).sum(-1);
  (full * upstream).sum().backward();

  for (int64_t chunk : {1, 3, 10, 0}) {
    SCOPED_TRACE(chunk);
    if (h2.grad().defined()) h2.mutable_grad().zero_(), w2.mutable_grad().zero_();
    LogprobsAndEntropy c = ChunkedTokenLogprobs(h2, w2, targets, temperature, chunk);
    (c.logprobs * upstream).sum().backward();
    EXPECT_LE(MaxAbs(c.logprobs - full.detach()), 1e-12 * MaxAbs(full));
    EXPECT_LE(MaxAbs(c.entropy - full_entropy.detach()), 1e-12 * MaxAbs(full_entropy));
    EXPECT_LE(MaxAbs(h2.grad() - h1.grad()), 1e-12 * MaxAbs(h1.grad()));
    EXPECT_LE(MaxAbs(w2.grad() - w1.grad()), 1e-12 * MaxAbs(w1.grad()));
    EXPECT_FALSE(c.entropy.requires_grad());
  }
}

// Three prompts of different lengths, four samples each of lengths 1..6, old log-probs away
// from the model's (so ratios clip) and rewards that differ within each group.
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

struct Outcome {
  std::vector<at::Tensor> updates;
  StepMetrics metrics;
};

Outcome RunStep(const TrainerOptions& options) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48,
       .tie_embeddings = false});
  Transformer model(config, 7);
  EXPECT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  std::vector<at::Tensor> before;
  for (const at::Tensor& p : model.parameters()) before.push_back(p.detach().clone());
  auto trainer = GrpoTrainer::Create(&model, options);
  EXPECT_TRUE(trainer.ok());
  absl::StatusOr<StepMetrics> m = (*trainer)->Step(Batch());
  EXPECT_TRUE(m.ok()) << m.status();
  Outcome out;
  out.metrics = m.ok() ? *m : StepMetrics{};
  const std::vector<at::Tensor> after = model.parameters();
  for (size_t i = 0; i < after.size(); ++i) out.updates.push_back(after[i].detach() - before[i]);
  return out;
}

TEST(MemoryBoundedStepTest, MicroBatchesAndChunkedLogprobsGiveTheOneShotStep) {
  for (Aggregation aggregation : {Aggregation::kSeqMeanTokenMean, Aggregation::kTokenMean,
                                  Aggregation::kSeqMeanTokenSumNorm}) {
    for (int mu : {1, 2}) {
      SCOPED_TRACE(testing::Message() << "aggregation " << static_cast<int>(aggregation)
                                      << ", mu " << mu);
      TrainerOptions options;
      options.optimizer.learning_rate = 1e-2;
      options.optimizer.epsilon = 1e3;  // linear update: see the file comment
      options.loss.aggregation = aggregation;
      options.loss.max_new_tokens = 6;
      options.loss.beta = 0.1;
      options.inner_iterations = mu;
      const Outcome one_shot = RunStep(options);
      // Rows are 3..12 tokens: at most two per micro-batch of 16, so six or more of them.
      options.micro_batch_tokens = 16;
      options.logprob_chunk = 3;
      options.activation_checkpointing = true;
      const Outcome bounded = RunStep(options);

      double largest = 0;
      for (const at::Tensor& u : one_shot.updates) largest = std::max(largest, MaxAbs(u));
      ASSERT_GT(largest, 0);
      for (size_t i = 0; i < one_shot.updates.size(); ++i)
        // fl(p + u) − p may round two nearly equal updates a few ulps of |p| apart, and
        // |p| <= 2 here (norm weights are 1, the rest drawn with std 0.02).
        EXPECT_LE(MaxAbs(bounded.updates[i] - one_shot.updates[i]),
                  1e-9 * largest + 8 * std::numeric_limits<double>::epsilon())
            << "parameter " << i;
      const StepMetrics &a = one_shot.metrics, &b = bounded.metrics;
      ASSERT_GT(a.clip_fraction, 0);  // the comparison covers clipping
      for (auto [got, want, name] :
           {std::tuple{b.loss, a.loss, "loss"}, {b.policy_loss, a.policy_loss, "policy_loss"},
            {b.kl, a.kl, "kl"}, {b.clip_fraction, a.clip_fraction, "clip_fraction"},
            {b.entropy, a.entropy, "entropy"}, {b.grad_norm, a.grad_norm, "grad_norm"}})
        EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::abs(want))) << name;
      EXPECT_EQ(b.completion_tokens, a.completion_tokens);
    }
  }
}

}  // namespace
}  // namespace grpo
