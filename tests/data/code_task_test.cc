// The built-in code task: its split, and its reference solutions judged by code_tests in
// the sandbox (a wrong reference would teach the SFT warm-up to fail its own tests).
#include "data/code_task.h"

#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rewards/code_tests.h"

namespace grpo {
namespace {

TEST(CodeTaskTest, TrainAndHeldOutSplitTheProblemsByParameter) {
  const std::vector<Example> all = CodeProblems(), train = CodeTrainSet(),
                             held_out = CodeHeldOutSet();
  EXPECT_EQ(all.size(), 48u);
  EXPECT_EQ(train.size() + held_out.size(), all.size());
  EXPECT_EQ(held_out.size(), 9u);
  std::set<std::string> train_prompts, families;
  for (const Example& e : train) train_prompts.insert(e.prompt);
  EXPECT_EQ(train_prompts.size(), train.size());
  for (const Example& e : held_out) {
    EXPECT_EQ(train_prompts.count(e.prompt), 0u) << e.prompt;
    families.insert(e.prompt.substr(0, e.prompt.find(':')));
  }
  EXPECT_EQ(families.size(), 4u);  // f(x), f(xs), f(s) and stdin: every kind is held out
  for (const Example& e : all) {
    EXPECT_TRUE(HasTests(e)) << e.prompt;
    EXPECT_TRUE(e.answer.empty());
    EXPECT_FALSE(e.solution.empty());
    for (char c : e.prompt + e.solution) EXPECT_TRUE(c == '\n' || (c >= 32 && c < 127));
  }
}

TEST(CodeTaskTest, EveryReferenceSolutionPassesItsTestsAndNoOtherProblems) {
  CodeTestsOptions options;
  options.max_concurrent = 4;
  auto reward = CodeTestsReward::Create(options);
  ASSERT_TRUE(reward.ok()) << reward.status();
  if (!(*reward)->unavailable().empty()) GTEST_SKIP() << (*reward)->unavailable();
  const std::vector<Example> all = CodeProblems();
  // Each problem's own solution, then its neighbour's (same family, another parameter, or
  // the next family): the tests tell them apart.
  std::vector<RewardInput> inputs;
  for (size_t i = 0; i < all.size(); ++i) {
    inputs.push_back({all[i].prompt, all[i].solution, "", &all[i].tests});
    inputs.push_back({all[i].prompt, all[(i + 1) % all.size()].solution, "", &all[i].tests});
  }
  absl::StatusOr<std::vector<RewardOutput>> scored = (*reward)->ScoreBatch(inputs);
  ASSERT_TRUE(scored.ok()) << scored.status();
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_DOUBLE_EQ((*scored)[2 * i].reward, 1.0) << all[i].prompt << all[i].solution;
    EXPECT_LT((*scored)[2 * i + 1].reward, 1.0) << all[i].prompt;
  }
}

}  // namespace
}  // namespace grpo
