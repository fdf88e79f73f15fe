#include "learner/job_source.h"

#include <grpcpp/grpcpp.h>

#include <functional>
#include <thread>

#include "rpc/backoff.h"
#include "rpc/status.h"

namespace grpo {
namespace {

constexpr auto kCallDeadline = std::chrono::seconds(10);

class CoordinatorJobSource : public JobSource {
 public:
  CoordinatorJobSource(v1::CoordinatorService::StubInterface* stub, std::string worker_id,
                       std::string learner_address, std::chrono::milliseconds retry_for)
      : stub_(stub),
        worker_id_(std::move(worker_id)),
        learner_address_(std::move(learner_address)),
        retry_for_(retry_for) {}

  absl::StatusOr<v1::Job> AcquireJob() override {
    v1::AcquireJobRequest request;
    request.set_worker_id(worker_id_);
    request.set_learner_address(learner_address_);
    v1::AcquireJobResponse response;
    absl::Status s = Call("coordinator AcquireJob", [&](grpc::ClientContext* c) {
      return stub_->AcquireJob(c, request, &response);
    });
    if (!s.ok()) return s;
    return response.job();
  }

  absl::Status RequestPrompts(const std::string& job_id, int count, int64_t min_policy_version,
                              uint64_t skip_to_cursor) override {
    v1::RequestPromptsRequest request;
    request.set_job_id(job_id);
    request.set_count(count);
    request.set_min_policy_version(min_policy_version);
    request.set_skip_to_cursor(skip_to_cursor);
    v1::RequestPromptsResponse response;
    return Call("coordinator RequestPrompts", [&](grpc::ClientContext* c) {
      return stub_->RequestPrompts(c, request, &response);
    });
  }

  absl::Status AckPrompts(const std::string& job_id,
                          const std::vector<std::string>& prompt_ids) override {
    if (prompt_ids.empty()) return absl::OkStatus();
    v1::AckPromptsRequest request;
    request.set_job_id(job_id);
    for (const std::string& id : prompt_ids) request.add_prompt_ids(id);
    v1::AckPromptsResponse response;
    return Call("coordinator AckPrompts", [&](grpc::ClientContext* c) {
      return stub_->AckPrompts(c, request, &response);
    });
  }

  absl::StatusOr<bool> ReportProgress(const std::string& job_id,
                                      const v1::JobProgress& progress) override {
    v1::ReportProgressRequest request;
    request.set_job_id(job_id);
    *request.mutable_progress() = progress;
    v1::ReportProgressResponse response;
    absl::Status s = Call("coordinator ReportProgress", [&](grpc::ClientContext* c) {
      return stub_->ReportProgress(c, request, &response);
    });
    if (!s.ok()) return s;
    return response.cancel_requested();
  }

  absl::Status FinishJob(const v1::FinishJobRequest& request) override {
    v1::Job response;
    return Call("coordinator FinishJob", [&](grpc::ClientContext* c) {
      return stub_->FinishJob(c, request, &response);
    });
  }

 private:
  absl::Status Call(const char* what,
                    const std::function<grpc::Status(grpc::ClientContext*)>& call) {
    const auto give_up = std::chrono::steady_clock::now() + retry_for_;
    Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(2));
    for (;;) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
      absl::Status s = FromGrpcStatus(call(&context), what);
      if (s.ok() || s.code() != absl::StatusCode::kUnavailable) return s;
      const auto wait = backoff.Next();
      if (std::chrono::steady_clock::now() + wait > give_up) return s;
      std::this_thread::sleep_for(wait);  // backoff while the coordinator is down
    }
  }

  v1::CoordinatorService::StubInterface* stub_;
  const std::string worker_id_;
  const std::string learner_address_;
  const std::chrono::milliseconds retry_for_;
};

}  // namespace

std::unique_ptr<JobSource> NewCoordinatorJobSource(v1::CoordinatorService::StubInterface* stub,
                                                   std::string worker_id,
                                                   std::string learner_address,
                                                   std::chrono::milliseconds retry_for) {
  return std::make_unique<CoordinatorJobSource>(stub, std::move(worker_id),
                                                std::move(learner_address), retry_for);
}

}  // namespace grpo
