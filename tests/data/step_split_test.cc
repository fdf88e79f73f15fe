// Step rules: where each rule ends a step, that joined steps split back into themselves,
// and that step-labelled JSONL keeps each label with its step or names the line.
#include "data/step_split.h"

#include <unistd.h>

#include <fstream>
#include <random>

#include "data/dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

StepRule Rule(const std::string& name) {
  absl::StatusOr<StepRule> rule = ParseStepRule(name);
  EXPECT_TRUE(rule.ok()) << rule.status();
  return rule.ok() ? *rule : StepRule();
}

TEST(StepSplitTest, EachRuleEndsStepsWhereItSays) {
  EXPECT_THAT(StepEnds("1+2=3\n3*4=12\n#### 12", Rule("newline")), ElementsAre(5, 12, 19));
  EXPECT_THAT(StepEnds("a\n", Rule("newline")), ElementsAre(1));
  EXPECT_THAT(StepEnds("", Rule("newline")), ElementsAre());
  EXPECT_THAT(StepEnds("one\ntwo\n\nthree", Rule("double_newline")), ElementsAre(8, 13));
  EXPECT_THAT(StepEnds("a\n\n\nb\n\n", Rule("double_newline")), ElementsAre(2, 6));
  EXPECT_THAT(StepEnds("Step 1: x\nStep 2: y", Rule("marker:Step ")), ElementsAre(9, 18));
  // A preamble that says something is a step; whitespace before the first marker is not.
  EXPECT_THAT(StepEnds("So.\nStep 1: x", Rule("marker:Step ")), ElementsAre(3, 12));
  EXPECT_THAT(StepEnds("  Step 1: x", Rule("marker:Step ")), ElementsAre(10));
  EXPECT_THAT(StepEnds("no marker", Rule("marker:Step ")), ElementsAre(8));
  EXPECT_EQ(StepRuleName(Rule("")), "newline");
  EXPECT_EQ(StepRuleName(Rule("marker:Step ")), "marker:Step ");
  for (const char* bad : {"lines", "marker:", "Newline"}) {
    absl::StatusOr<StepRule> rule = ParseStepRule(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(rule.status())) << bad;
    EXPECT_THAT(rule.status().message(), HasSubstr("double_newline")) << bad;
  }
}

// Random steps joined by each rule split back into exactly those steps, each ending on
// its own last byte (multi-byte UTF-8 inside steps included).
TEST(StepSplitTest, JoinedStepsSplitBackIntoThemselves) {
  std::mt19937_64 rng(7);
  const std::vector<std::string> pieces = {"x", "42", " ", "é", "→", "=", "ab cd", "\t"};
  for (const std::string name : {"newline", "double_newline", "marker:Step "}) {
    const StepRule rule = Rule(name);
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<std::string> steps(1 + rng() % 6);
      for (std::string& s : steps) {
        if (rule.kind == StepRule::kMarker) s = "Step ";
        for (int k = 0; k < 1 + static_cast<int>(rng() % 5); ++k) s += pieces[rng() % pieces.size()];
        s += "x";  // never blank
        if (rule.kind == StepRule::kDoubleNewline && rng() % 3 == 0) s.insert(1, "\n");
      }
      absl::StatusOr<std::string> text = JoinSteps(steps, rule);
      ASSERT_TRUE(text.ok()) << text.status();
      const std::vector<int> ends = StepEnds(*text, rule);
      ASSERT_EQ(ends.size(), steps.size()) << name << ": " << *text;
      size_t start = 0;
      for (size_t i = 0; i < steps.size(); ++i) {
        EXPECT_EQ(text->substr(start, steps[i].size()), steps[i]);
        start = ends[i] + 1;
      }
      EXPECT_EQ(ends.back(), static_cast<int>(text->size()) - 1);
    }
  }
  EXPECT_THAT(JoinSteps({"a", "b\nc"}, Rule("newline")).status().message(), HasSubstr("steps[1]"));
  EXPECT_THAT(JoinSteps({"a", " "}, Rule("newline")).status().message(), HasSubstr("steps[1] is empty"));
  EXPECT_THAT(JoinSteps({"a\n\nb"}, Rule("double_newline")).status().message(), HasSubstr("steps[0]"));
  EXPECT_THAT(JoinSteps({"Step 1: a", "then"}, Rule("marker:Step ")).status().message(),
              HasSubstr("steps[1] must start with the marker"));
}

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = testing::TempDir() + "/" + std::to_string(getpid()) + "." + name;
  std::ofstream(path) << text;
  return path;
}

TEST(StepJsonlTest, LabelsStayWithTheirStepsAndBadLinesAreNamed) {
  const std::string good = Write(
      "steps.jsonl",
      "{\"prompt\": \"7+5*3=\\n\", \"steps\": [\"7+5=12\", \"12*3=36\", \"#### 36\"], \"labels\": [1, 1, 1]}\n"
      "{\"prompt\": \"2*2=\\n\", \"steps\": [\"2*2=5\", \"#### 5\"], \"labels\": [0, 0]}\n");
  absl::StatusOr<std::vector<StepLabelledExample>> loaded = LoadStepJsonl(good, StepRule());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ((*loaded)[0].completion, "7+5=12\n12*3=36\n#### 36");
  EXPECT_THAT((*loaded)[0].step_ends, ElementsAre(6, 14, 21));
  EXPECT_THAT((*loaded)[1].labels, ElementsAre(0, 0));

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"prompt": "p", "steps": ["a", "b"], "labels": [1]})", "1 labels for 2 steps"},
      {R"({"prompt": "p", "steps": ["a"], "labels": [2]})", "labels[0] = 2"},
      {R"({"prompt": "p", "steps": [], "labels": []})", "no \"steps\""},
      {R"({"prompt": "", "steps": ["a"], "labels": [1]})", "\"prompt\""},
      {R"({"prompt": "p", "steps": ["a\nb"], "labels": [1]})", "steps[0] holds a newline"},
      {R"({"prompt": "p", "steps": ["a"], "labels": [1], "score": 3})", "not a valid step-labelled"},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    const std::string path = Write("bad_steps" + std::to_string(i) + ".jsonl",
                                   R"({"prompt": "p", "steps": ["a"], "labels": [1]})" "\n" +
                                       bad[i].first + "\n");
    absl::StatusOr<std::vector<StepLabelledExample>> r = LoadStepJsonl(path, StepRule());
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad[i].first;
    EXPECT_THAT(r.status().message(), HasSubstr(path + ":2: ")) << bad[i].first;
    EXPECT_THAT(r.status().message(), HasSubstr(bad[i].second)) << bad[i].first;
  }
}

}  // namespace
}  // namespace grpo
