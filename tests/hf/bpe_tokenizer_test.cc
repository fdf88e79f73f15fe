#include "hf/bpe_tokenizer.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo::hf {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// GPT-2's bytes_to_unicode, written out again here (from its definition: printable bytes
// stand for themselves, the rest for U+0100 + n in byte order) so that the test does not
// take the table from the code it checks.
std::string ByteSymbol(unsigned char byte) {
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int code_point = printable ? b : 256 + next++;
    if (b == byte) {
      std::string utf8;
      if (code_point < 0x80) {
        utf8.push_back(static_cast<char>(code_point));
      } else {
        utf8.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
        utf8.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
      }
      return utf8;
    }
  }
  return "";
}

// `text`'s bytes as byte-level symbols: Sym(" w") is "Ġw".
std::string Sym(absl::string_view text) {
  std::string out;
  for (char c : text) out += ByteSymbol(static_cast<unsigned char>(c));
  return out;
}

std::string JsonQuote(absl::string_view text) {
  return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\\", "\\\\"}, {"\"", "\\\""}}), "\"");
}

// The merges of the tiny tokenizer, in rank order, as plain text. Merged tokens get ids
// 256, 257, ... in this order; bytes have their own value as id.
const std::vector<std::pair<std::string, std::string>>& TinyMerges() {
  static const auto* merges = new std::vector<std::pair<std::string, std::string>>{
      {"h", "e"},  {"l", "l"},  {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {"o", "r"},
      {" w", "or"}, {"b", "c"}, {"a", "b"},   {"a", "bc"},   {"a", "a"}, {"x", "y"},
  };
  return *merges;
}

constexpr int32_t kQqq = 256 + 12;  // in the vocabulary, made by no merge
constexpr int32_t kEnd = 300;       // "<|end|>", special
constexpr int32_t kEndBang = 301;   // "<|end|>!", special
constexpr int32_t kThink = 302;     // "<x>", not special

constexpr char kQwenPattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string DefaultPreTokenizer() {
  return absl::StrCat(
      R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": )",
      JsonQuote(kQwenPattern),
      R"(}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", )"
      R"("add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})");
}

// A tokenizer.json in Qwen's shape (NFC, the Qwen split regex, ByteLevel) over a tiny
// vocabulary: the 256 bytes, the merges above and "qqq".
std::string TinyJson(bool merges_as_arrays = false, bool ignore_merges = false,
                     const std::string& pre_tokenizer = DefaultPreTokenizer()) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) {
    vocab.push_back(absl::StrCat(JsonQuote(ByteSymbol(static_cast<unsigned char>(b))), ": ", b));
  }
  std::vector<std::string> merges;
  int32_t next_id = 256;
  for (const auto& [left, right] : TinyMerges()) {
    vocab.push_back(absl::StrCat(JsonQuote(Sym(left + right)), ": ", next_id++));
    merges.push_back(merges_as_arrays
                         ? absl::StrCat("[", JsonQuote(Sym(left)), ", ", JsonQuote(Sym(right)), "]")
                         : JsonQuote(absl::StrCat(Sym(left), " ", Sym(right))));
  }
  vocab.push_back(absl::StrCat(JsonQuote(Sym("qqq")), ": ", kQqq));
  return absl::StrCat(
      R"({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [)",
      R"({"id": 300, "content": "<|end|>", "special": true, "lstrip": false, "rstrip": false},)",
      R"({"id": 301, "content": "<|end|>!", "special": true},)",
      R"({"id": 302, "content": "<x>", "special": false}],)",
      R"("normalizer": {"type": "NFC"}, "pre_tokenizer": )", pre_tokenizer,
      R"(, "post_processor": null, "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", )",
      R"("dropout": null, "unk_token": null, "continuing_subword_prefix": "", )",
      R"("end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, )",
      R"("ignore_merges": )", ignore_merges ? "true" : "false", R"(, "vocab": {)",
      absl::StrJoin(vocab, ", "), R"(}, "merges": [)", absl::StrJoin(merges, ", "), "]}}");
}

