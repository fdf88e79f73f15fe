#include "rpc/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"

namespace grpo {

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const GrpcServerOptions& options, const std::vector<grpc::Service*>& services) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<GrpcServer> s(new GrpcServer);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      options.listen_address,
      options.credentials ? options.credentials : grpc::InsecureServerCredentials(), &s->port_);
  for (grpc::Service* service : services) builder.RegisterService(service);
  // Idle handler threads poll with this timeout; it bounds how long Shutdown waits on them.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 100);
  if (options.max_receive_message_bytes > 0)
    builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  if (options.threads > 0) {
    grpc::ResourceQuota quota("grpo_server");
    quota.SetMaxThreads(options.threads);
    builder.SetResourceQuota(quota);
  }
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  s->server_->GetHealthCheckService()->SetServingStatus(true);
  s->lame_duck_ = options.lame_duck;
  return s;
}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (!server_) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  const auto deadline = std::chrono::system_clock::now() + grace;
  if (lame_duck_.count() > 0 && grace.count() > 0)
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(lame_duck_, grace));
  server_->Shutdown(deadline);
  server_->Wait();
  server_.reset();
}

}  // namespace grpo
