// code_tests: fractions of tests passed, the ways a program could fake a pass scoring
// nothing, stdin/stdout cases, the code taken from a fenced block, bounded queueing, and
// the errors for a misconfigured sample.
#include "rewards/code_tests.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

CodeTestsOptions Options() {
  CodeTestsOptions o;
  o.limits.cpu_seconds = 2;
  o.limits.wall_seconds = 4;
  o.limits.memory_bytes = 256 << 20;
  return o;
}

v1::CodeTests Tests(const std::string& language, const std::vector<std::string>& asserts,
                    const std::vector<std::pair<std::string, std::string>>& cases) {
  v1::CodeTests t;
  t.set_language(language);
  for (const std::string& a : asserts) t.add_asserts(a);
  for (const auto& [input, output] : cases) {
    v1::CodeTestCase* c = t.add_cases();
    c->set_input(input);
    c->set_output(output);
  }
  return t;
}

double Reward(const CodeTestsReward& r, const std::string& completion, const v1::CodeTests& tests) {
  absl::StatusOr<RewardOutput> out = r.Score({"", completion, "", &tests});
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->reward : -1;
}

TEST(CodeTestsTest, ExtractsTheLastFencedBlock) {
  EXPECT_EQ(ExtractCode("Here:\n```python\nx = 1\n```\nand\n```py\ny = 2\n```\nDone."), "y = 2\n");
  EXPECT_EQ(ExtractCode("x = 3\n"), "x = 3\n");
  EXPECT_EQ(ExtractCode("unclosed ```python\nz"), "unclosed ```python\nz");
}

TEST(CodeTestsTest, TheRewardIsTheFractionOfTestsPassed) {
  auto reward = CodeTestsReward::Create(Options());
  ASSERT_TRUE(reward.ok()) << reward.status();
  if (!(*reward)->unavailable().empty()) GTEST_SKIP() << (*reward)->unavailable();
  const v1::CodeTests tests = Tests("python",
                            {"assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                             "assert add(2, 2) == 4", "assert add(0, 5) == 5"},
                            {});
  EXPECT_DOUBLE_EQ(Reward(**reward, "```python\ndef add(a, b):\n    return a + b\n```", tests), 1.0);
  // Wrong when a == b (add(2, 2) only): three of four.
  EXPECT_DOUBLE_EQ(
      Reward(**reward, "def add(a, b):\n    return a + b if a != b else 0\n", tests), 0.75);
  EXPECT_DOUBLE_EQ(Reward(**reward, "def add(a, b) return", tests), 0.0);  // syntax error
}

TEST(CodeTestsTest, FakingAPassScoresNothing) {
  auto reward = CodeTestsReward::Create(Options());
  ASSERT_TRUE(reward.ok());
  if (!(*reward)->unavailable().empty()) GTEST_SKIP() << (*reward)->unavailable();
  const v1::CodeTests tests = Tests("", {"assert solve() == 42"}, {});
  // Exiting 0 before the tests run, printing what a pass might look like, hanging, or
  // hostile programs: none passes.
  for (const char* program :
       {"import os\nos._exit(0)\n", "print('tests-passed-0000000000000000')\nimport sys\nsys.exit(0)\n",
        "while True:\n    pass\n", "x = bytearray(10 * 1024**3)\n",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"})
    EXPECT_DOUBLE_EQ(Reward(**reward, program, tests), 0.0) << program;
  EXPECT_DOUBLE_EQ(Reward(**reward, "def solve():\n    return 42\n", tests), 1.0);
}

TEST(CodeTestsTest, StdinStdoutCasesCompareTrimmedOutput) {
  CodeTestsOptions o = Options();
  o.all_passed_bonus = 0.5;
  auto reward = CodeTestsReward::Create(o);
  ASSERT_TRUE(reward.ok());
  if (!(*reward)->unavailable().empty()) GTEST_SKIP() << (*reward)->unavailable();
  const v1::CodeTests tests = Tests("", {}, {{"1 2\n", "3"}, {"5 5\n", "10\n"}, {"0 0\n", "0"}});
  const std::string sum = "a, b = map(int, input().split())\nprint(a + b)\n";
  EXPECT_DOUBLE_EQ(Reward(**reward, sum, tests), 1.5);  // all passed: the bonus
  const std::string product = "a, b = map(int, input().split())\nprint(a * b)\n";
  EXPECT_DOUBLE_EQ(Reward(**reward, product, tests), 1.0 / 3);  // 0 0 only
}

TEST(CodeTestsTest, MisconfiguredSamplesAreErrorsNamingTheSample) {
  auto reward = CodeTestsReward::Create(Options());
  ASSERT_TRUE(reward.ok());
  if (!(*reward)->unavailable().empty()) GTEST_SKIP() << (*reward)->unavailable();
  const v1::CodeTests none;
  absl::StatusOr<std::vector<RewardOutput>> out = (*reward)->ScoreBatch(
      {{"", "x = 1", "", nullptr}, {"", "x = 1", "", &none}});
  EXPECT_TRUE(absl::IsInvalidArgument(out.status()));
  EXPECT_THAT(out.status().message(), HasSubstr("sample 0"));
  const v1::CodeTests cobol = Tests("cobol", {"assert True"}, {});
  absl::StatusOr<RewardOutput> lang = (*reward)->Score({"", "x = 1", "", &cobol});
  EXPECT_THAT(lang.status().message(), HasSubstr("\"cobol\""));
  CodeTestsOptions bad = Options();
  bad.max_concurrent = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(CodeTestsReward::Create(bad).status()));
}

TEST(CodeTestsTest, BatchesPastTheQueueAreRefusedAndOthersRunInParallel) {
  CodeTestsOptions o = Options();
  o.max_concurrent = 4;
  o.max_queued = 8;
  auto reward = CodeTestsReward::Create(o);
  ASSERT_TRUE(reward.ok());
  if (!(*reward)->unavailable().empty()) GTEST_SKIP() << (*reward)->unavailable();
  const v1::CodeTests tests = Tests("", {"assert f(3) == 9", "assert f(4) == 16", "assert f(0) == 0"}, {});
  std::vector<RewardInput> inputs(4, RewardInput{"", "def f(x):\n    return x * x\n", "", &tests});
  absl::StatusOr<std::vector<RewardOutput>> fits = (*reward)->ScoreBatch(inputs);  // 12 = 4 + 8
  ASSERT_TRUE(fits.ok()) << fits.status();
  for (const RewardOutput& r : *fits) EXPECT_DOUBLE_EQ(r.reward, 1.0);
  inputs.push_back(inputs[0]);  // 15 runs: 3 more than may wait
  absl::StatusOr<std::vector<RewardOutput>> refused = (*reward)->ScoreBatch(inputs);
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("--max_concurrent_executions"));
}

}  // namespace
}  // namespace grpo
