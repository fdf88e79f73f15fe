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
  const int streams = std::max(1, request->num_streams());
  if (request->num_streams() < 0 || request->num_streams() > kMaxWeightStreams)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("num_streams ", request->num_streams(),
                                     " is not in [0, ", kMaxWeightStreams, "]"));
  if (request->stream_index() < 0 || request->stream_index() >= streams)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("stream_index ", request->stream_index(),
                                     " is not in [0, ", streams, ")"));
  if (request->has_version() && request->version() < 0)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("version ", request->version(), " < 0"));
  absl::StatusOr<PublishedWeights> published =
      weights_->Get(request->has_version() ? request->version() : -1, request->dtype());
  if (!published.ok()) return ToGrpcStatus(published.status());
  if (request->job_id() != published->job_id)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("job_id '", request->job_id(), "': the learner runs '",
                                     published->job_id, "'"));
  const WeightPayload& payload = *published->payload;
  const std::string& bytes = payload.bytes;
  v1::WeightChunk chunk;
  chunk.set_version(published->version);
  chunk.set_total_chunks(static_cast<int>(payload.chunk_checksums.size()));
  chunk.set_total_bytes(bytes.size());
  chunk.set_chunk_bytes(kWeightChunkBytes);
  chunk.set_checksum(payload.checksum);
  chunk.set_dtype(payload.dtype);
  for (size_t i = request->stream_index(); i < payload.chunk_checksums.size(); i += streams) {
    if (context->IsCancelled())
      return grpc::Status(grpc::StatusCode::CANCELLED, "the worker went away");
    const size_t offset = i * kWeightChunkBytes;
    chunk.set_index(static_cast<int>(i));
    chunk.set_data_checksum(payload.chunk_checksums[i]);
    chunk.set_data(bytes.data() + offset, std::min(kWeightChunkBytes, bytes.size() - offset));
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
