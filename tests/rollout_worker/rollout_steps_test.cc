// Step rewards arrive at the tokens that hold their last byte, whatever the tokenizer: a
// vocabulary of multi-byte pieces (as byte-level BPE has), with a padding id and special
// ids that decode to nothing, sampled by a real model; a scorer that ends a step at every
// '\n' byte and at a byte inside a multi-byte piece. The real tokenizer.json vocabularies
// are checked by tests/hf/npm/check_tokenizer.cc.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/model.h"
#include "rollout_worker/rollout.h"
#include "tests/testing/small_model.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {
namespace {

// Id i decodes to kPieces[i]; ids 0 (padding) and 2, 3 (specials) decode to nothing, and
// 1 ends a completion.
const std::vector<std::string>& Pieces() {
  static const auto* pieces = new std::vector<std::string>{
      "", "", "", "", "a", "bc", "\n", "\n\n", "é", "中", "🙂", "x\ny", "12", "=", " ", "#"};
  return *pieces;
}

class PieceTokenizer final : public TextTokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view) const override {
    return std::vector<int32_t>{4, 5};
  }
  absl::StatusOr<std::vector<int32_t>> EncodeText(std::string_view) const override {
    return absl::UnimplementedError("not needed");
  }
  std::string Decode(absl::Span<const int32_t> ids) const override {
    return DecodeWithEnds(ids).text;
  }
  DecodedCompletion DecodeWithEnds(absl::Span<const int32_t> ids) const override {
    DecodedCompletion out;
    bool ended = false;
    for (int32_t id : ids) {
      ended = ended || id == eos_id();
      if (!ended) out.text += Pieces()[id];
      out.token_ends.push_back(static_cast<int32_t>(out.text.size()));
    }
    return out;
  }
  int32_t eos_id() const override { return 1; }
  int32_t pad_id() const override { return 0; }
  int vocab_size() const override { return static_cast<int>(Pieces().size()); }
  bool character_level() const override { return false; }
};

// A step ends at every '\n' byte, and one at the first byte of every multi-byte character
// (inside its token); rewards number them.
class NewlineSteps final : public BatchScorer {
 public:
  absl::StatusOr<std::vector<CompositeOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override {
    std::vector<CompositeOutput> out(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string_view text = inputs[i].completion;
      for (size_t b = 0; b < text.size(); ++b) {
        const unsigned char c = text[b];
        if (c == '\n' || (c >= 0xC0))
          out[i].steps.push_back(StepReward{static_cast<double>(b), static_cast<int>(b)});
      }
    }
    return out;
  }
};

TEST(RolloutStepsTest, StepRewardsArriveAtTheTokenHoldingTheirLastByte) {
  ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48,
       .vocab_size = 16});
  Transformer policy(config, 9);
  PieceTokenizer tokenizer;
  NewlineSteps scorer;
  Rollout rollout(&tokenizer, &scorer);
  SamplingOptions sampling;
  sampling.max_new_tokens = 24;
  sampling.stop_token = tokenizer.eos_id();
  sampling.pad_token = tokenizer.pad_id();
  sampling.seed = 2;
  std::vector<Example> examples(4);
  std::vector<std::string> ids;
  for (size_t i = 0; i < examples.size(); ++i) ids.push_back("p" + std::to_string(i));
  absl::StatusOr<RolloutBatch> batch = rollout.Generate(policy, 0, examples, ids, 4, sampling);
  ASSERT_TRUE(batch.ok()) << batch.status();

  int steps = 0, inside = 0, after_special = 0;
  for (size_t g = 0; g < batch->groups.size(); ++g) {
    for (size_t s = 0; s < batch->groups[g].samples.size(); ++s) {
      const ScoredSample& sample = batch->groups[g].samples[s];
      const std::string& text = batch->completions[g][s];
      // Independently: the byte range of every token.
      std::vector<int> start(sample.completion.size()), end(sample.completion.size());
      int at = 0, first_special = -1;
      bool ended = false;
      for (size_t t = 0; t < sample.completion.size(); ++t) {
        const int32_t id = sample.completion[t];
        ended = ended || id == tokenizer.eos_id();
        start[t] = at;
        if (!ended) at += static_cast<int>(Pieces()[id].size());
        end[t] = at;
        if (!ended && first_special < 0 && (id == 0 || id == 2 || id == 3))
          first_special = static_cast<int>(t);
      }
      ASSERT_EQ(at, static_cast<int>(text.size()));
      for (const StepReward& step : sample.steps) {
        const int byte = static_cast<int>(step.reward);  // the scorer's byte offset
        const int token = step.end_offset;
        ASSERT_GE(token, 0);
        ASSERT_LT(token, static_cast<int>(sample.completion.size()));
        EXPECT_LE(start[token], byte) << "group " << g << " sample " << s;
        EXPECT_LT(byte, end[token]) << "group " << g << " sample " << s;
        ++steps;
        inside += Pieces()[sample.completion[token]].size() > 1;
        after_special += first_special >= 0 && first_special < token;
      }
    }
  }
  // The draw covered what matters: steps inside multi-byte tokens and after special ids.
  EXPECT_GT(steps, 20);
  EXPECT_GT(inside, 5);
  EXPECT_GT(after_special, 0);
}

}  // namespace
}  // namespace grpo
