#include "rewards/rewards.h"

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/step_split.h"
#include "absl/strings/str_join.h"
#include "data/arithmetic_task.h"
#include "data/dataset.h"

namespace grpo {
namespace {

constexpr std::string_view kAnswerMarker = "####";

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsSpace(char c) { return IsBlank(c) || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Debian's Abseil has its own absl::string_view, distinct from std::string_view.
absl::string_view AsAbsl(std::string_view s) { return {s.data(), s.size()}; }

// A cursor over one line. Each Read* consumes on success only.
class Cursor {
 public:
  explicit Cursor(std::string_view s) : s_(s) {}

  void SkipBlanks() {
    while (pos_ < s_.size() && IsBlank(s_[pos_])) ++pos_;
  }
  bool ReadChar(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  // "-?[0-9]+". Returns false if there is no such integer here; an integer that is there
  // but does not fit int64 is consumed and reported through *overflow.
  bool ReadInt(int64_t* value, bool* overflow) {
    size_t p = pos_;
    const bool negative = p < s_.size() && s_[p] == '-';
    if (negative) ++p;
    const size_t digits_start = p;
    int64_t v = 0;
    bool over = false;
    while (p < s_.size() && IsDigit(s_[p])) {
      // Accumulate negatively so that INT64_MIN itself parses.
      over = over || __builtin_mul_overflow(v, int64_t{10}, &v) ||
             __builtin_sub_overflow(v, int64_t{s_[p] - '0'}, &v);
      ++p;
    }
    if (p == digits_start) return false;
    if (!negative) over = over || __builtin_mul_overflow(v, int64_t{-1}, &v);
    pos_ = p;
    *value = v;
    *overflow = *overflow || over;
    return true;
  }
  bool AtEnd() const { return pos_ == s_.size(); }
  std::string_view Rest() const { return s_.substr(pos_); }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

struct StepLine {
  int64_t a = 0;
  char op = 0;
  int64_t b = 0;
  int64_t c = 0;
  bool overflow = false;  // some number did not fit int64; its value is meaningless
};

// "a<op>b=c", blanks allowed between tokens. nullopt if the line is not of that shape.
std::optional<StepLine> ParseStepLine(std::string_view line) {
  StepLine step;
  Cursor cur(line);
  cur.SkipBlanks();
  if (!cur.ReadInt(&step.a, &step.overflow)) return std::nullopt;
  cur.SkipBlanks();
  for (char op : {'+', '-', '*'}) {
    if (cur.ReadChar(op)) {
      step.op = op;
      break;
    }
  }
  if (step.op == 0) return std::nullopt;
  cur.SkipBlanks();
  if (!cur.ReadInt(&step.b, &step.overflow)) return std::nullopt;
  cur.SkipBlanks();
  if (!cur.ReadChar('=')) return std::nullopt;
  cur.SkipBlanks();
  if (!cur.ReadInt(&step.c, &step.overflow)) return std::nullopt;
  cur.SkipBlanks();
  if (!cur.AtEnd()) return std::nullopt;
  return step;
}

// The task's exact step format, "<int><op><int>=<int>" with no blanks.
bool IsStrictStepLine(std::string_view line) {
  Cursor cur(line);
  int64_t unused;
  bool overflow = false;  // the format does not care about magnitude
  if (!cur.ReadInt(&unused, &overflow)) return false;
  if (!cur.ReadChar('+') && !cur.ReadChar('-') && !cur.ReadChar('*')) return false;
  return cur.ReadInt(&unused, &overflow) && cur.ReadChar('=') && cur.ReadInt(&unused, &overflow) &&
         cur.AtEnd();
}

// Calls fn(line, end_offset) for every line of `text`: each '\n'-terminated line, then a
// final unterminated line if non-empty. end_offset is the index of the line's '\n', or of
// its last character for the final line.
template <typename Fn>
void ForEachLine(std::string_view text, Fn fn) {
  size_t start = 0;
  while (start < text.size()) {
    const size_t newline = text.find('\n', start);
    if (newline == std::string_view::npos) {
      fn(text.substr(start), static_cast<int>(text.size() - 1));
      return;
    }
    fn(text.substr(start, newline - start), static_cast<int>(newline));
    start = newline + 1;
  }
}

}  // namespace

absl::StatusOr<RewardOutput> ExactAnswerReward::Score(const RewardInput& input) const {
  RewardOutput out;
  absl::StatusOr<std::string> answer = ExtractFinalAnswer(input.completion);
  out.reward = (answer.ok() && NumbersEqual(*answer, input.reference_answer)) ? 1.0 : 0.0;
  return out;
}

absl::StatusOr<RewardOutput> FormatReward::Score(const RewardInput& input) const {
  RewardOutput out;
  std::string_view text = input.completion;
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);

  const size_t last_line_start =
      text.rfind('\n') == std::string_view::npos ? 0 : text.rfind('\n') + 1;
  std::string_view steps = text.substr(0, last_line_start);
  Cursor final_line(text.substr(last_line_start));
  int64_t unused;
  bool overflow = false;
  bool strict = !steps.empty() && final_line.ReadChar('#') && final_line.ReadChar('#') &&
                final_line.ReadChar('#') && final_line.ReadChar('#') && final_line.ReadChar(' ') &&
                final_line.ReadInt(&unused, &overflow) && final_line.AtEnd();
  ForEachLine(steps,
              [&](std::string_view line, int) { strict = strict && IsStrictStepLine(line); });
  if (strict) {
    out.reward = 1.0;
    return out;
  }

  if (size_t marker = text.rfind(kAnswerMarker); marker != std::string_view::npos) {
    std::string_view after = text.substr(marker + kAnswerMarker.size());
    while (!after.empty() && IsSpace(after.front())) after.remove_prefix(1);
    if (!after.empty() && (after.front() == '+' || after.front() == '-')) {
      after.remove_prefix(1);
    }
    if (!after.empty() && IsDigit(after.front())) out.reward = 0.5;
  }
  return out;
}

absl::StatusOr<RewardOutput> ArithmeticStepReward::Score(const RewardInput& input) const {
  absl::StatusOr<Expression> expr = ParseExpression(input.prompt);
  if (!expr.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("arithmetic_steps needs an arithmetic task prompt such as \"7+5*3=\\n\": ",
                     expr.status().message()));
  }
  RewardOutput out;
  std::optional<int64_t> previous = expr->first;  // nullopt once a result overflowed
  size_t steps_seen = 0;
  ForEachLine(input.completion, [&](std::string_view line, int end_offset) {
    double reward = 0;
    if (StartsWith(line, kAnswerMarker)) {
      Cursor cur(line.substr(kAnswerMarker.size()));
      cur.SkipBlanks();
      int64_t n;
      bool overflow = false;
      if (cur.ReadInt(&n, &overflow)) {
        cur.SkipBlanks();
        const bool correct = cur.AtEnd() && !overflow && steps_seen > 0 && previous.has_value() &&
                             n == *previous &&
                             NumbersEqual(absl::StrCat(n), input.reference_answer);
        reward = correct ? 1.0 : 0.0;
      }
    } else if (std::optional<StepLine> step = ParseStepLine(line)) {
      int64_t value;
      const bool correct = !step->overflow && steps_seen < expr->ops.size() &&
                           step->op == expr->ops[steps_seen].first &&
                           step->b == expr->ops[steps_seen].second && previous.has_value() &&
                           step->a == *previous && ApplyOp(step->a, step->op, step->b, &value) &&
                           value == step->c;
      reward = correct ? 1.0 : 0.0;
      previous = step->overflow ? std::nullopt : std::optional<int64_t>(step->c);
      ++steps_seen;
    }
    out.steps.push_back(StepReward{reward, end_offset});
  });
  if (!out.steps.empty()) {
    double sum = 0;
    for (const StepReward& s : out.steps) sum += s.reward;
    out.reward = sum / static_cast<double>(out.steps.size());
  }
  return out;
}

std::vector<std::string> RewardFunctionNames() {
  return {"exact_answer", "format", "arithmetic_steps", "overlong_penalty"};
}

absl::StatusOr<RewardOutput> OverlongPenalty::Score(const RewardInput& input) const {
  const double length = static_cast<double>(input.completion.size());
  RewardOutput out;
  if (length > max_length_) {
    out.reward = -1.0;
  } else if (length > max_length_ - cache_length_) {
    out.reward = (max_length_ - cache_length_ - length) / cache_length_;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeRewardFunction(std::string_view name,
                                                                   const RewardParams& params) {
  if (name == "overlong_penalty") {
    for (const auto& [key, value] : params) {
      if (key != "max_length" && key != "cache_length")
        return absl::InvalidArgumentError(absl::StrFormat(
            "overlong_penalty: unknown parameter \"%s\" (known: max_length, cache_length)", key));
    }
    auto max_length = params.find("max_length");
    if (max_length == params.end() || !(max_length->second > 0) ||
        !std::isfinite(max_length->second))
      return absl::InvalidArgumentError(
          "overlong_penalty: params.max_length is required and must be a positive number");
    auto cache = params.find("cache_length");
    const double cache_length = cache == params.end() ? 0.0 : cache->second;
    if (!(cache_length >= 0 && cache_length < max_length->second))
      return absl::InvalidArgumentError(absl::StrFormat(
          "overlong_penalty: params.cache_length = %g must be in [0, max_length)", cache_length));
    return std::make_unique<OverlongPenalty>(max_length->second, cache_length);
  }
  if (!params.empty() && (name == "exact_answer" || name == "format" ||
                          name == "arithmetic_steps"))
    return absl::InvalidArgumentError(
        absl::StrFormat("%s takes no parameters (got \"%s\")", name, params.begin()->first));
  if (name == "exact_answer") return std::make_unique<ExactAnswerReward>();
  if (name == "format") return std::make_unique<FormatReward>();
  if (name == "arithmetic_steps") return std::make_unique<ArithmeticStepReward>();
  return absl::InvalidArgumentError(absl::StrFormat("unknown reward function \"%s\" (known: %s)",
                                                    name,
                                                    absl::StrJoin(RewardFunctionNames(), ", ")));
}

namespace {

absl::Status CheckWeight(size_t index, std::string_view name, double weight) {
  if (!std::isfinite(weight) || weight < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "reward spec %d (\"%s\"): weight %g must be finite and >= 0", index, name, weight));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckStepDelimiter(std::string_view step_delimiter, const RewardFunction& fn) {
  if (step_delimiter.empty()) return absl::OkStatus();
  if (!fn.gives_step_rewards())
    return absl::InvalidArgumentError(absl::StrCat(
        "step_delimiter: ", AsAbsl(fn.name()), " gives no step rewards"));
  absl::StatusOr<StepRule> rule = ParseStepRule(step_delimiter);
  if (!rule.ok()) return absl::InvalidArgumentError(absl::StrCat("step_delimiter: ", rule.status().message()));
  if (StepRuleName(*rule) != fn.step_rule())
    return absl::InvalidArgumentError(absl::StrCat(
        "step_delimiter: \"", StepRuleName(*rule), "\", but ", AsAbsl(fn.name()),
        " splits steps by \"", fn.step_rule(), "\"",
        fn.name() == "process_reward_model" ? " (the rule it was trained with: grpo_train_rm --step_delimiter)" : ""));
  return absl::OkStatus();
}

absl::StatusOr<CompositeReward> CompositeReward::Create(
    const std::vector<WeightedRewardSpec>& specs) {
  if (specs.empty()) {
    return absl::InvalidArgumentError("reward spec list is empty; need at least one function");
  }
  std::vector<WeightedRewardFunction> functions;
  // Validate every spec here, in order, so the first bad entry is the one reported.
  std::set<std::string> seen;
  for (size_t i = 0; i < specs.size(); ++i) {
    const WeightedRewardSpec& spec = specs[i];
    if (absl::Status s = CheckWeight(i, spec.name, spec.weight); !s.ok()) return s;
    if (!seen.insert(spec.name).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("reward spec %d: function \"%s\" is listed twice", i, spec.name));
    }
    absl::StatusOr<std::unique_ptr<RewardFunction>> fn =
        MakeRewardFunction(spec.name, spec.params);
    if (!fn.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("reward spec %d: %s", i, fn.status().message()));
    }
    functions.push_back(WeightedRewardFunction{*std::move(fn), spec.weight});
  }
  return CreateFromFunctions(std::move(functions));
}

absl::StatusOr<CompositeReward> CompositeReward::CreateFromFunctions(
    std::vector<WeightedRewardFunction> functions) {
  if (functions.empty()) {
    return absl::InvalidArgumentError("reward function list is empty; need at least one");
  }
  CompositeReward composite;
  std::set<std::string> seen;
  for (size_t i = 0; i < functions.size(); ++i) {
    WeightedRewardFunction& entry = functions[i];
    if (entry.function == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat("reward function %d is null", i));
    }
    std::string name(entry.function->name());
    if (absl::Status s = CheckWeight(i, name, entry.weight); !s.ok()) return s;
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("reward spec %d: function \"%s\" is listed twice", i, name));
    }
    composite.names_.push_back(std::move(name));
    composite.weights_.push_back(entry.weight);
    composite.functions_.push_back(std::move(entry.function));
  }
  return composite;
}

