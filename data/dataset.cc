#include "data/dataset.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "grpo/v1/data.pb.h"

namespace grpo {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Reads the number at the start of `s` into `out` (normalised: '-' kept, '+' and commas
// dropped, a leading "." given a "0"). Returns the number of characters consumed, 0 if `s`
// does not start with a number. A comma is only a thousands separator when exactly three
// digits follow it, and a period only a decimal point when a digit follows it, so
// "5, 6" reads 5 and "42." reads 42.
size_t ParseNumberPrefix(std::string_view s, std::string* out) {
  size_t pos = 0;
  std::string num;
  if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    if (s[pos] == '-') num.push_back('-');
    ++pos;
  }
  const size_t int_start = pos;
  while (pos < s.size() && IsDigit(s[pos])) num.push_back(s[pos++]);
  const bool has_int = pos > int_start;
  while (has_int && pos + 3 < s.size() && s[pos] == ',' && IsDigit(s[pos + 1]) &&
         IsDigit(s[pos + 2]) && IsDigit(s[pos + 3]) &&
         (pos + 4 >= s.size() || !IsDigit(s[pos + 4]))) {
    num.append(s.substr(pos + 1, 3));
    pos += 4;
  }
  if (pos + 1 < s.size() && s[pos] == '.' && IsDigit(s[pos + 1])) {
    if (!has_int) num.push_back('0');
    num.push_back('.');
    ++pos;
    while (pos < s.size() && IsDigit(s[pos])) num.push_back(s[pos++]);
  } else if (!has_int) {
    return 0;
  }
  *out = std::move(num);
  return pos;
}

// Sign, integer digits without leading zeros, fraction digits without trailing zeros; zero
// is unsigned. Input is ParseNumberPrefix output.
std::string Canonical(std::string_view num) {
  bool negative = false;
  if (!num.empty() && num.front() == '-') {
    negative = true;
    num.remove_prefix(1);
  }
  std::string_view int_part = num;
  std::string_view frac_part;
  if (size_t dot = num.find('.'); dot != std::string_view::npos) {
    int_part = num.substr(0, dot);
    frac_part = num.substr(dot + 1);
  }
  while (!int_part.empty() && int_part.front() == '0') int_part.remove_prefix(1);
  while (!frac_part.empty() && frac_part.back() == '0') frac_part.remove_suffix(1);
  std::string out;
  if (negative && (!int_part.empty() || !frac_part.empty())) out.push_back('-');
  out.append(int_part.empty() ? std::string_view("0") : int_part);
  if (!frac_part.empty()) {
    out.push_back('.');
    out.append(frac_part);
  }
  return out;
}

// The index just past the '}' matching the '{' that ends at `open_end - 1`, or npos.
size_t MatchingBrace(std::string_view text, size_t open_end) {
  int depth = 1;
  for (size_t i = open_end; i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return i;
  }
  return std::string_view::npos;
}

absl::Status LineError(const std::string& path, int lineno, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrFormat("%s:%d: %s", path, lineno, reason));
}

absl::StatusOr<Example> ParseLine(const std::string& path, int lineno, std::string_view line) {
  grpo::v1::ExampleRecord record;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(line.data(), line.size()), &record, options);
  if (!status.ok()) {
    const auto message = status.message();
    return LineError(path, lineno,
                     absl::StrFormat("not a valid example object: %s",
                                     std::string(message.data(), message.size())));
  }
  if (Trim(record.prompt()).empty()) {
    return LineError(path, lineno, "missing or empty string field \"prompt\"");
  }
  const v1::CodeTests& tests = record.tests();
  const int num_tests = tests.asserts_size() + tests.cases_size();
  if (Trim(record.answer()).empty() && num_tests == 0) {
    return LineError(path, lineno,
                     "missing or empty string field \"answer\" (and no \"tests\")");
  }
  if (num_tests > 256)
    return LineError(path, lineno, absl::StrFormat("\"tests\" has %d tests; at most 256", num_tests));
  for (int i = 0; i < tests.asserts_size(); ++i)
    if (Trim(tests.asserts(i)).empty())
      return LineError(path, lineno, absl::StrFormat("tests.asserts[%d] is blank", i));
  Example example;
  example.tests = tests;
  example.prompt = record.prompt();
  example.solution = record.solution();
  const std::string_view answer = record.answer();
  if (size_t marker = answer.rfind("####"); marker != std::string_view::npos) {
    // Commas out first, then trimmed: "#### , ," has no answer, not a blank one.
    std::string without_commas;
    for (char c : answer.substr(marker + 4)) {
      if (c != ',') without_commas.push_back(c);
    }
    example.answer = std::string(Trim(without_commas));
    if (example.answer.empty()) {
      return LineError(path, lineno, "field \"answer\" has nothing after its last \"####\"");
    }
    if (example.solution.empty()) example.solution = record.answer();
  } else {
    example.answer = std::string(Trim(answer));
  }
  return example;
}

}  // namespace

