// Weight transfer in chunks (docs/design.md §7): ChunkPayload cuts a serialized policy
// (Transformer::SaveToString) into WeightChunk messages under the gRPC limit;
// WeightAssembler collects them on the receiving side and hands the payload over only when
// every chunk arrived, all agree on version and totals, and the checksum matches. A
// corrupt or incomplete transfer is an error and the receiver keeps its current weights.
// Torch-free. WeightAssembler is not thread-safe.
#ifndef GRPO_MODEL_WEIGHT_TRANSFER_H_
#define GRPO_MODEL_WEIGHT_TRANSFER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/weights.pb.h"

namespace grpo {

// Under gRPC's default 4 MiB message limit with room for the other fields.
inline constexpr size_t kWeightChunkBytes = (4 << 20) - (64 << 10);
// The largest WeightChunk message a receiver takes (its gRPC receive limit).
inline constexpr uint64_t kMaxWeightChunkMessage = 8 << 20;

uint64_t Fnv1a64(const std::string& bytes);

std::vector<v1::WeightChunk> ChunkPayload(const std::string& payload, int64_t version,
                                          size_t chunk_bytes = kWeightChunkBytes);

class WeightAssembler {
 public:
  // INVALID_ARGUMENT for a chunk that contradicts the ones before it (version, totals,
  // checksum), an index out of range or a repeated index, a negative version, or data past
  // the announced size (itself bounded by the chunk count); the assembler keeps what it had.
  absl::Status Add(const v1::WeightChunk& chunk);
  bool complete() const;
  // The payload once complete and verified: FAILED_PRECONDITION if chunks are missing,
  // DATA_LOSS if sizes or checksum do not match. Resets the assembler either way.
  absl::StatusOr<std::string> Take();
  int64_t version() const { return version_; }

 private:
  std::map<int, std::string> chunks_;
  int64_t version_ = -1;
  int total_chunks_ = 0;
  uint64_t total_bytes_ = 0;
  uint64_t checksum_ = 0;
  uint64_t received_bytes_ = 0;  // never more than total_bytes_
};

}  // namespace grpo

#endif  // GRPO_MODEL_WEIGHT_TRANSFER_H_
