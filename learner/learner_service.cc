#include "learner/learner_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/weight_transfer.h"
#include "rpc/status.h"

namespace grpo {

grpc::Status LearnerServiceImpl::SubmitGroups(grpc::ServerContext* context,
                                              grpc::ServerReader<v1::ScoredGroupProto>* reader,
                                              v1::SubmitGroupsResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context); !denied.ok()) return denied;
  std::vector<v1::ScoredGroupProto> groups;
  v1::ScoredGroupProto group;
  size_t bytes = 0;
  while (reader->Read(&group)) {
    if (static_cast<int>(groups.size()) >= kMaxGroupsPerStream)
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("more than ", kMaxGroupsPerStream, " groups in one stream"));
    bytes += group.ByteSizeLong();
    if (bytes > kMaxStreamBytes)
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("more than ", kMaxStreamBytes, " bytes in one stream"));
    groups.push_back(std::move(group));
    group.Clear();
  }
  absl::StatusOr<SubmitResult> result = buffer_->Submit(groups);
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_accepted(result->accepted);
  response->set_duplicates(result->duplicates);
  return grpc::Status::OK;
}

grpc::Status LearnerServiceImpl::StreamWeights(grpc::ServerContext* context,
                                               const v1::StreamWeightsRequest* request,
                                               grpc::ServerWriter<v1::WeightChunk>* writer) {
  if (grpc::Status denied = authorizer_.Check(*context); !denied.ok()) return denied;
  const PublishedWeights latest = weights_->Latest();
  if (latest.version < 0)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "no weights published yet");
  if (request->job_id() != latest.job_id)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("job_id '", request->job_id(), "': the learner runs '",
                                     latest.job_id, "'"));
  const std::string& payload = *latest.payload;
  const size_t total_chunks = std::max<size_t>(
      1, (payload.size() + kWeightChunkBytes - 1) / kWeightChunkBytes);
  v1::WeightChunk chunk;
  chunk.set_version(latest.version);
  chunk.set_total_chunks(static_cast<int>(total_chunks));
  chunk.set_total_bytes(payload.size());
  chunk.set_checksum(latest.checksum);
  for (size_t i = 0; i < total_chunks; ++i) {
    if (context->IsCancelled())
      return grpc::Status(grpc::StatusCode::CANCELLED, "the worker went away");
    const size_t offset = i * kWeightChunkBytes;
    chunk.set_index(static_cast<int>(i));
    chunk.set_data(payload.data() + offset,
                   std::min(kWeightChunkBytes, payload.size() - offset));
    if (!writer->Write(chunk))
      return grpc::Status(grpc::StatusCode::CANCELLED, "the worker went away");
  }
  return grpc::Status::OK;
}

grpc::Status LearnerServiceImpl::GetPolicyVersion(grpc::ServerContext* context,
                                                  const v1::GetPolicyVersionRequest* request,
                                                  v1::PolicyVersion* response) {
  if (grpc::Status denied = authorizer_.Check(*context); !denied.ok()) return denied;
  const PublishedWeights latest = weights_->Latest();
  response->set_job_id(latest.job_id);
  response->set_version(request->job_id() == latest.job_id ? latest.version : -1);
  return grpc::Status::OK;
}

}  // namespace grpo
