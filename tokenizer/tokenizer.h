// CharTokenizer: a fixed character-level vocabulary over ASCII, for the built-in
// arithmetic task and tiny models.
//
// Contract:
//   - Ids 0..3 are specials: kPad, kBos, kEos, kUnk. The byte '\n' (10) and the printable
//     ASCII bytes 32..126 map to their own byte value as id. Every other id below
//     kVocabSize is unused (never produced by Encode).
//   - One representable character is exactly one token, and Encode adds no BOS/EOS, so a
//     character offset in a completion's text is the same number as its token offset.
//     Step rewards (rewards/rewards.h) rely on this to place a step's end on a token.
//   - Encode never fails: unrepresentable bytes (tabs, '\r', bytes >= 127, UTF-8) become
//     kUnk. EncodeStrict reports them instead.
//   - Decode skips PAD and BOS, stops at the first EOS, and writes '?' for UNK and for any
//     id that does not stand for a character (unused or out of range), so decoding
//     arbitrary model output never fails.
//
// Stateless and immutable: safe to share between threads.
#ifndef GRPO_TOKENIZER_TOKENIZER_H_
#define GRPO_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace grpo {

class CharTokenizer {
 public:
  static constexpr int kVocabSize = 128;
  static constexpr int32_t kPad = 0;
  static constexpr int32_t kBos = 1;
  static constexpr int32_t kEos = 2;
  static constexpr int32_t kUnk = 3;

  CharTokenizer() = default;

  // True if `c` has its own id (and so round-trips through Encode/Decode).
  static bool IsRepresentable(char c);

  // One id per byte of `text`; unrepresentable bytes become kUnk.
  std::vector<int32_t> Encode(std::string_view text) const;

  // Like Encode, but INVALID_ARGUMENT naming the first unrepresentable byte and its
  // position.
  absl::StatusOr<std::vector<int32_t>> EncodeStrict(std::string_view text) const;

  // With `token_ends`, also where each id's bytes end in the text (TextTokenizer's
  // DecodeWithEnds): skipped ids and everything from EOS on add nothing.
  std::string Decode(absl::Span<const int32_t> ids,
                     std::vector<int32_t>* token_ends = nullptr) const;

  int vocab_size() const { return kVocabSize; }
};

}  // namespace grpo

#endif  // GRPO_TOKENIZER_TOKENIZER_H_
