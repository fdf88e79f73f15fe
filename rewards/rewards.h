// Reward functions: score one completion of one prompt. This interface is what the
// (future) gRPC reward server serves unchanged, so it stays plain data in, plain data out.
//
// Contract:
//   - Score is const and thread-safe; functions hold no mutable state.
//   - Malformed model text never errors, it scores 0. Errors are reserved for problems
//     outside the model's control (e.g. a prompt that is not an arithmetic expression given
//     to ArithmeticStepReward: a misconfigured job, INVALID_ARGUMENT).
//   - Step rewards locate each step by StepReward::end_offset, the byte index within the
//     completion text of the step's last byte (the '\n' that ends its line, or the last
//     byte of a final line without one). The rollout maps it to the token whose bytes hold
//     it, by the tokenizer's own per-token ends (TextTokenizer::DecodeWithEnds), for the
//     character tokenizer and byte-level BPE alike; from there on end_offset is that
//     token's index (rl/scored_group.h), which the process advantages use (docs/design.md
//     §3).
//   - Rewards are finite. CompositeReward rejects NaN/inf from any function with INTERNAL,
//     so they are never trained on (docs/design.md §7).
//
// Built-in functions (MakeRewardFunction names):
//   "exact_answer"      1 if ExtractFinalAnswer(completion) equals the reference
//                       numerically (data/dataset.h), else 0.
//   "format"            1 for step lines "<int><op><int>=<int>\n" (one or more) then a
//                       final "#### <int>" with only whitespace after it; 0.5 if the text
//                       ends in a "#### <number>" answer but is not otherwise in that form;
//                       else 0.
//   "arithmetic_steps"  step rewards for the arithmetic task (data/arithmetic_task.h), see
//                       ArithmeticStepReward.
//   "overlong_penalty"  DAPO's soft overlong punishment (OverlongPenalty); takes parameters.
// Neural ones ("reward_model", "process_reward_model") are in rewards/neural_rewards.h.
#ifndef GRPO_REWARDS_REWARDS_H_
#define GRPO_REWARDS_REWARDS_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "grpo/v1/code_tests.pb.h"

namespace grpo {

// Views into caller-owned text; valid only during the Score call.
struct RewardInput {
  std::string_view prompt;
  std::string_view completion;
  std::string_view reference_answer;
  const v1::CodeTests* tests = nullptr;  // code_tests only (grpo/v1/code_tests.proto)
};

struct StepReward {
  double reward;
  int end_offset;  // byte index of the step's last byte in the completion (see above)
};

struct RewardOutput {
  double reward = 0;
  std::vector<StepReward> steps;  // empty unless gives_step_rewards(); by end_offset
};

class RewardFunction {
 public:
  virtual ~RewardFunction() = default;
  virtual std::string_view name() const = 0;
  virtual bool gives_step_rewards() const = 0;
  // How it splits a completion into steps (data/step_split.h names), when it gives step
  // rewards: the line-based functions split on newlines, a process reward model by the
  // rule it was trained with.
  virtual std::string step_rule() const { return "newline"; }
  virtual absl::StatusOr<RewardOutput> Score(const RewardInput& input) const = 0;
  // Many inputs at once, in order; functions that batch (a neural model's forward pass)
  // override it. The default scores one by one and stops at the first error.
  virtual absl::StatusOr<std::vector<RewardOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const;
};

class ExactAnswerReward : public RewardFunction {
 public:
  std::string_view name() const override { return "exact_answer"; }
  bool gives_step_rewards() const override { return false; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override;
};

class FormatReward : public RewardFunction {
 public:
  std::string_view name() const override { return "format"; }
  bool gives_step_rewards() const override { return false; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override;
};

// Process supervision for the arithmetic task. Every line of the completion is a step
// (a final line without '\n' included, an empty line included):
//   - a step line "a<op>b=c" (optional spaces between tokens) scores 1 iff it is the next
//     operation of the prompt's expression (its j-th step line uses the prompt's j-th
//     operator and operand), a equals the previous step line's written result (the
//     prompt's first operand for the first step), and c == a op b exactly (int64; overflow
//     scores 0). Judging each step against the previous written result, not the true one,
//     keeps credit local: one slip does not zero every later step.
//   - a "#### N" line scores 1 iff at least one step line came before it, N equals the
//     last step line's result and N equals the reference answer.
//   - any other line scores 0.
// The outcome reward is the mean of the step rewards, 0 for an empty completion.
// INVALID_ARGUMENT if the prompt is not an arithmetic expression prompt ("7+5*3=\n").
class ArithmeticStepReward : public RewardFunction {
 public:
  std::string_view name() const override { return "arithmetic_steps"; }
  bool gives_step_rewards() const override { return true; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override;
};

// Names accepted by MakeRewardFunction, in a fixed order.
std::vector<std::string> RewardFunctionNames();

// DAPO's soft overlong punishment on the completion's length L (characters = tokens):
// 0 while L <= max_length - cache_length, then falling linearly to -1 at max_length, and
// -1 beyond it.
class OverlongPenalty : public RewardFunction {
 public:
  OverlongPenalty(double max_length, double cache_length)
      : max_length_(max_length), cache_length_(cache_length) {}
  std::string_view name() const override { return "overlong_penalty"; }
  bool gives_step_rewards() const override { return false; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override;

 private:
  double max_length_;
  double cache_length_;
};

// Delegates to a shared function, for owners (CompositeReward) that take unique_ptrs.
// Here, not with the neural functions, so that torch-free code (the reward service's
// request handling, which fuzz/ drives) can wrap the models it is given.
class SharedRewardFunction : public RewardFunction {
 public:
  explicit SharedRewardFunction(std::shared_ptr<const RewardFunction> fn) : fn_(std::move(fn)) {}
  std::string_view name() const override { return fn_->name(); }
  bool gives_step_rewards() const override { return fn_->gives_step_rewards(); }
  std::string step_rule() const override { return fn_->step_rule(); }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override {
    return fn_->Score(input);
  }
  absl::StatusOr<std::vector<RewardOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override {
    return fn_->ScoreBatch(inputs);
  }

