// A real RolloutWorker against a real coordinator, with a learner that corrupts its first
// weight transfers (a chunk flipped, then a stream cut short): the worker keeps the
// weights it has, asks again, and trains nothing on unverified weights. And with a reward
// service that refuses everything: under grpo.reward_failure = SKIP the prompts are
// dropped and replaced rather than sampled again.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "coordinator/coordinator_service.h"
#include "gmock/gmock.h"
#include "grpo/v1/learner.grpc.pb.h"
#include "gtest/gtest.h"
#include "jobspec/job_spec.h"
#include "model/model.h"
#include "model/weight_transfer.h"
#include "reward_server/reward_service.h"
#include "rollout_worker/worker.h"
#include "rpc/grpc_server.h"

namespace grpo {
namespace {

// Serves version 0 of a policy; stream k < corrupt_streams is damaged: even k flips a
// byte of the last chunk (the checksum no longer matches), odd k stops after the first
// chunk (the transfer is incomplete).
class FaultyLearner final : public v1::LearnerService::Service {
 public:
  FaultyLearner(std::string job_id, std::string payload, int corrupt_streams)
      : job_id_(std::move(job_id)),
        chunks_(ChunkPayload(payload, 0, payload.size() / 3 + 1)),
        corrupt_streams_(corrupt_streams) {}

  grpc::Status GetPolicyVersion(grpc::ServerContext*, const v1::GetPolicyVersionRequest*,
                                v1::PolicyVersion* response) override {
    response->set_job_id(job_id_);
    response->set_version(0);
    return grpc::Status::OK;
  }

