#include "rewards/rewards.h"

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "data/arithmetic_task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

constexpr char kPrompt[] = "7+5*3-4=\n";
constexpr char kSolution[] = "7+5=12\n12*3=36\n36-4=32\n#### 32";

RewardOutput ScoreOrDie(const RewardFunction& fn, std::string_view prompt,
                        std::string_view completion, std::string_view reference) {
  absl::StatusOr<RewardOutput> out = fn.Score(RewardInput{prompt, completion, reference});
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : RewardOutput{};
}

std::vector<int> NewlineOffsets(std::string_view text) {
  std::vector<int> offsets;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') offsets.push_back(static_cast<int>(i));
  }
  return offsets;
}

TEST(RewardsTest, EveryStepOfGeneratedSolutionsVerifies) {
  ArithmeticOptions opts;
  opts.min_ops = 1;
  opts.max_ops = 6;
  opts.max_operand = 20;
  ArithmeticTask task(opts, 123);
  std::mt19937_64 rng(9);
  ArithmeticStepReward steps;
  ExactAnswerReward exact;
  FormatReward format;
  for (int i = 0; i < 500; ++i) {
    const Problem p = task.Sample(rng);
    const RewardOutput out = ScoreOrDie(steps, p.prompt, p.solution, p.answer);
    EXPECT_EQ(out.reward, 1.0) << p.prompt << p.solution;
    const std::vector<int> newlines = NewlineOffsets(p.solution);
    ASSERT_EQ(out.steps.size(), newlines.size() + 1) << p.solution;
    for (size_t j = 0; j < out.steps.size(); ++j) {
      EXPECT_EQ(out.steps[j].reward, 1.0) << p.solution << " step " << j;
      const int want_end =
          j < newlines.size() ? newlines[j] : static_cast<int>(p.solution.size()) - 1;
      EXPECT_EQ(out.steps[j].end_offset, want_end);
    }
    EXPECT_EQ(ScoreOrDie(exact, p.prompt, p.solution, p.answer).reward, 1.0);
    EXPECT_EQ(ScoreOrDie(format, p.prompt, p.solution, p.answer).reward, 1.0) << p.solution;
  }
}

TEST(ArithmeticStepRewardTest, CorruptedStepScoresZeroAtItsNewline) {
  ArithmeticStepReward fn;
  // Step 2 is wrong (36 -> 35); step 3 correctly continues from the written 35; the final
  // answer follows the steps but is not the reference.
  const std::string completion = "7+5=12\n12*3=35\n35-4=31\n#### 31";
  const RewardOutput out = ScoreOrDie(fn, kPrompt, completion, "32");
  ASSERT_EQ(out.steps.size(), 4u);
  EXPECT_EQ(out.steps[0].reward, 1.0);
  EXPECT_EQ(out.steps[1].reward, 0.0);
  EXPECT_EQ(out.steps[1].end_offset, 14);
  EXPECT_EQ(completion[14], '\n');
  EXPECT_EQ(completion.substr(7, 7), "12*3=35");
  EXPECT_EQ(out.steps[2].reward, 1.0);
  EXPECT_EQ(out.steps[3].reward, 0.0);
  EXPECT_EQ(out.steps[3].end_offset, static_cast<int>(completion.size()) - 1);
  EXPECT_DOUBLE_EQ(out.reward, 0.5);
}

TEST(ArithmeticStepRewardTest, StepMustContinueFromThePreviousResult) {
  ArithmeticStepReward fn;
  const RewardOutput out = ScoreOrDie(fn, kPrompt, "7+5=12\n12*3=35\n36-4=32\n#### 32", "32");
  ASSERT_EQ(out.steps.size(), 4u);
  EXPECT_EQ(out.steps[1].reward, 0.0);
  EXPECT_EQ(out.steps[2].reward, 0.0);  // 36 is not the written 35
  EXPECT_EQ(out.steps[3].reward, 1.0);
}

TEST(ArithmeticStepRewardTest, StepMustBeThePromptsNextOperation) {
  ArithmeticStepReward fn;
  // Correct arithmetic, but not the prompt's operations.
  const RewardOutput out =
      ScoreOrDie(fn, kPrompt, "7+5=12\n12*4=48\n48-4=44\n44+0=44\n#### 44", "32");
  ASSERT_EQ(out.steps.size(), 5u);
  EXPECT_EQ(out.steps[0].reward, 1.0);
  EXPECT_EQ(out.steps[1].reward, 0.0);  // operand 4, prompt says 3
  EXPECT_EQ(out.steps[2].reward, 1.0);
  EXPECT_EQ(out.steps[3].reward, 0.0);  // the prompt has no fourth operation
  EXPECT_EQ(out.steps[4].reward, 0.0);
}

