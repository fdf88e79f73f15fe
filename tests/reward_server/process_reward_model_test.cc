// Process reward models trained on step labels: on the built-in backbone with the
// character tokenizer, and on a Hugging Face (Qwen3-layout) backbone with Qwen3's real
// tokenizer.json. Each learns held-out step labels well above always guessing the common
// one, survives a save and reload, and is served by the reward server with the scores an
// in-process forward gives, at the right steps. (Whether a small model learns to check
// arithmetic is grpo_train_rm's measurement, in the README, not a unit test's.)
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "data/arithmetic_task.h"
#include "gmock/gmock.h"
#include "grpo/v1/reward.grpc.pb.h"
#include "gtest/gtest.h"
#include "learner/reward_model_trainer.h"
#include "reward_server/server.h"
#include "rewards/reward_model.h"
#include "tests/testing/command.h"
#include "tests/testing/npm_tokenizer.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Worked arithmetic solutions whose steps each lose their result to "?" with
// probability 0.3 (label 0; the others 1). Labels are independent across the steps of a
// completion, so a model only gets them right by reading each at its own step's end: a
// model read at the wrong tokens, or trained on shifted labels, cannot.
std::vector<StepLabelledExample> MarkedSteps(const std::vector<Problem>& problems, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<StepLabelledExample> out;
  for (const Problem& p : problems) {
    StepLabelledExample e;
    e.prompt = p.prompt;
    std::vector<std::string> steps = absl::StrSplit(p.solution, '\n');
    for (std::string& step : steps) {
      const bool wrong = rng() % 10 < 3;
      if (wrong) step = step.substr(0, step.find_last_of("= ") + 1) + "?";
      e.labels.push_back(wrong ? 0 : 1);
    }
    e.completion = absl::StrJoin(steps, "\n");
    e.step_ends = StepEnds(e.completion, StepRule());
    out.push_back(std::move(e));
  }
  return out;
}

// Trains `model` on MarkedSteps; returns held-out accuracy.
StepAccuracy TrainOnMarkedSteps(RewardModel* model, int steps) {
  ArithmeticTask task(ArithmeticOptions{}, 1234);
  const std::vector<StepLabelledExample> train = MarkedSteps(task.TrainSet(600, 1), 1);
  const std::vector<StepLabelledExample> held_out = MarkedSteps(task.HeldOutSet(150), 2);
  RewardModelTrainOptions options;
  options.steps = steps;
  options.batch_size = 16;
  options.optimizer.learning_rate = 2e-3;
  options.optimizer.warmup_steps = 5;
  absl::StatusOr<double> loss = TrainProcessRewardModel(model, train, options, nullptr);
  EXPECT_TRUE(loss.ok()) << loss.status();
  EXPECT_EQ(model->objective(), RewardObjective::kStepCrossEntropy);
  absl::StatusOr<StepAccuracy> accuracy = ProcessStepAccuracy(*model, held_out);
  EXPECT_TRUE(accuracy.ok()) << accuracy.status();
  return accuracy.ok() ? *accuracy : StepAccuracy{};
}

// Serves `dir` and checks process_reward_model's step rewards against `model` in-process:
// σ(score) at the token holding each line's last byte, the step ends in bytes.
void ExpectServedAsInProcess(const RewardModel& model, const std::string& dir) {
  RewardServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.reward_model_dir = dir;
  options.code_tests = false;
  auto server = RewardServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::RewardService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  ArithmeticTask task(ArithmeticOptions{}, 1234);
  const std::vector<StepLabelledExample> samples = MarkedSteps(task.HeldOutSet(6), 3);
  v1::ScoreRequest request;
  v1::RewardFunctionSpec* f = request.add_reward_functions();
  f->set_name("process_reward_model");
  f->set_weight(1.0);
  for (const StepLabelledExample& e : samples) {
    v1::RewardSample* s = request.add_samples();
    s->set_prompt(e.prompt);
    s->set_completion(e.completion);
  }
  grpc::ClientContext context;
  v1::ScoreResponse response;
  grpc::Status status = stub->Score(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.scores_size(), static_cast<int>(samples.size()));
  for (size_t i = 0; i < samples.size(); ++i) {
    absl::StatusOr<EncodedSample> encoded = model.Encode(samples[i].prompt, samples[i].completion);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    std::vector<int> positions;
    for (int end : samples[i].step_ends) positions.push_back(RewardModel::PositionOfByte(*encoded, end));
    auto direct = model.ScoreAt({encoded->ids}, {positions});
    ASSERT_TRUE(direct.ok()) << direct.status();
    const v1::SampleScore& served = response.scores(i);
    ASSERT_EQ(served.steps_size(), static_cast<int>(positions.size()));
    for (size_t j = 0; j < positions.size(); ++j) {
      EXPECT_EQ(served.steps(j).end_offset(), samples[i].step_ends[j]);
      EXPECT_NEAR(served.steps(j).reward(), 1.0 / (1.0 + std::exp(-(*direct)[0][j])), 1e-5);
    }
  }
  // A job that expects another step rule is told the model's.
  f->set_step_delimiter("double_newline");
  grpc::ClientContext refused_context;
  grpc::Status refused = stub->Score(&refused_context, request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("splits steps by \"newline\""));
}

