// LearnerServiceImpl: grpo.v1.LearnerService on learner rank 0 — scored groups in (into an
// IngestBuffer), policy weights out (from a WeightPublisher). Borrows both; they must
// outlive the service. Thread-safe: gRPC calls it from many threads.
#ifndef GRPO_LEARNER_LEARNER_SERVICE_H_
#define GRPO_LEARNER_LEARNER_SERVICE_H_

#include <utility>

#include "grpo/v1/learner.grpc.pb.h"
#include "learner/ingest_buffer.h"
#include "learner/weight_publisher.h"
#include "rpc/security.h"

namespace grpo {

class LearnerServiceImpl final : public v1::LearnerService::Service {
 public:
  // At most this many groups in one SubmitGroups stream.
  static constexpr int kMaxGroupsPerStream = 1024;
  // And at most this many bytes: the stream is held whole until it ends (all or nothing).
  static constexpr size_t kMaxStreamBytes = size_t{256} << 20;

  // `authorizer` checks every call's token.
  LearnerServiceImpl(IngestBuffer* buffer, WeightPublisher* weights,
                     CallAuthorizer authorizer = {})
      : buffer_(buffer), weights_(weights), authorizer_(std::move(authorizer)) {}

  grpc::Status SubmitGroups(grpc::ServerContext* context,
                            grpc::ServerReader<v1::ScoredGroupProto>* reader,
                            v1::SubmitGroupsResponse* response) override;
  grpc::Status StreamWeights(grpc::ServerContext* context,
                             const v1::StreamWeightsRequest* request,
                             grpc::ServerWriter<v1::WeightChunk>* writer) override;
  grpc::Status GetPolicyVersion(grpc::ServerContext* context,
                                const v1::GetPolicyVersionRequest* request,
                                v1::PolicyVersion* response) override;

 private:
  IngestBuffer* buffer_;
  WeightPublisher* weights_;
  const CallAuthorizer authorizer_;
};

}  // namespace grpo

#endif  // GRPO_LEARNER_LEARNER_SERVICE_H_
