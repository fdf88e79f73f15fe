// Held-out evaluation of examples with tests: every completion (k samples and the greedy
// one) goes to the judge with its example's tests, and a reward of at least 1 is correct.
#include "evaluation/evaluation.h"

#include <atomic>
#include <set>

#include "data/code_task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

// Scores `reward` for every input and remembers which tests it was given.
class FixedJudge : public RewardFunction {
 public:
  explicit FixedJudge(double reward) : reward_(reward) {}
  std::string_view name() const override { return "code_tests"; }
  bool gives_step_rewards() const override { return false; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override {
    ++calls_;
    if (input.tests == nullptr) return absl::InternalError("no tests");
    first_asserts_.insert(input.tests->asserts_size() ? input.tests->asserts(0) : "");
    return RewardOutput{reward_, {}};
  }
  mutable std::atomic<int> calls_{0};
  mutable std::set<std::string> first_asserts_;

 private:
  const double reward_;
};

TEST(EvaluationTest, ExamplesWithTestsAreJudgedByTheirTests) {
  const Transformer policy(
      testing_util::SmallModel({.d_model = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2,
                                .ffn_hidden = 32}),
      3);
  const CharTextTokenizer tokenizer;
  std::vector<Example> examples = CodeHeldOutSet();
  examples.resize(3);
  EvalOptions options;
  options.k = 4;
  options.max_new_tokens = 8;

  FixedJudge pass(1.0);
  options.tests_judge = &pass;
  absl::StatusOr<EvalResult> passed = Evaluate(policy, tokenizer, examples, options);
  ASSERT_TRUE(passed.ok()) << passed.status();
  EXPECT_EQ(pass.calls_, 3 * (4 + 1));  // k samples and the greedy decode per example
  EXPECT_EQ(pass.first_asserts_.size(), 3u);  // each with its own example's tests
  EXPECT_DOUBLE_EQ(passed->pass_at_1, 1.0);
  EXPECT_DOUBLE_EQ(passed->pass_at_k, 1.0);
  EXPECT_DOUBLE_EQ(passed->greedy_accuracy, 1.0);

  FixedJudge partial(0.75);  // three of four tests: not correct
  options.tests_judge = &partial;
  absl::StatusOr<EvalResult> failed = Evaluate(policy, tokenizer, examples, options);
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_DOUBLE_EQ(failed->pass_at_1, 0.0);
  EXPECT_DOUBLE_EQ(failed->maj_at_k, 0.0);
  EXPECT_DOUBLE_EQ(failed->greedy_accuracy, 0.0);

  options.tests_judge = nullptr;
  absl::StatusOr<EvalResult> unjudged = Evaluate(policy, tokenizer, examples, options);
  EXPECT_TRUE(absl::IsInvalidArgument(unjudged.status()));
  EXPECT_THAT(unjudged.status().message(), ::testing::HasSubstr("code_tests"));
}

}  // namespace
}  // namespace grpo
