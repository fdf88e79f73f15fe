// The learner's service side: the ingest buffer's guarantees (all or nothing, exactly
// once, freshness) and LearnerService over real gRPC on a kernel-picked port, with the
// rollout worker's PullWeights on the other end.
#include "learner/learner_service.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <limits>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/ingest_buffer.h"
#include "learner/weight_publisher.h"
#include "model/weight_transfer.h"
#include "rl/scored_group_proto.h"
#include "rollout_worker/weight_client.h"
#include "rpc/grpc_server.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

v1::ScoredGroupProto Group(const std::string& job, const std::string& prompt_id, int g,
                           int64_t version = 0) {
  ScoredGroup group;
  group.prompt_id = prompt_id;
  group.prompt = {1, 40, 41};
  for (int i = 0; i < g; ++i) {
    ScoredSample s;
    s.completion = {50, 51, 2};
    s.logprobs = {-0.5f, -1.0f, -0.1f};
    s.reward = i % 2;
    s.reward_per_function = {static_cast<double>(i % 2)};
    s.steps = {StepReward{0.5, 1}};
    s.policy_version = version;
    group.samples.push_back(s);
  }
  return ToProto(group, job);
}

TEST(ScoredGroupProtoTest, RoundTripsAndRejectsWhatMustNotBeTrained) {
  const v1::ScoredGroupProto proto = Group("job-1", "train-7", 3, 4);
  absl::StatusOr<ScoredGroup> back = FromProto(proto);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->prompt_id, "train-7");
  ASSERT_EQ(back->samples.size(), 3u);
  EXPECT_EQ(back->samples[1].reward, 1);
  EXPECT_EQ(back->samples[2].policy_version, 4);
  EXPECT_EQ(back->samples[0].steps[0].end_offset, 1);

  v1::ScoredGroupProto bad = proto;
  bad.mutable_samples(1)->set_reward(std::nan(""));
  EXPECT_THAT(FromProto(bad).status().message(), HasSubstr("train-7 sample 1: reward"));
  bad = proto;
  bad.mutable_samples(2)->mutable_logprobs()->RemoveLast();
  EXPECT_THAT(FromProto(bad).status().message(), HasSubstr("sample 2: 2 logprobs for 3"));
  bad = proto;
  bad.mutable_samples(0)->mutable_steps(0)->set_end_offset(3);
  EXPECT_THAT(FromProto(bad).status().message(), HasSubstr("end_offset 3 outside"));
  bad = proto;
  bad.mutable_samples(0)->set_logprobs(0, std::numeric_limits<float>::infinity());
  EXPECT_EQ(FromProto(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IngestBufferTest, AllOrNothingWhenFull) {
  IngestBuffer buffer(3);
  buffer.StartJob("job-1", 2);
  ASSERT_TRUE(buffer.Submit({Group("job-1", "a", 2), Group("job-1", "b", 2)}).ok());
  absl::StatusOr<SubmitResult> full =
      buffer.Submit({Group("job-1", "c", 2), Group("job-1", "d", 2)});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("2 of 3 groups held, 2 offered"));
  EXPECT_EQ(buffer.size(), 2u);  // neither c nor d went in
  EXPECT_EQ(buffer.counters().rejected_full, 1);
  // The refused prompts are not remembered as seen: sent again later, they count.
  ASSERT_EQ(buffer.Take(2, 0, absl::Now()).size(), 2u);
  absl::StatusOr<SubmitResult> again =
      buffer.Submit({Group("job-1", "c", 2), Group("job-1", "d", 2)});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->accepted, 2);
}

TEST(IngestBufferTest, APromptIsTakenOnceEvenAfterItWasTrained) {
  IngestBuffer buffer(16);
  buffer.StartJob("job-1", 2);
  absl::StatusOr<SubmitResult> r =
      buffer.Submit({Group("job-1", "a", 2), Group("job-1", "a", 2), Group("job-1", "b", 2)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2);
  EXPECT_EQ(r->duplicates, 1);
  EXPECT_THAT(buffer.DrainNewIds(), ::testing::ElementsAre("a", "b"));
  ASSERT_EQ(buffer.Take(2, 0, absl::Now()).size(), 2u);
  r = buffer.Submit({Group("job-1", "a", 2)});  // a reissued lease's late group
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->accepted, 0);
  EXPECT_EQ(r->duplicates, 1);
  EXPECT_EQ(buffer.size(), 0u);
  // Its lease is evidently still out: acknowledged again, never trained again.
  std::vector<std::string> again = buffer.DrainNewIds();
  EXPECT_THAT(again, ::testing::ElementsAre("a"));
  buffer.ReturnIds(again);  // the acknowledgement failed: it goes out with the next drain
  EXPECT_THAT(buffer.DrainNewIds(), ::testing::ElementsAre("a"));
  EXPECT_EQ(buffer.counters().duplicate_groups, 2);
}

