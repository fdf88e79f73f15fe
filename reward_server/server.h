// RewardServer: the grpo_reward_server process minus main(): RewardService on a GrpcServer (with the standard
// grpc.health.v1 health service and server reflection). Start binds
// (port 0 picks a free port, for tests); Shutdown flips health to NOT_SERVING, lets calls
// in flight finish until the deadline, then stops.
#ifndef GRPO_REWARD_SERVER_SERVER_H_
#define GRPO_REWARD_SERVER_SERVER_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "reward_server/reward_service.h"
#include "rewards/code_tests.h"
#include "rpc/grpc_server.h"
#include "rpc/security.h"

namespace grpo {

struct RewardServerOptions {
  std::string listen_address = "0.0.0.0:50051";
  int threads = 0;  // gRPC handler threads at most; 0 = gRPC's default
  RewardServiceLimits limits;
  // A directory written by grpo_train_rm; empty = rule-based functions only.
  std::string reward_model_dir;
  Security security;  // TLS and the token every call must carry
  std::chrono::milliseconds lame_duck{0};  // see GrpcServerOptions
  metrics::Registry* registry = nullptr;   // calls counted here (borrowed); null = not
  // code_tests (rewards/code_tests.h): served unless off; where the sandbox cannot start
  // it answers FAILED_PRECONDITION with the reason (code_tests_unavailable() says it).
  bool code_tests = true;
  CodeTestsOptions code;
};

class RewardServer {
 public:
  static absl::StatusOr<std::unique_ptr<RewardServer>> Start(const RewardServerOptions& options);
  ~RewardServer();

  int port() const { return server_ ? server_->port() : 0; }
  // Why code_tests cannot run code on this machine; empty when it can (or is off).
  const std::string& code_tests_unavailable() const { return code_unavailable_; }
  void Shutdown(std::chrono::milliseconds grace);

 private:
  RewardServer() = default;
  std::unique_ptr<RewardServiceImpl> service_;
  std::unique_ptr<GrpcServer> server_;
  std::string code_unavailable_;
};

}  // namespace grpo

#endif  // GRPO_REWARD_SERVER_SERVER_H_
