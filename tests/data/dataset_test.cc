#include "data/dataset.h"

#include <unistd.h>

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const std::string path = testing::TempDir() + "/" + std::to_string(getpid()) + "." + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  return path;
}

TEST(LoadJsonlTest, ReadsExamplesSkippingBlankLines) {
  const std::string path =
      WriteTempFile("good.jsonl",
                    "{\"prompt\": \"1+1=\\n\", \"answer\": \"2\"}\n"
                    "\n"
                    "   \n"
                    "{\"prompt\": \"q2\", \"answer\": \" -7 \", \"solution\": \"because\"}\r\n"
                    "{\"prompt\": \"q3\", \"answer\": \"3\"}");  // no final newline
  absl::StatusOr<std::vector<Example>> examples = LoadJsonl(path);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 3u);
  EXPECT_EQ((*examples)[0].prompt, "1+1=\n");
  EXPECT_EQ((*examples)[0].answer, "2");
  EXPECT_EQ((*examples)[0].solution, "");
  EXPECT_EQ((*examples)[1].answer, "-7");
  EXPECT_EQ((*examples)[1].solution, "because");
  EXPECT_EQ((*examples)[2].prompt, "q3");
}

TEST(LoadJsonlTest, Gsm8kAnswersKeepTheWorkedSolution) {
  const std::string gsm = "Natalia sold 48 clips.\\nThen 1,186 more.\\n#### 1,234";
  const std::string path =
      WriteTempFile("gsm.jsonl", "{\"prompt\": \"How many?\", \"answer\": \"" + gsm + "\"}\n" +
                                     "{\"prompt\": \"p\", \"answer\": \"x #### -5\", "
                                     "\"solution\": \"given\"}\n");
  absl::StatusOr<std::vector<Example>> examples = LoadJsonl(path);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 2u);
  EXPECT_EQ((*examples)[0].answer, "1234");
  EXPECT_EQ((*examples)[0].solution, "Natalia sold 48 clips.\nThen 1,186 more.\n#### 1,234");
  EXPECT_EQ((*examples)[1].answer, "-5");
  EXPECT_EQ((*examples)[1].solution, "given");  // an explicit solution wins
}

TEST(LoadJsonlTest, Gsm8kAnswersAreTrimmedAfterTheCommasGo) {
  const std::string path = WriteTempFile(
      "gsm_commas.jsonl", "{\"prompt\": \"p\", \"answer\": \"x #### , 1,234 ,\"}\n");
  absl::StatusOr<std::vector<Example>> examples = LoadJsonl(path);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 1u);
  EXPECT_EQ((*examples)[0].answer, "1234");
}

std::string Repeated(const std::string& item, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += (i ? ", " : "") + item;
  return out;
}

TEST(LoadJsonlTest, CodeProblemsCarryTheirTests) {
  const std::string path = WriteTempFile(
      "code.jsonl",
      "{\"prompt\": \"f(x): x squared\\n\", \"solution\": \"def f(x):\\n    return x*x\\n\", "
      "\"tests\": {\"asserts\": [\"assert f(3) == 9\", \"assert f(0) == 0\"]}}\n"
      "{\"prompt\": \"stdin: add\\n\", \"answer\": \"7\", \"tests\": {\"language\": \"python\", "
      "\"cases\": [{\"input\": \"3 4\\n\", \"output\": \"7\"}, {\"input\": \"0 0\"}]}}\n");
  absl::StatusOr<std::vector<Example>> examples = LoadJsonl(path);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 2u);
  const Example& f = (*examples)[0];
  EXPECT_TRUE(HasTests(f));
  EXPECT_EQ(f.answer, "");
  EXPECT_EQ(f.solution, "def f(x):\n    return x*x\n");
  ASSERT_EQ(f.tests.asserts_size(), 2);
  EXPECT_EQ(f.tests.asserts(1), "assert f(0) == 0");
  const Example& add = (*examples)[1];
  EXPECT_EQ(add.answer, "7");
  EXPECT_EQ(add.tests.language(), "python");
  ASSERT_EQ(add.tests.cases_size(), 2);
  EXPECT_EQ(add.tests.cases(0).input(), "3 4\n");
  EXPECT_EQ(add.tests.cases(1).output(), "");  // expects no output
}

TEST(LoadJsonlTest, MalformedLineReportsPathAndLineNumber) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"prompt\": \"a\", \"answer\": ", "not a valid example object"},
      {"{\"prompt\": \"a\"}", "\"answer\""},
      {"{\"prompt\": \"\", \"answer\": \"1\"}", "\"prompt\""},
      {"{\"answer\": \"1\"}", "\"prompt\""},
      {"{\"prompt\": 5, \"answer\": \"1\"}", "prompt"},
      {"{\"prompt\": \"a\", \"answer\": 7}", "answer"},
      {"{\"prompt\": \"a\", \"answer\": \"1\", \"extra\": 1}", "extra"},
      {"[\"a\", \"1\"]", "not a valid example object"},
      {"{\"prompt\": \"a\", \"answer\": \"1\"} trailing", "not a valid example object"},
      {"{\"prompt\": \"a\", \"answer\": \"steps #### \"}", "####"},
      // Found by fuzz/jsonl_fuzzer: once loaded as a blank answer.
      {"{\"prompt\": \"a\", \"answer\": \"steps #### , ,\"}", "####"},
      // Code problems: tests instead of an answer, but some tests.
      {"{\"prompt\": \"a\", \"tests\": {}}", "\"answer\" (and no \"tests\")"},
      {"{\"prompt\": \"a\", \"tests\": {\"asserts\": [\"  \"]}}", "tests.asserts[0] is blank"},
      {"{\"prompt\": \"a\", \"tests\": {\"cases\": [{\"in\": \"1\"}]}}", "not a valid example object"},
      {"{\"prompt\": \"a\", \"tests\": {\"asserts\": [" + Repeated("\"assert 1\"", 257) + "]}}",
       "257 tests; at most 256"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path =
        WriteTempFile("bad" + std::to_string(i) + ".jsonl",
                      "{\"prompt\": \"ok\", \"answer\": \"1\"}\n\n" + cases[i].first + "\n" +
                          "{\"prompt\": \"ok\", \"answer\": \"1\"}\n");
    absl::StatusOr<std::vector<Example>> examples = LoadJsonl(path);
    ASSERT_FALSE(examples.ok()) << cases[i].first;
    EXPECT_EQ(examples.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(examples.status().message(), HasSubstr(path + ":3:")) << cases[i].first;
    EXPECT_THAT(examples.status().message(), HasSubstr(cases[i].second)) << cases[i].first;
  }
}

