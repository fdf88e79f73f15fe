#include "rollout_worker/weight_client.h"

#include <grpcpp/grpcpp.h>

#include "model/weight_transfer.h"
#include "rpc/status.h"

namespace grpo {

absl::StatusOr<PulledWeights> PullWeights(v1::LearnerService::StubInterface* stub,
                                          const std::string& job_id,
                                          std::chrono::milliseconds deadline) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  v1::StreamWeightsRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReaderInterface<v1::WeightChunk>> reader =
      stub->StreamWeights(&context, request);
  WeightAssembler assembler;
  v1::WeightChunk chunk;
  absl::Status bad_chunk;
  while (reader->Read(&chunk)) {
    if (bad_chunk.ok()) bad_chunk = assembler.Add(chunk);
    if (!bad_chunk.ok()) context.TryCancel();
  }
  absl::Status status = FromGrpcStatus(reader->Finish(), "learner StreamWeights");
  if (!bad_chunk.ok()) return bad_chunk;
  if (!status.ok()) return status;
  if (!assembler.complete())  // the learner ended the stream early: a transfer cut short
    return absl::DataLossError("learner StreamWeights: the stream ended before every chunk");
  PulledWeights out;
  out.version = assembler.version();
  absl::StatusOr<std::string> payload = assembler.Take();
  if (!payload.ok()) return payload.status();
  out.payload = std::move(*payload);
  return out;
}

}  // namespace grpo
