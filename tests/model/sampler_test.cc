#include "model/sampler.h"

#include <torch/torch.h>

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/token_choice.h"
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

// Row `row` of `r`: each completion token's sampler log-prob equals FreshLogprobs, within
// `tolerance`.
void ExpectFreshLogprobs(const Transformer& model, const std::vector<int32_t>& prompt,
                         const SampleResult& r, int64_t row, double tolerance) {
  const std::vector<int32_t> completion = r.Completion(row);
  const std::vector<float> sampler_lp = r.CompletionLogprobs(row);
  ASSERT_EQ(completion.size(), sampler_lp.size()) << "row " << row;
  const std::vector<double> fresh = FreshLogprobs(model, prompt, completion);
  for (size_t j = 0; j < completion.size(); ++j)
    EXPECT_NEAR(sampler_lp[j], fresh[j], tolerance) << "row " << row << " token " << j;
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
  for (int64_t row = 0; row < 3; ++row) ExpectFreshLogprobs(model, Prompts()[row], *r, row, 1e-4);
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
    lengths.insert(completion.size());
    for (size_t j = 0; j + 1 < completion.size(); ++j) EXPECT_NE(completion[j], 23);
    ExpectFreshLogprobs(model, Lease()[row], *r, row, 1e-4);
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

// --- The static decoder (model/static_decode.h), what a GPU runs: fixed shapes, the slot a
// device tensor, the draw an exponential race. Run here eagerly on the CPU.

// Twelve prompts of 3 to 8 tokens (left padding differs from row to row), all holding 5, 6
// before their last token, so that their greedy continuations share tokens at different
// distances from the prompt.
std::vector<std::vector<int32_t>> RaggedPrompts() {
  std::vector<std::vector<int32_t>> rows;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> prompt;
    for (int j = 0; j < i % 6; ++j) prompt.push_back(1 + (7 * i + 3 * j) % 22);
    prompt.push_back(5);
    prompt.push_back(6);
    prompt.push_back(1 + (5 * i) % 22);
    rows.push_back(prompt);
  }
  return rows;
}

