// CoordinatorClient: the user side of grpo.v1.CoordinatorService (grpoctl, the local
// launcher, tests): submit, inspect, cancel and follow jobs. Every unary call carries a
// deadline; Watch rides out coordinator restarts and network blips by reconnecting on
// UNAVAILABLE (or a server-side CANCELLED) with backoff, up to a total time without
// contact. Errors come back as absl::Status with the server's code and message, prefixed
// by the call's name.
// Owns its stub; one client may be used from several threads.
#ifndef GRPO_COORDINATOR_COORDINATOR_CLIENT_H_
#define GRPO_COORDINATOR_COORDINATOR_CLIENT_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/coordinator.grpc.pb.h"
#include "rpc/security.h"

namespace grpo {

struct CoordinatorClientOptions {
  std::chrono::milliseconds call_timeout{10000};  // per unary call
  // Watch gives up after this long without reaching the coordinator.
  std::chrono::milliseconds reconnect_for{60000};
  Security security;  // TLS and the token for the channel Connect opens
};

class CoordinatorClient {
 public:
  // Connects lazily: a coordinator that is not up yet is an error at the first call.
  static std::unique_ptr<CoordinatorClient> Connect(const std::string& address,
                                                    CoordinatorClientOptions options = {});
  CoordinatorClient(std::unique_ptr<v1::CoordinatorService::StubInterface> stub,
                    CoordinatorClientOptions options);

  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  absl::StatusOr<std::vector<v1::Job>> ListJobs();  // submission order, without specs
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Calls `on_update` with the job now and after every change; returns OK once a
  // terminal state (SUCCEEDED, FAILED, CANCELLED) was delivered.
  absl::Status Watch(const std::string& job_id,
                     const std::function<void(const v1::Job&)>& on_update);

 private:
  std::unique_ptr<grpc::ClientContext> NewContext() const;

  std::unique_ptr<v1::CoordinatorService::StubInterface> stub_;
  const CoordinatorClientOptions options_;
};

bool IsTerminalJobState(v1::JobState state);

// One line per job for `grpoctl list`: id, state, name, step/total, last reward.
std::string FormatJobLine(const v1::Job& job);
// The live one-line display of `grpoctl watch`: state, phase, step k/N, reward mean±std,
// kl, grad norm, tok/s, elapsed, ETA, the learner's message, lease reissues, duplicates.
std::string FormatProgress(const v1::Job& job);

}  // namespace grpo

#endif  // GRPO_COORDINATOR_COORDINATOR_CLIENT_H_
