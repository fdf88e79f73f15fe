#include "tokenizer/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace grpo {

bool CharTokenizer::IsRepresentable(char c) {
  const unsigned char b = static_cast<unsigned char>(c);
  return b == '\n' || (b >= 32 && b <= 126);
}

std::vector<int32_t> CharTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) {
    ids.push_back(IsRepresentable(c) ? static_cast<int32_t>(static_cast<unsigned char>(c)) : kUnk);
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> CharTokenizer::EncodeStrict(std::string_view text) const {
  for (size_t i = 0; i < text.size(); ++i) {
    if (!IsRepresentable(text[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("CharTokenizer: byte 0x%02x at position %d is not in the vocabulary "
                          "(only '\\n' and printable ASCII 32..126 are)",
                          static_cast<unsigned char>(text[i]), i));
    }
  }
  return Encode(text);
}

std::string CharTokenizer::Decode(absl::Span<const int32_t> ids,
                                  std::vector<int32_t>* token_ends) const {
  std::string text;
  text.reserve(ids.size());
  if (token_ends) token_ends->clear();
  bool ended = false;
  for (int32_t id : ids) {
    ended = ended || id == kEos;
    if (!ended && id != kPad && id != kBos) {
      // Ids are compared as integers before narrowing so that, e.g., 266 cannot alias '\n'.
      if (id == '\n' || (id >= 32 && id <= 126)) {
        text.push_back(static_cast<char>(id));
      } else {
        text.push_back('?');
      }
    }
    if (token_ends) token_ends->push_back(static_cast<int32_t>(text.size()));
    if (ended && !token_ends) break;
  }
  return text;
}

}  // namespace grpo
