#include "data/step_split.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace grpo {
namespace {

// Debian's Abseil has its own string_view.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::StatusOr<StepRule> ParseStepRule(std::string_view name) {
  StepRule rule;
  if (name.empty() || name == "newline") return rule;
  if (name == "double_newline") {
    rule.kind = StepRule::kDoubleNewline;
    return rule;
  }
  constexpr std::string_view kMarker = "marker:";
  if (name.substr(0, kMarker.size()) == kMarker && name.size() > kMarker.size()) {
    rule.kind = StepRule::kMarker;
    rule.marker = std::string(name.substr(kMarker.size()));
    return rule;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "step delimiter \"", A(name), "\": must be \"newline\", \"double_newline\" or "
      "\"marker:TEXT\" (e.g. \"marker:Step \")"));
}

std::string StepRuleName(const StepRule& rule) {
  switch (rule.kind) {
    case StepRule::kNewline: return "newline";
    case StepRule::kDoubleNewline: return "double_newline";
    case StepRule::kMarker: return absl::StrCat("marker:", rule.marker);
  }
  return "newline";
}

std::vector<int> StepEnds(std::string_view text, const StepRule& rule) {
  std::vector<int> ends;
  if (text.empty()) return ends;
  const int last = static_cast<int>(text.size()) - 1;
  switch (rule.kind) {
    case StepRule::kNewline:
      for (int i = 0; i <= last; ++i)
        if (text[i] == '\n' || i == last) ends.push_back(i);
      break;
    case StepRule::kDoubleNewline:
      for (int i = 0; i <= last; ++i) {
        if (text[i] == '\n' && i > 0 && text[i - 1] == '\n' &&
            (ends.empty() || ends.back() < i - 1)) {
          ends.push_back(i);
        } else if (i == last) {
          ends.push_back(i);
        }
      }
      break;
    case StepRule::kMarker: {
      size_t at = text.find(rule.marker);
      // A preamble before the first marker counts only when it says something.
      if (at != std::string_view::npos && at > 0 &&
          !absl::StripAsciiWhitespace(A(text.substr(0, at))).empty())
        ends.push_back(static_cast<int>(at) - 1);
      if (at == std::string_view::npos) {
        ends.push_back(last);
        break;
      }
      while (at != std::string_view::npos) {
        const size_t next = text.find(rule.marker, at + rule.marker.size());
        ends.push_back(next == std::string_view::npos ? last : static_cast<int>(next) - 1);
        at = next;
      }
      break;
    }
  }
  return ends;
}

absl::StatusOr<std::string> JoinSteps(const std::vector<std::string>& steps,
                                      const StepRule& rule) {
  const std::string delimiter = rule.kind == StepRule::kDoubleNewline ? "\n\n" : "\n";
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::string& s = steps[i];
    auto bad = [&](std::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("steps[", i, "] ", A(why)));
    };
    if (absl::StripAsciiWhitespace(s).empty()) return bad("is empty");
    if (rule.kind == StepRule::kNewline && absl::StrContains(s, "\n"))
      return bad("holds a newline, which ends a step under the newline rule");
    if (rule.kind == StepRule::kDoubleNewline &&
        (absl::StrContains(s, "\n\n") || absl::StartsWith(s, "\n") || absl::EndsWith(s, "\n")))
      return bad("holds a blank line or starts or ends with a newline, which the "
                 "double_newline rule would split on");
    if (rule.kind == StepRule::kMarker &&
        (!absl::StartsWith(s, rule.marker) ||
         s.find(rule.marker, rule.marker.size()) != std::string::npos))
      return bad(absl::StrCat("must start with the marker \"", rule.marker,
                              "\" and hold it only there"));
  }
  return absl::StrJoin(steps, delimiter);
}

}  // namespace grpo
