// Training/evaluation examples: loading user JSONL, wrapping the built-in arithmetic task,
// and reading a final numeric answer out of model text.
//
// JSONL contract (LoadJsonl): one JSON object per line with a string field "prompt", a
// string "answer" and/or an object "tests", and an optional string "solution". "tests" is
// a code problem's tests (grpo.v1.CodeTests: {"language": "python", "asserts": ["assert
// f(1) == 2"], "cases": [{"input": "1 2", "output": "3"}]}), at most 256 of them, no
// assert blank. Blank lines are skipped. Any other line that is not
// such an object (bad JSON, a missing or empty prompt, neither an answer nor a test, a
// non-string value, an unknown field) fails the whole load with INVALID_ARGUMENT
// "<path>:<line>: <reason>";
// nothing is partially returned. Parsing is protobuf's JSON parser into
// grpo.v1.ExampleRecord, which tolerates a trailing comma and takes the last of duplicate
// keys. A UTF-8 byte-order mark on the first line is ignored. An empty file yields no
// examples (not an error); callers that need data check for emptiness.
//
// GSM8K answers: if "answer" contains "####", the answer is the text after the LAST "####",
// with commas removed, trimmed ("#### 1,234" -> "1234"), and the original answer text
// becomes the solution unless the record gives "solution" explicitly.
//
// Numbers (ExtractFinalAnswer, NormalizeNumber, NumbersEqual) are plain decimals: an
// optional sign, digits with optional thousands commas ("1,234,567"), an optional fraction
// (".5" reads as "0.5"). Exponents, fractions like 1/2 and words are not numbers.
// All functions here are pure or only read the named file; safe to call from any thread.
#ifndef GRPO_DATA_DATASET_H_
#define GRPO_DATA_DATASET_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/arithmetic_task.h"
#include "data/step_split.h"
#include "grpo/v1/code_tests.pb.h"

namespace grpo {

struct Example {
  std::string prompt;
  std::string answer;
  std::string solution;  // optional reference worked solution, may be empty
  v1::CodeTests tests;   // a code problem's tests (no asserts or cases: none)
};

// True if `example` carries tests for code_tests.
inline bool HasTests(const Example& example) {
  return example.tests.asserts_size() + example.tests.cases_size() > 0;
}

absl::StatusOr<std::vector<Example>> LoadJsonl(const std::string& path);

// Calls on_line for every non-blank line (1-based line numbers; a UTF-8 BOM is skipped);
// stops at and returns the first error. NOT_FOUND / PERMISSION_DENIED for the file.
absl::Status ForEachJsonlLine(
    const std::string& path,
    const std::function<absl::Status(int lineno, std::string_view line)>& on_line);

// A preference pair for reward-model training: `chosen` is the better completion.
struct PreferencePair {
  std::string prompt;
  std::string chosen;
  std::string rejected;
};

// JSONL with string fields prompt, chosen, rejected (all required, non-empty); errors name
// path:line as LoadJsonl's do.
absl::StatusOr<std::vector<PreferencePair>> LoadPreferenceJsonl(const std::string& path);

// A completion with a correctness label per step, for process reward-model training: the
// steps joined by `rule` (data/step_split.h) and each step's end in it.
struct StepLabelledExample {
  std::string prompt;
  std::string completion;
  std::vector<int> step_ends;  // byte index of each step's last byte in completion
  std::vector<int> labels;     // 1 = the step is right, 0 = wrong; one per step
};

// PRM800K-style JSONL: {"prompt": "...", "steps": ["...", ...], "labels": [1, 0, ...]},
// one label (0 or 1) per step. Errors name path:line as LoadJsonl's do: labels that do
// not match the steps, a label other than 0/1, an empty step, a step the rule would split
// differently (it holds the delimiter).
absl::StatusOr<std::vector<StepLabelledExample>> LoadStepJsonl(const std::string& path,
                                                               const StepRule& rule);

// Synthetic preferences from worked arithmetic solutions: chosen = the solution; rejected =
// the same solution with one step's result or the final answer off by a small amount.
std::vector<PreferencePair> ArithmeticPreferences(const std::vector<Problem>& problems,
                                                  uint64_t seed);

std::vector<Example> ToExamples(const std::vector<Problem>& problems);

// The final answer of a model completion: the number right after the last "####" marker
// (spaces allowed in between) or at the start of the last "\boxed{...}", whichever marker
// comes later in the text. Normalised: '+' and thousands commas dropped, a trailing period
// and any text after the number ignored ("#### 1,234. apples" -> "1234"). NOT_FOUND when
// there is no marker or no number right after the last one (an earlier marker is not used:
// the last one is the model's final word).
absl::StatusOr<std::string> ExtractFinalAnswer(std::string_view text);

// `text` (trimmed) as a normalised number as above, allowing only a trailing period after
// it. INVALID_ARGUMENT if `text` is not exactly one number.
absl::StatusOr<std::string> NormalizeNumber(std::string_view text);

// True if both are numbers (per NormalizeNumber) with the same value, compared exactly on
// the decimal digits: "42" == "42.0" == "+42" == "042", "-0" == "0", "1,234" == "1234".
// False if either is not a number.
bool NumbersEqual(std::string_view a, std::string_view b);

}  // namespace grpo

#endif  // GRPO_DATA_DATASET_H_
