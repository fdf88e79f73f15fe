#include "hf/bpe_tokenizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/utext.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace grpo::hf {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

// GPT-2's pre-tokenization pattern, which ByteLevel with use_regex applies (the
// `tokenizers` library's ByteLevel::pre_tokenize).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's bytes_to_unicode: the printable bytes (33..126, 161..172, 174..255) stand for
// themselves, the other 68 for U+0100 + n in byte order, so that every byte is a visible
// character and a vocabulary of strings can hold arbitrary bytes.
std::array<UChar32, 256> BytesToUnicode() {
  std::array<UChar32, 256> table{};
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    table[b] = printable ? b : 256 + next++;
  }
  return table;
}

std::string CodePointToUtf8(UChar32 c) {
  char buffer[U8_MAX_LENGTH];
  int32_t length = 0;
  U8_APPEND_UNSAFE(buffer, length, c);  // c is always a code point below U+0144
  return std::string(buffer, length);
}

// The JSON type of `value`, for error messages.
std::string KindName(const Value& value) {
  switch (value.kind_case()) {
    case Value::kNullValue:
      return "null";
    case Value::kNumberValue:
      return "a number";
    case Value::kStringValue:
      return "a string";
    case Value::kBoolValue:
      return "a boolean";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "an array";
    default:
      return "nothing";
  }
}

// `key` of `object`, or nullptr when absent or null (tokenizer.json writes both for
// "not set").
const Value* Field(const Struct& object, const std::string& key) {
  const auto it = object.fields().find(key);
  if (it == object.fields().end() || it->second.kind_case() == Value::kNullValue) {
    return nullptr;
  }
  return &it->second;
}

absl::Status FieldError(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::StatusOr<const Struct*> GetObject(const Struct& object, const std::string& key,
                                        absl::string_view path) {
  const Value* value = Field(object, key);
  if (value == nullptr) return FieldError(path, "missing");
  if (value->kind_case() != Value::kStructValue) {
    return FieldError(path, absl::StrCat("expected an object, got ", KindName(*value)));
  }
  return &value->struct_value();
}

// A string field; `fallback` when absent or null (nullopt: required).
absl::StatusOr<std::string> GetString(const Struct& object, const std::string& key,
                                      absl::string_view path,
                                      std::optional<std::string> fallback = std::nullopt) {
  const Value* value = Field(object, key);
  if (value == nullptr) {
    if (fallback.has_value()) return *fallback;
    return FieldError(path, "missing");
  }
  if (value->kind_case() != Value::kStringValue) {
    return FieldError(path, absl::StrCat("expected a string, got ", KindName(*value)));
  }
  return value->string_value();
}

absl::StatusOr<bool> GetBool(const Struct& object, const std::string& key,
                             absl::string_view path, bool fallback) {
  const Value* value = Field(object, key);
  if (value == nullptr) return fallback;
  if (value->kind_case() != Value::kBoolValue) {
    return FieldError(path, absl::StrCat("expected a boolean, got ", KindName(*value)));
  }
  return value->bool_value();
}

// A token id: an integral number in [0, kMaxTokenId]. The id tables are sized by the
// largest id, so an absurd one (2e9) must be refused here rather than allocated.
constexpr double kMaxTokenId = (1 << 24) - 1;  // 16.7M: ~70x the largest vocabulary in use

absl::StatusOr<int32_t> ToId(const Value& value, absl::string_view path) {
  if (value.kind_case() != Value::kNumberValue) {
    return FieldError(path, absl::StrCat("expected a token id, got ", KindName(value)));
  }
  const double number = value.number_value();
  if (!(number >= 0 && number <= kMaxTokenId) || std::floor(number) != number) {
    return FieldError(path, absl::StrCat("not a valid token id: ", number));
  }
  return static_cast<int32_t>(number);
}

std::string Quote(absl::string_view text) { return absl::StrCat("\"", text, "\""); }

absl::StatusOr<Struct> ParseJsonObject(absl::string_view json) {
  Value root;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &root);
  if (!status.ok()) {
    const auto message = status.message();
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", absl::string_view(message.data(), message.size())));
  }
  if (root.kind_case() != Value::kStructValue) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a JSON object at the top, got ", KindName(root)));
  }
  return std::move(*root.mutable_struct_value());
}

absl::Status Prefixed(absl::string_view prefix, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
}

std::unique_ptr<icu::RegexPattern> CompileRegex(absl::string_view pattern, uint32_t flags,
                                                std::string* error) {
  UErrorCode status = U_ZERO_ERROR;
  UParseError parse_error;
  std::unique_ptr<icu::RegexPattern> compiled(icu::RegexPattern::compile(
      icu::UnicodeString::fromUTF8(icu::StringPiece(pattern.data(), pattern.size())), flags,
      parse_error, status));
  if (U_FAILURE(status)) {
    *error = absl::StrFormat("%s (at offset %d)", u_errorName(status), parse_error.offset);
    return nullptr;
  }
  return compiled;
}

