// GrpcServer: one listening port serving the given services plus the standard
// grpc.health.v1 health service and server reflection — what every grpo_* process does.
// Start binds (port 0 picks a free port, for tests and the local launcher). Shutdown
// drains: health goes NOT_SERVING at once, new calls are still served for the lame-duck
// period (so load balancers and probes see the change before connections are refused),
// then no new calls are taken and those in flight may finish until the grace period ends.
// Borrows the services: they must outlive the server.
#ifndef GRPO_RPC_GRPC_SERVER_H_
#define GRPO_RPC_GRPC_SERVER_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace grpc {
class Server;
class ServerCredentials;
class Service;
}  // namespace grpc

namespace grpo {
namespace metrics {
class Registry;
}  // namespace metrics

// What the grpo_* binaries use: long enough for a health probe or a client's next call to
// see NOT_SERVING, short enough not to slow a restart.
inline constexpr std::chrono::milliseconds kLameDuck{500};

struct GrpcServerOptions {
  std::string listen_address = "0.0.0.0:0";
  int threads = 0;  // handler threads at most; 0 = gRPC's default
  int max_receive_message_bytes = 0;  // 0 = gRPC's default (4 MiB)
  // TLS or plaintext (Security::ServerCredentials); null = plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // How long Shutdown keeps serving while health reports NOT_SERVING.
  std::chrono::milliseconds lame_duck{0};
  // Where every call is counted by method and status code, and timed
  // (grpo_rpc_server_calls_total, grpo_rpc_server_call_seconds; label role = `role`).
  // Null: not counted. Borrowed; must outlive the server.
  metrics::Registry* registry = nullptr;
  std::string role;
};

class GrpcServer {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const GrpcServerOptions& options, const std::vector<grpc::Service*>& services);
  ~GrpcServer();  // Shutdown with no grace

  int port() const { return port_; }
  void Shutdown(std::chrono::milliseconds grace);

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::chrono::milliseconds lame_duck_{0};
};

}  // namespace grpo

#endif  // GRPO_RPC_GRPC_SERVER_H_