SampleResult Decoded(const Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                     SamplingOptions o, SamplingOptions::Decode decode) {
  o.decode = decode;
  absl::StatusOr<SampleResult> r = Sample(model, prompts, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : SampleResult();
}

// Greedy decoding has no draw, so the static path must give the eager path's tokens
// exactly, stop tokens and compaction included, at every spacing of the host's looks. In
// float64, where attending over the whole (masked, zeroed) capacity instead of the filled
// prefix moves a logit by ~1e-16 and cannot flip an argmax.
TEST(StaticDecodeTest, GreedyGivesTheEagerPathsTokens) {
  // Untied: a tied random model's greedy continuation mostly repeats its input token.
  ModelConfig config = SmallConfig();
  config.tie_embeddings = false;
  Transformer model(config, 6);
  ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = 16;
  o.stop_token = -1;
  const SampleResult open = Decoded(model, RaggedPrompts(), o, SamplingOptions::Decode::kEager);
  // A stop token that ends rows early, after one token at least and at different lengths:
  // of the tokens, the one whose first occurrence in a completion is past its first
  // column in the most rows.
  const at::Tensor completions = open.tokens.narrow(1, open.prompt_length, o.max_new_tokens);
  int64_t most_rows = 0;
  for (int v = 1; v < SmallConfig().vocab_size; ++v) {
    const at::Tensor hits = completions == v;
    const int64_t rows =
        (hits.any(1) & hits.select(1, 0).logical_not()).sum().item<int64_t>();
    if (rows > most_rows) {
      most_rows = rows;
      o.stop_token = v;
    }
  }
  const SampleResult eager = Decoded(model, RaggedPrompts(), o, SamplingOptions::Decode::kEager);
  int early = 0;
  for (int64_t row = 0; row < 12; ++row)
    early += eager.completion_mask[row].sum().item<int64_t>() < o.max_new_tokens;
  ASSERT_GE(early, 3) << "too few rows stop early for compaction to happen";
  for (int sync_every : {1, 3, 8}) {
    o.sync_every = sync_every;
    const SampleResult fixed = Decoded(model, RaggedPrompts(), o, SamplingOptions::Decode::kStatic);
    EXPECT_TRUE(at::equal(fixed.tokens, eager.tokens)) << "sync_every " << sync_every;
    EXPECT_TRUE(at::equal(fixed.is_pad, eager.is_pad)) << "sync_every " << sync_every;
    EXPECT_TRUE(at::equal(fixed.completion_mask, eager.completion_mask));
    EXPECT_LE((fixed.logprobs - eager.logprobs).abs().max().item<double>(), 1e-12);
    EXPECT_EQ(fixed.generated_tokens, eager.generated_tokens);
  }
}

// Sampling: the draws differ from the eager path's (another draw), but the same seed
// gives the same tokens, every token's log-prob is the model's for its row (a fresh
// forward pass), completions end at their first stop token, and rows leave the batch.
TEST(StaticDecodeTest, SampledTokensCarryTheModelsLogprobs) {
  Transformer model(SmallConfig(), 2);
  SamplingOptions o;
  o.max_new_tokens = 16;
  o.stop_token = 23;
  o.seed = 8;
  o.sync_every = 2;
  const SampleResult r = Decoded(model, Lease(), o, SamplingOptions::Decode::kStatic);
  EXPECT_TRUE(at::equal(r.tokens, Decoded(model, Lease(), o,
                                          SamplingOptions::Decode::kStatic).tokens));
  std::set<size_t> lengths;
  int early = 0;
  for (int64_t row = 0; row < 24; ++row) {
    const std::vector<int32_t> completion = r.Completion(row);
    lengths.insert(completion.size());
    early += static_cast<int64_t>(completion.size()) < r.completion_mask.size(1);
    for (size_t j = 0; j + 1 < completion.size(); ++j) EXPECT_NE(completion[j], 23);
    ExpectFreshLogprobs(model, Lease()[row], r, row, 1e-4);
  }
  EXPECT_GE(lengths.size(), 3u) << "every completion as long as the others";
  EXPECT_GE(early, 6);  // a quarter done before the longest ends: compacted
  EXPECT_EQ(r.generated_tokens, r.completion_mask.sum().item<int64_t>());
}

// The exponential race draws each id with its probability: 40,000 draws from one row of
// known probabilities land within 0.01 of them (4 standard deviations at p = 0.5), with
// top-k and sample_vocab leaving the excluded ids never drawn.
TEST(StaticDecodeTest, TheExponentialRaceDrawsByProbability) {
  const int64_t n = 40000;
  const at::Tensor probs = at::tensor({0.5, 0.3, 0.15, 0.05}, at::kFloat);
  const at::Tensor logits = probs.log().view({1, 4}).expand({n, 4}).contiguous();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  const at::Tensor noise = at::empty({n, 4}).exponential_(1.0, gen);
  const TokenDraw race = [&](const at::Tensor& p) { return (p / noise).argmax(-1, true); };
  SamplingOptions o;
  const at::Tensor drawn = ChooseTokens(logits, o, race).first;
  const at::Tensor freq = at::bincount(drawn, {}, 4).to(at::kDouble) / n;
  EXPECT_LE((freq - probs.to(at::kDouble)).abs().max().item<double>(), 0.01) << freq;
  o.top_k = 2;
  EXPECT_LE(ChooseTokens(logits, o, race).first.max().item<int64_t>(), 1);
  o.top_k = 0;
  o.sample_vocab = 3;
  EXPECT_LE(ChooseTokens(logits, o, race).first.max().item<int64_t>(), 2);
}

// Every precision a sampler runs in: bfloat16 matmul copies with a bfloat16 cache (CPU
// workers), bfloat16 compute over float32 weights and cache (a mixed-precision learner
// sampling in grpo_local), a bfloat16 model (GPU workers). Each token's log-prob is the
// model's, to bfloat16's rounding of a differently batched pass (measured < 0.05 nats;
// a wrong slot or mask is off by nats).
TEST(StaticDecodeTest, RunsInEveryPrecisionASamplerUses) {
  SamplingOptions o;
  o.max_new_tokens = 10;
  o.stop_token = 23;
  o.seed = 5;
  for (int setting = 0; setting < 3; ++setting) {
    Transformer model(SmallConfig(), 2);
    const absl::Status set = setting == 0   ? model.SetInferenceMatmulDtype(at::kBFloat16)
                             : setting == 1 ? model.SetComputeDtype(at::kBFloat16)
                                            : model.To(at::kCPU, at::kBFloat16);
    ASSERT_TRUE(set.ok()) << set;
    const SampleResult r = Decoded(model, Lease(), o, SamplingOptions::Decode::kStatic);
    ASSERT_GT(r.generated_tokens, 0) << "setting " << setting;
    for (int64_t row = 0; row < 24; row += 5) {
      SCOPED_TRACE(testing::Message() << "setting " << setting);
      ExpectFreshLogprobs(model, Lease()[row], r, row, 0.25);
    }
  }
}

TEST(StaticDecodeTest, TopKOneIsGreedy) {
  Transformer model(SmallConfig(), 4);
  SamplingOptions o;
  o.max_new_tokens = 8;
  o.stop_token = 23;
  o.top_k = 1;
  o.seed = 3;
  const SampleResult k1 = Decoded(model, Prompts(), o, SamplingOptions::Decode::kStatic);
  o.top_k = 0;
  o.temperature = 0;
  const SampleResult greedy = Decoded(model, Prompts(), o, SamplingOptions::Decode::kEager);
  EXPECT_TRUE(at::equal(k1.tokens, greedy.tokens));
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
  o.sync_every = 0;
  EXPECT_THAT(std::string(Sample(model, Prompts(), o).status().message()),
              testing::HasSubstr("sync_every"));
  o.sync_every = 8;
  EXPECT_THAT(std::string(ParseDecode("graphs").status().message()),
              testing::HasSubstr("decode \"graphs\""));
  EXPECT_EQ(*ParseDecode("static"), SamplingOptions::Decode::kStatic);
  EXPECT_FALSE(Sample(model, {}, o).ok());
  EXPECT_FALSE(Sample(model, {{}}, o).ok());
}

}  // namespace
}  // namespace grpo