absl::Status ForEachJsonlLine(
    const std::string& path,
    const std::function<absl::Status(int lineno, std::string_view line)>& on_line) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) {
    const int err = errno;
    const std::string message =
        absl::StrFormat("cannot open JSONL file %s: %s", path, std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::FailedPreconditionError(message);
  }
  std::string contents;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    contents.append(buffer, n);
  }
  if (std::ferror(file.get())) {
    return absl::DataLossError(absl::StrFormat("error reading JSONL file %s", path));
  }
  std::string_view rest = contents;
  if (rest.substr(0, 3) == "\xEF\xBB\xBF") rest.remove_prefix(3);
  int lineno = 0;
  while (!rest.empty()) {
    ++lineno;
    const size_t newline = rest.find('\n');
    std::string_view line = rest.substr(0, newline);
    rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
    if (Trim(line).empty()) continue;
    if (absl::Status s = on_line(lineno, line); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Example>> LoadJsonl(const std::string& path) {
  std::vector<Example> examples;
  absl::Status status = ForEachJsonlLine(path, [&](int lineno, std::string_view line) {
    absl::StatusOr<Example> example = ParseLine(path, lineno, line);
    if (!example.ok()) return example.status();
    examples.push_back(*std::move(example));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return examples;
}

absl::StatusOr<std::vector<PreferencePair>> LoadPreferenceJsonl(const std::string& path) {
  std::vector<PreferencePair> pairs;
  absl::Status status = ForEachJsonlLine(path, [&](int lineno, std::string_view line) {
    grpo::v1::PreferenceRecord record;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    const auto parsed = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(line.data(), line.size()), &record, options);
    if (!parsed.ok()) {
      const auto message = parsed.message();
      return LineError(path, lineno,
                       absl::StrFormat("not a valid preference object: %s",
                                       std::string(message.data(), message.size())));
    }
    for (const auto& [field, value] :
         {std::pair<const char*, const std::string*>{"prompt", &record.prompt()},
          {"chosen", &record.chosen()},
          {"rejected", &record.rejected()}}) {
      if (Trim(*value).empty())
        return LineError(path, lineno,
                         absl::StrFormat("missing or empty string field \"%s\"", field));
    }
    pairs.push_back({record.prompt(), record.chosen(), record.rejected()});
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return pairs;
}

absl::StatusOr<std::vector<StepLabelledExample>> LoadStepJsonl(const std::string& path,
                                                               const StepRule& rule) {
  std::vector<StepLabelledExample> examples;
  absl::Status status = ForEachJsonlLine(path, [&](int lineno, std::string_view line) {
    grpo::v1::StepLabelledRecord record;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    const auto parsed = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(line.data(), line.size()), &record, options);
    if (!parsed.ok()) {
      const auto message = parsed.message();
      return LineError(path, lineno,
                       absl::StrFormat("not a valid step-labelled object: %s",
                                       std::string(message.data(), message.size())));
    }
    if (Trim(record.prompt()).empty())
      return LineError(path, lineno, "missing or empty string field \"prompt\"");
    if (record.steps().empty()) return LineError(path, lineno, "no \"steps\"");
    if (record.labels_size() != record.steps_size())
      return LineError(path, lineno,
                       absl::StrFormat("%d labels for %d steps: one label per step",
                                       record.labels_size(), record.steps_size()));
    StepLabelledExample example;
    for (int i = 0; i < record.labels_size(); ++i) {
      if (record.labels(i) != 0 && record.labels(i) != 1)
        return LineError(path, lineno,
                         absl::StrFormat("labels[%d] = %d: must be 0 (wrong) or 1 (right)", i,
                                         record.labels(i)));
      example.labels.push_back(record.labels(i));
    }
    absl::StatusOr<std::string> completion = JoinSteps(
        std::vector<std::string>(record.steps().begin(), record.steps().end()), rule);
    if (!completion.ok())
      return LineError(path, lineno, std::string(completion.status().message()));
    example.prompt = record.prompt();
    example.completion = *std::move(completion);
    example.step_ends = StepEnds(example.completion, rule);
    if (example.step_ends.size() != example.labels.size())
      return LineError(path, lineno,
                       absl::StrFormat("the %s rule splits the steps into %d, not %d",
                                       StepRuleName(rule), example.step_ends.size(),
                                       example.labels.size()));
    examples.push_back(std::move(example));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return examples;
}

std::vector<PreferencePair> ArithmeticPreferences(const std::vector<Problem>& problems,
                                                  uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<PreferencePair> pairs;
  for (const Problem& p : problems) {
    // Lines end "=<result>" or "#### <answer>": pick one and shift its number by 1..3.
    std::vector<size_t> number_starts;
    for (size_t i = 0; i < p.solution.size(); ++i) {
      if (p.solution[i] == '=' || (p.solution[i] == ' ' && i > 0 && p.solution[i - 1] == '#'))
        number_starts.push_back(i + 1);
    }
    if (number_starts.empty()) continue;
    const size_t start = number_starts[rng() % number_starts.size()];
    size_t end = start;
    if (end < p.solution.size() && p.solution[end] == '-') ++end;
    while (end < p.solution.size() && IsDigit(p.solution[end])) ++end;
    const long long value = std::stoll(p.solution.substr(start, end - start));
    const long long shifted = value + static_cast<long long>(1 + rng() % 3) * (rng() % 2 ? 1 : -1);
    std::string rejected = p.solution.substr(0, start) + std::to_string(shifted) +
                           p.solution.substr(end);
    pairs.push_back({p.prompt, p.solution, rejected});
  }
  return pairs;
}

std::vector<Example> ToExamples(const std::vector<Problem>& problems) {
  std::vector<Example> examples;
  examples.reserve(problems.size());
  for (const Problem& p : problems) {
    examples.push_back(Example{p.prompt, p.answer, p.solution, {}});
  }
  return examples;
}

absl::StatusOr<std::string> ExtractFinalAnswer(std::string_view text) {
  constexpr std::string_view kHashes = "####";
  constexpr std::string_view kBoxed = "\\boxed{";
  const size_t hashes = text.rfind(kHashes);
  const size_t boxed = text.rfind(kBoxed);
  if (hashes == std::string_view::npos && boxed == std::string_view::npos) {
    return absl::NotFoundError("no \"####\" or \"\\boxed{\" answer marker in the text");
  }
  std::string number;
  // npos is the largest size_t, so compare only positions that exist.
  if (boxed == std::string_view::npos || (hashes != std::string_view::npos && hashes > boxed)) {
    std::string_view after = text.substr(hashes + kHashes.size());
    while (!after.empty() && IsSpace(after.front())) after.remove_prefix(1);
    if (ParseNumberPrefix(after, &number) == 0) {
      return absl::NotFoundError("no number after the last \"####\"");
    }
    return number;
  }
  const size_t open_end = boxed + kBoxed.size();
  const size_t close = MatchingBrace(text, open_end);
  if (close == std::string_view::npos) {
    return absl::NotFoundError("the last \"\\boxed{\" is not closed");
  }
  if (ParseNumberPrefix(Trim(text.substr(open_end, close - open_end)), &number) == 0) {
    return absl::NotFoundError("the last \"\\boxed{...}\" does not start with a number");
  }
  return number;
}

absl::StatusOr<std::string> NormalizeNumber(std::string_view text) {
  const std::string_view trimmed = Trim(text);
  std::string number;
  const size_t used = ParseNumberPrefix(trimmed, &number);
  const std::string_view rest = trimmed.substr(used);
  if (used == 0 || !(rest.empty() || rest == ".")) {
    return absl::InvalidArgumentError(
        absl::StrFormat("\"%s\" is not a decimal number", std::string(trimmed)));
  }
  return number;
}

bool NumbersEqual(std::string_view a, std::string_view b) {
  absl::StatusOr<std::string> x = NormalizeNumber(a);
  absl::StatusOr<std::string> y = NormalizeNumber(b);
  return x.ok() && y.ok() && Canonical(*x) == Canonical(*y);
}

}  // namespace grpo
