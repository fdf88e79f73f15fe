// The whole local pipeline at toy scale: SFT, eval, GRPO steps, run directory contents.
#include "local/local_job.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobspec/job_spec.h"
#include "learner/checkpoint.h"
#include "rewards/code_tests.h"
#include "rewards/reward_model.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {
namespace fs = std::filesystem;

v1::JobSpec ToySpec() {
  auto parsed = ParseJobSpec(R"({
    "steps": 3, "checkpoint_every": 2,
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "ffn_hidden": 48},
    "grpo": {"group_size": 4, "prompts_per_step": 3},
    "sampling": {"max_new_tokens": 24},
    "sft": {"steps": 5, "batch_size": 8},
    "eval": {"num_prompts": 6, "k": 2}})");
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  auto spec = ResolveJobSpec(*parsed);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

TEST(LocalJobTest, RunsAndWritesTheRunDirectory) {
  const std::string dir = testing::TempDir() + "/local_job_run";
  fs::remove_all(dir);
  std::ostringstream progress;
  LocalJobOptions options;
  options.run_dir = dir;
  options.progress = &progress;
  auto result = RunLocalJob(ToySpec(), options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->before.num_prompts, 6);
  EXPECT_EQ(result->after.k, 2);

  std::ifstream metrics(dir + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    ++lines;
    for (const char* key :
         {"\"step\"", "\"reward_mean\"", "\"reward_std\"", "\"loss\"", "\"kl\"",
          "\"clip_fraction\"", "\"grad_norm\"", "\"entropy\"", "\"completion_length_mean\"",
          "\"tokens_per_second\"", "\"policy_version\"", "\"elapsed_seconds\""})
      EXPECT_THAT(line, testing::HasSubstr(key));
  }
  EXPECT_EQ(lines, 3);
  EXPECT_TRUE(fs::exists(dir + "/eval.json"));
  EXPECT_TRUE(fs::exists(dir + "/spec.json"));
  auto latest = LatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(fs::path(*latest).filename(), "step-3");
  EXPECT_TRUE(fs::exists(*latest + "/model.pt"));
  EXPECT_TRUE(fs::exists(dir + "/step-2/optimizer.pt"));
  EXPECT_FALSE(fs::exists(dir + "/step-1"));  // neither every 2 steps nor 300 s after
  EXPECT_THAT(progress.str(), testing::HasSubstr("step    3/3"));
  EXPECT_THAT(progress.str(), testing::HasSubstr("ETA"));
  EXPECT_THAT(progress.str(), testing::HasSubstr("GRPO (after)"));
}

// checkpoint_every_seconds: a step that ends at least that long after the last
// checkpoint writes one; a millisecond passes in every step, so here every step does.
TEST(LocalJobTest, CheckpointsByElapsedTime) {
  const std::string dir = testing::TempDir() + "/local_job_timed";
  fs::remove_all(dir);
  v1::JobSpec spec = ToySpec();
  spec.set_checkpoint_every(0);
  spec.set_checkpoint_every_seconds(1e-3);
  LocalJobOptions options;
  options.run_dir = dir;
  ASSERT_TRUE(RunLocalJob(spec, options).ok());
  for (const char* step : {"/step-1", "/step-2", "/step-3"})
    EXPECT_TRUE(fs::exists(dir + step + "/model.pt")) << step;
}

TEST(LocalJobTest, TrainsOnALearnedRewardModel) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2, .ffn_hidden = 32});
  const std::string rm_dir = testing::TempDir() + "/local_job_rm";
  ASSERT_TRUE(RewardModel(config, 4).Save(rm_dir).ok());

  v1::JobSpec spec = ToySpec();
  spec.set_steps(2);
  spec.set_checkpoint_every(0);
  spec.clear_rewards();
  auto* exact = spec.add_rewards();
  exact->set_name("exact_answer");
  exact->set_weight(1.0);
  auto* learned = spec.add_rewards();
  learned->set_name("reward_model");
  learned->set_weight(0.5);
  learned->set_model_dir(rm_dir);
  ASSERT_TRUE(ValidateJobSpec(spec).ok());
  LocalJobOptions options;
  options.run_dir = testing::TempDir() + "/local_job_rm_run";
  auto result = RunLocalJob(spec, options);
  ASSERT_TRUE(result.ok()) << result.status();
  std::ifstream metrics(options.run_dir + "/metrics.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(metrics, line));
  EXPECT_THAT(line, testing::HasSubstr("\"reward/reward_model\""));

  learned->set_model_dir(testing::TempDir() + "/no-such-rm");
  result = RunLocalJob(spec, options);
  EXPECT_THAT(std::string(result.status().message()), testing::HasSubstr("rewards[1].model_dir"));
}

// The built-in code task end to end in one process: completions run against each
// problem's tests in the sandbox, during training and in the held-out evaluation.
TEST(LocalJobTest, TrainsOnTheCodeTaskWithExecutedTests) {
  if (auto probe = CodeTestsReward::Create(CodeTestsOptions()); !(*probe)->unavailable().empty())
    GTEST_SKIP() << (*probe)->unavailable();
  v1::JobSpec spec = ToySpec();
  spec.set_steps(2);
  spec.set_checkpoint_every(0);
  spec.mutable_dataset()->set_kind("code");
  spec.mutable_sampling()->set_max_new_tokens(48);
  spec.mutable_eval()->set_num_prompts(4);
  spec.clear_rewards();
  v1::RewardFunctionSpec* code = spec.add_rewards();
  code->set_name("code_tests");
  code->set_weight(1.0);
  (*code->mutable_params())["wall_seconds"] = 5;
  ASSERT_TRUE(ValidateJobSpec(spec).ok());
  LocalJobOptions options;
  options.run_dir = testing::TempDir() + "/local_job_code";
  fs::remove_all(options.run_dir);
  auto result = RunLocalJob(spec, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->before.num_prompts, 4);
  EXPECT_EQ(result->after.num_prompts, 4);
  std::ifstream metrics(options.run_dir + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    ++lines;
    EXPECT_THAT(line, testing::HasSubstr("\"reward/code_tests\""));
  }
  EXPECT_EQ(lines, 2);

  // Arithmetic rewards on the code task: refused before anything trains.
  spec.mutable_rewards(0)->set_name("exact_answer");
  spec.mutable_rewards(0)->clear_params();
  options.run_dir += "_answers";
  result = RunLocalJob(spec, options);
  EXPECT_THAT(std::string(result.status().message()), testing::HasSubstr("has no \"answer\""));
}

TEST(LocalJobTest, BadDatasetFailsCleanly) {
  v1::JobSpec spec = ToySpec();
  spec.mutable_dataset()->set_kind("jsonl");
  spec.mutable_dataset()->set_train_path(testing::TempDir() + "/no-such.jsonl");
  LocalJobOptions options;
  options.run_dir = testing::TempDir() + "/local_job_bad";
  auto result = RunLocalJob(spec, options);
  EXPECT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), testing::HasSubstr("no-such.jsonl"));
}

}  // namespace
}  // namespace grpo
