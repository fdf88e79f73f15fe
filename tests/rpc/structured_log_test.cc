// Structured logs: the format of one event, lines from many threads never mixed, partial
// lines held back, and the binaries' --log_format flag.
#include "rpc/structured_log.h"

#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/command.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST(FormatLogLineTest, JsonEscapesQuotesControlsAndInvalidUtf8) {
  const std::string line = FormatLogLine(LogFormat::kJson, "2026-01-02T03:04:05.678Z", "info",
                                         "grpo_x", "say \"hi\"\\ \x01 caf\xc3\xa9 \xff end");
  EXPECT_EQ(line,
            "{\"ts\":\"2026-01-02T03:04:05.678Z\",\"level\":\"info\",\"component\":\"grpo_x\","
            "\"msg\":\"say \\\"hi\\\"\\\\ \\u0001 caf\xc3\xa9 \\ufffd end\"}\n");
}

TEST(FormatLogLineTest, JsonRejectsOverlongAndSurrogateSequences) {
  // C0 80 is an overlong NUL; ED A0 80 a UTF-16 surrogate: neither is UTF-8.
  const std::string line =
      FormatLogLine(LogFormat::kJson, "t", "info", "c", "a\xc0\x80z\xed\xa0\x80");
  EXPECT_THAT(line, HasSubstr("\"msg\":\"a\\ufffd\\ufffdz\\ufffd\\ufffd\\ufffd\""));
}

TEST(FormatLogLineTest, TextCannotForgeASecondEvent) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, "T", "warning", "c", "a\rb\x1b[2Jc\td"),
            "T warning a?b?[2Jc\td\n");
}

TEST(ParseLogFormatTest, NamesTheFlagAndValue) {
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  const auto bad = ParseLogFormat("yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--log_format"));
  EXPECT_THAT(bad.status().message(), HasSubstr("yaml"));
}

TEST(StructuredLogBufferTest, OneEventPerLineWithLevelsFromTheStream) {
  std::ostringstream sink;
  {
    StructuredLogBuffer out(sink.rdbuf(), LogFormat::kJson, "grpo_t", false);
    std::ostream stream(&out);
    stream << "first " << 1 << "\nsecond\n" << "held";
    EXPECT_EQ(Lines(sink.str()).size(), 2u) << "a partial line must wait for its newline";
    stream << " back" << std::endl;
  }
  {
    StructuredLogBuffer err(sink.rdbuf(), LogFormat::kJson, "grpo_t", true);
    std::ostream stream(&err);
    stream << "error: bad flag\nretrying\nunterminated";
  }  // the destructor writes the unterminated line
  const std::vector<std::string> lines = Lines(sink.str());
  ASSERT_EQ(lines.size(), 6u) << sink.str();
  const std::string ts = R"(\{"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z",)";
  EXPECT_THAT(lines[0], MatchesRegex(ts + R"("level":"info","component":"grpo_t","msg":"first 1"\})"));
  EXPECT_THAT(lines[1], HasSubstr("\"msg\":\"second\""));
  EXPECT_THAT(lines[2], HasSubstr("\"msg\":\"held back\""));
  EXPECT_THAT(lines[3], HasSubstr("\"level\":\"error\",\"component\":\"grpo_t\",\"msg\":\"error: bad flag\""));
  EXPECT_THAT(lines[4], HasSubstr("\"level\":\"warning\""));
  EXPECT_THAT(lines[5], HasSubstr("\"msg\":\"unterminated\""));
}

TEST(StructuredLogBufferTest, LinesFromManyThreadsNeverInterleave) {
  std::ostringstream sink;
  constexpr int kThreads = 8, kLines = 200;
  {
    StructuredLogBuffer buffer(sink.rdbuf(), LogFormat::kText, "grpo_t", false);
    std::ostream stream(&buffer);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&stream, t] {
        // Several writes per line: another thread's bytes must not land between them.
        for (int i = 0; i < kLines; ++i) stream << "thread " << t << " line " << i << " end\n";
      });
    }
    for (auto& thread : threads) thread.join();
  }
  const std::vector<std::string> lines = Lines(sink.str());
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kLines));
  std::vector<int> next(kThreads, 0);
  for (const std::string& line : lines) {
    int t = -1, i = -1;
    const size_t at = line.find(" info thread ");
    ASSERT_NE(at, std::string::npos) << line;
    ASSERT_EQ(sscanf(line.c_str() + at, " info thread %d line %d end", &t, &i), 2) << line;
    ASSERT_TRUE(t >= 0 && t < kThreads) << line;
    EXPECT_EQ(i, next[t]++) << "each thread's lines stay whole and in order";
    EXPECT_TRUE(absl::EndsWith(line, " end")) << line;
  }
}

TEST(LogFormatFlagTest, TheCoordinatorLogsJsonAndRefusesAnUnknownFormat) {
  const auto bad = testing_util::RunCommand(
      absl::StrCat(GRPO_COORDINATOR_BINARY, " --log_format=yaml"), 60);
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_THAT(bad.output, HasSubstr("--log_format: 'yaml'"));

  // An address it cannot listen on: the binary logs the failure and exits by itself.
  const auto json = testing_util::RunCommand(
      absl::StrCat(GRPO_COORDINATOR_BINARY, " --log_format=json --listen=256.0.0.1:1"), 60);
  EXPECT_NE(json.exit_code, 0) << json.output;
  const std::vector<std::string> lines = Lines(json.output);
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) {
    EXPECT_THAT(line, MatchesRegex(R"re(\{"ts":"[^"]+","level":"(info|warning|error)",)re"
                                   R"re("component":"grpo_coordinator","msg":".*"\})re"));
  }
  EXPECT_THAT(json.output, HasSubstr("\"level\":\"error\""));
}

}  // namespace
}  // namespace grpo