// Whether the code point that ends at `end` (and starts at or after `floor`) / starts at
// `begin` in `text` is Unicode white space; sets `length` to its byte length.
bool WhiteSpaceBefore(absl::string_view text, size_t floor, size_t end, int32_t* length) {
  int32_t i = static_cast<int32_t>(end);
  UChar32 c;
  U8_PREV(text.data(), static_cast<int32_t>(floor), i, c);
  *length = static_cast<int32_t>(end) - i;
  return c >= 0 && u_isUWhiteSpace(c);
}

bool WhiteSpaceAt(absl::string_view text, size_t begin, int32_t* length) {
  int32_t i = static_cast<int32_t>(begin);
  UChar32 c;
  U8_NEXT(text.data(), i, static_cast<int32_t>(text.size()), c);
  *length = i - static_cast<int32_t>(begin);
  return c >= 0 && u_isUWhiteSpace(c);
}

}  // namespace

struct BpeTokenizer::Impl {
  struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
  };

  // Finds added tokens in raw text: leftmost match, longest first at a position. Holds
  // indices into `added` by first byte, longest content first.
  struct AddedMatcher {
    std::array<std::vector<int>, 256> by_first_byte;
    bool empty = true;
  };

  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  // One Split pre-tokenizer: the matches of `pattern` and the gaps between them become
  // pieces (behavior Isolated, invert false).
  struct SplitStep {
    std::unique_ptr<icu::RegexPattern> pattern;
  };

  // Per-Encode state: RegexMatchers are not thread-safe, so each call makes its own.
  struct Scratch {
    std::vector<std::unique_ptr<icu::RegexMatcher>> split_matchers;
    std::unique_ptr<icu::RegexMatcher> gpt2_matcher;
    std::string mapped;
    struct Symbol {
      int32_t id;
      int32_t prev;
      int32_t next;
    };
    std::vector<Symbol> symbols;
    struct Candidate {
      int32_t rank;
      int32_t pos;
      int32_t new_id;
    };
    std::vector<Candidate> heap;
  };

  // The model's vocabulary and the added tokens, kept apart because ignore_merges
  // consults the model's only.
  absl::flat_hash_map<std::string, int32_t> vocab;
  absl::flat_hash_map<std::string, int32_t> added_ids;
  std::vector<AddedToken> added;
  AddedMatcher all_added;
  AddedMatcher plain_added;  // the non-special added tokens only

  enum class Kind : uint8_t { kHole, kModel, kAdded, kSpecial };
  std::vector<Kind> kinds;            // by id
  std::vector<std::string> tokens;    // by id: the token as tokenizer.json writes it
  std::vector<std::string> decoded;   // by id: the bytes it stands for

  absl::flat_hash_map<uint64_t, Merge> merges;
  std::array<int32_t, 256> byte_ids{};  // id of each byte's symbol, -1 if none
  std::array<std::string, 256> byte_symbols;
  std::optional<int32_t> unk_id;
  bool ignore_merges = false;

  std::vector<const icu::Normalizer2*> normalizers;
  std::vector<SplitStep> splits;
  bool prefix_space = false;
  std::unique_ptr<icu::RegexPattern> gpt2_pattern;  // ByteLevel use_regex

  std::optional<int32_t> eos_id;
  std::optional<int32_t> bos_id;
  std::optional<int32_t> pad_id;

  static absl::StatusOr<std::shared_ptr<Impl>> Parse(absl::string_view json);
  absl::Status ParseModel(const Struct& model);
  absl::Status ParseAddedTokens(const Struct& root);
  absl::Status ParseNormalizer(const Value& normalizer, const std::string& path);
  absl::Status ParsePreTokenizer(const Value& pre_tokenizer, const std::string& path,
                                 bool last);
  absl::Status ParseDecoder(const Struct& root);
  void BuildTables();

  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void Encode(absl::string_view text, bool allow_special, std::vector<int32_t>& out) const;
  std::string NormalizeSegment(absl::string_view text) const;
  void PreTokenize(size_t step, absl::string_view piece, Scratch& scratch,
                   std::vector<int32_t>& out) const;
  void ByteLevel(absl::string_view piece, Scratch& scratch, std::vector<int32_t>& out) const;
  void Bpe(absl::string_view piece, Scratch& scratch, std::vector<int32_t>& out) const;
};

