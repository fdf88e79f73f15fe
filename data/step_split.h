// How a completion's text splits into reasoning steps, for process supervision: the
// process reward model reads its score at each step's end, and step-labelled training
// data (data/dataset.h, LoadStepJsonl) is joined into a completion by the same rule. A
// step end is the byte index of the step's last byte in the text (rewards/rewards.h); the
// rollout maps it to the token that covers it.
//
// Rules, by the name a job spec or grpo_train_rm gives (ParseStepRule):
//   "newline"         a step ends at each '\n', and at the last byte if that is not '\n'
//                     (the arithmetic task's steps; the default);
//   "double_newline"  a step ends at the second '\n' of each "\n\n", and at the last byte
//                     if the text does not end so (paragraph steps, as many chat models
//                     write them);
//   "marker:M"        a step starts at each occurrence of the text M (e.g. "marker:Step "
//                     for "Step 1: ... Step 2: ..."), so it ends at the byte before the
//                     next occurrence or at the last byte; text before the first marker
//                     that is not only whitespace is a step of its own.
// Pure functions.
#ifndef GRPO_DATA_STEP_SPLIT_H_
#define GRPO_DATA_STEP_SPLIT_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace grpo {

struct StepRule {
  enum Kind { kNewline, kDoubleNewline, kMarker };
  Kind kind = kNewline;
  std::string marker;  // kMarker only; never empty
};

// INVALID_ARGUMENT naming the accepted forms for anything else (an empty name is
// "newline").
absl::StatusOr<StepRule> ParseStepRule(std::string_view name);
std::string StepRuleName(const StepRule& rule);

// The byte index of each step's last byte in `text`, ascending; none for empty text.
std::vector<int> StepEnds(std::string_view text, const StepRule& rule);

// `steps` as one completion the rule splits back into exactly these steps: joined by
// "\n" (newline, marker) or "\n\n" (double_newline). INVALID_ARGUMENT naming the step
// (steps[i]) that is empty, holds the delimiter, or (marker) does not start with the
// marker or holds it again, so each label stays with its own step.
absl::StatusOr<std::string> JoinSteps(const std::vector<std::string>& steps, const StepRule& rule);

}  // namespace grpo

#endif  // GRPO_DATA_STEP_SPLIT_H_
