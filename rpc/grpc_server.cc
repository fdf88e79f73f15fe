#include "rpc/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/support/server_interceptor.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "metrics/registry.h"

namespace grpo {
namespace {

// Counts and times every call at the moment its status is sent.
class CallMetrics final : public grpc::experimental::Interceptor {
 public:
  CallMetrics(absl::string_view method, const std::string* role,
              metrics::Family<metrics::Counter>* calls,
              metrics::Family<metrics::Histogram>* seconds)
      : method_(method.substr(method.rfind('/') + 1)), role_(role), calls_(calls),
        seconds_(seconds), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const std::string code(
          absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())));
      calls_->Add({{"role", *role_}, {"method", method_}, {"code", code}}).Increment();
      seconds_->Add({{"role", *role_}, {"method", method_}})
          .Observe(SecondsSince(start_));
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
  const std::string* role_;
  metrics::Family<metrics::Counter>* calls_;
  metrics::Family<metrics::Histogram>* seconds_;
  const std::chrono::steady_clock::time_point start_;
};

class CallMetricsFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  CallMetricsFactory(metrics::Registry* registry, std::string role)
      : role_(std::move(role)),
        calls_(&registry->AddCounter("grpo_rpc_server_calls_total",
                                     "gRPC calls served, by method and status code.")),
        seconds_(&registry->AddHistogram("grpo_rpc_server_call_seconds",
                                         "Time from a call's start to its status.",
                                         metrics::ExponentialBuckets(0.001, 4, 8))) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallMetrics(info->method(), &role_, calls_, seconds_);
  }

 private:
  const std::string role_;
  metrics::Family<metrics::Counter>* calls_;
  metrics::Family<metrics::Histogram>* seconds_;
};

}  // namespace

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
  if (options.registry != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(std::make_unique<CallMetricsFactory>(options.registry, options.role));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
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