namespace {

// Calls `emit` with each piece of `text` that `matcher` cuts it into: every match and every
// non-empty gap between matches, in order (the `tokenizers` library's Isolated behavior).
template <typename Emit>
void SplitIsolated(icu::RegexMatcher& matcher, absl::string_view text, Emit&& emit) {
  UErrorCode status = U_ZERO_ERROR;
  UText utext = UTEXT_INITIALIZER;
  utext_openUTF8(&utext, text.data(), static_cast<int64_t>(text.size()), &status);
  matcher.reset(&utext);
  int64_t last = 0;
  // The match positions are native (UTF-8 byte) offsets into `text`; with ill-formed
  // UTF-8 the engine sees U+FFFD and the offsets still cover every byte.
  while (U_SUCCESS(status) && matcher.find(status)) {
    const int64_t start = matcher.start64(status);
    const int64_t end = matcher.end64(status);
    if (U_FAILURE(status)) break;
    if (start > last) emit(text.substr(last, start - last));
    if (end > start) emit(text.substr(start, end - start));
    last = end;
  }
  // ICU fails only on resource exhaustion; the rest of the text stays one piece rather
  // than being lost.
  if (last < static_cast<int64_t>(text.size())) emit(text.substr(last));
  utext_close(&utext);
}

}  // namespace

absl::StatusOr<std::shared_ptr<BpeTokenizer::Impl>> BpeTokenizer::Impl::Parse(
    absl::string_view json) {
  absl::StatusOr<Struct> root = ParseJsonObject(json);
  if (!root.ok()) return root.status();
  auto impl = std::make_shared<Impl>();

  absl::StatusOr<const Struct*> model = GetObject(*root, "model", "model");
  if (!model.ok()) return model.status();
  if (absl::Status s = impl->ParseModel(**model); !s.ok()) return s;
  if (absl::Status s = impl->ParseAddedTokens(*root); !s.ok()) return s;

  if (const Value* normalizer = Field(*root, "normalizer")) {
    if (absl::Status s = impl->ParseNormalizer(*normalizer, "normalizer"); !s.ok()) return s;
  }
  const Value* pre_tokenizer = Field(*root, "pre_tokenizer");
  if (pre_tokenizer == nullptr) {
    return absl::UnimplementedError(
        "pre_tokenizer: null; byte-level BPE needs a ByteLevel pre-tokenizer");
  }
  if (absl::Status s = impl->ParsePreTokenizer(*pre_tokenizer, "pre_tokenizer", true);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = impl->ParseDecoder(*root); !s.ok()) return s;
  impl->BuildTables();
  return impl;
}

