// Compares BpeTokenizer with a reference encoder's ids on a corpus, and measures it.
//
//   hf_tokenizer_npm_check NAME MODEL_DIR CORPUS_JSON EXPECTED_JSON
//
// MODEL_DIR holds tokenizer.json (and tokenizer_config.json), CORPUS_JSON is an array of
// strings, EXPECTED_JSON an array of id arrays, one per string (encode.js writes it). For
// every string the ids must be equal and Decode(Encode(x)) must be Normalize(x); then step
// ends map to the tokens that hold them (CheckStepEnds). Prints
// each difference with the tokens around it, the load time and the encode throughput, and
// exits 1 if any item differs. check_tokenizer.sh runs it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "hf/bpe_tokenizer.h"
#include "tokenizer/text_tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool ReadJson(const std::string& path, google::protobuf::Value* value) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  const auto status = google::protobuf::util::JsonStringToMessage(contents.str(), value);
  if (!status.ok() || value->kind_case() != google::protobuf::Value::kListValue) {
    std::fprintf(stderr, "%s: not a JSON array: %s\n", path.c_str(),
                 status.ToString().c_str());
    return false;
  }
  return true;
}

// `text` with control and non-ASCII bytes escaped, cut to `limit` bytes, for one line.
std::string Printable(const std::string& text, size_t limit = 80) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < limit; ++i) {
    const unsigned char c = text[i];
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 32 || c == 127) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

std::string Tokens(const grpo::hf::BpeTokenizer& tokenizer, const std::vector<int32_t>& ids,
                   size_t from, size_t count) {
  std::vector<std::string> parts;
  for (size_t i = from; i < ids.size() && i < from + count; ++i) {
    parts.push_back(absl::StrCat(ids[i], ":", tokenizer.IdToToken(ids[i]).value_or("?")));
  }
  return absl::StrJoin(parts, " ");
}