TEST(ArithmeticStepRewardTest, OtherLinesScoreZeroAndNeverError) {
  ArithmeticStepReward fn;
  EXPECT_EQ(ScoreOrDie(fn, kPrompt, "", "32").reward, 0.0);
  EXPECT_TRUE(ScoreOrDie(fn, kPrompt, "", "32").steps.empty());

  const std::string junk = "hmm\n\n7+5=12\n#### 12\n";
  const RewardOutput out = ScoreOrDie(fn, "7+5=\n", junk, "12");
  ASSERT_EQ(out.steps.size(), 4u);
  EXPECT_EQ(out.steps[0].reward, 0.0);
  EXPECT_EQ(out.steps[0].end_offset, 3);
  EXPECT_EQ(out.steps[1].reward, 0.0);  // the empty line
  EXPECT_EQ(out.steps[1].end_offset, 4);
  EXPECT_EQ(out.steps[2].reward, 1.0);
  EXPECT_EQ(out.steps[3].reward, 1.0);
  EXPECT_EQ(out.steps[3].end_offset, static_cast<int>(junk.size()) - 1);
  EXPECT_DOUBLE_EQ(out.reward, 0.5);

  // A bare final answer with no steps earns nothing, even when right.
  EXPECT_EQ(ScoreOrDie(fn, kPrompt, "#### 32", "32").reward, 0.0);
  // Spaces between tokens are tolerated by this function (not by FormatReward).
  EXPECT_EQ(ScoreOrDie(fn, "7+5=\n", "7 + 5 = 12\n#### 12", "12").reward, 1.0);
}

TEST(ArithmeticStepRewardTest, Int64OverflowScoresZero) {
  ArithmeticStepReward fn;
  const RewardOutput wrapped =
      ScoreOrDie(fn, "9223372036854775807+1=\n",
                 "9223372036854775807+1=-9223372036854775808\n#### -9223372036854775808",
                 "-9223372036854775808");
  ASSERT_EQ(wrapped.steps.size(), 2u);
  EXPECT_EQ(wrapped.steps[0].reward, 0.0);
  const RewardOutput huge =
      ScoreOrDie(fn, "7+5=\n", "7+5=99999999999999999999999\n#### 99999999999999999999999", "12");
  EXPECT_EQ(huge.reward, 0.0);
}

TEST(ArithmeticStepRewardTest, NonArithmeticPromptIsInvalidArgument) {
  ArithmeticStepReward fn;
  absl::StatusOr<RewardOutput> out = fn.Score(RewardInput{"What is two plus two?", "#### 4", "4"});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExactAnswerRewardTest, ComparesNumerically) {
  ExactAnswerReward fn;
  EXPECT_EQ(ScoreOrDie(fn, kPrompt, kSolution, "32").reward, 1.0);
  EXPECT_EQ(ScoreOrDie(fn, kPrompt, kSolution, "32.0").reward, 1.0);
  EXPECT_EQ(ScoreOrDie(fn, "", "so \\boxed{-7}", "-7").reward, 1.0);
  EXPECT_EQ(ScoreOrDie(fn, "", "#### 1,234 dollars", "1234").reward, 1.0);
  EXPECT_EQ(ScoreOrDie(fn, kPrompt, kSolution, "33").reward, 0.0);
  EXPECT_EQ(ScoreOrDie(fn, kPrompt, "the answer is 32", "32").reward, 0.0);
  EXPECT_EQ(ScoreOrDie(fn, kPrompt, kSolution, "").reward, 0.0);
  EXPECT_FALSE(fn.gives_step_rewards());
}

TEST(FormatRewardTest, GradesTheLayout) {
  FormatReward fn;
  auto score = [&](std::string_view completion) {
    return ScoreOrDie(fn, kPrompt, completion, "32").reward;
  };
  EXPECT_EQ(score(kSolution), 1.0);
  EXPECT_EQ(score("7+5=99\n#### -3 \n\n"), 1.0);  // format only, not correctness
  EXPECT_EQ(score("2-5=-3\n-3*4=-12\n#### -12"), 1.0);
  EXPECT_EQ(score("I think\n#### 32"), 0.5);
  EXPECT_EQ(score("#### 32"), 0.5);
  EXPECT_EQ(score("7 + 5 = 12\n#### 12"), 0.5);
  EXPECT_EQ(score("7+5=12\n#### 12 apples"), 0.5);
  // Text after the answer line still leaves an extractable final answer.
  EXPECT_EQ(score("7+5=12\n#### 12\nmore"), 0.5);
  EXPECT_EQ(score("7+5=12\n#### 12\n####"), 0.0);
  EXPECT_EQ(score("7+5=12\n"), 0.0);
  EXPECT_EQ(score("7+5=12\n#### x"), 0.0);
  EXPECT_EQ(score(""), 0.0);
}