TEST(LoadJsonlTest, MissingFileIsNotFoundAndEmptyFileIsEmpty) {
  absl::StatusOr<std::vector<Example>> missing =
      LoadJsonl(testing::TempDir() + "/does_not_exist.jsonl");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("does_not_exist.jsonl"));

  absl::StatusOr<std::vector<Example>> empty = LoadJsonl(WriteTempFile("empty.jsonl", ""));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(ToExamplesTest, CopiesAnswerAndSolution) {
  absl::StatusOr<Problem> p = ArithmeticTask::Solve("2-5*4");
  ASSERT_TRUE(p.ok());
  const std::vector<Example> examples = ToExamples({*p});
  ASSERT_EQ(examples.size(), 1u);
  EXPECT_EQ(examples[0].prompt, p->prompt);
  EXPECT_EQ(examples[0].answer, "-12");
  EXPECT_EQ(examples[0].solution, p->solution);
}

TEST(ExtractFinalAnswerTest, FindsAndNormalisesTheLastAnswer) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"7+5=12\n#### 12", "12"},
      {"#### -7", "-7"},
      {"#### +5", "5"},
      {"####42", "42"},
      {"#### 1,234", "1234"},
      {"#### 1,234,567.89", "1234567.89"},
      {"#### 42 apples", "42"},
      {"#### 42.", "42"},
      {"#### 5, 6", "5"},
      {"#### 0.50", "0.50"},
      {"#### 3.5 kg", "3.5"},
      {"so \\boxed{-7}", "-7"},
      {"The answer is $\\boxed{ 3.5 }$.", "3.5"},
      {"\\boxed{1,000}", "1000"},
      {"#### 1\nwait\n#### 2", "2"},
      {"\\boxed{1} then #### 9", "9"},
      {"#### 9 then \\boxed{1}", "1"},
      {"\\boxed{\\boxed{4}}", "4"},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<std::string> got = ExtractFinalAnswer(text);
    ASSERT_TRUE(got.ok()) << text << ": " << got.status();
    EXPECT_EQ(*got, want) << text;
  }
}

TEST(ExtractFinalAnswerTest, NotFoundWithoutAMarkedNumber) {
  for (const char* text : {"", "the answer is 42", "####", "#### apples", "\\boxed{x}",
                           "\\boxed{12", "#### 5\n####", "#### -", "\\boxed{\\frac{1}{2}}"}) {
    absl::StatusOr<std::string> got = ExtractFinalAnswer(text);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << text;
  }
}

TEST(NumbersEqualTest, ComparesValuesExactly) {
  EXPECT_TRUE(NumbersEqual("42", "42.0"));
  EXPECT_TRUE(NumbersEqual("-0", "0"));
  EXPECT_TRUE(NumbersEqual("-0.0", "0"));
  EXPECT_TRUE(NumbersEqual("1,234", "1234"));
  EXPECT_TRUE(NumbersEqual("+3", "3"));
  EXPECT_TRUE(NumbersEqual("007", "7"));
  EXPECT_TRUE(NumbersEqual(".5", "0.50"));
  EXPECT_TRUE(NumbersEqual(" 12 ", "12."));
  EXPECT_TRUE(NumbersEqual("-12", "-12"));
  EXPECT_FALSE(NumbersEqual("42", "43"));
  EXPECT_FALSE(NumbersEqual("-1", "1"));
  EXPECT_FALSE(NumbersEqual("1.5", "15"));
  EXPECT_FALSE(NumbersEqual("100", "10"));
  EXPECT_FALSE(NumbersEqual("1", ""));
  EXPECT_FALSE(NumbersEqual("abc", "abc"));
  EXPECT_FALSE(NumbersEqual("42 apples", "42"));
  // Beyond double precision: compared digit by digit, not as doubles.
  EXPECT_FALSE(NumbersEqual("12345678901234567890", "12345678901234567891"));
  EXPECT_TRUE(NumbersEqual("12345678901234567890", "12,345,678,901,234,567,890"));
}

TEST(NormalizeNumberTest, AcceptsOnlyOneNumber) {
  EXPECT_EQ(*NormalizeNumber(" +1,000. "), "1000");
  EXPECT_EQ(NormalizeNumber("1 2").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NormalizeNumber("").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace grpo