absl::StatusOr<std::vector<RewardOutput>> RewardFunction::ScoreBatch(
    const std::vector<RewardInput>& inputs) const {
  std::vector<RewardOutput> outputs;
  outputs.reserve(inputs.size());
  for (const RewardInput& input : inputs) {
    absl::StatusOr<RewardOutput> out = Score(input);
    if (!out.ok()) return out.status();
    outputs.push_back(*std::move(out));
  }
  return outputs;
}

absl::StatusOr<CompositeOutput> CompositeReward::Score(const RewardInput& input) const {
  absl::StatusOr<std::vector<CompositeOutput>> out = ScoreBatch({input});
  if (!out.ok()) return out.status();
  return std::move(out->front());
}

absl::StatusOr<std::vector<CompositeOutput>> CompositeReward::ScoreBatch(
    const std::vector<RewardInput>& inputs) const {
  std::vector<std::vector<RewardOutput>> by_function;
  for (const auto& fn : functions_) {
    absl::StatusOr<std::vector<RewardOutput>> results = fn->ScoreBatch(inputs);
    if (!results.ok()) {
      return absl::Status(results.status().code(),
                          absl::StrCat("reward function \"", AsAbsl(fn->name()),
                                       "\": ", results.status().message()));
    }
    if (results->size() != inputs.size())
      return absl::InternalError(absl::StrCat("reward function \"", AsAbsl(fn->name()),
                                              "\" returned ", results->size(), " outputs for ",
                                              inputs.size(), " inputs"));
    by_function.push_back(*std::move(results));
  }
  std::vector<CompositeOutput> outputs;
  outputs.reserve(inputs.size());
  std::vector<const RewardOutput*> row(functions_.size());
  for (size_t j = 0; j < inputs.size(); ++j) {
    for (size_t i = 0; i < functions_.size(); ++i) row[i] = &by_function[i][j];
    absl::StatusOr<CompositeOutput> out = Combine(inputs[j], row);
    if (!out.ok()) return out.status();
    outputs.push_back(*std::move(out));
  }
  return outputs;
}

