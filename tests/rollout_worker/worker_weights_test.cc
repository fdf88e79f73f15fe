// A real RolloutWorker against a real coordinator and reward service, with a learner that
// corrupts its first weight transfers (a chunk flipped, then a stream cut short): the
// worker keeps the weights it has, asks again, and trains nothing on unverified weights.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "coordinator/coordinator_service.h"
#include "core/job_spec.h"
#include "core/model.h"
#include "core/weight_transfer.h"
#include "gmock/gmock.h"
#include "grpo/v1/learner.grpc.pb.h"
#include "gtest/gtest.h"
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
    int n = 0;
    while (reader->Read(&group)) ++n;
    absl::MutexLock lock(&mu_);
    groups_ += n;
    response->set_accepted(n);
    return grpc::Status::OK;
  }

  int streams() {
    absl::MutexLock lock(&mu_);
    return streams_;
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
};

GrpcServerOptions Loopback() {
  GrpcServerOptions o;
  o.listen_address = "127.0.0.1:0";
  return o;
}

TEST(RolloutWorkerWeightsTest, CorruptOrCutTransfersAreRefusedAndFetchedAgain) {
  auto coordinator = CoordinatorServiceImpl::Create();
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto coordinator_server = GrpcServer::Start(Loopback(), {coordinator->get()});
  ASSERT_TRUE(coordinator_server.ok());
  const std::string coordinator_address =
      absl::StrCat("127.0.0.1:", (*coordinator_server)->port());
  RewardServiceImpl reward(RewardServiceLimits{});
  auto reward_server = GrpcServer::Start(Loopback(), {&reward});
  ASSERT_TRUE(reward_server.ok());

  // The job, acquired as a learner would.
  auto stub = v1::CoordinatorService::NewStub(
      grpc::CreateChannel(coordinator_address, grpc::InsecureChannelCredentials()));
  v1::SubmitJobRequest submit;
  v1::JobSpec& spec = *submit.mutable_spec();
  spec.set_name("weights");
  spec.mutable_model()->set_preset("tiny");
  spec.mutable_grpo()->set_group_size(2);
  spec.mutable_grpo()->set_prompts_per_step(2);
  spec.mutable_sampling()->set_max_new_tokens(8);
  v1::Job job;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->SubmitJob(&context, submit, &job).ok());
  }
  v1::RegisterResponse learner_id;
  {
    grpc::ClientContext context;
    v1::RegisterRequest request;
    request.set_role(v1::WORKER_ROLE_LEARNER);
    ASSERT_TRUE(stub->Register(&context, request, &learner_id).ok());
  }
  Transformer policy(ModelConfigFromSpec(job.spec().model()), 5);
  absl::StatusOr<std::string> payload = policy.SaveToString();
  ASSERT_TRUE(payload.ok());
  FaultyLearner learner(job.job_id(), *payload, /*corrupt_streams=*/2);
  auto learner_server = GrpcServer::Start(Loopback(), {&learner});
  ASSERT_TRUE(learner_server.ok());
  {
    grpc::ClientContext context;
    v1::AcquireJobRequest request;
    request.set_worker_id(learner_id.worker_id());
    request.set_learner_address(absl::StrCat("127.0.0.1:", (*learner_server)->port()));
    v1::AcquireJobResponse response;
    ASSERT_TRUE(stub->AcquireJob(&context, request, &response).ok());
    ASSERT_EQ(response.job().job_id(), job.job_id());
  }
  {
    grpc::ClientContext context;
    v1::RequestPromptsRequest request;
    request.set_job_id(job.job_id());
    request.set_count(2);
    v1::RequestPromptsResponse response;
    ASSERT_TRUE(stub->RequestPrompts(&context, request, &response).ok());
  }

  RolloutWorkerOptions options;
  options.coordinator_address = coordinator_address;
  options.reward_server_address = absl::StrCat("127.0.0.1:", (*reward_server)->port());
  options.max_prompts_per_lease = 2;
  RolloutWorker worker(options);
  absl::Notification stop;
  absl::Status run;
  std::thread thread([&] { run = worker.Run(&stop); });
  const bool arrived = learner.AwaitGroups(2);
  stop.Notify();
  thread.join();
  ASSERT_TRUE(arrived) << "no groups reached the learner";
  EXPECT_TRUE(run.ok()) << run;

  const RolloutWorkerCounters counters = worker.counters();
  EXPECT_EQ(counters.bad_weight_transfers, 2);
  EXPECT_EQ(counters.weight_pulls, 1);  // the third, whole transfer
  EXPECT_EQ(counters.batches_failed, 0);  // retried inside the batch, not dropped
  EXPECT_EQ(learner.streams(), 3);
  EXPECT_EQ(counters.groups_submitted, 2);
}

}  // namespace
}  // namespace grpo