TEST(ProcessRewardModelTest, TheBuiltInBackboneLearnsStepLabels) {
  RewardModel model(testing_util::SmallModel({.d_model = 64, .n_layers = 2, .n_heads = 4,
                                              .n_kv_heads = 4, .ffn_hidden = 128}),
                    1);
  const StepAccuracy accuracy = TrainOnMarkedSteps(&model, 150);
  EXPECT_GT(accuracy.accuracy, accuracy.majority_rate + 0.1)
      << accuracy.steps << " held-out steps; the majority label is " << accuracy.majority_rate;
  const std::string dir = testing::TempDir() + "/prm_builtin";
  ASSERT_TRUE(model.Save(dir).ok());
  absl::StatusOr<std::unique_ptr<RewardModel>> loaded = RewardModel::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->objective(), RewardObjective::kStepCrossEntropy);
  ExpectServedAsInProcess(model, dir);
}

TEST(ProcessRewardModelTest, AHuggingFaceBackboneWithItsOwnTokenizerLearnsStepLabels) {
  absl::StatusOr<std::string> tokenizer =
      testing_util::Qwen3TokenizerDir(GRPO_SOURCE_DIR, GRPO_BINARY_DIR, "npm-tokenizer-prm");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const fs::path hf_dir = fs::path(testing::TempDir()) / "prm_qwen3_backbone";
  testing_util::CommandResult made = testing_util::RunCommand(absl::StrCat(
      "/usr/bin/python3 ", GRPO_SOURCE_DIR, "/tests/hf/tiny_checkpoint.py make qwen3 ",
      hf_dir.string(), " --vocab 151936"));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(fs::path(*tokenizer) / file, hf_dir / file, fs::copy_options::overwrite_existing);

  absl::StatusOr<std::unique_ptr<RewardModel>> model = RewardModel::FromHuggingFace(hf_dir.string(), 128);
  ASSERT_TRUE(model.ok()) << model.status();
  // BPE: some tokens hold several bytes ("####", "\n"+...), so the 22 bytes are fewer
  // tokens; the prompt goes through Qwen's chat format.
  absl::StatusOr<EncodedSample> sample = (*model)->Encode("7+5*3=\n", "7+5=12\n12*3=36\n#### 36");
  ASSERT_TRUE(sample.ok()) << sample.status();
  EXPECT_LT(sample->completion_ends.size(), 22u);
  EXPECT_EQ(sample->completion_ends.back(), 22);  // exclusive ends: all 22 bytes

  const StepAccuracy accuracy = TrainOnMarkedSteps(model->get(), 150);
  EXPECT_GT(accuracy.accuracy, accuracy.majority_rate + 0.1)
      << accuracy.steps << " held-out steps; the majority label is " << accuracy.majority_rate;
  const std::string dir = testing::TempDir() + "/prm_qwen3";
  ASSERT_TRUE((*model)->Save(dir).ok());
  EXPECT_TRUE(fs::exists(dir + "/hf/tokenizer.json"));
  absl::StatusOr<std::unique_ptr<RewardModel>> loaded = RewardModel::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto before = (*model)->ScoreAt({sample->ids}, {{static_cast<int>(sample->ids.size()) - 1}});
  auto after = (*loaded)->ScoreAt({sample->ids}, {{static_cast<int>(sample->ids.size()) - 1}});
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_NEAR((*before)[0][0], (*after)[0][0], 1e-5);
  ExpectServedAsInProcess(**model, dir);
}

}  // namespace
}  // namespace grpo