 private:
  std::shared_ptr<const RewardFunction> fn_;
};

using RewardParams = std::map<std::string, double>;

// INVALID_ARGUMENT naming `name` and the known names if `name` is unknown, or naming the
// parameter that is unknown, missing or out of range. Only overlong_penalty takes
// parameters: max_length (> 0, required) and cache_length (in [0, max_length), default 0).
absl::StatusOr<std::unique_ptr<RewardFunction>> MakeRewardFunction(
    std::string_view name, const RewardParams& params = {});

struct WeightedRewardSpec {
  std::string name;
  double weight;
  RewardParams params = {};
};

// A function supplied by the caller (e.g. a custom or remote reward) with its weight.
struct WeightedRewardFunction {
  std::unique_ptr<RewardFunction> function;
  double weight;
};

struct CompositeOutput {
  double total = 0;                  // sum over functions of weight * reward
  std::vector<double> per_function;  // unweighted rewards, in names() order
  // The weighted step rewards of the step-giving functions, summed where end_offsets
  // coincide, in increasing end_offset order.
  std::vector<StepReward> steps;
};

// A job spec's step_delimiter for `fn` (grpo.v1.RewardFunctionSpec), when it names one:
// it must be how `fn` splits steps, since a process reward model read at other points than
// it was trained at scores nonsense. INVALID_ARGUMENT "step_delimiter: ..." naming both
// rules, or for a function without step rewards.
absl::Status CheckStepDelimiter(std::string_view step_delimiter, const RewardFunction& fn);

// A weighted sum of reward functions. Immutable after Create; thread-safe; movable.
class CompositeReward {
 public:
  // INVALID_ARGUMENT for an empty list, an unknown or repeated name, or a weight that is
  // negative, NaN or infinite; the message names the offending entry.
  static absl::StatusOr<CompositeReward> Create(const std::vector<WeightedRewardSpec>& specs);

  // The same from ready-made functions (names taken from name()); also INVALID_ARGUMENT
  // for a null function.
  static absl::StatusOr<CompositeReward> CreateFromFunctions(
      std::vector<WeightedRewardFunction> functions);

  // Errors from a function come back prefixed with its name; a non-finite reward (or step
  // reward, or total) is INTERNAL naming the function.
  absl::StatusOr<CompositeOutput> Score(const RewardInput& input) const;
  // The same for many inputs, each function scoring the whole batch at once.
  absl::StatusOr<std::vector<CompositeOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const;

  const std::vector<std::string>& names() const { return names_; }
  const std::vector<double>& weights() const { return weights_; }

 private:
  CompositeReward() = default;
  // Weights one input's per-function outputs (in functions_ order) and checks them.
  absl::StatusOr<CompositeOutput> Combine(const RewardInput& input,
                                          const std::vector<const RewardOutput*>& outputs) const;

  std::vector<std::string> names_;
  std::vector<double> weights_;
  std::vector<std::unique_ptr<RewardFunction>> functions_;
};

}  // namespace grpo

#endif  // GRPO_REWARDS_REWARDS_H_
