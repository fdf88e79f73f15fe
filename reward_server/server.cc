#include "reward_server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include "absl/strings/str_cat.h"
#include "core/neural_rewards.h"
#include "reward_server/coalescing_reward.h"

namespace grpo {

absl::StatusOr<std::unique_ptr<RewardServer>> RewardServer::Start(
    const RewardServerOptions& options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<RewardServer> s(new RewardServer);
  std::map<std::string, std::shared_ptr<const RewardFunction>> models;
  if (!options.reward_model_dir.empty()) {
    absl::StatusOr<std::unique_ptr<RewardModel>> loaded =
        RewardModel::Load(options.reward_model_dir);
    if (!loaded.ok()) return loaded.status();
    std::shared_ptr<const RewardModel> model = std::move(*loaded);
    // Concurrent requests share forward passes (up to 256 samples each).
    for (auto read_at : {RewardModelFunction::ReadAt::kLastToken,
                         RewardModelFunction::ReadAt::kStepEnds}) {
      auto fn = std::make_shared<RewardModelFunction>(model, read_at);
      models[std::string(fn->name())] = std::make_shared<CoalescingRewardFunction>(fn, 256);
    }
  }
  s->service_ = std::make_unique<RewardServiceImpl>(options.limits, std::move(models));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(),
                           &s->port_);
  builder.RegisterService(s->service_.get());
  // Idle handler threads poll with this timeout; it bounds how long Shutdown waits on them.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 100);
  if (options.threads > 0) {
    grpc::ResourceQuota quota("grpo_reward_server");
    quota.SetMaxThreads(options.threads);
    builder.SetResourceQuota(quota);
  }
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0)
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address));
  s->server_->GetHealthCheckService()->SetServingStatus(true);
  return s;
}

RewardServer::~RewardServer() {
  if (server_) Shutdown(std::chrono::milliseconds(0));
}

void RewardServer::Shutdown(std::chrono::milliseconds grace) {
  if (!server_) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  server_.reset();
}

void RewardServer::Wait() {
  if (server_) server_->Wait();
}

}  // namespace grpo
