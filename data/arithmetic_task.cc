#include "data/arithmetic_task.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <unordered_set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace grpo {
namespace {

constexpr int kMaxOpsLimit = 32;
constexpr int kMaxOperandLimit = 1000000;
constexpr char kOperators[] = {'+', '-', '*'};

// Debian's Abseil is built with its own absl::string_view, distinct from
// std::string_view, so the absl string helpers need an explicit conversion.
absl::string_view AsAbsl(std::string_view s) { return {s.data(), s.size()}; }
bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
std::string Escape(std::string_view s) { return absl::CEscape(AsAbsl(s)); }

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a over the seed's bytes (fixed little-endian order, so the split is the same on
// every platform) then the prompt's, finished with SplitMix64 because FNV's low bits mix
// poorly and the split takes the hash modulo a small number.
uint64_t SaltedPromptHash(uint64_t seed, std::string_view prompt) {
  uint64_t h = 0xcbf29ce484222325ULL;
  constexpr uint64_t kPrime = 0x100000001b3ULL;
  for (int i = 0; i < 8; ++i) {
    h ^= (seed >> (8 * i)) & 0xff;
    h *= kPrime;
  }
  for (char c : prompt) {
    h ^= static_cast<unsigned char>(c);
    h *= kPrime;
  }
  return SplitMix64(h);
}

// Uniform integer in [lo, hi] by rejection, identical across standard libraries.
int64_t UniformInt(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
  if (range == 0) return static_cast<int64_t>(rng());  // the full 64-bit range
  const uint64_t threshold = (0 - range) % range;
  uint64_t x = rng();
  while (x < threshold) x = rng();
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + x % range);
}

// Sets *out to the largest |intermediate result| the options can produce; false if that
// overflows int64. For m >= 2 the worst case is multiplying throughout: m^(ops+1).
bool MaxMagnitude(int max_ops, int max_operand, int64_t* out) {
  int64_t bound = max_operand;
  for (int k = 0; k < max_ops; ++k) {
    int64_t next_mul, next_add;
    if (__builtin_mul_overflow(bound, static_cast<int64_t>(max_operand), &next_mul) ||
        __builtin_add_overflow(bound, static_cast<int64_t>(max_operand), &next_add)) {
      return false;
    }
    bound = std::max(next_mul, next_add);
  }
  *out = bound;
  return true;
}

ArithmeticOptions Clamp(ArithmeticOptions o) {
  o.min_ops = std::clamp(o.min_ops, 1, kMaxOpsLimit);
  o.max_ops = std::clamp(o.max_ops, o.min_ops, kMaxOpsLimit);
  o.max_operand = std::clamp(o.max_operand, 1, kMaxOperandLimit);
  int64_t unused;
  // With one operator and operands <= 10^6 the bound is 10^12, so this terminates.
  while (!MaxMagnitude(o.max_ops, o.max_operand, &unused)) {
    --o.max_ops;
    o.min_ops = std::min(o.min_ops, o.max_ops);
  }
  return o;
}

// Parses an unsigned decimal at text[*pos], advancing *pos. Requires at least one digit.
absl::Status ParseUnsigned(std::string_view text, size_t* pos, int64_t* value) {
  const size_t start = *pos;
  int64_t v = 0;
  while (*pos < text.size() && text[*pos] >= '0' && text[*pos] <= '9') {
    if (__builtin_mul_overflow(v, int64_t{10}, &v) ||
        __builtin_add_overflow(v, int64_t{text[*pos] - '0'}, &v)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "expression \"%s\": operand at position %d overflows int64", Escape(text), start));
    }
    ++*pos;
  }
  if (*pos == start) {
    if (*pos >= text.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expression \"%s\": expected a number at position %d, found end of input",
                          Escape(text), start));
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("expression \"%s\": expected a number at position %d, found '%s'",
                        Escape(text), start, Escape(text.substr(start, 1))));
  }
  *value = v;
  return absl::OkStatus();
}

}  // namespace

bool ApplyOp(int64_t lhs, char op, int64_t rhs, int64_t* result) {
  switch (op) {
    case '+':
      return !__builtin_add_overflow(lhs, rhs, result);
    case '-':
      return !__builtin_sub_overflow(lhs, rhs, result);
    case '*':
      return !__builtin_mul_overflow(lhs, rhs, result);
    default:
      return false;
  }
}

absl::StatusOr<Expression> ParseExpression(std::string_view text) {
  std::string_view body = text;
  if (EndsWith(body, "=\n")) {
    body.remove_suffix(2);
  } else if (EndsWith(body, "=")) {
    body.remove_suffix(1);
  }
  if (body.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("expression \"%s\" is empty", Escape(text)));
  }
  Expression expr;
  size_t pos = 0;
  const bool negative = body[0] == '-';
  if (negative) ++pos;
  int64_t first = 0;
  if (absl::Status s = ParseUnsigned(body, &pos, &first); !s.ok()) return s;
  expr.first = negative ? -first : first;
  while (pos < body.size()) {
    const char op = body[pos];
    if (op != '+' && op != '-' && op != '*') {
      return absl::InvalidArgumentError(
          absl::StrFormat("expression \"%s\": expected one of + - * at position %d, found '%s'",
                          Escape(body), pos, Escape(body.substr(pos, 1))));
    }
    ++pos;
    int64_t operand = 0;
    if (absl::Status s = ParseUnsigned(body, &pos, &operand); !s.ok()) return s;
    expr.ops.emplace_back(op, operand);
  }
  if (expr.ops.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "expression \"%s\" has no operator (need at least one of + - *)", Escape(body)));
  }
  return expr;
}