// Step ends on real vocabularies: random texts of "Step k: ..." steps, each ended by "\n" or
// "\n\n", with multi-byte characters, encoded, with special ids spliced in at random
// places (a sampled special never shifts offsets). DecodeWithEnds must give the text, and
// for every byte of it (every step end included, inside multi-byte tokens too) the token
// TokenCoveringByte picks must be the one whose bytes hold it, never a special one.
// Returns the number of texts that failed.
int CheckStepEnds(const std::string& name, const grpo::hf::BpeTokenizer& tokenizer) {
  std::mt19937 rng(7);
  const std::vector<std::string> words = {"12+7=19", "x", "é", "中文", "🙂", "ß", "the",
                                          " answer", "####", "3.5", "Ω", "naïve", "=", "  "};
  std::vector<int32_t> specials;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id)
    if (tokenizer.IsSpecial(id)) specials.push_back(id);
  int failed = 0;
  for (int item = 0; item < 300; ++item) {
    std::string text;
    const int steps = 1 + static_cast<int>(rng() % 5);
    for (int k = 1; k <= steps; ++k) {
      absl::StrAppend(&text, "Step ", k, ":");
      for (int w = static_cast<int>(rng() % 6); w >= 0; --w)
        absl::StrAppend(&text, " ", words[rng() % words.size()]);
      text += rng() % 2 ? "\n" : "\n\n";
    }
    std::vector<int32_t> ids = tokenizer.Encode(text, /*allow_special=*/false);
    for (int splice = static_cast<int>(rng() % 3); splice > 0 && !specials.empty(); --splice)
      ids.insert(ids.begin() + rng() % (ids.size() + 1), specials[rng() % specials.size()]);
    std::vector<int32_t> ends;
    const std::string decoded = tokenizer.DecodeWithEnds(ids, /*skip_special=*/true, -1, &ends);
    std::string problem;
    if (decoded != tokenizer.Normalize(text)) problem = "the text differs";
    if (ends.size() != ids.size()) problem = "one end per id expected";
    for (size_t i = 1; problem.empty() && i < ends.size(); ++i)
      if (ends[i] < ends[i - 1]) problem = absl::StrCat("ends decrease at token ", i);
    for (int byte = 0; problem.empty() && byte < static_cast<int>(decoded.size()); ++byte) {
      const int token = grpo::TokenCoveringByte(ends, byte);
      const int start = token > 0 ? ends[token - 1] : 0;
      if (token < 0 || !(start <= byte && byte < ends[token]) || tokenizer.IsSpecial(ids[token]))
        problem = absl::StrCat("byte ", byte, " maps to token ", token);
    }
    if (grpo::TokenCoveringByte(ends, static_cast<int>(decoded.size())) != -1)
      problem = "a byte past the text maps to a token";
    if (!problem.empty()) {
      ++failed;
      std::printf("%s: step ends, text %d \"%s\": %s\n", name.c_str(), item,
                  Printable(text).c_str(), problem.c_str());
    }
  }
  std::printf("%s: step ends hold on %d/300 texts (%zu special ids spliced from)\n",
              name.c_str(), 300 - failed, specials.size());
  return failed;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s NAME MODEL_DIR CORPUS_JSON EXPECTED_JSON\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  google::protobuf::Value corpus_value, expected_value;
  if (!ReadJson(argv[3], &corpus_value) || !ReadJson(argv[4], &expected_value)) return 2;
  const auto& corpus_list = corpus_value.list_value();
  const auto& expected_list = expected_value.list_value();
  if (corpus_list.values_size() != expected_list.values_size()) {
    std::fprintf(stderr, "%s: %d corpus items but %d expected id lists\n", name.c_str(),
                 corpus_list.values_size(), expected_list.values_size());
    return 2;
  }

  const Clock::time_point load_start = Clock::now();
  absl::StatusOr<grpo::hf::BpeTokenizer> loaded =
      grpo::hf::BpeTokenizer::FromDirectory(argv[2]);
  const double load_seconds = SecondsSince(load_start);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), loaded.status().ToString().c_str());
    return 1;
  }
  const grpo::hf::BpeTokenizer& tokenizer = *loaded;
  std::printf("%s: loaded %s in %.2f s: vocab_size %d, eos %d, pad %d\n", name.c_str(),
              argv[2], load_seconds, tokenizer.vocab_size(), tokenizer.eos_id().value_or(-1),
              tokenizer.pad_id().value_or(-1));

  std::vector<std::string> corpus;
  size_t corpus_bytes = 0;
  for (const auto& item : corpus_list.values()) {
    corpus.push_back(item.string_value());
    corpus_bytes += corpus.back().size();
  }

  int equal = 0, round_trips = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string& text = corpus[i];
    std::vector<int32_t> expected;
    for (const auto& id : expected_list.values(static_cast<int>(i)).list_value().values()) {
      expected.push_back(static_cast<int32_t>(id.number_value()));
    }
    const std::vector<int32_t> ids = tokenizer.Encode(text);
    if (ids == expected) {
      ++equal;
    } else {
      const size_t first = static_cast<size_t>(
          std::mismatch(ids.begin(), ids.end(), expected.begin(), expected.end()).first -
          ids.begin());
      const size_t from = first >= 3 ? first - 3 : 0;
      std::printf("%s: item %zu \"%s\": ids differ at token %zu of %zu (reference %zu)\n"
                  "    ours:      %s\n    reference: %s\n",
                  name.c_str(), i, Printable(text).c_str(), first, ids.size(), expected.size(),
                  Tokens(tokenizer, ids, from, 8).c_str(),
                  Tokens(tokenizer, expected, from, 8).c_str());
    }
    const absl::StatusOr<std::string> decoded = tokenizer.Decode(ids);
    if (decoded.ok() && *decoded == tokenizer.Normalize(text)) {
      ++round_trips;
    } else {
      std::printf("%s: item %zu \"%s\": Decode(Encode(x)) is \"%s\", not Normalize(x)\n",
                  name.c_str(), i, Printable(text).c_str(),
                  decoded.ok() ? Printable(*decoded).c_str()
                               : decoded.status().ToString().c_str());
    }
  }

  // Throughput: the whole corpus, over and over, for at least a second (one thread).
  size_t tokens = 0, bytes = 0;
  const Clock::time_point encode_start = Clock::now();
  double encode_seconds = 0;
  do {
    for (const std::string& text : corpus) tokens += tokenizer.Encode(text).size();
    bytes += corpus_bytes;
    encode_seconds = SecondsSince(encode_start);
  } while (encode_seconds < 1.0);
  std::printf("%s: encode %.2f MB/s, %.0f tokens/s (one thread, %zu corpus bytes)\n",
              name.c_str(), bytes / encode_seconds / 1e6, tokens / encode_seconds,
              corpus_bytes);

  const int total = static_cast<int>(corpus.size());
  std::printf("%s: ids equal on %d/%d items, Decode(Encode(x)) == Normalize(x) on %d/%d\n",
              name.c_str(), equal, total, round_trips, total);
  const int step_failures = CheckStepEnds(name, tokenizer);
  return equal == total && round_trips == total && step_failures == 0 ? 0 : 1;
}
