// ArithmeticTask: the built-in synthetic multi-step arithmetic task (docs/design.md §4).
//
// A problem is an expression of small positive integers and the operators + - *, such as
// "7+5*3-4". It is evaluated strictly LEFT TO RIGHT, with no operator precedence, so that
// every step is a single operation on the running result:
//
//   prompt   "7+5*3-4=\n"
//   solution "7+5=12\n12*3=36\n36-4=32\n#### 32"   (no trailing newline; the model emits
//                                                   EOS after the answer)
//   answer   "32"
//
// Intermediate results may be negative and are written plainly ("2-5=-3\n-3*4=-12\n").
// Prompts stay short because the policy is tiny and character-level (tokenizer/tokenizer.h).
//
// Train/held-out split: a prompt is held out iff a stable hash of (task seed, prompt)
// falls in 1 of 5 buckets. The split depends only on the prompt string and the task seed,
// never on draw order, so the train set and the held-out set never share a prompt.
//
// Randomness is explicit: Sample takes the caller's engine; TrainSet and HeldOutSet seed
// their own and are deterministic. Integer draws use our own rejection sampling rather than
// std::uniform_int_distribution, whose output differs between standard libraries.
//
// ArithmeticTask is immutable after construction: safe to share between threads (each
// thread passing its own engine to Sample).
#ifndef GRPO_DATA_ARITHMETIC_TASK_H_
#define GRPO_DATA_ARITHMETIC_TASK_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpo {

struct ArithmeticOptions {
  int min_ops = 2;  // operators per expression, inclusive range
  int max_ops = 3;
  int max_operand = 9;  // operands are drawn from 1..max_operand
};

struct Problem {
  std::string prompt;    // "7+5*3-4=\n"
  std::string solution;  // worked steps, then "#### <answer>"
  std::string answer;    // decimal integer, possibly negative
};

// A parsed expression: first operand, then (operator, operand) pairs in order.
struct Expression {
  int64_t first = 0;
  std::vector<std::pair<char, int64_t>> ops;
};

// Parses "7+5*3", also accepting the prompt form with a trailing "=" or "=\n". The first
// operand may carry a leading '-'; later operands are unsigned. No whitespace. At least one
// operator. INVALID_ARGUMENT (naming the offending character and position) otherwise.
absl::StatusOr<Expression> ParseExpression(std::string_view text);

// lhs op rhs with op in "+-*"; false on int64 overflow or an unknown operator.
bool ApplyOp(int64_t lhs, char op, int64_t rhs, int64_t* result);

// INVALID_ARGUMENT unless 1 <= min_ops <= max_ops <= 32, 1 <= max_operand <= 1000000, and
// the largest possible intermediate result fits in int64.
absl::Status ValidateArithmeticOptions(const ArithmeticOptions& opts);

class ArithmeticTask {
 public:
  // Out-of-range options are clamped into the valid region described at
  // ValidateArithmeticOptions (so construction never fails); use Create to reject them.
  explicit ArithmeticTask(ArithmeticOptions opts, uint64_t seed);

  static absl::StatusOr<ArithmeticTask> Create(ArithmeticOptions opts, uint64_t seed);

  // Draws one problem uniformly (number of operators, each operator, each operand). The
  // result may be held out; callers wanting train-only problems use TrainSet.
  Problem Sample(std::mt19937_64& rng) const;

  bool IsHeldOut(const Problem& problem) const;
  bool IsHeldOutPrompt(std::string_view prompt) const;

  // n problems drawn from the non-held-out prompts, duplicates allowed, deterministic given
  // (task seed, seed). Returns fewer only when the prompt space has (practically) no train
  // prompts: the draw gives up after kMaxConsecutiveMisses held-out draws in a row.
  std::vector<Problem> TrainSet(size_t n, uint64_t seed) const;

  // Up to n held-out problems with distinct prompts, deterministic given the task seed (a
  // smaller n yields a prefix of a larger n's set). If fewer than n held-out prompts exist
  // it returns those it finds: it stops after kMaxConsecutiveMisses draws in a row that
  // found no new held-out prompt.
  std::vector<Problem> HeldOutSet(size_t n) const;

  // Builds the worked solution for `expression` ("7+5*3", or the prompt form "7+5*3=\n").
  // INVALID_ARGUMENT on malformed input or int64 overflow.
  static absl::StatusOr<Problem> Solve(std::string_view expression);

  const ArithmeticOptions& options() const { return opts_; }
  uint64_t seed() const { return seed_; }

  static constexpr int kHeldOutOneIn = 5;
  static constexpr size_t kMaxConsecutiveMisses = 200000;

 private:
  std::string SampleExpression(std::mt19937_64& rng) const;

  ArithmeticOptions opts_;
  uint64_t seed_;
};

}  // namespace grpo

#endif  // GRPO_DATA_ARITHMETIC_TASK_H_