TEST(MakeRewardFunctionTest, KnowsTheBuiltInsAndRejectsOthers) {
  for (const std::string& name : RewardFunctionNames()) {
    RewardParams params;
    if (name == "overlong_penalty") params["max_length"] = 10;
    absl::StatusOr<std::unique_ptr<RewardFunction>> fn = MakeRewardFunction(name, params);
    ASSERT_TRUE(fn.ok()) << name;
    EXPECT_EQ((*fn)->name(), name);
  }
  absl::StatusOr<std::unique_ptr<RewardFunction>> bad = MakeRewardFunction("nope");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("nope"));
}

TEST(OverlongPenaltyTest, SoftPunishmentOfLongCompletions) {
  auto fn = MakeRewardFunction("overlong_penalty", {{"max_length", 20}, {"cache_length", 5}});
  ASSERT_TRUE(fn.ok()) << fn.status();
  auto score = [&](int length) {
    return ScoreOrDie(**fn, "1+1=\n", std::string(length, '1'), "2").reward;
  };
  EXPECT_EQ(score(0), 0.0);
  EXPECT_EQ(score(15), 0.0);   // up to max_length - cache_length: no penalty
  EXPECT_DOUBLE_EQ(score(17), -0.4);  // (20 - 5 - 17) / 5
  EXPECT_DOUBLE_EQ(score(20), -1.0);
  EXPECT_EQ(score(21), -1.0);

  for (const RewardParams& bad : std::vector<RewardParams>{
           {}, {{"max_length", 0}}, {{"max_length", 10}, {"cache_length", 10}},
           {{"max_length", 10}, {"cache_length", -1}}, {{"max_length", 10}, {"typo", 1}}}) {
    EXPECT_EQ(MakeRewardFunction("overlong_penalty", bad).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_THAT(MakeRewardFunction("format", {{"max_length", 1}}).status().message(),
              HasSubstr("takes no parameters"));
}

TEST(CompositeRewardTest, CreateValidatesSpecs) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::pair<std::vector<WeightedRewardSpec>, std::string>> cases = {
      {{}, "empty"},
      {{{"exact_answer", 1.0}, {"nope", 1.0}}, "nope"},
      {{{"format", nan}}, "weight"},
      {{{"format", inf}}, "weight"},
      {{{"format", -0.5}}, "weight"},
      {{{"format", 1.0}, {"format", 2.0}}, "twice"},
  };
  for (const auto& [specs, want] : cases) {
    absl::StatusOr<CompositeReward> c = CompositeReward::Create(specs);
    ASSERT_FALSE(c.ok()) << want;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(want));
  }
}

TEST(CompositeRewardTest, WeightsAndMergesStepRewards) {
  absl::StatusOr<CompositeReward> c =
      CompositeReward::Create({{"exact_answer", 1.0}, {"format", 0.5}, {"arithmetic_steps", 2.0}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->names(), (std::vector<std::string>{"exact_answer", "format", "arithmetic_steps"}));
  const std::string completion = "7+5=12\n12*3=35\n35-4=31\n#### 31";
  absl::StatusOr<CompositeOutput> out = c->Score(RewardInput{kPrompt, completion, "32"});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->per_function.size(), 3u);
  EXPECT_EQ(out->per_function[0], 0.0);  // wrong answer
  EXPECT_EQ(out->per_function[1], 1.0);  // well formed
  EXPECT_EQ(out->per_function[2], 0.5);  // steps 1, 0, 1, 0
  EXPECT_DOUBLE_EQ(out->total, 1.0 * 0 + 0.5 * 1.0 + 2.0 * 0.5);
  ASSERT_EQ(out->steps.size(), 4u);
  const std::vector<double> want_rewards = {2.0, 0.0, 2.0, 0.0};
  const std::vector<int> want_offsets = {6, 14, 22, 29};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(out->steps[i].reward, want_rewards[i]);
    EXPECT_EQ(out->steps[i].end_offset, want_offsets[i]);
  }
}

// Gives steps at fixed offsets, or a fixed (possibly non-finite) outcome reward.
class FakeReward : public RewardFunction {
 public:
  FakeReward(std::string name, double reward, std::vector<StepReward> steps)
      : name_(std::move(name)), reward_(reward), steps_(std::move(steps)) {}
  std::string_view name() const override { return name_; }
  bool gives_step_rewards() const override { return !steps_.empty(); }
  absl::StatusOr<RewardOutput> Score(const RewardInput&) const override {
    return RewardOutput{reward_, steps_};
  }

