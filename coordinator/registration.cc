#include "coordinator/registration.h"

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "rpc/backoff.h"
#include "rpc/status.h"

namespace grpo {
namespace {

constexpr auto kCallDeadline = std::chrono::seconds(5);

}  // namespace

Registration::Registration(v1::CoordinatorService::StubInterface* stub, v1::WorkerRole role,
                           std::string address, std::string name)
    : stub_(stub), role_(role), address_(std::move(address)), name_(std::move(name)) {}

Registration::~Registration() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

absl::Status Registration::RegisterOnce() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  v1::RegisterRequest request;
  request.set_role(role_);
  request.set_address(address_);
  request.set_name(name_);
  v1::RegisterResponse response;
  absl::Status status = FromGrpcStatus(stub_->Register(&context, request, &response),
                                       "coordinator Register");
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  worker_id_ = response.worker_id();
  interval_ms_ = std::max(50, response.heartbeat_interval_ms());
  return absl::OkStatus();
}

absl::Status Registration::Start(std::chrono::steady_clock::time_point deadline) {
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(2));
  for (;;) {
    absl::Status status = RegisterOnce();
    if (status.ok()) break;
    if (!RetryableCode(status.code())) return status;
    const auto wait = backoff.Next();
    if (std::chrono::steady_clock::now() + wait > deadline) return status;
    if (stop_.WaitForNotificationWithTimeout(absl::FromChrono(wait)))
      return absl::CancelledError("stopped while registering");
  }
  thread_ = std::thread([this] { HeartbeatLoop(); });
  return absl::OkStatus();
}

std::string Registration::worker_id() const {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

absl::Status Registration::Reregister() { return RegisterOnce(); }

void Registration::HeartbeatLoop() {
  for (;;) {
    int interval_ms;
    {
      absl::MutexLock lock(&mu_);
      interval_ms = interval_ms_;
    }
    if (stop_.WaitForNotificationWithTimeout(absl::Milliseconds(interval_ms))) return;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id());
    request.set_policy_version(policy_version_);
    v1::HeartbeatResponse response;
    const grpc::Status status = stub_->Heartbeat(&context, request, &response);
    // Dropped while we were slow or the coordinator restarted: join again. Other errors
    // (coordinator briefly down) are retried at the next beat.
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) (void)RegisterOnce();
  }
}

}  // namespace grpo
