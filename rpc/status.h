// absl::Status <-> grpc::Status at the RPC boundary: the code and message carry over
// unchanged, so an INVALID_ARGUMENT naming a field reaches the caller as it was written.
#ifndef GRPO_RPC_STATUS_H_
#define GRPO_RPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace grpo {

grpc::Status ToGrpcStatus(const absl::Status& status);
// `what` names the call ("coordinator LeasePrompts") in the message.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view what = "");

}  // namespace grpo

#endif  // GRPO_RPC_STATUS_H_