  grpc::Status StreamWeights(grpc::ServerContext*, const v1::StreamWeightsRequest*,
                             grpc::ServerWriter<v1::WeightChunk>* writer) override {
    int stream;
    {
      absl::MutexLock lock(&mu_);
      stream = streams_++;
    }
    for (size_t i = 0; i < chunks_.size(); ++i) {
      v1::WeightChunk chunk = chunks_[i];
      if (stream < corrupt_streams_ && stream % 2 == 0 && i + 1 == chunks_.size())
        (*chunk.mutable_data())[chunk.data().size() / 2] ^= 0x5a;
      writer->Write(chunk);
      if (stream < corrupt_streams_ && stream % 2 == 1) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status SubmitGroups(grpc::ServerContext*, grpc::ServerReader<v1::ScoredGroupProto>* reader,
                            v1::SubmitGroupsResponse* response) override {
    v1::ScoredGroupProto group;
    int n = 0, tokens = 0;
    bool logprobs_ok = true;
    std::set<int> precisions;
    while (reader->Read(&group)) {
      ++n;
      precisions.insert(group.sampling_precision());
      for (const v1::ScoredSampleProto& sample : group.samples()) {
        logprobs_ok &= sample.logprobs_size() == sample.completion_size();
        for (float lp : sample.logprobs()) logprobs_ok &= std::isfinite(lp) && lp <= 0;
        tokens += sample.completion_size();
      }
    }
    absl::MutexLock lock(&mu_);
    groups_ += n;
    tokens_ += tokens;
    logprobs_ok_ &= logprobs_ok;
    precisions_.insert(precisions.begin(), precisions.end());
    response->set_accepted(n);
    return grpc::Status::OK;
  }

  int streams() {
    absl::MutexLock lock(&mu_);
    return streams_;
  }
  // Whether every submitted token came with a finite log-prob <= 0; how many tokens.
  bool logprobs_ok() {
    absl::MutexLock lock(&mu_);
    return logprobs_ok_;
  }
  // The sampling precisions the submitted groups were stamped with.
  std::set<int> precisions() {
    absl::MutexLock lock(&mu_);
    return precisions_;
  }
  int tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  // Blocks until `n` groups arrived (or 2 minutes pass).
  bool AwaitGroups(int n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return groups_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Minutes(2));
  }

 private:
  const std::string job_id_;
  const std::vector<v1::WeightChunk> chunks_;
  const int corrupt_streams_;
  absl::Mutex mu_;
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
  int groups_ ABSL_GUARDED_BY(mu_) = 0;
  int tokens_ ABSL_GUARDED_BY(mu_) = 0;
  bool logprobs_ok_ ABSL_GUARDED_BY(mu_) = true;
  std::set<int> precisions_ ABSL_GUARDED_BY(mu_);
};

GrpcServerOptions Loopback() {
  GrpcServerOptions o;
  o.listen_address = "127.0.0.1:0";
  return o;
}

// Answers every Score with INVALID_ARGUMENT: not retried, so the batch fails at once.
class RefusingRewardService final : public v1::RewardService::Service {
  grpc::Status Score(grpc::ServerContext*, const v1::ScoreRequest*,
                     v1::ScoreResponse*) override {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no reward for you");
  }
};

// A coordinator with one RUNNING job of 2 prompts x G 2 acquired by `learner` (a fake),
// a reward service, and a real RolloutWorker run until a condition holds.
class WorkerTest : public ::testing::Test {
 protected:
  void Start(v1::RewardService::Service* reward, int corrupt_streams,
             v1::RewardFailure on_failure = v1::REWARD_FAILURE_RETRY, int lease_seconds = 120) {
    CoordinatorOptions coordinator_options;
    coordinator_options.lease_seconds = lease_seconds;
    auto coordinator = CoordinatorServiceImpl::Create(coordinator_options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = std::move(*coordinator);
    auto coordinator_server = GrpcServer::Start(Loopback(), {coordinator_.get()});
    ASSERT_TRUE(coordinator_server.ok());
    coordinator_server_ = std::move(*coordinator_server);
    auto reward_server = GrpcServer::Start(Loopback(), {reward});
    ASSERT_TRUE(reward_server.ok());
    reward_server_ = std::move(*reward_server);
    stub_ = v1::CoordinatorService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", coordinator_server_->port()), grpc::InsecureChannelCredentials()));

    // The job, acquired as a learner would.
    v1::SubmitJobRequest submit;
    v1::JobSpec& spec = *submit.mutable_spec();
    spec.set_name("worker");
    spec.mutable_model()->set_preset("tiny");
    spec.mutable_grpo()->set_group_size(2);
    spec.mutable_grpo()->set_prompts_per_step(2);
    spec.mutable_grpo()->set_reward_failure(on_failure);
    spec.mutable_sampling()->set_max_new_tokens(8);
    {
      grpc::ClientContext context;
      ASSERT_TRUE(stub_->SubmitJob(&context, submit, &job_).ok());
    }
    v1::RegisterResponse learner_id;
    {
      grpc::ClientContext context;
      v1::RegisterRequest request;
      request.set_role(v1::WORKER_ROLE_LEARNER);
      ASSERT_TRUE(stub_->Register(&context, request, &learner_id).ok());
    }
    Transformer policy(ModelConfigFromSpec(job_.spec().model()), 5);
    absl::StatusOr<std::string> payload = policy.ExportFlat(v1::WEIGHT_DTYPE_FLOAT32);
    ASSERT_TRUE(payload.ok());
    learner_ = std::make_unique<FaultyLearner>(job_.job_id(), *payload, corrupt_streams);
    auto learner_server = GrpcServer::Start(Loopback(), {learner_.get()});
    ASSERT_TRUE(learner_server.ok());
    learner_server_ = std::move(*learner_server);
    {
      grpc::ClientContext context;
      v1::AcquireJobRequest request;
      request.set_worker_id(learner_id.worker_id());
      request.set_learner_address(absl::StrCat("127.0.0.1:", learner_server_->port()));
      v1::AcquireJobResponse response;
      ASSERT_TRUE(stub_->AcquireJob(&context, request, &response).ok());
      ASSERT_EQ(response.job().job_id(), job_.job_id());
    }
    {
      grpc::ClientContext context;
      v1::RequestPromptsRequest request;
      request.set_job_id(job_.job_id());
      request.set_count(2);
      v1::RequestPromptsResponse response;
      ASSERT_TRUE(stub_->RequestPrompts(&context, request, &response).ok());
    }
  }

  // Runs a worker until `done` returns; its counters and Run's status.
  RolloutWorkerCounters RunWorkerUntil(const std::function<bool()>& done, absl::Status* run,
                                       const std::string& matmul_dtype = "float32") {
    RolloutWorkerOptions options;
    options.matmul_dtype = matmul_dtype;
    options.coordinator_address = absl::StrCat("127.0.0.1:", coordinator_server_->port());
    options.reward_server_address = absl::StrCat("127.0.0.1:", reward_server_->port());
    options.max_prompts_per_lease = 2;
    options.weight_streams = 1;  // the fake learner counts (and damages) whole transfers
    RolloutWorker worker(options);
    absl::Notification stop;
    std::thread thread([&] { *run = worker.Run(&stop); });
    finished_ = done();
    stop.Notify();
    thread.join();
    return worker.counters();
  }

  // Follows WatchJob until `done` holds for the job (or 2 minutes pass).
  bool WatchUntil(const std::function<bool(const v1::Job&)>& done) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
    v1::WatchJobRequest request;
    request.set_job_id(job_.job_id());
    auto reader = stub_->WatchJob(&context, request);
    v1::Job job;
    bool held = false;
    while (!held && reader->Read(&job)) held = done(job);
    context.TryCancel();
    reader->Finish();
    return held;
  }

