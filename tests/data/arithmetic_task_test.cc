#include "data/arithmetic_task.h"

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

TEST(SolveTest, EvaluatesLeftToRightOneStepPerLine) {
  absl::StatusOr<Problem> p = ArithmeticTask::Solve("7+5*3-4");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->prompt, "7+5*3-4=\n");
  EXPECT_EQ(p->solution, "7+5=12\n12*3=36\n36-4=32\n#### 32");
  EXPECT_EQ(p->answer, "32");  // not 18: no operator precedence
}

TEST(SolveTest, NegativeIntermediatesAreWrittenPlainly) {
  absl::StatusOr<Problem> p = ArithmeticTask::Solve("2-5*4");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->solution, "2-5=-3\n-3*4=-12\n#### -12");
  EXPECT_EQ(p->answer, "-12");
}

TEST(SolveTest, AcceptsThePromptForm) {
  absl::StatusOr<Problem> a = ArithmeticTask::Solve("9*9=\n");
  absl::StatusOr<Problem> b = ArithmeticTask::Solve("9*9");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->prompt, b->prompt);
  EXPECT_EQ(a->solution, "9*9=81\n#### 81");
}

TEST(SolveTest, RejectsMalformedExpressions) {
  for (const char* bad :
       {"", "7", "7+", "+7", "7/2", "7 + 2", "7++2", "a+b", "7+5=3", "=\n", "7+5\n",
        "99999999999999999999+1", "9223372036854775807+1", "3037000500*3037000500"}) {
    absl::StatusOr<Problem> p = ArithmeticTask::Solve(bad);
    EXPECT_FALSE(p.ok()) << "\"" << bad << "\"";
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(ArithmeticTask::Solve("7/2").status().message(), HasSubstr("position 1"));
  EXPECT_THAT(ArithmeticTask::Solve("7+x").status().message(), HasSubstr("position 2"));
}

TEST(ParseExpressionTest, SplitsOperandsAndOperators) {
  absl::StatusOr<Expression> e = ParseExpression("-3+12*4=\n");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->first, -3);
  ASSERT_EQ(e->ops.size(), 2u);
  EXPECT_EQ(e->ops[0], std::make_pair('+', int64_t{12}));
  EXPECT_EQ(e->ops[1], std::make_pair('*', int64_t{4}));
}

TEST(ArithmeticTaskTest, SamplesRespectOptionsAndSolveConsistently) {
  ArithmeticOptions opts;
  opts.min_ops = 1;
  opts.max_ops = 4;
  opts.max_operand = 12;
  ArithmeticTask task(opts, 42);
  std::mt19937_64 rng(1);
  std::set<int> op_counts;
  for (int i = 0; i < 2000; ++i) {
    const Problem p = task.Sample(rng);
    absl::StatusOr<Expression> e = ParseExpression(p.prompt);
    ASSERT_TRUE(e.ok()) << p.prompt;
    op_counts.insert(static_cast<int>(e->ops.size()));
    EXPECT_GE(e->first, 1);
    EXPECT_LE(e->first, 12);
    for (const auto& [op, operand] : e->ops) {
      EXPECT_GE(operand, 1);
      EXPECT_LE(operand, 12);
    }
    absl::StatusOr<Problem> solved = ArithmeticTask::Solve(p.prompt);
    ASSERT_TRUE(solved.ok());
    EXPECT_EQ(solved->solution, p.solution);
    EXPECT_EQ(solved->answer, p.answer);
    EXPECT_EQ(p.solution.back(), p.answer.back());  // no trailing newline
  }
  EXPECT_EQ(op_counts, (std::set<int>{1, 2, 3, 4}));
}

TEST(ArithmeticTaskTest, SampleIsReproducibleFromTheEngineSeed) {
  ArithmeticTask task(ArithmeticOptions{}, 3);
  std::mt19937_64 a(99), b(99);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(task.Sample(a).prompt, task.Sample(b).prompt);
}

