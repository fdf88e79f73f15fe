// TextTokenizer: what the GRPO pipeline (rollout, evaluation, SFT) needs of a tokenizer,
// so that the same code runs the built-in character-level models and Hugging Face models
// with their byte-level BPE (hf/job_model.h makes the right one for a job).
//
// Implementations are immutable after construction and safe to share between threads.
#ifndef GRPO_TOKENIZER_TEXT_TOKENIZER_H_
#define GRPO_TOKENIZER_TEXT_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tokenizer/tokenizer.h"

namespace grpo {

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

  virtual int32_t eos_id() const = 0;  // ends a completion (sampling stops on it)
  virtual int32_t pad_id() const = 0;  // fills batch slots; never trained on
  virtual int vocab_size() const = 0;
  // True when one character is one token: step rewards (rewards/rewards.h) place a step's
  // end on a token by its character offset, which only holds then.
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
  int32_t eos_id() const override { return CharTokenizer::kEos; }
  int32_t pad_id() const override { return CharTokenizer::kPad; }
  int vocab_size() const override { return CharTokenizer::kVocabSize; }
  bool character_level() const override { return true; }

 private:
  CharTokenizer chars_;
};

}  // namespace grpo

#endif  // GRPO_TOKENIZER_TEXT_TOKENIZER_H_