TEST(IngestBufferTest, RejectsOtherJobsAndWrongGroupSizesChangingNothing) {
  IngestBuffer buffer(16);
  EXPECT_EQ(buffer.Submit({Group("job-1", "a", 2)}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // no job yet
  buffer.StartJob("job-1", 2);
  absl::StatusOr<SubmitResult> r = buffer.Submit({Group("job-1", "a", 2), Group("job-9", "b", 2)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("job-9"));
  r = buffer.Submit({Group("job-1", "a", 2), Group("job-1", "b", 3)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("prompt b: 3 samples, the job's group_size is 2"));
  EXPECT_EQ(buffer.size(), 0u);
  EXPECT_TRUE(buffer.DrainNewIds().empty());
  buffer.EndJob();
  EXPECT_EQ(buffer.Submit({Group("job-1", "c", 2)}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Token ids index the embedding and lengths the position table: the buffer refuses what
// the model cannot take, naming the prompt and sample, and keeps nothing of the stream.
TEST(IngestBufferTest, RefusesTokensTheModelCannotTakeChangingNothing) {
  IngestBuffer buffer(16);
  buffer.StartJob("job-1", 2, {}, /*max_tokens=*/8, /*vocab_size=*/60);
  ASSERT_TRUE(buffer.Submit({Group("job-1", "fits", 2)}).ok());  // 3 + 3 tokens, ids < 60
  v1::ScoredGroupProto big_id = Group("job-1", "big-id", 2);
  big_id.mutable_samples(1)->set_completion(0, 60);
  v1::ScoredGroupProto negative = Group("job-1", "negative", 2);
  negative.set_prompt(0, -1);
  v1::ScoredGroupProto too_long = Group("job-1", "too-long", 2);
  for (int i = 0; i < 3; ++i) {
    too_long.mutable_samples(0)->add_completion(50);
    too_long.mutable_samples(0)->add_logprobs(-1.0f);
  }
  absl::StatusOr<SubmitResult> r = buffer.Submit({Group("job-1", "ok", 2), big_id});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("prompt big-id sample 1: a completion token"));
  r = buffer.Submit({negative});
  EXPECT_THAT(r.status().message(), HasSubstr("prompt negative: a prompt token"));
  r = buffer.Submit({too_long});
  EXPECT_THAT(r.status().message(),
              HasSubstr("prompt too-long sample 0: 9 tokens, the model takes at most 8"));
  EXPECT_EQ(buffer.size(), 1u);
  EXPECT_EQ(buffer.DrainNewIds(), std::vector<std::string>{"fits"});
}

TEST(IngestBufferTest, TakeDropsStaleGroupsAndWaitsForFreshOnes) {
  IngestBuffer buffer(16);
  buffer.StartJob("job-1", 2);
  ASSERT_TRUE(buffer.Submit({Group("job-1", "old", 2, 1), Group("job-1", "new", 2, 3)}).ok());
  // Needs 2 groups of version >= 2: "old" is dropped, so the deadline passes with one.
  EXPECT_TRUE(buffer.Take(2, 2, absl::Now() + absl::Milliseconds(20)).empty());
  EXPECT_EQ(buffer.DrainStaleCount(), 1);
  EXPECT_EQ(buffer.counters().stale_groups_dropped, 1);
  // A group arriving while Take waits completes the batch.
  std::thread late([&] { ASSERT_TRUE(buffer.Submit({Group("job-1", "late", 2, 2)}).ok()); });
  std::vector<ScoredGroup> batch = buffer.Take(2, 2, absl::Now() + absl::Seconds(60));
  late.join();
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].prompt_id, "new");
  EXPECT_EQ(batch[1].prompt_id, "late");
}

class LearnerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GrpcServerOptions server_options;
    server_options.listen_address = "127.0.0.1:0";
    auto server = GrpcServer::Start(server_options, {&service_});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(8 << 20);
    stub_ = v1::LearnerService::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials(), args));
  }

  grpc::Status Submit(const std::vector<v1::ScoredGroupProto>& groups,
                      v1::SubmitGroupsResponse* response) {
    grpc::ClientContext context;
    auto writer = stub_->SubmitGroups(&context, response);
    for (const auto& g : groups) writer->Write(g);
    writer->WritesDone();
    return writer->Finish();
  }

  IngestBuffer buffer_{4};
  WeightPublisher weights_;
  LearnerServiceImpl service_{&buffer_, &weights_};
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<v1::LearnerService::Stub> stub_;
};

TEST_F(LearnerServiceTest, StreamsGroupsInAndBacksOffWhenFull) {
  buffer_.StartJob("job-1", 2);
  v1::SubmitGroupsResponse response;
  grpc::Status s = Submit({Group("job-1", "a", 2), Group("job-1", "a", 2)}, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.accepted(), 1);
  EXPECT_EQ(response.duplicates(), 1);
  s = Submit({Group("job-1", "b", 2), Group("job-1", "c", 2), Group("job-1", "d", 2),
              Group("job-1", "e", 2)},
             &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(buffer_.size(), 1u);
  v1::ScoredGroupProto nan = Group("job-1", "f", 2);
  nan.mutable_samples(0)->set_reward(std::nan(""));
  s = Submit({nan}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("prompt f sample 0: reward is not finite"));
}

TEST_F(LearnerServiceTest, WeightsArriveWholeAndVerified) {
  EXPECT_EQ(PullWeights(stub_.get(), "job-1", std::chrono::seconds(10)).status().code(),
            absl::StatusCode::kFailedPrecondition);  // nothing published yet
  // Three chunks' worth of bytes that are not all alike.
  std::string payload(2 * kWeightChunkBytes + 12345, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>((i * 131) >> 3);
  weights_.Publish("job-1", 7, payload);
  absl::StatusOr<PulledWeights> pulled =
      PullWeights(stub_.get(), "job-1", std::chrono::seconds(30));
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->version, 7);
  EXPECT_TRUE(pulled->payload == payload);
  absl::StatusOr<PulledWeights> other = PullWeights(stub_.get(), "job-2", std::chrono::seconds(10));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("job-1"));
}

}  // namespace
}  // namespace grpo