BpeTokenizer Tiny() {
  absl::StatusOr<BpeTokenizer> tokenizer = BpeTokenizer::FromJson(TinyJson());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

int32_t Id(const BpeTokenizer& tokenizer, absl::string_view text) {
  const std::optional<int32_t> id = tokenizer.TokenToId(Sym(text));
  EXPECT_TRUE(id.has_value()) << text;
  return id.value_or(-1);
}

std::vector<int32_t> Bytes(absl::string_view text) {
  std::vector<int32_t> ids;
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::string RoundTrip(const BpeTokenizer& tokenizer, absl::string_view text,
                      bool allow_special = true) {
  absl::StatusOr<std::string> decoded = tokenizer.Decode(tokenizer.Encode(text, allow_special));
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  return decoded.value_or("<error>");
}

TEST(BpeTokenizerTest, MergesWholeWordsThroughIntermediateTokens) {
  const BpeTokenizer tokenizer = Tiny();
  EXPECT_THAT(tokenizer.Encode("hello"), ElementsAre(Id(tokenizer, "hello")));
  // " world": " w" + "or" -> " wor", then "l", "d" have no merge.
  EXPECT_THAT(tokenizer.Encode("hello world"),
              ElementsAre(Id(tokenizer, "hello"), Id(tokenizer, " wor"), 'l', 'd'));
}

TEST(BpeTokenizerTest, LowestRankMergesFirst) {
  const BpeTokenizer tokenizer = Tiny();
  // "b c" (rank 7) beats "a b" (rank 8), and "a bc" (rank 9) finishes the word; merging
  // left to right instead would leave "ab" + "c".
  EXPECT_THAT(tokenizer.Encode("abc"), ElementsAre(Id(tokenizer, "abc")));
  EXPECT_THAT(tokenizer.Encode("ab"), ElementsAre(Id(tokenizer, "ab")));
  // Equal ranks: leftmost first.
  EXPECT_THAT(tokenizer.Encode("aaa"), ElementsAre(Id(tokenizer, "aa"), 'a'));
  EXPECT_THAT(tokenizer.Encode("aaaaa"),
              ElementsAre(Id(tokenizer, "aa"), Id(tokenizer, "aa"), 'a'));
}

TEST(BpeTokenizerTest, MergesAsArraysReadLikeStrings) {
  absl::StatusOr<BpeTokenizer> arrays = BpeTokenizer::FromJson(TinyJson(true));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  const BpeTokenizer strings = Tiny();
  for (const char* text : {"hello world", "abc aaa", "xyz"}) {
    EXPECT_EQ(arrays->Encode(text), strings.Encode(text)) << text;
  }
}

TEST(BpeTokenizerTest, BytesWithoutMergesStayBytes) {
  const BpeTokenizer tokenizer = Tiny();
  // "é" is two UTF-8 bytes and no merge joins them: one token per byte, and back.
  EXPECT_THAT(tokenizer.Encode("\xC3\xA9"), ElementsAre(0xC3, 0xA9));
  EXPECT_EQ(RoundTrip(tokenizer, "\xC3\xA9"), "\xC3\xA9");
  EXPECT_THAT(tokenizer.Encode("\n\t"), ElementsAre('\n', '\t'));
  EXPECT_EQ(*tokenizer.IdToToken('\n'), "\xC4\x8A");  // "Ċ"
  EXPECT_EQ(*tokenizer.IdToToken(' '), "\xC4\xA0");   // "Ġ"
}

TEST(BpeTokenizerTest, PreTokenizerSplitsBeforeMerging) {
  const BpeTokenizer tokenizer = Tiny();
  // The Qwen pattern isolates each digit, so no merge crosses from one digit to the next
  // and "hello" after a digit is a word of its own.
  EXPECT_THAT(tokenizer.Encode("1hello"), ElementsAre('1', Id(tokenizer, "hello")));
  // "  world": the first space stays alone (\s+(?!\S)), the second starts " wor".
  EXPECT_THAT(tokenizer.Encode("hello  world"),
              ElementsAre(Id(tokenizer, "hello"), ' ', Id(tokenizer, " wor"), 'l', 'd'));
  // (?i:'ll): the contraction is its own piece, so "l l" merges inside it only.
  EXPECT_THAT(tokenizer.Encode("I'll"), ElementsAre('I', '\'', Id(tokenizer, "ll")));
}

TEST(BpeTokenizerTest, AddedTokensMatchBeforePreTokenization) {
  const BpeTokenizer tokenizer = Tiny();
  EXPECT_THAT(tokenizer.Encode("hello<|end|>hello"),
              ElementsAre(Id(tokenizer, "hello"), kEnd, Id(tokenizer, "hello")));
  EXPECT_THAT(tokenizer.Encode("<|end|><|end|>"), ElementsAre(kEnd, kEnd));
  // Longest match first.
  EXPECT_THAT(tokenizer.Encode("<|end|>!"), ElementsAre(kEndBang));
  EXPECT_THAT(tokenizer.Encode("a<x>b"), ElementsAre('a', kThink, 'b'));
  // An unfinished token is plain text.
  EXPECT_EQ(tokenizer.Encode("<|end|"), Bytes("<|end|"));
}

TEST(BpeTokenizerTest, WithoutAllowSpecialSpecialTextIsPlainText) {
  const BpeTokenizer tokenizer = Tiny();
  const std::vector<int32_t> ids = tokenizer.Encode("<|end|>", /*allow_special=*/false);
  EXPECT_EQ(ids, Bytes("<|end|>"));
  EXPECT_EQ(RoundTrip(tokenizer, "a<|end|>b", false), "a<|end|>b");
  // Added tokens that are not special still match.
  EXPECT_THAT(tokenizer.Encode("<x>", false), ElementsAre(kThink));
}

TEST(BpeTokenizerTest, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  absl::StatusOr<BpeTokenizer> ignoring =
      BpeTokenizer::FromJson(TinyJson(false, /*ignore_merges=*/true));
  ASSERT_TRUE(ignoring.ok()) << ignoring.status();
  EXPECT_THAT(ignoring->Encode("qqq"), ElementsAre(kQqq));
  EXPECT_THAT(Tiny().Encode("qqq"), ElementsAre('q', 'q', 'q'));
  EXPECT_THAT(ignoring->Encode("hello"), ElementsAre(Id(*ignoring, "hello")));
}

TEST(BpeTokenizerTest, ByteLevelWithRegexAndPrefixSpace) {
  // GPT-2's own shape: ByteLevel alone, splitting on its built-in pattern, with a space
  // put before the text.
  absl::StatusOr<BpeTokenizer> gpt2 = BpeTokenizer::FromJson(TinyJson(
      false, false,
      R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})"));
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_THAT(gpt2->Encode("world"), ElementsAre(Id(*gpt2, " wor"), 'l', 'd'));
  EXPECT_THAT(gpt2->Encode("hello world"),
              ElementsAre(' ', Id(*gpt2, "hello"), Id(*gpt2, " wor"), 'l', 'd'));
  EXPECT_EQ(RoundTrip(*gpt2, "world"), " world");
}

TEST(BpeTokenizerTest, NormalizesToNfc) {
  const BpeTokenizer tokenizer = Tiny();
  const std::string composed = "caf\xC3\xA9";     // "café"
  const std::string decomposed = "cafe\xCC\x81";  // "cafe" + U+0301
  EXPECT_EQ(tokenizer.Encode(decomposed), tokenizer.Encode(composed));
  EXPECT_EQ(tokenizer.Normalize(decomposed), composed);
  EXPECT_EQ(RoundTrip(tokenizer, decomposed), composed);
}

TEST(BpeTokenizerTest, DecodeSkipsSpecialTokensOnRequest) {
  const BpeTokenizer tokenizer = Tiny();
  const std::vector<int32_t> ids = tokenizer.Encode("hello<|end|><x>");
  EXPECT_EQ(*tokenizer.Decode(ids), "hello<|end|><x>");
  EXPECT_EQ(*tokenizer.Decode(ids, /*skip_special=*/true), "hello<x>");
  EXPECT_TRUE(tokenizer.IsSpecial(kEnd));
  EXPECT_FALSE(tokenizer.IsSpecial(kThink));
  EXPECT_FALSE(tokenizer.IsSpecial(Id(tokenizer, "hello")));
}

TEST(BpeTokenizerTest, DecodeRefusesIdsOutsideTheVocabulary) {
  const BpeTokenizer tokenizer = Tiny();
  EXPECT_EQ(tokenizer.vocab_size(), 303);
  for (int32_t bad : {-1, 303, 1 << 30, 299 /* a hole between the model and added ids */}) {
    absl::StatusOr<std::string> decoded = tokenizer.Decode({'a', bad});
    ASSERT_FALSE(decoded.ok()) << bad;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(decoded.status().message(), HasSubstr(absl::StrCat("id ", bad, " at position 1")));
    EXPECT_FALSE(tokenizer.IdToToken(bad).has_value());
  }
}

TEST(BpeTokenizerTest, DecodeKeepsIncompleteUtf8) {
  const BpeTokenizer tokenizer = Tiny();
  // A prefix of "é" (0xC3 0xA9): the lone lead byte comes back as it is, so that decoded
  // prefixes concatenate.
  EXPECT_EQ(*tokenizer.Decode({'a', 0xC3}), "a\xC3");
  EXPECT_EQ(*tokenizer.Decode({}), "");
}

TEST(BpeTokenizerTest, ArbitraryBytesRoundTrip) {
  const BpeTokenizer tokenizer = Tiny();
  for (const std::string& text :
       {std::string("\xFF\xFE abc \xC3"), std::string("a\0b", 3), std::string("\xE4\xB8 x"),
        std::string("e\xCC\x81\xFF"), std::string("")}) {
    EXPECT_EQ(RoundTrip(tokenizer, text), tokenizer.Normalize(text)) << text;
  }
  std::mt19937 random(7);
  std::uniform_int_distribution<int> byte(0, 255), length(0, 40);
  for (int i = 0; i < 300; ++i) {
    std::string text(length(random), '\0');
    for (char& c : text) c = static_cast<char>(byte(random));
    EXPECT_EQ(RoundTrip(tokenizer, text), tokenizer.Normalize(text));
  }
}

TEST(BpeTokenizerTest, LongPiecesMergeLikeShortOnes) {
  const BpeTokenizer tokenizer = Tiny();
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "abc";
  // One \p{L}+ piece of 6000 bytes: the heap-driven merging must agree with the rule.
  const std::vector<int32_t> ids = tokenizer.Encode(text);
  EXPECT_EQ(ids, std::vector<int32_t>(2000, Id(tokenizer, "abc")));
}

TEST(BpeTokenizerTest, AccessorsSeeTheVocabulary) {
  const BpeTokenizer tokenizer = Tiny();
  EXPECT_EQ(tokenizer.TokenToId("<|end|>"), kEnd);
  EXPECT_EQ(tokenizer.TokenToId(Sym(" wor")), 256 + 6);
  EXPECT_FALSE(tokenizer.TokenToId("nope").has_value());
  EXPECT_EQ(tokenizer.IdToToken(kThink), "<x>");
  EXPECT_EQ(tokenizer.IdToToken(256 + 6), Sym(" wor"));
  EXPECT_FALSE(tokenizer.eos_id().has_value());
}

TEST(BpeTokenizerTest, EncodeIsThreadSafe) {
  const BpeTokenizer tokenizer = Tiny();
  const std::string text = "hello world <|end|> abc aaa \xC3\xA9 I'll 12345";
  const std::vector<int32_t> expected = tokenizer.Encode(text);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      BpeTokenizer copy = tokenizer;  // copies share the tables
      for (int i = 0; i < 200; ++i) {
        if (copy.Encode(text) != expected) ++mismatches[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(BpeTokenizerTest, LstripAndRstripTakeTheWhiteSpaceAround) {
  std::string json = TinyJson();
  json = absl::StrReplaceAll(
      json, {{R"("special": true, "lstrip": false, "rstrip": false)",
              R"("special": true, "lstrip": true, "rstrip": true)"}});
  absl::StatusOr<BpeTokenizer> tokenizer = BpeTokenizer::FromJson(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(tokenizer->Encode("a  <|end|> \n b"), ElementsAre('a', kEnd, 'b'));
  EXPECT_THAT(tokenizer->Encode(" <|end|>"), ElementsAre(kEnd));
}

// --- Malformed and unsupported files ---

absl::Status LoadError(const std::string& json) {
  absl::StatusOr<BpeTokenizer> tokenizer = BpeTokenizer::FromJson(json);
  EXPECT_FALSE(tokenizer.ok());
  return tokenizer.status();
}

std::string Replace(const std::string& json, absl::string_view from, absl::string_view to) {
  EXPECT_NE(json.find(std::string(from)), std::string::npos) << from;
  return absl::StrReplaceAll(json, {{from, to}});
}

TEST(BpeTokenizerLoadTest, TruncatedJsonIsInvalidArgument) {
  const std::string json = TinyJson();
  for (size_t length : {size_t{0}, size_t{1}, json.size() / 3, json.size() / 2, json.size() - 1}) {
    const absl::Status status = LoadError(json.substr(0, length));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << length << ": " << status;
  }
  EXPECT_EQ(LoadError("[1, 2]").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadError("{}").code(), absl::StatusCode::kInvalidArgument);
}

TEST(BpeTokenizerLoadTest, UnknownModelTypeIsNamed) {
  const absl::Status status =
      LoadError(Replace(TinyJson(), R"("type": "BPE")", R"("type": "WordPiece")"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(status.message(), HasSubstr("model.type"));
  EXPECT_THAT(status.message(), HasSubstr("WordPiece"));
}

TEST(BpeTokenizerLoadTest, MergeWithUnknownTokenIsNamed) {
  // The third merge, "he ll", names a token that is not in the vocabulary.
  const absl::Status status = LoadError(Replace(TinyJson(), R"("he ll")", R"("he zz")"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("model.merges[2]"));
  EXPECT_THAT(status.message(), HasSubstr("\"zz\" is not in model.vocab"));

  EXPECT_THAT(LoadError(Replace(TinyJson(), R"("he ll")", R"("hell")")).message(),
              HasSubstr("model.merges[2]"));
}

TEST(BpeTokenizerLoadTest, MissingOrBadFieldsAreNamed) {
  const std::string json = TinyJson();
  EXPECT_THAT(LoadError(Replace(json, R"("vocab": {)", R"("vocabulary": {)")).message(),
              HasSubstr("model.vocab: missing"));
  EXPECT_THAT(LoadError(Replace(json, R"("merges": [)", R"("merged": [)")).message(),
              HasSubstr("model.merges: missing"));
  EXPECT_THAT(LoadError(Replace(json, R"("id": 302)", R"("id": -4)")).message(),
              HasSubstr("added_tokens[2].id"));
  EXPECT_THAT(LoadError(Replace(json, R"("id": 302)", R"("id": 2.5)")).message(),
              HasSubstr("added_tokens[2].id"));
  EXPECT_THAT(LoadError(Replace(json, R"("content": "<x>")", R"("content": 7)")).message(),
              HasSubstr("added_tokens[2].content"));
  EXPECT_THAT(LoadError(Replace(json, ": 268}", ": 3}")).message(), HasSubstr("id 3 is used"));
  // The id tables are sized by the largest id: a huge one is refused, never allocated.
  EXPECT_THAT(LoadError(Replace(json, R"("id": 302)", R"("id": 2000000000)")).message(),
              HasSubstr("added_tokens[2].id"));
}

TEST(BpeTokenizerLoadTest, UnsupportedPartsAreUnimplementedAndNamed) {
  const std::string json = TinyJson();
  struct Case {
    std::string from, to, named;
  };
  for (const Case& c : std::vector<Case>{
           {R"("normalizer": {"type": "NFC"})", R"("normalizer": {"type": "Lowercase"})",
            "Lowercase"},
           {R"("type": "Split")", R"("type": "Whitespace")", "Whitespace"},
           {R"("behavior": "Isolated")", R"("behavior": "Removed")", "Removed"},
           {R"("invert": false)", R"("invert": true)", "invert"},
           {R"("decoder": {"type": "ByteLevel"})", R"("decoder": {"type": "WordPiece"})",
            "WordPiece"},
           {R"("decoder": {"type": "ByteLevel"})", R"("decoder": null)", "decoder"},
           {R"("byte_fallback": false)", R"("byte_fallback": true)", "byte_fallback"},
           {R"("dropout": null)", R"("dropout": 0.1)", "dropout"},
           {R"("continuing_subword_prefix": "")", R"("continuing_subword_prefix": "##")",
            "continuing_subword_prefix"},
       }) {
    const absl::Status status = LoadError(Replace(json, c.from, c.to));
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << c.to << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(c.named));
  }
  // ByteLevel must come last.
  const absl::Status order = LoadError(TinyJson(
      false, false,
      R"({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, )"
      R"({"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated"}]})"));
  EXPECT_EQ(order.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(order.message(), HasSubstr("pre_tokenizer.pretokenizers[0]"));
  // A regex ICU cannot compile.
  const absl::Status regex = LoadError(Replace(json, "{\"Regex\": \"", "{\"Regex\": \"("));
  EXPECT_EQ(regex.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(regex.message(), HasSubstr("pre_tokenizer.pretokenizers[0].pattern"));
}

// --- Files and directories ---

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/bpe_tokenizer_test.XXXXXX";
    path_ = mkdtemp(name);
  }
  ~TempDir() { std::system(absl::StrCat("rm -rf '", path_, "'").c_str()); }
  const std::string& path() const { return path_; }
  void Write(const std::string& name, const std::string& contents) const {
    std::ofstream(absl::StrCat(path_, "/", name), std::ios::binary) << contents;
  }

 private:
  std::string path_;
};

TEST(BpeTokenizerFileTest, FromFileNamesThePath) {
  TempDir dir;
  dir.Write("tokenizer.json", TinyJson());
  absl::StatusOr<BpeTokenizer> tokenizer = BpeTokenizer::FromFile(dir.path() + "/tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->vocab_size(), 303);

  absl::StatusOr<BpeTokenizer> missing = BpeTokenizer::FromFile(dir.path() + "/nope.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.json"));

  dir.Write("broken.json", TinyJson().substr(0, 100));
  absl::StatusOr<BpeTokenizer> broken = BpeTokenizer::FromFile(dir.path() + "/broken.json");
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(broken.status().message(), HasSubstr("broken.json"));
}

TEST(BpeTokenizerFileTest, FromDirectoryReadsSpecialTokensFromTheConfig) {
  TempDir dir;
  dir.Write("tokenizer.json", TinyJson());
  absl::StatusOr<BpeTokenizer> bare = BpeTokenizer::FromDirectory(dir.path());
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_FALSE(bare->eos_id().has_value());

  dir.Write("tokenizer_config.json",
            R"({"eos_token": {"content": "<|end|>", "lstrip": false}, "pad_token": "<x>",
                "bos_token": null, "chat_template": "{% for m in messages %}...{% endfor %}"})");
  absl::StatusOr<BpeTokenizer> tokenizer = BpeTokenizer::FromDirectory(dir.path());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->eos_id(), kEnd);
  EXPECT_EQ(tokenizer->pad_id(), kThink);
  EXPECT_FALSE(tokenizer->bos_id().has_value());

  dir.Write("tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  absl::StatusOr<BpeTokenizer> unknown = BpeTokenizer::FromDirectory(dir.path());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("eos_token"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("<|nope|>"));

  dir.Write("tokenizer_config.json", R"({"eos_token": 5})");
  EXPECT_THAT(BpeTokenizer::FromDirectory(dir.path()).status().message(),
              HasSubstr("eos_token"));
}

}  // namespace
}  // namespace grpo::hf