 private:
  std::string name_;
  double reward_;
  std::vector<StepReward> steps_;
};

TEST(CompositeRewardTest, StepsAtTheSameOffsetAreSummed) {
  std::vector<WeightedRewardFunction> fns;
  fns.push_back(
      {std::make_unique<FakeReward>("a", 1.0, std::vector<StepReward>{{1.0, 2}, {1.0, 5}}), 0.25});
  fns.push_back(
      {std::make_unique<FakeReward>("b", 0.0, std::vector<StepReward>{{-1.0, 5}, {1.0, 0}}), 2.0});
  absl::StatusOr<CompositeReward> c = CompositeReward::CreateFromFunctions(std::move(fns));
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<CompositeOutput> out = c->Score(RewardInput{"", "abcdef", ""});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_DOUBLE_EQ(out->total, 0.25);
  ASSERT_EQ(out->steps.size(), 3u);
  EXPECT_EQ(out->steps[0].end_offset, 0);
  EXPECT_DOUBLE_EQ(out->steps[0].reward, 2.0);
  EXPECT_EQ(out->steps[1].end_offset, 2);
  EXPECT_DOUBLE_EQ(out->steps[1].reward, 0.25);
  EXPECT_EQ(out->steps[2].end_offset, 5);
  EXPECT_DOUBLE_EQ(out->steps[2].reward, 0.25 - 2.0);
}

TEST(CompositeRewardTest, NonFiniteRewardIsInternalNamingTheFunction) {
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    std::vector<WeightedRewardFunction> fns;
    fns.push_back({std::make_unique<ExactAnswerReward>(), 1.0});
    fns.push_back({std::make_unique<FakeReward>("broken", bad, std::vector<StepReward>{}), 1.0});
    absl::StatusOr<CompositeReward> c = CompositeReward::CreateFromFunctions(std::move(fns));
    ASSERT_TRUE(c.ok());
    absl::StatusOr<CompositeOutput> out = c->Score(RewardInput{kPrompt, kSolution, "32"});
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(out.status().message(), HasSubstr("broken"));
  }
  std::vector<WeightedRewardFunction> steps;
  steps.push_back(
      {std::make_unique<FakeReward>(
           "nan_step", 0.0, std::vector<StepReward>{{std::numeric_limits<double>::quiet_NaN(), 1}}),
       1.0});
  absl::StatusOr<CompositeReward> c = CompositeReward::CreateFromFunctions(std::move(steps));
  ASSERT_TRUE(c.ok());
  absl::StatusOr<CompositeOutput> out = c->Score(RewardInput{"", "abc", ""});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(out.status().message(), HasSubstr("nan_step"));
}

TEST(CompositeRewardTest, FunctionErrorsNameTheFunction) {
  absl::StatusOr<CompositeReward> c = CompositeReward::Create({{"arithmetic_steps", 1.0}});
  ASSERT_TRUE(c.ok());
  absl::StatusOr<CompositeOutput> out = c->Score(RewardInput{"not math", "#### 1", "1"});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("arithmetic_steps"));

  std::vector<WeightedRewardFunction> null_fn;
  null_fn.push_back({nullptr, 1.0});
  EXPECT_EQ(CompositeReward::CreateFromFunctions(std::move(null_fn)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CompositeRewardTest, ConcurrentScoringMatchesSerial) {
  absl::StatusOr<CompositeReward> c =
      CompositeReward::Create({{"exact_answer", 1.0}, {"format", 0.1}, {"arithmetic_steps", 1.0}});
  ASSERT_TRUE(c.ok());
  ArithmeticTask task(ArithmeticOptions{}, 5);
  const std::vector<Problem> problems = task.TrainSet(200, 1);
  std::vector<double> serial;
  for (const Problem& p : problems) {
    serial.push_back(c->Score(RewardInput{p.prompt, p.solution, p.answer})->total);
  }
  std::vector<double> a(problems.size()), b(problems.size());
  auto run = [&](std::vector<double>* out) {
    for (size_t i = 0; i < problems.size(); ++i) {
      const Problem& p = problems[i];
      (*out)[i] = c->Score(RewardInput{p.prompt, p.solution, p.answer})->total;
    }
  };
  std::thread t1(run, &a), t2(run, &b);
  t1.join();
  t2.join();
  EXPECT_EQ(a, serial);
  EXPECT_EQ(b, serial);
  EXPECT_DOUBLE_EQ(serial[0], 2.1);
}

}  // namespace
}  // namespace grpo
