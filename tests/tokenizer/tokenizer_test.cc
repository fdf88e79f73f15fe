#include "tokenizer/tokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(CharTokenizerTest, EveryRepresentableCharacterRoundTripsAsItsByte) {
  std::string text = "\n";
  for (int c = 32; c <= 126; ++c) text.push_back(static_cast<char>(c));
  CharTokenizer tok;
  const std::vector<int32_t> ids = tok.Encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    EXPECT_EQ(ids[i], static_cast<unsigned char>(text[i]));
    EXPECT_LT(ids[i], tok.vocab_size());
  }
  EXPECT_EQ(tok.Decode(ids), text);
  ASSERT_TRUE(tok.EncodeStrict(text).ok());
  EXPECT_EQ(*tok.EncodeStrict(text), ids);
}

TEST(CharTokenizerTest, OneCharacterIsOneTokenAndNoSpecialsAreAdded) {
  CharTokenizer tok;
  const std::string solution = "7+5=12\n12*3=36\n#### 36";
  const std::vector<int32_t> ids = tok.Encode(solution);
  ASSERT_EQ(ids.size(), solution.size());
  // Character offsets are token offsets: the k-th newline is at the same index.
  for (size_t i = 0; i < solution.size(); ++i) {
    EXPECT_EQ(ids[i] == '\n', solution[i] == '\n') << i;
  }
  EXPECT_NE(ids.front(), CharTokenizer::kBos);
  EXPECT_NE(ids.back(), CharTokenizer::kEos);
}

TEST(CharTokenizerTest, UnrepresentableBytesBecomeUnk) {
  CharTokenizer tok;
  EXPECT_THAT(tok.Encode("a\tb\r\xc3\xa9\x7f"),
              ElementsAre('a', CharTokenizer::kUnk, 'b', CharTokenizer::kUnk, CharTokenizer::kUnk,
                          CharTokenizer::kUnk, CharTokenizer::kUnk));
  EXPECT_EQ(tok.Decode(tok.Encode("a\tb")), "a?b");
}

TEST(CharTokenizerTest, EncodeStrictNamesByteAndPosition) {
  CharTokenizer tok;
  absl::StatusOr<std::vector<int32_t>> ids = tok.EncodeStrict("12\t3");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("0x09"));
  EXPECT_THAT(ids.status().message(), HasSubstr("position 2"));
}

TEST(CharTokenizerTest, DecodeSkipsPadAndBosAndStopsAtEos) {
  CharTokenizer tok;
  const std::vector<int32_t> ids = {CharTokenizer::kBos, 'a', CharTokenizer::kPad, 'b',
                                    CharTokenizer::kEos, 'c'};
  EXPECT_EQ(tok.Decode(ids), "ab");
  EXPECT_EQ(tok.Decode({}), "");
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{CharTokenizer::kEos, 'x'}), "");
}

// Step ends (rewards/rewards.h give byte offsets) map to the token that holds the byte, for
// random step texts with PAD and BOS spliced in (they add no bytes, so they never shift the
// steps after them) and an EOS with tokens after it.
TEST(CharTokenizerTest, StepEndsMapToTheTokenHoldingTheirByte) {
  CharTextTokenizer tok;
  std::mt19937 rng(3);
  for (int item = 0; item < 200; ++item) {
    std::string text;
    std::vector<int> step_ends;
    for (int k = 1 + static_cast<int>(rng() % 4); k > 0; --k) {
      text += std::to_string(rng() % 100) + "+" + std::to_string(rng() % 100) + "=" +
              std::to_string(rng() % 200) + "\n";
      step_ends.push_back(static_cast<int>(text.size()) - 1);
    }
    std::vector<int32_t> ids = *tok.EncodeText(text);
    for (int splice = static_cast<int>(rng() % 4); splice > 0; --splice)
      ids.insert(ids.begin() + rng() % (ids.size() + 1),
                 rng() % 2 ? CharTokenizer::kPad : CharTokenizer::kBos);
    ids.push_back(CharTokenizer::kEos);
    ids.push_back('7');  // after the end token: adds nothing
    const DecodedCompletion decoded = tok.DecodeWithEnds(ids);
    ASSERT_EQ(decoded.text, text);
    ASSERT_EQ(decoded.text, tok.Decode(ids));
    ASSERT_EQ(decoded.token_ends.size(), ids.size());
    for (int end : step_ends) {
      const int token = TokenCoveringByte(decoded.token_ends, end);
      ASSERT_GE(token, 0);
      EXPECT_EQ(ids[token], '\n') << "item " << item << ", step end " << end;
      EXPECT_EQ(tok.Decode(absl::MakeConstSpan(ids).subspan(0, token + 1)),
                text.substr(0, end + 1));
    }
    EXPECT_EQ(TokenCoveringByte(decoded.token_ends, static_cast<int>(text.size())), -1);
    EXPECT_EQ(TokenCoveringByte(decoded.token_ends, -1), -1);
  }
}

TEST(CharTokenizerTest, DecodeNeverFailsOnIdsThatAreNotCharacters) {
  CharTokenizer tok;
  // UNK, unused ids, out of range (266 would alias '\n' if narrowed to a byte).
  const std::vector<int32_t> ids = {CharTokenizer::kUnk, 5, 127, 128, 266, -1, 'z'};
  EXPECT_EQ(tok.Decode(ids), "??????z");
}

TEST(CharTokenizerTest, Constants) {
  EXPECT_EQ(CharTokenizer::kVocabSize, 128);
  EXPECT_EQ(CharTokenizer().vocab_size(), 128);
  EXPECT_EQ(CharTokenizer::kPad, 0);
  EXPECT_EQ(CharTokenizer::kBos, 1);
  EXPECT_EQ(CharTokenizer::kEos, 2);
  EXPECT_EQ(CharTokenizer::kUnk, 3);
}

}  // namespace
}  // namespace grpo
