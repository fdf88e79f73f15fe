// Registration: a service process's membership in the coordinator's registry (docs/design.md
// §2). Start registers (retrying while the coordinator is unreachable) and then heartbeats
// from its own thread at the interval the coordinator asked for; when the coordinator has
// dropped the worker (NOT_FOUND) it registers again under a new id. Thread-safe.
#ifndef GRPO_COORDINATOR_REGISTRATION_H_
#define GRPO_COORDINATOR_REGISTRATION_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpo/v1/coordinator.grpc.pb.h"

namespace grpo {

class Registration {
 public:
  // Borrows the stub; it must outlive this object.
  Registration(v1::CoordinatorService::StubInterface* stub, v1::WorkerRole role,
               std::string address, std::string name);
  ~Registration();  // stops heartbeating

  // Registers, retrying with backoff until `deadline`; then heartbeats in the background.
  absl::Status Start(std::chrono::steady_clock::time_point deadline);
  std::string worker_id() const;
  // Registers again now (after a call answered NOT_FOUND for our id).
  absl::Status Reregister();
  void set_policy_version(int64_t version) { policy_version_ = version; }

 private:
  absl::Status RegisterOnce();
  void HeartbeatLoop();

  v1::CoordinatorService::StubInterface* stub_;
  const v1::WorkerRole role_;
  const std::string address_, name_;
  mutable absl::Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  int interval_ms_ ABSL_GUARDED_BY(mu_) = 1000;
  std::atomic<int64_t> policy_version_{0};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace grpo

#endif  // GRPO_COORDINATOR_REGISTRATION_H_
