// grpc.health.v1.Health/Check through a generic stub, so tests need no health proto: the
// empty request is HealthCheckRequest{}, and the answer's status is field 1 (bytes 08 NN).
#ifndef GRPO_TESTS_TESTING_HEALTH_CHECK_H_
#define GRPO_TESTS_TESTING_HEALTH_CHECK_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"

namespace grpo::testing_util {

// SERVING = 1, NOT_SERVING = 2; -1 when the call failed or the answer is not one.
inline int HealthStatus(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub generic(channel);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
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

}  // namespace grpo::testing_util

#endif  // GRPO_TESTS_TESTING_HEALTH_CHECK_H_
