// GrpcServer's drain, as every grpo_* service stops on SIGTERM: health turns NOT_SERVING
// while calls are still served (the lame-duck period), the call in flight finishes with
// its answer, and only then does the server stop taking calls.
#include "rpc/grpc_server.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "grpo/v1/reward.grpc.pb.h"

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

// grpc.health.v1.Health/Check through a generic stub: the empty request is no bytes, and
// the answer's status is field 1 (SERVING = 1, NOT_SERVING = 2). -1 if the call failed.
int Health(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub generic(channel);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  absl::Notification done;
  grpc::Status status;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) {
                      status = s;
                      done.Notify();
                    });
  done.WaitForNotification();
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const auto& slice : slices)
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : -1;
}

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
  ASSERT_EQ(Health(channel), 1);

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
  while (health == 1 && std::chrono::steady_clock::now() < give_up) health = Health(channel);
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
  EXPECT_EQ(Health(channel), -1);  // stopped: nothing answers
}

}  // namespace
}  // namespace grpo
