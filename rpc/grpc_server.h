// GrpcServer: one listening port serving the given services plus the standard
// grpc.health.v1 health service and server reflection — what every grpo_* process does.
// Start binds (port 0 picks a free port, for tests and the local launcher); Shutdown
// flips health to NOT_SERVING, lets calls in flight finish until the grace period ends,
// then stops. Borrows the services: they must outlive the server.
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

struct GrpcServerOptions {
  std::string listen_address = "0.0.0.0:0";
  int threads = 0;  // handler threads at most; 0 = gRPC's default
  int max_receive_message_bytes = 0;  // 0 = gRPC's default (4 MiB)
  // TLS or plaintext (Security::ServerCredentials); null = plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
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
};

}  // namespace grpo

#endif  // GRPO_RPC_GRPC_SERVER_H_