absl::Status BpeTokenizer::Impl::ParseModel(const Struct& model) {
  absl::StatusOr<std::string> type = GetString(model, "type", "model.type");
  if (!type.ok()) return type.status();
  if (*type != "BPE") {
    return absl::UnimplementedError(
        absl::StrCat("model.type: ", Quote(*type), " is not supported (only BPE)"));
  }
  if (const Value* dropout = Field(model, "dropout");
      dropout != nullptr && !(dropout->kind_case() == Value::kNumberValue &&
                              dropout->number_value() == 0)) {
    return absl::UnimplementedError("model.dropout: BPE dropout is not supported");
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const std::string path = absl::StrCat("model.", affix);
    absl::StatusOr<std::string> value = GetString(model, affix, path, "");
    if (!value.ok()) return value.status();
    if (!value->empty()) {
      return absl::UnimplementedError(
          absl::StrCat(path, ": ", Quote(*value), " is not supported (only empty)"));
    }
  }
  absl::StatusOr<bool> byte_fallback =
      GetBool(model, "byte_fallback", "model.byte_fallback", false);
  if (!byte_fallback.ok()) return byte_fallback.status();
  if (*byte_fallback) {
    return absl::UnimplementedError(
        "model.byte_fallback: true is not supported (byte-level BPE needs no fallback)");
  }
  absl::StatusOr<bool> ignore = GetBool(model, "ignore_merges", "model.ignore_merges", false);
  if (!ignore.ok()) return ignore.status();
  ignore_merges = *ignore;

  absl::StatusOr<const Struct*> vocab_object = GetObject(model, "vocab", "model.vocab");
  if (!vocab_object.ok()) return vocab_object.status();
  vocab.reserve((*vocab_object)->fields_size());
  absl::flat_hash_map<int32_t, const std::string*> owners;
  owners.reserve((*vocab_object)->fields_size());
  for (const auto& [token, value] : (*vocab_object)->fields()) {
    absl::StatusOr<int32_t> id = ToId(value, absl::StrCat("model.vocab[", Quote(token), "]"));
    if (!id.ok()) return id.status();
    if (auto [it, inserted] = owners.emplace(*id, &token); !inserted) {
      return FieldError("model.vocab", absl::StrCat("id ", *id, " is used by both ",
                                                    Quote(*it->second), " and ", Quote(token)));
    }
    vocab.emplace(token, *id);
  }
  if (vocab.empty()) return FieldError("model.vocab", "empty");

  if (const Value* unk = Field(model, "unk_token")) {
    if (unk->kind_case() != Value::kStringValue) {
      return FieldError("model.unk_token",
                        absl::StrCat("expected a string, got ", KindName(*unk)));
    }
    const auto it = vocab.find(unk->string_value());
    if (it == vocab.end()) {
      return FieldError("model.unk_token",
                        absl::StrCat(Quote(unk->string_value()), " is not in model.vocab"));
    }
    unk_id = it->second;
  }

  const Value* merges_value = Field(model, "merges");
  if (merges_value == nullptr) return FieldError("model.merges", "missing");
  if (merges_value->kind_case() != Value::kListValue) {
    return FieldError("model.merges",
                      absl::StrCat("expected an array, got ", KindName(*merges_value)));
  }
  const ListValue& list = merges_value->list_value();
  merges.reserve(list.values_size());
  for (int rank = 0; rank < list.values_size(); ++rank) {
    const Value& entry = list.values(rank);
    const std::string path = absl::StrCat("model.merges[", rank, "]");
    std::string left, right;
    // Two spellings: "a b" (older files; byte-level symbols never hold a space) and
    // ["a", "b"] (tokenizers >= 0.20).
    if (entry.kind_case() == Value::kStringValue) {
      const std::string& text = entry.string_value();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return FieldError(path, absl::StrCat(Quote(text), " is not two tokens and a space"));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (entry.kind_case() == Value::kListValue &&
               entry.list_value().values_size() == 2 &&
               entry.list_value().values(0).kind_case() == Value::kStringValue &&
               entry.list_value().values(1).kind_case() == Value::kStringValue) {
      left = entry.list_value().values(0).string_value();
      right = entry.list_value().values(1).string_value();
    } else {
      return FieldError(path, absl::StrCat("expected \"a b\" or [\"a\", \"b\"], got ",
                                           KindName(entry)));
    }
    const auto left_it = vocab.find(left);
    const auto right_it = vocab.find(right);
    const auto merged_it = vocab.find(absl::StrCat(left, right));
    for (const auto& [it, name] : {std::pair{left_it, &left}, std::pair{right_it, &right}}) {
      if (it == vocab.end()) {
        return FieldError(path, absl::StrCat("token ", Quote(*name), " is not in model.vocab"));
      }
    }
    if (merged_it == vocab.end()) {
      return FieldError(path, absl::StrCat("merged token ", Quote(absl::StrCat(left, right)),
                                           " is not in model.vocab"));
    }
    // A repeated pair keeps its last rank, as the `tokenizers` library's map does.
    merges.insert_or_assign(PairKey(left_it->second, right_it->second),
                            Merge{rank, merged_it->second});
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::Impl::ParseAddedTokens(const Struct& root) {
  const Value* value = Field(root, "added_tokens");
  if (value == nullptr) return absl::OkStatus();
  if (value->kind_case() != Value::kListValue) {
    return FieldError("added_tokens", absl::StrCat("expected an array, got ", KindName(*value)));
  }
  for (int i = 0; i < value->list_value().values_size(); ++i) {
    const Value& entry = value->list_value().values(i);
    const std::string path = absl::StrCat("added_tokens[", i, "]");
    if (entry.kind_case() != Value::kStructValue) {
      return FieldError(path, absl::StrCat("expected an object, got ", KindName(entry)));
    }
    const Struct& object = entry.struct_value();
    AddedToken token;
    const Value* id = Field(object, "id");
    if (id == nullptr) return FieldError(path + ".id", "missing");
    absl::StatusOr<int32_t> parsed_id = ToId(*id, path + ".id");
    if (!parsed_id.ok()) return parsed_id.status();
    token.id = *parsed_id;
    absl::StatusOr<std::string> content = GetString(object, "content", path + ".content");
    if (!content.ok()) return content.status();
    if (content->empty()) return FieldError(path + ".content", "empty");
    token.content = *std::move(content);
    for (auto [key, field] : {std::pair{"special", &token.special},
                              std::pair{"lstrip", &token.lstrip},
                              std::pair{"rstrip", &token.rstrip}}) {
      absl::StatusOr<bool> flag = GetBool(object, key, absl::StrCat(path, ".", key), false);
      if (!flag.ok()) return flag.status();
      *field = *flag;
    }
    added_ids.insert_or_assign(token.content, token.id);
    added.push_back(std::move(token));
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::Impl::ParseNormalizer(const Value& normalizer,
                                                 const std::string& path) {
  if (normalizer.kind_case() != Value::kStructValue) {
    return FieldError(path, absl::StrCat("expected an object, got ", KindName(normalizer)));
  }
  const Struct& object = normalizer.struct_value();
  absl::StatusOr<std::string> type = GetString(object, "type", path + ".type");
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    const Value* list = Field(object, "normalizers");
    if (list == nullptr || list->kind_case() != Value::kListValue) {
      return FieldError(path + ".normalizers", "expected an array");
    }
    for (int i = 0; i < list->list_value().values_size(); ++i) {
      if (absl::Status s = ParseNormalizer(list->list_value().values(i),
                                           absl::StrCat(path, ".normalizers[", i, "]"));
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* instance = nullptr;
  if (*type == "NFC") {
    instance = icu::Normalizer2::getNFCInstance(status);
  } else if (*type == "NFD") {
    instance = icu::Normalizer2::getNFDInstance(status);
  } else if (*type == "NFKC") {
    instance = icu::Normalizer2::getNFKCInstance(status);
  } else if (*type == "NFKD") {
    instance = icu::Normalizer2::getNFKDInstance(status);
  } else {
    return absl::UnimplementedError(absl::StrCat(
        path, ": type ", Quote(*type),
        " is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)"));
  }
  if (U_FAILURE(status)) {
    return absl::InternalError(
        absl::StrCat(path, ": ICU has no ", *type, " data: ", u_errorName(status)));
  }
  normalizers.push_back(instance);
  return absl::OkStatus();
}

absl::Status BpeTokenizer::Impl::ParsePreTokenizer(const Value& pre_tokenizer,
                                                   const std::string& path, bool last) {
  if (pre_tokenizer.kind_case() != Value::kStructValue) {
    return FieldError(path, absl::StrCat("expected an object, got ", KindName(pre_tokenizer)));
  }
  const Struct& object = pre_tokenizer.struct_value();
  absl::StatusOr<std::string> type = GetString(object, "type", path + ".type");
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    const Value* list = Field(object, "pretokenizers");
    if (list == nullptr || list->kind_case() != Value::kListValue) {
      return FieldError(path + ".pretokenizers", "expected an array");
    }
    const int size = list->list_value().values_size();
    if (size == 0) return FieldError(path + ".pretokenizers", "empty");
    for (int i = 0; i < size; ++i) {
      if (absl::Status s = ParsePreTokenizer(list->list_value().values(i),
                                             absl::StrCat(path, ".pretokenizers[", i, "]"),
                                             last && i + 1 == size);
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  if (*type == "Split") {
    if (last) {
      return absl::UnimplementedError(absl::StrCat(
          path, ": Split as the last pre-tokenizer is not supported (ByteLevel must be last)"));
    }
    absl::StatusOr<std::string> behavior = GetString(object, "behavior", path + ".behavior");
    if (!behavior.ok()) return behavior.status();
    if (*behavior != "Isolated") {
      return absl::UnimplementedError(absl::StrCat(path, ".behavior: ", Quote(*behavior),
                                                   " is not supported (only Isolated)"));
    }
    absl::StatusOr<bool> invert = GetBool(object, "invert", path + ".invert", false);
    if (!invert.ok()) return invert.status();
    if (*invert) {
      return absl::UnimplementedError(
          absl::StrCat(path, ".invert: true is not supported"));
    }
    absl::StatusOr<const Struct*> pattern = GetObject(object, "pattern", path + ".pattern");
    if (!pattern.ok()) return pattern.status();
    std::string text;
    uint32_t flags = 0;
    if (const Value* regex = Field(**pattern, "Regex")) {
      if (regex->kind_case() != Value::kStringValue) {
        return FieldError(path + ".pattern.Regex", "expected a string");
      }
      text = regex->string_value();
    } else if (const Value* literal = Field(**pattern, "String")) {
      if (literal->kind_case() != Value::kStringValue) {
        return FieldError(path + ".pattern.String", "expected a string");
      }
      text = literal->string_value();
      flags = UREGEX_LITERAL;
    } else {
      return FieldError(path + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    if (text.empty()) return FieldError(path + ".pattern", "empty");
    std::string error;
    SplitStep step;
    step.pattern = CompileRegex(text, flags, &error);
    if (step.pattern == nullptr) {
      return FieldError(path + ".pattern",
                        absl::StrCat("ICU cannot compile ", Quote(text), ": ", error));
    }
    splits.push_back(std::move(step));
    return absl::OkStatus();
  }
  if (*type == "ByteLevel") {
    if (!last) {
      return absl::UnimplementedError(absl::StrCat(
          path, ": ByteLevel before another pre-tokenizer is not supported (it must be last)"));
    }
    // The `tokenizers` library's defaults for fields a file leaves out.
    absl::StatusOr<bool> add_prefix_space =
        GetBool(object, "add_prefix_space", path + ".add_prefix_space", true);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    absl::StatusOr<bool> use_regex = GetBool(object, "use_regex", path + ".use_regex", true);
    if (!use_regex.ok()) return use_regex.status();
    prefix_space = *add_prefix_space;
    if (*use_regex) {
      std::string error;
      gpt2_pattern = CompileRegex(kGpt2Pattern, 0, &error);
      if (gpt2_pattern == nullptr) {
        return absl::InternalError(absl::StrCat("GPT-2 pattern: ", error));
      }
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(
      path, ": type ", Quote(*type), " is not supported (supported: Split, ByteLevel, Sequence)"));
}

absl::Status BpeTokenizer::Impl::ParseDecoder(const Struct& root) {
  const Value* decoder = Field(root, "decoder");
  if (decoder == nullptr) {
    return absl::UnimplementedError("decoder: null is not supported (only ByteLevel)");
  }
  if (decoder->kind_case() != Value::kStructValue) {
    return FieldError("decoder", absl::StrCat("expected an object, got ", KindName(*decoder)));
  }
  absl::StatusOr<std::string> type = GetString(decoder->struct_value(), "type", "decoder.type");
  if (!type.ok()) return type.status();
  if (*type != "ByteLevel") {
    return absl::UnimplementedError(
        absl::StrCat("decoder.type: ", Quote(*type), " is not supported (only ByteLevel)"));
  }
  return absl::OkStatus();
}

void BpeTokenizer::Impl::BuildTables() {
  const std::array<UChar32, 256> byte_to_char = BytesToUnicode();
  // Inverse of the byte map, for decoding: code points below 256 + 68.
  std::array<int, 256 + 68> char_to_byte;
  char_to_byte.fill(-1);
  for (int b = 0; b < 256; ++b) {
    byte_symbols[b] = CodePointToUtf8(byte_to_char[b]);
    char_to_byte[byte_to_char[b]] = b;
    const auto it = vocab.find(byte_symbols[b]);
    byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }

  int32_t size = 0;
  for (const auto& [token, id] : vocab) size = std::max(size, id + 1);
  for (const AddedToken& token : added) size = std::max(size, token.id + 1);
  kinds.assign(size, Kind::kHole);
  tokens.assign(size, "");
  decoded.assign(size, "");
  for (const auto& [token, id] : vocab) {
    kinds[id] = Kind::kModel;
    tokens[id] = token;
    // The ByteLevel decoder: each symbol back to its byte; a character outside the table
    // (not in any byte-level vocabulary) stays as its own UTF-8.
    std::string& bytes = decoded[id];
    int32_t i = 0;
    const int32_t length = static_cast<int32_t>(token.size());
    while (i < length) {
      const int32_t start = i;
      UChar32 c;
      U8_NEXT(token.data(), i, length, c);
      if (c >= 0 && c < static_cast<UChar32>(char_to_byte.size()) && char_to_byte[c] >= 0) {
        bytes.push_back(static_cast<char>(char_to_byte[c]));
      } else {
        bytes.append(token, start, i - start);
      }
    }
  }
  // Added tokens override a model token with the same id; they decode to their content.
  for (const AddedToken& token : added) {
    kinds[token.id] = token.special ? Kind::kSpecial : Kind::kAdded;
    tokens[token.id] = token.content;
    decoded[token.id] = token.content;
  }

  std::vector<int> order(added.size());
  for (size_t i = 0; i < added.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return added[a].content.size() > added[b].content.size();
  });
  for (int index : order) {
    const auto first = static_cast<unsigned char>(added[index].content[0]);
    all_added.by_first_byte[first].push_back(index);
    all_added.empty = false;
    if (!added[index].special) {
      plain_added.by_first_byte[first].push_back(index);
      plain_added.empty = false;
    }
  }
}

std::string BpeTokenizer::Impl::NormalizeSegment(absl::string_view text) const {
  std::string current(text);
  for (const icu::Normalizer2* normalizer : normalizers) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::StringPiece input(current.data(), static_cast<int32_t>(current.size()));
    // Most text is already normalized: skip the copy then.
    if (normalizer->isNormalizedUTF8(input, status) && U_SUCCESS(status)) continue;
    status = U_ZERO_ERROR;
    std::string normalized;
    normalized.reserve(current.size());
    icu::StringByteSink<std::string> sink(&normalized);
    // Ill-formed UTF-8 is copied through unchanged, so no byte is lost.
    normalizer->normalizeUTF8(0, input, sink, nullptr, status);
    if (U_SUCCESS(status)) current = std::move(normalized);
  }
  return current;
}

void BpeTokenizer::Impl::Encode(absl::string_view text, bool allow_special,
                                std::vector<int32_t>& out) const {
  Scratch scratch;
  UErrorCode status = U_ZERO_ERROR;
  for (const SplitStep& split : splits) {
    scratch.split_matchers.emplace_back(split.pattern->matcher(status));
  }
  if (gpt2_pattern != nullptr) scratch.gpt2_matcher.reset(gpt2_pattern->matcher(status));
  if (U_FAILURE(status)) {
    // Only an allocation failure gets here; Encode has no error path to report it on.
    std::abort();
  }

  auto encode_segment = [&](absl::string_view segment) {
    if (segment.empty()) return;
    if (normalizers.empty()) {
      PreTokenize(0, segment, scratch, out);
    } else {
      const std::string normalized = NormalizeSegment(segment);
      PreTokenize(0, normalized, scratch, out);
    }
  };

  const AddedMatcher& matcher = allow_special ? all_added : plain_added;
  if (matcher.empty) {
    encode_segment(text);
    return;
  }
  size_t segment_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const std::vector<int>& candidates =
        matcher.by_first_byte[static_cast<unsigned char>(text[pos])];
    const AddedToken* found = nullptr;
    for (int index : candidates) {
      const std::string& content = added[index].content;
      if (text.compare(pos, content.size(), content) == 0) {
        found = &added[index];
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos;
    size_t end = pos + found->content.size();
    // lstrip/rstrip: the token takes the white space beside it with it.
    int32_t length = 0;
    while (found->lstrip && begin > segment_start && WhiteSpaceBefore(text, segment_start, begin, &length)) {
      begin -= length;
    }
    while (found->rstrip && end < text.size() && WhiteSpaceAt(text, end, &length)) {
      end += length;
    }
    encode_segment(text.substr(segment_start, begin - segment_start));
    out.push_back(found->id);
    segment_start = pos = end;
  }
  encode_segment(text.substr(segment_start));
}

void BpeTokenizer::Impl::PreTokenize(size_t step, absl::string_view piece, Scratch& scratch,
                                     std::vector<int32_t>& out) const {
  if (step == splits.size()) {
    ByteLevel(piece, scratch, out);
    return;
  }
  SplitIsolated(*scratch.split_matchers[step], piece, [&](absl::string_view sub) {
    PreTokenize(step + 1, sub, scratch, out);
  });
}

void BpeTokenizer::Impl::ByteLevel(absl::string_view piece, Scratch& scratch,
                                   std::vector<int32_t>& out) const {
  // The prefix space goes on every piece the earlier steps made, as the `tokenizers`
  // library does; Qwen and Llama 3 turn it off.
  if (piece.empty()) return;
  std::string prefixed;
  if (prefix_space && piece.front() != ' ') {
    prefixed = absl::StrCat(" ", piece);
    piece = prefixed;
  }
  if (scratch.gpt2_matcher == nullptr) {
    Bpe(piece, scratch, out);
    return;
  }
  SplitIsolated(*scratch.gpt2_matcher, piece,
                [&](absl::string_view sub) { Bpe(sub, scratch, out); });
}

void BpeTokenizer::Impl::Bpe(absl::string_view piece, Scratch& scratch,
                             std::vector<int32_t>& out) const {
  if (ignore_merges) {
    std::string& mapped = scratch.mapped;
    mapped.clear();
    for (char c : piece) mapped += byte_symbols[static_cast<unsigned char>(c)];
    if (const auto it = vocab.find(mapped); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }

  // The symbols: one per byte that the vocabulary has; a byte without a symbol becomes
  // unk_token or is dropped, as the `tokenizers` library does (no real byte-level
  // vocabulary lacks one).
  auto& symbols = scratch.symbols;
  symbols.clear();
  for (char c : piece) {
    int32_t id = byte_ids[static_cast<unsigned char>(c)];
    if (id < 0) {
      if (!unk_id.has_value()) continue;
      id = *unk_id;
    }
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // Merges in rank order, leftmost first among equal ranks: a min-heap of candidate pairs
  // (the `tokenizers` library's Word::merge_all, which gives the same result as the
  // textbook repeat-the-best-pair loop in O(n log n)). A candidate is stale once either
  // of its symbols has merged into something else; it is checked when popped.
  auto& heap = scratch.heap;
  heap.clear();
  const auto later = [](const Scratch::Candidate& a, const Scratch::Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  const auto push_pair = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    const auto it = merges.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it == merges.end()) return;
    heap.push_back({it->second.rank, pos, it->second.new_id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);

  constexpr int32_t kRemoved = -2;
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Scratch::Candidate top = heap.back();
    heap.pop_back();
    Scratch::Symbol& left = symbols[top.pos];
    if (left.id == kRemoved || left.next < 0) continue;
    const Scratch::Symbol& right = symbols[left.next];
    const auto it = merges.find(PairKey(left.id, right.id));
    if (it == merges.end() || it->second.new_id != top.new_id) continue;
    const int32_t removed = left.next;
    left.id = top.new_id;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    symbols[removed].id = kRemoved;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromJson(absl::string_view json) {
  absl::StatusOr<std::shared_ptr<Impl>> impl = Impl::Parse(json);
  if (!impl.ok()) return impl.status();
  return BpeTokenizer(*std::move(impl));
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromFile(const std::string& path) {
  absl::StatusOr<std::string> json = ReadFileToString(path);
  if (!json.ok()) return json.status();
  absl::StatusOr<BpeTokenizer> tokenizer = FromJson(*json);
  if (!tokenizer.ok()) return Prefixed(path, tokenizer.status());
  return tokenizer;
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromDirectory(const std::string& dir) {
  const std::string json_path = absl::StrCat(dir, "/tokenizer.json");
  absl::StatusOr<std::string> json = ReadFileToString(json_path);
  if (!json.ok()) return json.status();
  absl::StatusOr<std::shared_ptr<Impl>> impl = Impl::Parse(*json);
  if (!impl.ok()) return Prefixed(json_path, impl.status());

  const std::string config_path = absl::StrCat(dir, "/tokenizer_config.json");
  if (std::ifstream probe(config_path); !probe) return BpeTokenizer(*std::move(impl));
  absl::StatusOr<std::string> config_json = ReadFileToString(config_path);
  if (!config_json.ok()) return config_json.status();
  absl::StatusOr<Struct> config = ParseJsonObject(*config_json);
  if (!config.ok()) return Prefixed(config_path, config.status());
  Impl& tables = **impl;
  for (auto [key, id] : {std::pair{"eos_token", &tables.eos_id},
                         std::pair{"bos_token", &tables.bos_id},
                         std::pair{"pad_token", &tables.pad_id}}) {
    const Value* value = Field(*config, key);
    if (value == nullptr) continue;
    std::string content;
    if (value->kind_case() == Value::kStringValue) {
      content = value->string_value();
    } else if (value->kind_case() == Value::kStructValue) {
      absl::StatusOr<std::string> inner =
          GetString(value->struct_value(), "content", absl::StrCat(key, ".content"));
      if (!inner.ok()) return Prefixed(config_path, inner.status());
      content = *std::move(inner);
    } else {
      return Prefixed(config_path,
                      FieldError(key, absl::StrCat("expected a string or {\"content\": ...}, got ",
                                                   KindName(*value))));
    }
    std::optional<int32_t> found;
    if (const auto it = tables.added_ids.find(content); it != tables.added_ids.end()) {
      found = it->second;
    } else if (const auto it = tables.vocab.find(content); it != tables.vocab.end()) {
      found = it->second;
    }
    if (!found.has_value()) {
      return Prefixed(config_path, FieldError(key, absl::StrCat(Quote(content),
                                                                " is not in the vocabulary")));
    }
    *id = found;
  }
  return BpeTokenizer(*std::move(impl));
}

std::vector<int32_t> BpeTokenizer::Encode(absl::string_view text, bool allow_special) const {
  std::vector<int32_t> ids;
  // About four bytes a token for English; one reallocation at most for most text.
  ids.reserve(text.size() / 3 + 1);
  impl_->Encode(text, allow_special, ids);
  return ids;
}

absl::StatusOr<std::string> BpeTokenizer::Decode(absl::Span<const int32_t> ids,
                                                 bool skip_special) const {
  std::string text;
  const int32_t size = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= size || impl_->kinds[id] == Impl::Kind::kHole) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Decode: id %d at position %d is not in the vocabulary (size %d)", id, i, size));
    }
    if (skip_special && impl_->kinds[id] == Impl::Kind::kSpecial) continue;
    text += impl_->decoded[id];
  }
  return text;
}

std::string BpeTokenizer::DecodeWithEnds(absl::Span<const int32_t> ids, bool skip_special,
                                         int32_t stop, std::vector<int32_t>* token_ends) const {
  std::string text;
  token_ends->clear();
  const int32_t size = vocab_size();
  bool ended = false;
  for (const int32_t id : ids) {
    ended = ended || (stop >= 0 && id == stop);
    const bool known = id >= 0 && id < size && impl_->kinds[id] != Impl::Kind::kHole;
    if (!ended && known && !(skip_special && impl_->kinds[id] == Impl::Kind::kSpecial))
      text += impl_->decoded[id];
    token_ends->push_back(static_cast<int32_t>(text.size()));
  }
  return text;
}

std::string BpeTokenizer::Normalize(absl::string_view text) const {
  return impl_->NormalizeSegment(text);
}

int32_t BpeTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->kinds.size()); }

std::optional<int32_t> BpeTokenizer::TokenToId(absl::string_view token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) {
    return it->second;
  }
  if (const auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> BpeTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size() || impl_->kinds[id] == Impl::Kind::kHole) {
    return std::nullopt;
  }
  return impl_->tokens[id];
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->kinds[id] == Impl::Kind::kSpecial;
}

std::optional<int32_t> BpeTokenizer::eos_id() const { return impl_->eos_id; }
std::optional<int32_t> BpeTokenizer::bos_id() const { return impl_->bos_id; }
std::optional<int32_t> BpeTokenizer::pad_id() const { return impl_->pad_id; }

}  // namespace grpo::hf
