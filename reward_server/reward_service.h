// RewardServiceImpl: grpo.v1.RewardService over the rule-based reward functions of
// rewards/rewards.h — the same implementation the local trainer calls in-process, served to
// any gRPC client. Stateless and thread-safe: the gRPC server calls it from its pool.
//
// Bad input changes nothing and gets a status naming the field: INVALID_ARGUMENT for an
// unknown function, an empty batch or a sample missing what a function needs;
// RESOURCE_EXHAUSTED past the batch or text limits; INTERNAL if a function returns a
// non-finite value (never a NaN in a response); DEADLINE_EXCEEDED / CANCELLED when the
// caller's deadline passes mid-batch.
#ifndef GRPO_REWARD_SERVER_REWARD_SERVICE_H_
#define GRPO_REWARD_SERVER_REWARD_SERVICE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "grpo/v1/reward.grpc.pb.h"
#include "rewards/rewards.h"
#include "rpc/security.h"

namespace grpo {

struct RewardServiceLimits {
  int max_batch = 8192;                 // samples per request
  int64_t max_text_bytes = 64 << 10;    // per prompt / completion / reference field
};

class RewardServiceImpl final : public v1::RewardService::Service {
 public:
  // `models`: functions served besides the rule-based ones, by name (the neural reward
  // and process reward models when the server loaded one). Shared, read-only.
  explicit RewardServiceImpl(
      const RewardServiceLimits& limits,
      std::map<std::string, std::shared_ptr<const RewardFunction>> models = {},
      CallAuthorizer authorizer = {})
      : limits_(limits), models_(std::move(models)), authorizer_(std::move(authorizer)) {}

  grpc::Status Score(grpc::ServerContext* context, const v1::ScoreRequest* request,
                     v1::ScoreResponse* response) override;
  grpc::Status ListRewardFunctions(grpc::ServerContext* context,
                                   const v1::ListRewardFunctionsRequest* request,
                                   v1::ListRewardFunctionsResponse* response) override;

 private:
  const RewardServiceLimits limits_;
  const std::map<std::string, std::shared_ptr<const RewardFunction>> models_;
  const CallAuthorizer authorizer_;
};

}  // namespace grpo

#endif  // GRPO_REWARD_SERVER_REWARD_SERVICE_H_