  std::unique_ptr<CoordinatorServiceImpl> coordinator_;  // outlives its server
  std::unique_ptr<GrpcServer> coordinator_server_, reward_server_, learner_server_;
  std::unique_ptr<v1::CoordinatorService::Stub> stub_;
  std::unique_ptr<FaultyLearner> learner_;
  v1::Job job_;
  bool finished_ = false;
};

TEST_F(WorkerTest, CorruptOrCutTransfersAreRefusedAndFetchedAgain) {
  RewardServiceImpl reward(RewardServiceLimits{});
  Start(&reward, /*corrupt_streams=*/2);
  absl::Status run;
  const RolloutWorkerCounters counters =
      RunWorkerUntil([&] { return learner_->AwaitGroups(2); }, &run);
  ASSERT_TRUE(finished_) << "no groups reached the learner";
  EXPECT_TRUE(run.ok()) << run;
  EXPECT_EQ(counters.bad_weight_transfers, 2);
  EXPECT_EQ(counters.weight_pulls, 1);  // the third, whole transfer
  EXPECT_EQ(counters.batches_failed, 0);  // retried inside the batch, not dropped
  EXPECT_EQ(learner_->streams(), 3);
  EXPECT_EQ(counters.groups_submitted, 2);
  EXPECT_EQ(learner_->precisions(), std::set<int>{v1::COMPUTE_PRECISION_FLOAT32});
}

// --matmul_dtype bfloat16: the worker samples with bfloat16 matmuls and KV cache on its
// float32 policy, imports the weights as usual, and every token keeps a finite log-prob.
TEST_F(WorkerTest, ABfloat16MatmulWorkerSubmitsWholeGroups) {
  RewardServiceImpl reward(RewardServiceLimits{});
  Start(&reward, /*corrupt_streams=*/0);
  absl::Status run;
  const RolloutWorkerCounters counters = RunWorkerUntil(
      [&] { return learner_->AwaitGroups(2); }, &run, "bfloat16");
  ASSERT_TRUE(finished_) << "no groups reached the learner";
  EXPECT_TRUE(run.ok()) << run;
  EXPECT_EQ(counters.weight_pulls, 1);
  EXPECT_EQ(counters.batches_failed, 0);
  EXPECT_EQ(counters.groups_submitted, 2);
  EXPECT_GT(learner_->tokens(), 0);
  EXPECT_TRUE(learner_->logprobs_ok());
  // Stamped, so that a float32 learner recomputes π_old for them (OLD_LOGPROBS_AUTO).
  EXPECT_EQ(learner_->precisions(), std::set<int>{v1::COMPUTE_PRECISION_FLOAT32_BF16_MATMULS});
}

// grpo.reward_failure = SKIP: prompts that cannot be scored are reported as failed and
// replaced by fresh ones, none of them reaches the learner, and no batch is dropped.
TEST_F(WorkerTest, UnscorablePromptsAreSkippedAndReplacedUnderSkip) {
  RefusingRewardService reward;
  Start(&reward, /*corrupt_streams=*/0, v1::REWARD_FAILURE_SKIP);
  absl::Status run;
  const RolloutWorkerCounters counters = RunWorkerUntil(
      [&] { return WatchUntil([](const v1::Job& j) { return j.prompts_failed() >= 4; }); },
      &run);
  ASSERT_TRUE(finished_) << "the prompts were never reported failed";
  EXPECT_TRUE(run.ok()) << run;
  EXPECT_GE(counters.prompts_skipped, 4);  // the first two, then their replacements
  EXPECT_EQ(counters.batches_failed, 0);
  EXPECT_EQ(counters.groups_submitted, 0);
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_job_id(job_.job_id());
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&context, request, &job).ok());
  EXPECT_EQ(job.prompts_requested(), 2 + job.prompts_failed());
  EXPECT_EQ(job.lease_reissues(), 0);
}

// The default, RETRY: the batch is dropped and its prompts come back to be sampled again
// when their leases expire (after a second here).
TEST_F(WorkerTest, UnscorablePromptsAreSampledAgainUnderRetry) {
  RefusingRewardService reward;
  Start(&reward, /*corrupt_streams=*/0, v1::REWARD_FAILURE_RETRY, /*lease_seconds=*/1);
  absl::Status run;
  RolloutWorkerCounters counters;
  counters = RunWorkerUntil(
      [&] { return WatchUntil([](const v1::Job& j) { return j.lease_reissues() >= 2; }); },
      &run);
  ASSERT_TRUE(finished_) << "the prompts were never handed out again";
  EXPECT_GE(counters.batches_failed, 1);
  EXPECT_EQ(counters.prompts_skipped, 0);
}

}  // namespace
}  // namespace grpo
