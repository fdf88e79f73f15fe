// The reward server over real gRPC on a loopback port picked by the kernel.
#include "reward_server/server.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <cmath>
#include <limits>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/synchronization/notification.h"
#include "data/arithmetic_task.h"
#include "data/dataset.h"
#include "gmock/gmock.h"
#include "grpo/v1/reward.grpc.pb.h"
#include "gtest/gtest.h"
#include "learner/reward_model_trainer.h"
#include "reward_server/coalescing_reward.h"
#include "rewards/reward_model.h"
#include "rewards/rewards.h"
#include "tests/testing/health_check.h"
#include "tests/testing/small_model.h"
#include "tokenizer/tokenizer.h"

extern char** environ;

namespace grpo {
namespace {

using ::testing::HasSubstr;

class RewardServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RewardServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.limits.max_batch = 100;
    options.limits.max_text_bytes = 1000;
    auto server = RewardServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::RewardService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Call(const v1::ScoreRequest& request, v1::ScoreResponse* response,
                    std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    return stub_->Score(&context, request, response);
  }

  std::unique_ptr<RewardServer> server_;
  std::unique_ptr<v1::RewardService::Stub> stub_;
};

// Solutions of the arithmetic task, every other one with a corrupted step.
v1::ScoreRequest ArithmeticRequest(int n) {
  ArithmeticTask task(ArithmeticOptions{}, 3);
  v1::ScoreRequest request;
  for (const char* name : {"exact_answer", "arithmetic_steps"}) {
    auto* f = request.add_reward_functions();
    f->set_name(name);
    f->set_weight(name[0] == 'e' ? 1.0 : 0.5);
  }
  std::vector<Problem> problems = task.TrainSet(n, 5);
  for (int i = 0; i < n; ++i) {
    auto* s = request.add_samples();
    s->set_prompt(problems[i].prompt);
    std::string completion = problems[i].solution;
    if (i % 2 == 1) completion[completion.find('=') + 1] = 'x';  // break the first step
    s->set_completion(completion);
    s->set_reference_answer(problems[i].answer);
    s->set_group_id("g" + std::to_string(i / 4));
    s->set_sample_index(i % 4);
  }
  return request;
}

TEST_F(RewardServerTest, ScoresMatchTheInProcessRewardFunctions) {
  v1::ScoreRequest request = ArithmeticRequest(40);
  v1::ScoreResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  ASSERT_EQ(response.scores_size(), 40);
  auto local = CompositeReward::Create({{"exact_answer", 1.0}, {"arithmetic_steps", 0.5}});
  ASSERT_TRUE(local.ok());
  for (int i = 0; i < 40; ++i) {
    const auto& s = request.samples(i);
    auto expected = local->Score(RewardInput{s.prompt(), s.completion(), s.reference_answer()});
    ASSERT_TRUE(expected.ok());
    const auto& got = response.scores(i);
    EXPECT_EQ(got.group_id(), s.group_id());
    EXPECT_EQ(got.sample_index(), s.sample_index());
    EXPECT_DOUBLE_EQ(got.total(), expected->total);
    ASSERT_EQ(got.per_function_size(), 2);
    ASSERT_EQ(got.steps_size(), static_cast<int>(expected->steps.size()));
    for (int j = 0; j < got.steps_size(); ++j) {
      EXPECT_EQ(got.steps(j).end_offset(), expected->steps[j].end_offset);
      EXPECT_DOUBLE_EQ(got.steps(j).reward(), expected->steps[j].reward);
      EXPECT_EQ(s.completion()[got.steps(j).end_offset()] == '\n',
                j + 1 < got.steps_size());  // every step but the last ends at a newline
    }
    // Intact solutions score full marks; corrupted ones lose their first step.
    if (i % 2 == 0) {
      EXPECT_DOUBLE_EQ(got.total(), 1.5);
    } else {
      EXPECT_DOUBLE_EQ(got.steps(0).reward(), 0.0);
    }
  }
}

TEST_F(RewardServerTest, BadRequestsGetStatusesNamingTheField) {
  v1::ScoreResponse response;
  v1::ScoreRequest unknown = ArithmeticRequest(2);
  unknown.mutable_reward_functions(1)->set_name("vibes");
  grpc::Status s = Call(unknown, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("reward_functions[1].name"));

  v1::ScoreRequest empty = ArithmeticRequest(1);
  empty.clear_samples();
  EXPECT_EQ(Call(empty, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::ScoreRequest no_functions = ArithmeticRequest(1);
  no_functions.clear_reward_functions();
  EXPECT_THAT(Call(no_functions, &response).error_message(), HasSubstr("reward_functions"));

  v1::ScoreRequest missing = ArithmeticRequest(3);
  missing.mutable_samples(2)->clear_reference_answer();
  s = Call(missing, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("samples[2].reference_answer"));

  v1::ScoreRequest bad_weight = ArithmeticRequest(1);
  bad_weight.mutable_reward_functions(0)->set_weight(-1);
  EXPECT_EQ(Call(bad_weight, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  s = Call(ArithmeticRequest(101), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("101 samples"));

  v1::ScoreRequest long_text = ArithmeticRequest(2);
  long_text.mutable_samples(1)->set_completion(std::string(1001, '1'));
  s = Call(long_text, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("samples[1].completion"));
  EXPECT_EQ(response.scores_size(), 0);  // errors never carry partial scores

  // The server is unharmed: a good request still works.
  ASSERT_TRUE(Call(ArithmeticRequest(4), &response).ok());
  EXPECT_EQ(response.scores_size(), 4);
}

TEST_F(RewardServerTest, OverlongPenaltyTakesParameters) {
  v1::ScoreRequest request;
  auto* f = request.add_reward_functions();
  f->set_name("overlong_penalty");
  (*f->mutable_params())["max_length"] = 10;
  (*f->mutable_params())["cache_length"] = 4;
  for (int length : {3, 8, 12}) request.add_samples()->set_completion(std::string(length, 'a'));
  v1::ScoreResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  EXPECT_DOUBLE_EQ(response.scores(0).total(), 0.0);
  EXPECT_DOUBLE_EQ(response.scores(1).total(), -0.5);  // (10 - 4 - 8) / 4
  EXPECT_DOUBLE_EQ(response.scores(2).total(), -1.0);
  (*f->mutable_params())["cache_length"] = 10;
  grpc::Status s = Call(request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("cache_length"));
}

TEST_F(RewardServerTest, ExpiredDeadlineIsReported) {
  v1::ScoreResponse response;
  grpc::Status s = Call(ArithmeticRequest(50), &response, std::chrono::milliseconds(-1));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(RewardServerTest, ConcurrentClientsGetConsistentScores) {
  v1::ScoreRequest request = ArithmeticRequest(64);
  v1::ScoreResponse expected;
  ASSERT_TRUE(Call(request, &expected).ok());
  std::vector<std::thread> clients;
  std::atomic<int> mismatches{0}, failures{0};
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        v1::ScoreResponse response;
        if (!Call(request, &response).ok()) {
          ++failures;
        } else if (response.SerializeAsString() != expected.SerializeAsString()) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(mismatches, 0);
}

TEST_F(RewardServerTest, HealthServiceReportsServing) {
  EXPECT_EQ(testing_util::HealthStatus(grpc::CreateChannel(
                "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials())),
            1);
}

TEST_F(RewardServerTest, ListsItsFunctions) {
  grpc::ClientContext context;
  v1::ListRewardFunctionsResponse response;
  ASSERT_TRUE(stub_->ListRewardFunctions(&context, {}, &response).ok());
  ASSERT_EQ(response.functions_size(), 5);
  std::map<std::string, bool> steps;
  for (const auto& f : response.functions()) {
    steps[f.name()] = f.gives_step_rewards();
    EXPECT_FALSE(f.description().empty());
    EXPECT_THAT(f.needs(), testing::Contains("completion"));
  }
  EXPECT_TRUE(steps.at("arithmetic_steps"));
  EXPECT_FALSE(steps.at("exact_answer"));
  EXPECT_FALSE(steps.at("format"));
  EXPECT_FALSE(steps.at("overlong_penalty"));
  EXPECT_FALSE(steps.at("code_tests"));  // listed; where no sandbox starts it refuses calls
}

// code_tests over gRPC: the tests travel with each sample, the fraction passed comes back,
// and the server's other functions answer while code runs.
TEST_F(RewardServerTest, CodeTestsRunsEachSamplesTestsAndOthersKeepAnswering) {
  if (!server_->code_tests_unavailable().empty())
    GTEST_SKIP() << "no sandbox here: " << server_->code_tests_unavailable();
  v1::ScoreRequest request;
  request.add_reward_functions()->set_name("code_tests");
  auto* square = request.add_samples();
  square->set_completion("```python\ndef sq(x):\n    return x * x\n```");
  for (const char* a : {"assert sq(2) == 4", "assert sq(-3) == 9", "assert sq(0) == 1"})
    square->mutable_tests()->add_asserts(a);
  auto* echo = request.add_samples();
  echo->set_completion("print(input()[::-1])\n");
  auto* c = echo->mutable_tests()->add_cases();
  c->set_input("abc\n");
  c->set_output("cba");
  v1::ScoreResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  ASSERT_EQ(response.scores_size(), 2);
  EXPECT_NEAR(response.scores(0).total(), 2.0 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(response.scores(1).total(), 1.0);

  // A slow program (it sleeps 2 s) does not hold up another function's call.
  v1::ScoreRequest slow = request;
  slow.mutable_samples()->DeleteSubrange(1, 1);
  slow.mutable_samples(0)->set_completion("import time\ntime.sleep(2)\n");
  std::atomic<bool> slow_done{false};
  std::thread runner([&] {
    v1::ScoreResponse r;
    EXPECT_TRUE(Call(slow, &r).ok());
    slow_done = true;
  });
  v1::ScoreResponse quick;
  EXPECT_TRUE(Call(ArithmeticRequest(2), &quick).ok());
  EXPECT_FALSE(slow_done.load());
  runner.join();

  // Bad input names the field and scores nothing.
  v1::ScoreRequest untested = request;
  untested.mutable_samples(1)->clear_tests();
  grpc::Status s = Call(untested, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("samples[1].tests"));
  v1::ScoreRequest greedy = request;
  (*greedy.mutable_reward_functions(0)->mutable_params())["cpu_seconds"] = 1e6;
  s = Call(greedy, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("cpu_seconds"));
}

// The real binary: prints its port, serves, and exits 0 on SIGTERM.
TEST(RewardServerProcessTest, SigtermDrainsAndExitsZero) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  const char* binary = GRPO_REWARD_SERVER_BINARY;
  char* argv[] = {const_cast<char*>(binary), const_cast<char*>("--listen=127.0.0.1:0"),
                  nullptr};
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, binary, &actions, nullptr, argv, environ), 0);
  close(out[1]);
  FILE* lines = fdopen(out[0], "r");
  char line[256] = {0};
  ASSERT_NE(fgets(line, sizeof(line), lines), nullptr);  // blocks until it serves
  int port = 0;
  // After the log line's timestamp and level (rpc/structured_log.h).
  const char* serving = strstr(line, "grpo_reward_server: serving on port ");
  if (serving == nullptr || sscanf(serving, "grpo_reward_server: serving on port %d", &port) != 1) {
    kill(pid, SIGKILL);  // not left running, holding the test's output open
    waitpid(pid, nullptr, 0);
    FAIL() << line;
  }

  {
    auto stub = v1::RewardService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::ScoreResponse response;
    EXPECT_TRUE(stub->Score(&context, ArithmeticRequest(3), &response).ok());
  }

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  fclose(lines);
  posix_spawn_file_actions_destroy(&actions);
}

// Pairs whose preference a reward model learns on any machine: the chosen completion is a
// worked solution and the rejected one the same solution stopped at "####", before its
// answer. The scalar head reads the last position's hidden state, whose residual stream
// carries that position's own token: a digit in every chosen sequence, '#' in every
// rejected one. So even with the backbone frozen the head alone faces logistic regression
// on linearly separable features (convex, reached from any start), and training has a
// wide margin. The arithmetic task's own pairs (one number off by 1-3) are a real test
// of a reward model, but a short run on them is a knife edge: grpo_train_rm measures it.
std::vector<PreferencePair> AnswerPreferences(const std::vector<Problem>& problems) {
  std::vector<PreferencePair> pairs;
  for (const Problem& p : problems) {
    const size_t answer = p.solution.rfind("####");
    if (answer == std::string::npos) continue;
    pairs.push_back({p.prompt, p.solution, p.solution.substr(0, answer + 4)});
  }
  return pairs;
}

// A reward model trained briefly on synthetic preferences, served next to the rules.
TEST(RewardModelServingTest, LearnedModelIsServedAsOutcomeAndProcessReward) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .ffn_hidden = 128});
  ArithmeticTask task(ArithmeticOptions{}, 1234);
  const auto train = AnswerPreferences(task.TrainSet(500, 1));
  const auto held_out = AnswerPreferences(task.HeldOutSet(200));
  ASSERT_GE(held_out.size(), 190u);
  CharTokenizer tokenizer;  // what the model's own (character) tokenizer must agree with
  RewardModelTrainOptions options;
  options.steps = 60;
  options.batch_size = 16;
  options.optimizer.learning_rate = 1e-3;
  // A random model already ranks one ending above the other, so it is trained both ways
  // round: each preference is learned only if training, not the start, decides it.
  auto swapped = [](std::vector<PreferencePair> pairs) {
    for (PreferencePair& p : pairs) std::swap(p.chosen, p.rejected);
    return pairs;
  };
  {
    RewardModel contrary(config, 1);
    ASSERT_TRUE(TrainRewardModel(&contrary, swapped(train), options, nullptr).ok());
    auto accuracy = PairwiseAccuracy(contrary, swapped(held_out));
    ASSERT_TRUE(accuracy.ok());
    EXPECT_GT(*accuracy, 0.95) << "trained to prefer no answer";
  }
  RewardModel model(config, 1);
  auto before = PairwiseAccuracy(model, held_out);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(TrainRewardModel(&model, train, options, nullptr).ok());
  auto after = PairwiseAccuracy(model, held_out);
  ASSERT_TRUE(after.ok());
  EXPECT_GT(*after, 0.95) << "before training: " << *before;

  const std::string dir = testing::TempDir() + "/served_rm";
  ASSERT_TRUE(model.Save(dir).ok());
  RewardServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  server_options.reward_model_dir = dir;
  auto server = RewardServer::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::RewardService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials()));

  v1::ScoreRequest request;
  for (const char* name : {"reward_model", "process_reward_model"}) {
    auto* f = request.add_reward_functions();
    f->set_name(name);
    f->set_weight(1.0);
  }
  for (const auto& pair : std::vector<PreferencePair>(held_out.begin(), held_out.begin() + 8)) {
    auto* s = request.add_samples();
    s->set_prompt(pair.prompt);
    s->set_completion(pair.chosen);
  }
  grpc::ClientContext context;
  v1::ScoreResponse response;
  ASSERT_TRUE(stub->Score(&context, request, &response).ok());
  ASSERT_EQ(response.scores_size(), 8);
  // The reference scores the same 8 sequences in one in-process batch, as the server
  // does; the server may still pad or split differently, so float32 rounding of the
  // (unbounded) score is allowed for, relative to its size.
  std::vector<std::vector<int32_t>> sequences;
  std::vector<std::vector<int>> last;
  for (int i = 0; i < 8; ++i) {
    const std::string text = request.samples(i).prompt() + request.samples(i).completion();
    sequences.push_back(tokenizer.Encode(text));
    last.push_back({static_cast<int>(text.size()) - 1});
  }
  auto direct = model.ScoreAt(sequences, last);
  ASSERT_TRUE(direct.ok());
  for (int i = 0; i < 8; ++i) {
    const auto& score = response.scores(i);
    const std::string& completion = request.samples(i).completion();
    EXPECT_NEAR(score.per_function(0), (*direct)[i][0],
                1e-4 * std::max(1.0, std::abs((*direct)[i][0])));
    // One step reward per line, ending at each newline and at the last character.
    const int lines = std::count(completion.begin(), completion.end(), '\n') + 1;
    ASSERT_EQ(score.steps_size(), lines);
    EXPECT_EQ(score.steps(lines - 1).end_offset(), static_cast<int>(completion.size()) - 1);
    for (const auto& step : score.steps()) EXPECT_TRUE(std::isfinite(step.reward()));
  }
}

// Sums the characters of each input's completion; counts its calls and their sizes.
class CountingReward : public RewardFunction {
 public:
  std::string_view name() const override { return "counting"; }
  bool gives_step_rewards() const override { return false; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override {
    RewardOutput out;
    for (char c : input.completion) out.reward += c;
    return out;
  }
  absl::StatusOr<std::vector<RewardOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override {
    ++calls;
    return RewardFunction::ScoreBatch(inputs);
  }
  mutable std::atomic<int> calls{0};
};

TEST(CoalescingRewardTest, ConcurrentCallsGetTheirOwnResults) {
  auto inner = std::make_shared<CountingReward>();
  CoalescingRewardFunction coalescing(inner, 64);
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([&, t] {
      for (int call = 0; call < 25; ++call) {
        std::vector<std::string> texts;
        for (int i = 0; i < 1 + (t + call) % 5; ++i)
          texts.push_back(std::string(1 + t, static_cast<char>('a' + call % 20 + i)));
        std::vector<RewardInput> inputs;
        for (const auto& text : texts) inputs.push_back(RewardInput{"", text, ""});
        auto out = coalescing.ScoreBatch(inputs);
        if (!out.ok() || out->size() != inputs.size()) {
          ++wrong;
          continue;
        }
        for (size_t i = 0; i < inputs.size(); ++i)
          if ((*out)[i].reward != inner->Score(inputs[i])->reward) ++wrong;
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(coalescing.batches(), inner->calls.load());
  EXPECT_LE(coalescing.batches(), 200);  // never more passes than calls
  EXPECT_EQ(coalescing.ScoreBatch({})->size(), 0u);
}

TEST_F(RewardServerTest, ModelFunctionsNeedALoadedModel) {
  v1::ScoreRequest request = ArithmeticRequest(2);
  request.mutable_reward_functions(0)->set_name("reward_model");
  v1::ScoreResponse response;
  grpc::Status s = Call(request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("--reward_model"));
}

TEST(RewardModelServingTest, NonFiniteModelOutputIsInternalError) {
  const ModelConfig config = testing_util::SmallModel(
      {.d_model = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2, .ffn_hidden = 32});
  RewardModel model(config, 3);
  {
    at::NoGradGuard no_grad;
    model.parameters().back().fill_(std::numeric_limits<float>::quiet_NaN());  // the bias
  }
  const std::string dir = testing::TempDir() + "/nan_rm";
  ASSERT_TRUE(model.Save(dir).ok());
  RewardServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.reward_model_dir = dir;
  auto server = RewardServer::Start(options);
  ASSERT_TRUE(server.ok());
  auto stub = v1::RewardService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials()));
  v1::ScoreRequest request;
  request.add_reward_functions()->set_name("reward_model");
  auto* sample = request.add_samples();
  sample->set_prompt("1+2=\n");
  sample->set_completion("1+2=3\n#### 3");
  grpc::ClientContext context;
  v1::ScoreResponse response;
  grpc::Status s = stub->Score(&context, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(response.scores_size(), 0);
}

}  // namespace
}  // namespace grpo
