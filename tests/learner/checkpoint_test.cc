#include "learner/checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace grpo {
namespace {
namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const std::string dir = testing::TempDir() + "/" + std::to_string(getpid()) + "." + name;
  fs::remove_all(dir);
  return dir;
}

absl::Status WriteOne(const std::string& dir, const std::string& text) {
  std::ofstream(dir + "/data.txt") << text;
  return absl::OkStatus();
}

TEST(CheckpointTest, WritesStepDirectoryAndLatest) {
  const std::string run = FreshDir("ckpt_a");
  EXPECT_EQ(LatestCheckpoint(run).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteCheckpoint(run, 3, [](const std::string& d) { return WriteOne(d, "three"); }).ok());
  ASSERT_TRUE(WriteCheckpoint(run, 5, [](const std::string& d) { return WriteOne(d, "five"); }).ok());
  auto latest = LatestCheckpoint(run);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(fs::path(*latest).filename(), "step-5");
  std::string text;
  std::ifstream(*latest + "/data.txt") >> text;
  EXPECT_EQ(text, "five");
  EXPECT_TRUE(fs::exists(run + "/step-3/data.txt"));
}

TEST(CheckpointTest, FailedWriteLeavesPreviousCheckpointLatest) {
  const std::string run = FreshDir("ckpt_b");
  ASSERT_TRUE(WriteCheckpoint(run, 1, [](const std::string& d) { return WriteOne(d, "one"); }).ok());
  absl::Status s = WriteCheckpoint(run, 2, [](const std::string& d) {
    (void)WriteOne(d, "partial");
    return absl::InternalError("disk full");
  });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(fs::path(*LatestCheckpoint(run)).filename(), "step-1");
  EXPECT_FALSE(fs::exists(run + "/step-2"));
  EXPECT_FALSE(fs::exists(run + "/.tmp-step-2"));
}

TEST(CheckpointTest, PruneKeepsTheNewestAndWhatLatestNames) {
  const std::string run = FreshDir("ckpt_prune");
  for (int step : {2, 4, 6, 10})
    ASSERT_TRUE(WriteCheckpoint(run, step, [](const std::string& d) { return WriteOne(d, "x"); }).ok());
  // `latest` pointing back at an older step (a resumed run) keeps that one too.
  std::ofstream(run + "/latest") << "step-4\n";
  ASSERT_TRUE(PruneCheckpoints(run, 1).ok());
  EXPECT_FALSE(fs::exists(run + "/step-2"));
  EXPECT_TRUE(fs::exists(run + "/step-4"));
  EXPECT_FALSE(fs::exists(run + "/step-6"));
  EXPECT_TRUE(fs::exists(run + "/step-10"));
  ASSERT_TRUE(PruneCheckpoints(run, 0).ok());  // keep everything
  EXPECT_TRUE(fs::exists(run + "/step-10"));
}

TEST(CheckpointTest, LatestNamingAMissingDirectoryIsDataLoss) {
  const std::string run = FreshDir("ckpt_c");
  fs::create_directories(run);
  ASSERT_TRUE(WriteFileDurably(run + "/latest", "step-9\n").ok());
  EXPECT_EQ(LatestCheckpoint(run).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace grpo
