#include "model/sampler.h"

#include <torch/torch.h>

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

ModelConfig SmallConfig() {
  return testing_util::SmallModel({.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                                   .ffn_hidden = 48, .vocab_size = 24, .max_seq_len = 64});
}

std::vector<std::vector<int32_t>> Prompts() { return {{5, 6, 7}, {8, 9}, {10, 11, 12, 13}}; }

// log π of each completion token from a fresh full forward pass of prompt + completion,
// the row alone and unpadded.
std::vector<double> FreshLogprobs(const Transformer& model, const std::vector<int32_t>& prompt,
                                  const std::vector<int32_t>& completion) {
  at::NoGradGuard no_grad;
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  const int64_t p = seq.size();
  seq.insert(seq.end(), completion.begin(), completion.end());
  at::Tensor ids = at::tensor(seq, at::kLong).view({1, -1});
  at::Tensor logp = at::log_softmax(model.Logits(model.Forward(ids, at::Tensor())), -1);
  std::vector<double> out;
  for (size_t j = 0; j < completion.size(); ++j)
    out.push_back(logp[0][p - 1 + j][completion[j]].item<double>());
  return out;
}

TEST(SamplerTest, GreedyIsDeterministic) {
  Transformer model(SmallConfig(), 1);
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = 10;
  o.stop_token = 23;
  o.seed = 1;
  auto a = Sample(model, Prompts(), o);
  o.seed = 2;  // greedy ignores the seed
  auto b = Sample(model, Prompts(), o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(at::equal(a->tokens, b->tokens));
}

TEST(SamplerTest, SeededSamplingIsReproducibleAndSeedsDiffer) {
  Transformer model(SmallConfig(), 1);
  SamplingOptions o;
  o.max_new_tokens = 12;
  o.stop_token = 23;
  o.seed = 42;
  auto a = Sample(model, Prompts(), o);
  auto b = Sample(model, Prompts(), o);
  o.seed = 43;
  auto c = Sample(model, Prompts(), o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(at::equal(a->tokens, b->tokens));
  EXPECT_TRUE(at::equal(a->logprobs, b->logprobs));
  EXPECT_FALSE(at::equal(a->tokens, c->tokens));
}

TEST(SamplerTest, LogprobsEqualAFreshForwardPassAtTemperatureOne) {
  Transformer model(SmallConfig(), 2);
  SamplingOptions o;
  o.max_new_tokens = 9;
  o.stop_token = 23;
  o.seed = 5;
  auto r = Sample(model, Prompts(), o);
  ASSERT_TRUE(r.ok());
  for (int64_t row = 0; row < 3; ++row) {
    std::vector<int32_t> completion = r->Completion(row);
    std::vector<float> sampler_lp = r->CompletionLogprobs(row);
    ASSERT_EQ(completion.size(), sampler_lp.size());
    const std::vector<double> fresh = FreshLogprobs(model, Prompts()[row], completion);
    for (size_t j = 0; j < completion.size(); ++j)
      EXPECT_NEAR(sampler_lp[j], fresh[j], 1e-4) << "row " << row << " token " << j;
  }
}

TEST(SamplerTest, StopTokenEndsTheCompletionAndMasksTheRest) {
  Transformer model(SmallConfig(), 3);
  SamplingOptions o;
  o.max_new_tokens = 30;
  o.seed = 9;
  o.stop_token = 23;
  o.top_k = 0;
  auto r = Sample(model, Prompts(), o);
  ASSERT_TRUE(r.ok());
  for (int64_t row = 0; row < 3; ++row) {
    std::vector<int32_t> c = r->Completion(row);
    for (size_t j = 0; j + 1 < c.size(); ++j) EXPECT_NE(c[j], 23);
    const int64_t len = r->completion_mask[row].sum().item<int64_t>();
    EXPECT_EQ(len, static_cast<int64_t>(c.size()));
    // Masked positions carry no log-prob.
    at::Tensor outside = r->logprobs[row] * (1 - r->completion_mask[row]);
    EXPECT_EQ(outside.abs().sum().item<double>(), 0.0);
  }
  EXPECT_EQ(r->generated_tokens, r->completion_mask.sum().item<int64_t>());
}

// A GRPO lease: each of three prompts eight times, stop tokens likely enough that lengths
// vary (vocabulary of 24, stop 23).
std::vector<std::vector<int32_t>> Lease() {
  std::vector<std::vector<int32_t>> rows;
  for (const auto& prompt : Prompts())
    for (int g = 0; g < 8; ++g) rows.push_back(prompt);
  return rows;
}

// Shared prefills give the plain path's samples: the draws are the same, and the prefill of
// a row is the same arithmetic whether it ran once or eight times. In float64, so a change
// of batch size in the matmuls (~1e-16) cannot move a draw.
TEST(SamplerTest, SharedPrefixesGiveThePlainPathsSamples) {
  Transformer model(SmallConfig(), 4);
  ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  SamplingOptions o;
  o.max_new_tokens = 12;
  o.stop_token = 23;
  o.seed = 3;
  o.compact_finished = false;
  auto shared = Sample(model, Lease(), o);
  o.share_prefixes = false;
  auto plain = Sample(model, Lease(), o);
  ASSERT_TRUE(shared.ok() && plain.ok());
  EXPECT_TRUE(at::equal(shared->tokens, plain->tokens));
  EXPECT_TRUE(at::equal(shared->completion_mask, plain->completion_mask));
  EXPECT_LE((shared->logprobs - plain->logprobs).abs().max().item<double>(), 1e-6);
}

// Finished rows leaving the batch change the order of the draws, not what a token's
// log-prob is: every sampled token's log-prob equals a fresh forward pass of its row, and
// each completion ends at its first stop token. Lengths must differ, or nothing left.
TEST(SamplerTest, CompactedSamplingKeepsEveryTokensLogprob) {
  Transformer model(SmallConfig(), 2);
  SamplingOptions o;
  o.max_new_tokens = 16;
  o.stop_token = 23;
  o.seed = 8;
  auto r = Sample(model, Lease(), o);
  ASSERT_TRUE(r.ok());
  std::set<size_t> lengths;
  for (int64_t row = 0; row < 24; ++row) {
    const std::vector<int32_t> completion = r->Completion(row);
    const std::vector<float> sampler_lp = r->CompletionLogprobs(row);
    ASSERT_EQ(completion.size(), sampler_lp.size());
    lengths.insert(completion.size());
    for (size_t j = 0; j + 1 < completion.size(); ++j) EXPECT_NE(completion[j], 23);
    const std::vector<double> fresh = FreshLogprobs(model, Lease()[row], completion);
    for (size_t j = 0; j < completion.size(); ++j)
      EXPECT_NEAR(sampler_lp[j], fresh[j], 1e-4) << "row " << row << " token " << j;
  }
  EXPECT_GE(lengths.size(), 3u) << "every completion as long as the others";
  // A quarter of the rows done before the longest ends: the batch was compacted.
  int early = 0;
  for (int64_t row = 0; row < 24; ++row)
    early += r->completion_mask[row].sum().item<int64_t>() < r->completion_mask.size(1);
  EXPECT_GE(early, 6);
  EXPECT_EQ(r->generated_tokens, r->completion_mask.sum().item<int64_t>());
}

TEST(SamplerTest, TopKOneIsGreedy) {
  Transformer model(SmallConfig(), 4);
  SamplingOptions o;
  o.max_new_tokens = 8;
  o.stop_token = 23;
  o.top_k = 1;
  o.seed = 3;
  auto k1 = Sample(model, Prompts(), o);
  o.top_k = 0;
  o.top_p = 1e-6f;  // nucleus of one token
  auto p0 = Sample(model, Prompts(), o);
  o.temperature = 0;
  o.top_p = 1;
  auto greedy = Sample(model, Prompts(), o);
  ASSERT_TRUE(k1.ok() && p0.ok() && greedy.ok());
  EXPECT_TRUE(at::equal(k1->tokens, greedy->tokens));
  EXPECT_TRUE(at::equal(p0->tokens, greedy->tokens));
}

TEST(SamplerTest, BadOptionsAreRejectedByName) {
  Transformer model(SmallConfig(), 1);
  SamplingOptions o;
  o.stop_token = 23;
  o.top_p = 0;
  EXPECT_THAT(std::string(Sample(model, Prompts(), o).status().message()),
              testing::HasSubstr("top_p"));
  o.top_p = 1;
  o.max_new_tokens = 100;  // exceeds max_seq_len 64
  EXPECT_THAT(std::string(Sample(model, Prompts(), o).status().message()),
              testing::HasSubstr("max_seq_len"));
  o.max_new_tokens = 4;
  EXPECT_THAT(std::string(Sample(model, {{1, 99}}, o).status().message()),
              testing::HasSubstr("token id 99"));
  EXPECT_FALSE(Sample(model, {}, o).ok());
  EXPECT_FALSE(Sample(model, {{}}, o).ok());
}

}  // namespace
}  // namespace grpo