absl::Status ValidateArithmeticOptions(const ArithmeticOptions& o) {
  if (o.min_ops < 1 || o.min_ops > kMaxOpsLimit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ArithmeticOptions.min_ops = %d, want 1..%d", o.min_ops, kMaxOpsLimit));
  }
  if (o.max_ops < o.min_ops || o.max_ops > kMaxOpsLimit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ArithmeticOptions.max_ops = %d, want min_ops (%d)..%d", o.max_ops,
                        o.min_ops, kMaxOpsLimit));
  }
  if (o.max_operand < 1 || o.max_operand > kMaxOperandLimit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ArithmeticOptions.max_operand = %d, want 1..%d", o.max_operand, kMaxOperandLimit));
  }
  int64_t unused;
  if (!MaxMagnitude(o.max_ops, o.max_operand, &unused)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ArithmeticOptions: max_ops = %d with max_operand = %d can overflow int64 "
                        "(max_operand^(max_ops+1) must fit)",
                        o.max_ops, o.max_operand));
  }
  return absl::OkStatus();
}

ArithmeticTask::ArithmeticTask(ArithmeticOptions opts, uint64_t seed)
    : opts_(Clamp(opts)), seed_(seed) {}

absl::StatusOr<ArithmeticTask> ArithmeticTask::Create(ArithmeticOptions opts, uint64_t seed) {
  if (absl::Status s = ValidateArithmeticOptions(opts); !s.ok()) return s;
  return ArithmeticTask(opts, seed);
}

std::string ArithmeticTask::SampleExpression(std::mt19937_64& rng) const {
  const int64_t n_ops = UniformInt(rng, opts_.min_ops, opts_.max_ops);
  std::string expr = absl::StrCat(UniformInt(rng, 1, opts_.max_operand));
  for (int64_t i = 0; i < n_ops; ++i) {
    expr.push_back(kOperators[UniformInt(rng, 0, 2)]);
    absl::StrAppend(&expr, UniformInt(rng, 1, opts_.max_operand));
  }
  return expr;
}

Problem ArithmeticTask::Sample(std::mt19937_64& rng) const {
  absl::StatusOr<Problem> problem = Solve(SampleExpression(rng));
  // Clamped options make malformed expressions and overflow impossible; an error here is a
  // bug in this file, so fail loudly in debug builds and return something usable otherwise.
  assert(problem.ok());
  if (!problem.ok()) return Problem{"1+1=\n", "1+1=2\n#### 2", "2"};
  return *std::move(problem);
}

bool ArithmeticTask::IsHeldOutPrompt(std::string_view prompt) const {
  return SaltedPromptHash(seed_, prompt) % kHeldOutOneIn == 0;
}

bool ArithmeticTask::IsHeldOut(const Problem& problem) const {
  return IsHeldOutPrompt(problem.prompt);
}

std::vector<Problem> ArithmeticTask::TrainSet(size_t n, uint64_t seed) const {
  std::mt19937_64 rng(SplitMix64(SplitMix64(seed_) ^ seed));
  std::vector<Problem> out;
  out.reserve(n);
  size_t misses = 0;
  while (out.size() < n && misses < kMaxConsecutiveMisses) {
    Problem p = Sample(rng);
    if (IsHeldOut(p)) {
      ++misses;
      continue;
    }
    misses = 0;
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<Problem> ArithmeticTask::HeldOutSet(size_t n) const {
  // A fixed salt keeps this stream apart from TrainSet(_, 0).
  std::mt19937_64 rng(SplitMix64(seed_ ^ 0x68656c646f7574ULL));
  std::vector<Problem> out;
  std::unordered_set<std::string> seen;
  size_t misses = 0;
  while (out.size() < n && misses < kMaxConsecutiveMisses) {
    std::string expr = SampleExpression(rng);
    std::string prompt = absl::StrCat(expr, "=\n");
    if (!IsHeldOutPrompt(prompt) || !seen.insert(prompt).second) {
      ++misses;
      continue;
    }
    misses = 0;
    absl::StatusOr<Problem> p = Solve(expr);
    assert(p.ok());
    if (p.ok()) out.push_back(*std::move(p));
  }
  return out;
}

absl::StatusOr<Problem> ArithmeticTask::Solve(std::string_view expression) {
  absl::StatusOr<Expression> expr = ParseExpression(expression);
  if (!expr.ok()) return expr.status();
  Problem problem;
  std::string body(expression);
  if (EndsWith(body, "=\n")) {
    body.resize(body.size() - 2);
  } else if (EndsWith(body, "=")) {
    body.resize(body.size() - 1);
  }
  problem.prompt = absl::StrCat(body, "=\n");
  int64_t acc = expr->first;
  for (const auto& [op, operand] : expr->ops) {
    int64_t next;
    if (!ApplyOp(acc, op, operand, &next)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expression \"%s\": %d%c%d overflows int64", body, acc, op, operand));
    }
    absl::StrAppend(&problem.solution, acc, std::string(1, op), operand, "=", next, "\n");
    acc = next;
  }
  problem.answer = absl::StrCat(acc);
  absl::StrAppend(&problem.solution, "#### ", problem.answer);
  return problem;
}

}  // namespace grpo
