// The coordinator's state file (grpo_coordinator --state_dir): one CoordinatorState proto
// in a small envelope, replaced atomically.
//
// Contract:
//  - SaveCoordinatorState writes `<path>.tmp`, fsyncs it, renames it over `path` and
//    fsyncs the directory. When it returns OK the new state survives a crash or power
//    loss; when it fails, `path` still holds the previous complete state (a crash at any
//    point leaves either the old file or the new one, never a mix).
//  - LoadCoordinatorState returns nullopt when `path` does not exist (a fresh start), the
//    state when the file is intact, and an error naming `path` otherwise: DATA_LOSS for a
//    file that is not a whole, checksummed state (truncated, overwritten, not ours), and
//    FAILED_PRECONDITION for a state from a newer format. It never modifies the file, so
//    whoever refuses to start over it leaves the evidence in place.
//
// The envelope exists because a protobuf parser accepts many byte strings (a truncated
// file can parse as a smaller, valid state): "GRPOCST1", the payload size and its
// FNV-1a 64 checksum (both 8 bytes, little-endian), then the serialized proto.
#ifndef GRPO_COORDINATOR_STATE_STORE_H_
#define GRPO_COORDINATOR_STATE_STORE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/coordinator_state.pb.h"

namespace grpo {

// CoordinatorState.format written by this build.
inline constexpr uint32_t kCoordinatorStateFormat = 1;

absl::Status SaveCoordinatorState(const std::string& path, const v1::CoordinatorState& state);
absl::StatusOr<std::optional<v1::CoordinatorState>> LoadCoordinatorState(
    const std::string& path);

}  // namespace grpo

#endif  // GRPO_COORDINATOR_STATE_STORE_H_