TEST(ArithmeticTaskTest, TrainAndHeldOutNeverSharePrompts) {
  ArithmeticTask task(ArithmeticOptions{}, 7);
  const std::vector<Problem> held = task.HeldOutSet(500);
  const std::vector<Problem> train = task.TrainSet(5000, 1);
  ASSERT_EQ(held.size(), 500u);
  ASSERT_EQ(train.size(), 5000u);
  std::set<std::string> held_prompts;
  for (const Problem& p : held) {
    EXPECT_TRUE(task.IsHeldOut(p));
    held_prompts.insert(p.prompt);
  }
  EXPECT_EQ(held_prompts.size(), held.size()) << "held-out prompts must be distinct";
  for (const Problem& p : train) {
    EXPECT_FALSE(task.IsHeldOut(p));
    EXPECT_EQ(held_prompts.count(p.prompt), 0u) << p.prompt;
  }
}

TEST(ArithmeticTaskTest, AboutOneInFivePromptsIsHeldOut) {
  ArithmeticTask task(ArithmeticOptions{}, 11);
  std::mt19937_64 rng(5);
  int held = 0;
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) held += task.IsHeldOut(task.Sample(rng));
  EXPECT_NEAR(static_cast<double>(held) / kDraws, 0.2, 0.02);
}

TEST(ArithmeticTaskTest, SetsAreDeterministicAndSplitDependsOnTaskSeed) {
  ArithmeticTask task(ArithmeticOptions{}, 7);
  const std::vector<Problem> a = task.HeldOutSet(100);
  const std::vector<Problem> b = ArithmeticTask(ArithmeticOptions{}, 7).HeldOutSet(300);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].prompt, b[i].prompt);  // prefix
  EXPECT_EQ(task.TrainSet(20, 5)[19].prompt, task.TrainSet(20, 5)[19].prompt);

  ArithmeticTask other(ArithmeticOptions{}, 8);
  int disagreements = 0;
  for (const Problem& p : b) disagreements += !other.IsHeldOut(p);
  EXPECT_GT(disagreements, 150);  // ~80% expected for an independent split
}

TEST(ArithmeticTaskTest, TinyPromptSpaceTerminatesWithWhatExists) {
  ArithmeticOptions opts;
  opts.min_ops = 1;
  opts.max_ops = 1;
  opts.max_operand = 1;  // prompts: 1+1, 1-1, 1*1
  for (uint64_t seed = 0; seed < 4; ++seed) {
    ArithmeticTask task(opts, seed);
    const std::vector<Problem> held = task.HeldOutSet(100);
    EXPECT_LE(held.size(), 3u);
    std::set<std::string> train_prompts;
    for (const Problem& p : task.TrainSet(200, seed)) train_prompts.insert(p.prompt);
    EXPECT_EQ(held.size() + train_prompts.size(), 3u) << "seed " << seed;
  }
}

TEST(ArithmeticTaskTest, CreateRejectsBadOptionsAndConstructorClamps) {
  auto with = [](int min_ops, int max_ops, int max_operand) {
    ArithmeticOptions o;
    o.min_ops = min_ops;
    o.max_ops = max_ops;
    o.max_operand = max_operand;
    return o;
  };
  EXPECT_TRUE(ArithmeticTask::Create(ArithmeticOptions{}, 1).ok());
  for (const ArithmeticOptions& bad : {with(0, 3, 9), with(3, 2, 9), with(1, 3, 0), with(1, 33, 9),
                                       with(1, 3, -5), with(1, 32, 1000000)}) {
    absl::StatusOr<ArithmeticTask> t = ArithmeticTask::Create(bad, 1);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr("ArithmeticOptions"));

    ArithmeticTask clamped(bad, 1);
    EXPECT_TRUE(ValidateArithmeticOptions(clamped.options()).ok());
    std::mt19937_64 rng(2);
    for (int i = 0; i < 20; ++i) {
      EXPECT_TRUE(ArithmeticTask::Solve(clamped.Sample(rng).prompt).ok());
    }
  }
}

}  // namespace
}  // namespace grpo
