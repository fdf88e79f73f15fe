// BpeTokenizer: the byte-level BPE tokenizers of Hugging Face `tokenizer.json` files
// (GPT-2, Qwen2/Qwen2.5/Qwen3, Llama 3), without LibTorch or Python.
//
// Contract:
//   - Encode runs the `tokenizers` library's pipeline for the subset these models use:
//       1. added tokens (`added_tokens`) are cut out of the raw text first, leftmost and
//          longest match first, and become their ids directly;
//       2. every remaining segment is normalized (`normalizer`: null, NFC, NFD, NFKC,
//          NFKD, or a Sequence of them; ICU);
//       3. pre-tokenized (`pre_tokenizer`: Split on a regex with behavior Isolated, then
//          ByteLevel, alone or in a Sequence; ByteLevel with use_regex splits on GPT-2's
//          pattern; the regexes run on ICU's engine, \s being Unicode White_Space);
//       4. each piece's UTF-8 bytes are mapped through GPT-2's bytes_to_unicode table and
//          merged pair by pair, lowest merge rank first, leftmost first on ties
//          (`model`: BPE; with ignore_merges, a piece that is itself in the vocab is
//          one token).
//     Encode adds no BOS/EOS and ignores `post_processor`, `truncation` and `padding`:
//     the prompt formats (chat_format.h) write their special tokens into the text, and
//     the callers cut and pad id sequences themselves. Texts must be under 2 GiB (ICU
//     counts in int32).
//   - Whatever tokenizer.json asks for outside that subset is refused at load time with
//     UNIMPLEMENTED naming the field and the type, so that no file is silently tokenized
//     differently from the reference. Malformed files (bad JSON, missing vocab, a merge
//     naming a token not in the vocab, ...) are INVALID_ARGUMENT naming the field; no
//     input crashes the loader.
//   - Decode(Encode(x)) == Normalize(x) for every byte string x, valid UTF-8 or not:
//     with the NFC normalizer of Qwen that is x itself for NFC text, and Llama 3 has no
//     normalizer. (Exceptions: whitespace absorbed by an added token with lstrip/rstrip,
//     and bytes the vocab has no symbol for, which Encode drops or maps to unk_token as
//     the `tokenizers` library does; no byte-level vocab in use lacks any.)
//   - Decode returns the raw bytes: a sequence cut inside a multi-byte character (a
//     prefix of a completion) ends in an incomplete UTF-8 sequence rather than U+FFFD,
//     so that decoding prefixes concatenates. An id that is not in the vocabulary
//     (negative, >= vocab_size(), or a hole) is INVALID_ARGUMENT naming it and its
//     position: callers sampling from a model whose embedding is wider than the
//     tokenizer (Qwen3: 151936 rows, 151669 tokens) must mask the extra logits.
//   - Added tokens with `single_word` or `normalized` are matched on the raw text like
//     the others (no model in use sets single_word; `normalized` only matters for
//     contents the normalizer changes).
//
// Immutable after loading: Encode and Decode are const and safe to call from many
// threads at once. Copies share the loaded tables (cheap to copy). Loading Qwen3's 11 MB
// tokenizer.json takes about 1 s; Encode runs at about 7-9 MB/s on one core (no cache).
#ifndef GRPO_HF_BPE_TOKENIZER_H_
#define GRPO_HF_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace grpo::hf {

class BpeTokenizer {
 public:
  // Parses the contents of a tokenizer.json. INVALID_ARGUMENT for malformed JSON or
  // contents, UNIMPLEMENTED for a model, normalizer, pre-tokenizer or decoder outside the
  // subset above.
  static absl::StatusOr<BpeTokenizer> FromJson(absl::string_view json);

  // Reads and parses the tokenizer.json at `path` (NOT_FOUND if it cannot be read).
  static absl::StatusOr<BpeTokenizer> FromFile(const std::string& path);

  // Reads `dir`/tokenizer.json and, when present, `dir`/tokenizer_config.json for the
  // eos_token, bos_token and pad_token (each a string or {"content": ...}; null or absent
  // leaves the id unset). A named token that is not in the vocabulary is
  // INVALID_ARGUMENT. The config's chat_template is not run (no Jinja): see
  // chat_format.h.
  static absl::StatusOr<BpeTokenizer> FromDirectory(const std::string& dir);

  // Token ids of `text` (see the contract above). With allow_special false, the text of
  // special added tokens (e.g. "<|im_start|>") is tokenized as plain text, as
  // `split_special_tokens` does in `transformers`; non-special added tokens (Qwen3's
  // "<think>") still match. Never fails.
  std::vector<int32_t> Encode(absl::string_view text, bool allow_special = true) const;

  // The bytes `ids` stand for; added tokens decode to their content, and with
  // skip_special the special ones to nothing. INVALID_ARGUMENT for an id not in the
  // vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special = false) const;

  // Decode(ids, skip_special) for a sampled completion: never fails, and records where each
  // id's bytes end in the text (TextTokenizer::DecodeWithEnds). Ids not in the vocabulary,
  // skipped special ones, and `stop` and everything after it add no bytes; stop < 0: none.
  std::string DecodeWithEnds(absl::Span<const int32_t> ids, bool skip_special, int32_t stop,
                             std::vector<int32_t>* token_ends) const;

  // `text` after the normalizer (itself when there is none): what Decode(Encode(text))
  // returns.
  std::string Normalize(absl::string_view text) const;

  // One more than the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const;

  // The id of a token given as it is written in tokenizer.json (byte-level symbols, e.g.
  // "Ġthe" for " the"; added tokens by their content).
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  // The token string of `id` as tokenizer.json writes it; nullopt if `id` is not in the
  // vocabulary.
  std::optional<std::string> IdToToken(int32_t id) const;

  // True if `id` is an added token marked special (what skip_special skips).
  bool IsSpecial(int32_t id) const;

  // From tokenizer_config.json (FromDirectory only); nullopt when not configured.
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> pad_id() const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

  std::shared_ptr<const Impl> impl_;
};

}  // namespace grpo::hf

#endif  // GRPO_HF_BPE_TOKENIZER_H_
