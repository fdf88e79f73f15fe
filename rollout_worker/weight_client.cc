#include "rollout_worker/weight_client.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "rpc/status.h"

namespace grpo {
namespace {

// The first error of a transfer; it cancels every stream.
class TransferError {
 public:
  explicit TransferError(std::vector<std::unique_ptr<grpc::ClientContext>>* contexts)
      : contexts_(contexts) {}
  void Set(absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (!first_.ok()) return;
    first_ = std::move(status);
    for (auto& context : *contexts_) context->TryCancel();
  }
  absl::Status Get() const {
    absl::MutexLock lock(&mu_);
    return first_;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Status first_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<grpc::ClientContext>>* contexts_;
};

absl::StatusOr<int64_t> NewestVersion(v1::LearnerService::StubInterface* stub,
                                      const std::string& job_id,
                                      std::chrono::system_clock::time_point deadline) {
  grpc::ClientContext context;
  context.set_deadline(deadline);
  v1::GetPolicyVersionRequest request;
  request.set_job_id(job_id);
  v1::PolicyVersion latest;
  if (absl::Status s = FromGrpcStatus(stub->GetPolicyVersion(&context, request, &latest),
                                      "learner GetPolicyVersion");
      !s.ok())
    return s;
  if (latest.version() < 0)
    return absl::FailedPreconditionError("the learner has published no weights yet");
  return latest.version();
}

}  // namespace

absl::StatusOr<PulledWeights> WeightReceiver::Pull(v1::LearnerService::StubInterface* stub,
                                                   const std::string& job_id,
                                                   const PullOptions& options) {
  if (options.streams < 1 || options.streams > kMaxWeightStreams)
    return absl::InvalidArgumentError(absl::StrCat("weight streams ", options.streams,
                                                   " is not in [1, ", kMaxWeightStreams, "]"));
  const auto deadline = std::chrono::system_clock::now() + options.deadline;
  int64_t version = options.version;
  if (version < 0 && options.streams > 1) {
    absl::StatusOr<int64_t> newest = NewestVersion(stub, job_id, deadline);
    if (!newest.ok()) return newest.status();
    version = *newest;
  }
  assembler_.Reset();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  for (int k = 0; k < options.streams; ++k) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(deadline);
  }
  TransferError error(&contexts);
  auto stream = [&](int k) {
    v1::StreamWeightsRequest request;
    request.set_job_id(job_id);
    request.set_dtype(options.dtype);
    request.set_stream_index(k);
    request.set_num_streams(options.streams);
    if (version >= 0) request.set_version(version);
    std::unique_ptr<grpc::ClientReaderInterface<v1::WeightChunk>> reader =
        stub->StreamWeights(contexts[k].get(), request);
    v1::WeightChunk chunk;
    while (reader->Read(&chunk)) {
      if (absl::Status s = assembler_.Add(chunk); !s.ok()) error.Set(std::move(s));
    }
    // A stream cancelled for another's error reports CANCELLED: the first error wins.
    if (absl::Status s = FromGrpcStatus(reader->Finish(), "learner StreamWeights"); !s.ok())
      error.Set(std::move(s));
  };
  std::vector<std::thread> others;
  for (int k = 1; k < options.streams; ++k) others.emplace_back(stream, k);
  stream(0);
  for (std::thread& t : others) t.join();
  if (absl::Status s = error.Get(); !s.ok()) {
    assembler_.Reset();
    return s;
  }
  if (!assembler_.complete()) {  // the learner ended the streams early: a transfer cut short
    assembler_.Reset();
    return absl::DataLossError("learner StreamWeights: the streams ended before every chunk");
  }
  PulledWeights out;
  out.version = assembler_.version();
  out.dtype = assembler_.dtype();
  absl::StatusOr<std::string_view> payload = assembler_.Take();
  if (!payload.ok()) return payload.status();
  out.payload = *payload;
  return out;
}

}  // namespace grpo
