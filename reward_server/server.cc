#include "reward_server/server.h"

#include "absl/strings/str_cat.h"
#include "reward_server/coalescing_reward.h"
#include "rewards/neural_rewards.h"

namespace grpo {

absl::StatusOr<std::unique_ptr<RewardServer>> RewardServer::Start(
    const RewardServerOptions& options) {
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
  if (options.code_tests) {
    absl::StatusOr<std::unique_ptr<CodeTestsReward>> code =
        CodeTestsReward::Create(options.code, options.registry);
    if (!code.ok()) return code.status();
    s->code_unavailable_ = (*code)->unavailable();
    models["code_tests"] = std::shared_ptr<const CodeTestsReward>(std::move(*code));
  }
  s->service_ = std::make_unique<RewardServiceImpl>(options.limits, std::move(models),
                                                    options.security.authorizer());
  GrpcServerOptions server_options;
  server_options.credentials = options.security.ServerCredentials();
  server_options.listen_address = options.listen_address;
  server_options.lame_duck = options.lame_duck;
  server_options.registry = options.registry;
  server_options.role = "reward";
  server_options.threads = options.threads;
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(server_options, {s->service_.get()});
  if (!server.ok()) return server.status();
  s->server_ = std::move(*server);
  return s;
}

RewardServer::~RewardServer() = default;

void RewardServer::Shutdown(std::chrono::milliseconds grace) {
  if (server_) server_->Shutdown(grace);
}

}  // namespace grpo
