// RemoteScorer against a real gRPC RewardService on a kernel-picked port that fails on
// purpose: transient errors are retried with backoff, answers are not, and a reply that
// does not match the request is refused.
#include "rollout_worker/remote_scorer.h"

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/grpc_server.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

// Fails the first `failures` calls with `code`, then scores every sample with its length.
class FlakyRewardService final : public v1::RewardService::Service {
 public:
  FlakyRewardService(int failures, grpc::StatusCode code) : failures_(failures), code_(code) {}

  grpc::Status Score(grpc::ServerContext*, const v1::ScoreRequest* request,
                     v1::ScoreResponse* response) override {
    if (calls_++ < failures_) return grpc::Status(code_, "not now");
    last_request_ = *request;
    for (int i = 0; i < request->samples_size() + drop_one_; ++i) {
      v1::SampleScore* s = response->add_scores();
      s->set_sample_index(i);
      s->set_total(static_cast<double>(request->samples(i).completion().size()));
      s->add_per_function(s->total());
    }
    return grpc::Status::OK;
  }

  std::atomic<int> calls_{0};
  v1::ScoreRequest last_request_;  // of the last answered call
  int drop_one_ = 0;  // -1: answer one score short

 private:
  const int failures_;
  const grpc::StatusCode code_;
};

struct Harness {
  explicit Harness(int failures, grpc::StatusCode code) : service(failures, code) {
    GrpcServerOptions options;
    options.listen_address = "127.0.0.1:0";
    auto started = GrpcServer::Start(options, {&service});
    EXPECT_TRUE(started.ok()) << started.status();
    server = std::move(*started);
    stub = v1::RewardService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server->port()), grpc::InsecureChannelCredentials()));
    v1::RewardFunctionSpec f;
    f.set_name("exact_answer");
    f.set_weight(1);
    scorer = std::make_unique<RemoteScorer>(stub.get(), std::vector<v1::RewardFunctionSpec>{f});
  }
  FlakyRewardService service;
  std::unique_ptr<GrpcServer> server;
  std::unique_ptr<v1::RewardService::Stub> stub;
  std::unique_ptr<RemoteScorer> scorer;
};

const std::vector<RewardInput> kInputs = {{"1+1=", "2", "2"}, {"2+2=", "four", "4"}};

TEST(RemoteScorerTest, RetriesWhileTheServerIsUnavailable) {
  Harness h(2, grpc::StatusCode::UNAVAILABLE);
  absl::StatusOr<std::vector<CompositeOutput>> scores = h.scorer->ScoreBatch(kInputs);
  ASSERT_TRUE(scores.ok()) << scores.status();
  ASSERT_EQ(scores->size(), 2u);
  EXPECT_EQ((*scores)[0].total, 1);
  EXPECT_EQ((*scores)[1].total, 4);
  EXPECT_EQ(h.service.calls_, 3);
  EXPECT_EQ(h.scorer->retries(), 2);
}

TEST(RemoteScorerTest, DoesNotRetryAnAnswer) {
  Harness h(1, grpc::StatusCode::INVALID_ARGUMENT);
  absl::StatusOr<std::vector<CompositeOutput>> scores = h.scorer->ScoreBatch(kInputs);
  EXPECT_EQ(scores.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(scores.status().message(), HasSubstr("reward server Score: not now"));
  EXPECT_EQ(h.service.calls_, 1);
}

TEST(RemoteScorerTest, RefusesAReplyThatDoesNotMatchTheRequest) {
  Harness h(0, grpc::StatusCode::OK);
  h.service.drop_one_ = -1;
  absl::StatusOr<std::vector<CompositeOutput>> scores = h.scorer->ScoreBatch(kInputs);
  EXPECT_EQ(scores.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(scores.status().message(), HasSubstr("1 scores for 2 samples"));
}

// A code problem's tests go with its samples, as the reference answer does.
TEST(RemoteScorerTest, SendsEachSamplesTests) {
  Harness h(0, grpc::StatusCode::OK);
  v1::CodeTests tests;
  tests.add_asserts("assert f(1) == 2");
  v1::CodeTestCase* c = tests.add_cases();
  c->set_input("3\n");
  c->set_output("6");
  std::vector<RewardInput> inputs = kInputs;
  inputs[1].tests = &tests;
  ASSERT_TRUE(h.scorer->ScoreBatch(inputs).ok());
  ASSERT_EQ(h.service.last_request_.samples_size(), 2);
  EXPECT_FALSE(h.service.last_request_.samples(0).has_tests());
  const v1::CodeTests& sent = h.service.last_request_.samples(1).tests();
  EXPECT_EQ(sent.asserts(0), "assert f(1) == 2");
  EXPECT_EQ(sent.cases(0).input(), "3\n");
  EXPECT_EQ(sent.cases(0).output(), "6");
}

}  // namespace
}  // namespace grpo
