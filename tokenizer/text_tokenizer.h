// TextTokenizer: what the GRPO pipeline (rollout, evaluation, SFT) needs of a tokenizer,
// so that the same code runs the built-in character-level models and Hugging Face models
// with their byte-level BPE (hf/job_model.h makes the right one for a job).
//
// Implementations are immutable after construction and safe to share between threads.
#ifndef GRPO_TOKENIZER_TEXT_TOKENIZER_H_
#define GRPO_TOKENIZER_TEXT_TOKENIZER_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tokenizer/tokenizer.h"

namespace grpo {

// A completion's text and where each of its tokens ends in it: token_ends[i] is the byte
// offset just past token i's bytes. A token that adds no bytes (a special or padding id,
// the end token and everything after it) ends where the token before it ended, so such ids
// never shift the offsets of the tokens after them.
struct DecodedCompletion {
  std::string text;                 // Decode's text, byte for byte
  std::vector<int32_t> token_ends;  // one per id, nondecreasing
};

// The index of the token whose bytes hold byte `offset` of the text: the first token that
// ends past it (a step that ends inside a multi-byte token maps to that token); -1 when
// `offset` is negative or not inside the text.
inline int TokenCoveringByte(const std::vector<int32_t>& token_ends, int offset) {
  if (offset < 0) return -1;
  const auto it = std::upper_bound(token_ends.begin(), token_ends.end(), offset);
  return it == token_ends.end() ? -1 : static_cast<int>(it - token_ends.begin());
}

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;

  // A dataset prompt as the model sees it: the job's prompt format (a chat template, or
  // none) applied, then encoded. INVALID_ARGUMENT naming what cannot be encoded.
  virtual absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view prompt) const = 0;
  // Text the model is to produce (SFT targets), encoded as it stands; no end token added.
  virtual absl::StatusOr<std::vector<int32_t>> EncodeText(std::string_view text) const = 0;
  // A completion's text: up to the end token, special tokens left out. Never fails:
  // whatever a model samples decodes to something.
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;
  // The same text with every token's end in it: how step rewards, which score text and
  // give each step's end as a byte offset (rewards/rewards.h), find the step's last token.
  virtual DecodedCompletion DecodeWithEnds(absl::Span<const int32_t> ids) const = 0;

  virtual int32_t eos_id() const = 0;  // ends a completion (sampling stops on it)
  virtual int32_t pad_id() const = 0;  // fills batch slots; never trained on
  virtual int vocab_size() const = 0;
  // True for the built-in character vocabulary, whose every id is sampleable; false for a
  // BPE vocabulary, whose embedding may have rows past the tokenizer's ids.
  virtual bool character_level() const = 0;
};

// The built-in character vocabulary (tokenizer/tokenizer.h) behind the interface; prompts are
// used raw.
class CharTextTokenizer final : public TextTokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view prompt) const override {
    return chars_.EncodeStrict(prompt);
  }
  absl::StatusOr<std::vector<int32_t>> EncodeText(std::string_view text) const override {
    return chars_.EncodeStrict(text);
  }
  std::string Decode(absl::Span<const int32_t> ids) const override { return chars_.Decode(ids); }
  DecodedCompletion DecodeWithEnds(absl::Span<const int32_t> ids) const override {
    DecodedCompletion out;
    out.text = chars_.Decode(ids, &out.token_ends);
    return out;
  }
  int32_t eos_id() const override { return CharTokenizer::kEos; }
  int32_t pad_id() const override { return CharTokenizer::kPad; }
  int vocab_size() const override { return CharTokenizer::kVocabSize; }
  bool character_level() const override { return true; }

 private:
  CharTokenizer chars_;
};

}  // namespace grpo

#endif  // GRPO_TOKENIZER_TEXT_TOKENIZER_H_
