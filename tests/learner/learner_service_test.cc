// The learner's service side: the ingest buffer's guarantees (all or nothing, exactly
// once, freshness) and LearnerService over real gRPC on a kernel-picked port, with the
// rollout worker's WeightReceiver on the other end.
#include "learner/learner_service.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/ingest_buffer.h"
#include "learner/weight_publisher.h"
#include "model/flat_weights.h"
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
  EXPECT_EQ(back->sampling_precision, v1::COMPUTE_PRECISION_UNSPECIFIED);  // none reported
  v1::ScoredGroupProto stamped = proto;
  stamped.set_sampling_precision(v1::COMPUTE_PRECISION_FLOAT32_BF16_MATMULS);
  back = FromProto(stamped);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->sampling_precision, v1::COMPUTE_PRECISION_FLOAT32_BF16_MATMULS);
  EXPECT_EQ(ToProto(*back, "job-1").sampling_precision(),
            v1::COMPUTE_PRECISION_FLOAT32_BF16_MATMULS);

  v1::ScoredGroupProto bad = proto;
  bad.set_sampling_precision(static_cast<v1::ComputePrecision>(77));  // a newer worker's
  EXPECT_THAT(FromProto(bad).status().message(), HasSubstr("train-7: sampling_precision 77"));
  bad = proto;
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

// Flat float32 weights of two tensors, three chunks' worth, values not all alike.
std::string FlatPayload(float scale) {
  std::vector<size_t> offsets;
  const int64_t n = static_cast<int64_t>(kWeightChunkBytes / 4) + 1000;
  std::string payload = LayOutFlatWeights(v1::WEIGHT_DTYPE_FLOAT32,
                                          {{"a", {n, 2}}, {"b", {7}}}, &offsets);
  for (int t = 0; t < 2; ++t) {
    const int64_t count = t == 0 ? 2 * n : 7;
    for (int64_t i = 0; i < count; ++i) {
      const float v = scale * static_cast<float>((i * 131) % 977) / 97.0f - 3.0f * t;
      std::memcpy(payload.data() + offsets[t] + 4 * i, &v, 4);
    }
  }
  return payload;
}

absl::StatusOr<PulledWeights> Pull(WeightReceiver& receiver, v1::LearnerService::Stub* stub,
                                   const std::string& job, v1::WeightDtype dtype, int streams,
                                   int64_t version = -1) {
  PullOptions options;
  options.deadline = std::chrono::seconds(30);
  options.dtype = dtype;
  options.streams = streams;
  options.version = version;
  return receiver.Pull(stub, job, options);
}

TEST_F(LearnerServiceTest, WeightsArriveWholeAndVerified) {
  WeightReceiver receiver;
  EXPECT_EQ(Pull(receiver, stub_.get(), "job-1", v1::WEIGHT_DTYPE_FLOAT32, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);  // nothing published yet
  const std::string payload = FlatPayload(1.0f);
  ASSERT_TRUE(weights_.Publish("job-1", 7, payload).ok());
  absl::StatusOr<PulledWeights> pulled =
      Pull(receiver, stub_.get(), "job-1", v1::WEIGHT_DTYPE_FLOAT32, 1);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->version, 7);
  EXPECT_EQ(pulled->dtype, v1::WEIGHT_DTYPE_FLOAT32);
  EXPECT_TRUE(pulled->payload == payload);
  absl::StatusOr<PulledWeights> other =
      Pull(receiver, stub_.get(), "job-2", v1::WEIGHT_DTYPE_FLOAT32, 1);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("job-1"));
}

// A bfloat16 worker gets half the bytes, over parallel streams that each carry every
// third chunk, and the same payload the learner would convert to.
TEST_F(LearnerServiceTest, ParallelStreamsDeliverTheAskedDtype) {
  const std::string payload = FlatPayload(1.0f);
  ASSERT_TRUE(weights_.Publish("job-1", 3, payload).ok());
  absl::StatusOr<std::string> expected = ConvertFlatWeights(payload, v1::WEIGHT_DTYPE_BFLOAT16);
  ASSERT_TRUE(expected.ok()) << expected.status();
  WeightReceiver receiver;
  for (int streams : {3, 5}) {  // 5 > the 2 chunks of the bfloat16 payload: idle streams
    absl::StatusOr<PulledWeights> pulled =
        Pull(receiver, stub_.get(), "job-1", v1::WEIGHT_DTYPE_BFLOAT16, streams);
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    EXPECT_EQ(pulled->version, 3);
    EXPECT_EQ(pulled->dtype, v1::WEIGHT_DTYPE_BFLOAT16);
    EXPECT_LT(pulled->payload.size(), payload.size() / 2 + 4096);
    EXPECT_TRUE(pulled->payload == *expected);
  }
}

TEST_F(LearnerServiceTest, BadWeightRequestsAndPayloadsAreRefused) {
  ASSERT_TRUE(weights_.Publish("job-1", 1, FlatPayload(1.0f)).ok());
  // Not flat weights: refused, and version 1 stays the one served.
  absl::Status garbage = weights_.Publish("job-1", 2, std::string(1000, 'x'));
  EXPECT_EQ(garbage.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(weights_.Latest().version, 1);
  // A superseded version no stream holds any more: ABORTED, ask again.
  ASSERT_TRUE(weights_.Publish("job-1", 2, FlatPayload(2.0f)).ok());
  WeightReceiver receiver;
  absl::StatusOr<PulledWeights> old =
      Pull(receiver, stub_.get(), "job-1", v1::WEIGHT_DTYPE_FLOAT32, 2, /*version=*/1);
  EXPECT_EQ(old.status().code(), absl::StatusCode::kAborted) << old.status();
  // Stream numbers out of range, named.
  for (auto [index, count] : {std::pair{0, 65}, std::pair{2, 2}, std::pair{-1, 1}}) {
    grpc::ClientContext context;
    v1::StreamWeightsRequest request;
    request.set_job_id("job-1");
    request.set_stream_index(index);
    request.set_num_streams(count);
    auto reader = stub_->StreamWeights(&context, request);
    v1::WeightChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr(count == 65 ? "num_streams" : "stream_index"));
  }
  // The newest is still whole.
  absl::StatusOr<PulledWeights> pulled =
      Pull(receiver, stub_.get(), "job-1", v1::WEIGHT_DTYPE_FLOAT32, 2);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->version, 2);
  EXPECT_TRUE(pulled->payload == FlatPayload(2.0f));
}

}  // namespace
}  // namespace grpo
