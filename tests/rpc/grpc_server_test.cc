// GrpcServer's drain, as every grpo_* service stops on SIGTERM: health turns NOT_SERVING
// while calls are still served (the lame-duck period), the call in flight finishes with
// its answer, and only then does the server stop taking calls.
#include "rpc/grpc_server.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "grpo/v1/reward.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/health_check.h"

namespace grpo {
namespace {

// Score blocks until released; ListRewardFunctions answers at once.
class SlowService final : public v1::RewardService::Service {
 public:
  grpc::Status Score(grpc::ServerContext*, const v1::ScoreRequest*,
                     v1::ScoreResponse* response) override {
    entered.Notify();
    release.WaitForNotification();
    response->add_scores()->set_total(42);
    return grpc::Status::OK;
  }
  grpc::Status ListRewardFunctions(grpc::ServerContext*, const v1::ListRewardFunctionsRequest*,
                                   v1::ListRewardFunctionsResponse*) override {
    return grpc::Status::OK;
  }
  absl::Notification entered, release;
};

using testing_util::HealthStatus;

TEST(GrpcServerTest, ShutdownGoesNotServingThenDrainsTheCallsInFlight) {
  SlowService service;
  GrpcServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.lame_duck = std::chrono::seconds(5);  // long enough to look in a loaded test run
  auto server = GrpcServer::Start(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::RewardService::NewStub(channel);
  ASSERT_EQ(HealthStatus(channel), 1);

  grpc::Status in_flight;
  v1::ScoreResponse answer;
  std::thread caller([&] {
    grpc::ClientContext context;
    in_flight = stub->Score(&context, v1::ScoreRequest(), &answer);
  });
  service.entered.WaitForNotification();
  std::thread stopper([&] { (*server)->Shutdown(std::chrono::seconds(30)); });

  // The lame duck: NOT_SERVING, yet new calls still answered.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int health = 1;
  while (health == 1 && std::chrono::steady_clock::now() < give_up) health = HealthStatus(channel);
  EXPECT_EQ(health, 2);
  {
    grpc::ClientContext context;
    v1::ListRewardFunctionsResponse functions;
    EXPECT_TRUE(stub->ListRewardFunctions(&context, {}, &functions).ok());
  }
  service.release.Notify();
  caller.join();
  stopper.join();
  EXPECT_TRUE(in_flight.ok()) << in_flight.error_message();
  ASSERT_EQ(answer.scores_size(), 1);
  EXPECT_EQ(answer.scores(0).total(), 42);
  EXPECT_EQ(HealthStatus(channel), -1);  // stopped: nothing answers
}

}  // namespace
}  // namespace grpo