absl::StatusOr<CompositeOutput> CompositeReward::Combine(
    const RewardInput& input, const std::vector<const RewardOutput*>& outputs) const {
  CompositeOutput out;
  out.per_function.reserve(functions_.size());
  std::map<int, double> steps_by_offset;
  for (size_t i = 0; i < functions_.size(); ++i) {
    const RewardFunction& fn = *functions_[i];
    const RewardOutput* result = outputs[i];
    if (!std::isfinite(result->reward)) {
      return absl::InternalError(absl::StrFormat(
          "reward function \"%s\" returned a non-finite reward (%g)", fn.name(), result->reward));
    }
    for (const StepReward& step : result->steps) {
      if (!std::isfinite(step.reward)) {
        return absl::InternalError(absl::StrFormat(
            "reward function \"%s\" returned a non-finite step reward (%g) at offset %d", fn.name(),
            step.reward, step.end_offset));
      }
      if (step.end_offset < 0 || static_cast<size_t>(step.end_offset) >= input.completion.size()) {
        return absl::InternalError(absl::StrFormat(
            "reward function \"%s\" returned step end_offset %d outside the completion "
            "(%d characters)",
            fn.name(), step.end_offset, input.completion.size()));
      }
      steps_by_offset[step.end_offset] += weights_[i] * step.reward;
    }
    out.per_function.push_back(result->reward);
    out.total += weights_[i] * result->reward;
  }
  if (!std::isfinite(out.total)) {
    return absl::InternalError(
        absl::StrFormat("weighted reward total is not finite (%g)", out.total));
  }
  out.steps.reserve(steps_by_offset.size());
  for (const auto& [offset, reward] : steps_by_offset) {
    if (!std::isfinite(reward)) {
      return absl::InternalError(
          absl::StrFormat("weighted step reward at offset %d is not finite (%g)", offset, reward));
    }
    out.steps.push_back(StepReward{reward, offset});
  }
  return out;
}

}  // namespace grpo
