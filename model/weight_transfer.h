// Weight transfer in chunks (docs/design.md §7): ChunkPayload cuts a flat payload
// (model/flat_weights.h) into WeightChunk messages under the gRPC limit, each with its own
// checksum; WeightAssembler collects them on the receiving side, from any number of
// streams at once, straight into one buffer it reuses from version to version, and hands
// the payload over only when every chunk arrived, all agree on version and totals, and
// every checksum matches. A corrupt or incomplete transfer is an error and the receiver
// keeps its current weights. Torch-free.
#ifndef GRPO_MODEL_WEIGHT_TRANSFER_H_
#define GRPO_MODEL_WEIGHT_TRANSFER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpo/v1/weights.pb.h"

namespace grpo {

// Under gRPC's default 4 MiB message limit with room for the other fields.
inline constexpr size_t kWeightChunkBytes = (4 << 20) - (64 << 10);
// The largest WeightChunk message a receiver takes (its gRPC receive limit), and so the
// largest chunk_bytes it accepts.
inline constexpr uint64_t kMaxWeightChunkMessage = 8 << 20;
// The most parallel StreamWeights streams one transfer may use.
inline constexpr int kMaxWeightStreams = 64;
// The largest payload a receiver buffers by default: a 7B model in float32 is ~30 GB.
inline constexpr uint64_t kMaxWeightBytes = uint64_t{64} << 30;

uint64_t Fnv1a64(std::string_view bytes);
// A fast 64-bit checksum (four independent multiply-rotate lanes over 8-byte words, ~10
// GB/s): for catching corrupt transfers, not an adversary.
uint64_t Checksum64(std::string_view bytes);
// The payload's checksum from its chunks' checksums, in index order.
uint64_t CombineChecksums(const std::vector<uint64_t>& chunk_checksums);

// max(1, ceil(total_bytes / chunk_bytes)).
int ChunkCount(uint64_t total_bytes, uint64_t chunk_bytes);
// Checksum64 of every chunk of `payload`.
std::vector<uint64_t> ChunkChecksums(std::string_view payload, size_t chunk_bytes);

// All chunks of a payload (tests, fuzzers; the learner builds them one at a time).
std::vector<v1::WeightChunk> ChunkPayload(std::string_view payload, int64_t version,
                                          size_t chunk_bytes = kWeightChunkBytes,
                                          v1::WeightDtype dtype = v1::WEIGHT_DTYPE_FLOAT32);

// Thread-safe: streams Add their chunks concurrently; each chunk is verified and copied
// into place outside the lock.
class WeightAssembler {
 public:
  explicit WeightAssembler(uint64_t max_bytes = kMaxWeightBytes);

  // INVALID_ARGUMENT for a chunk that contradicts the ones before it (version, totals,
  // chunk size, checksum, dtype), an index out of range or repeated, a negative version,
  // a size over max_bytes or not the one its index implies; DATA_LOSS for data that does
  // not match its data_checksum; RESOURCE_EXHAUSTED if the buffer cannot be allocated.
  // On any error the assembler keeps what it had.
  absl::Status Add(const v1::WeightChunk& chunk);
  bool complete() const;
  int64_t version() const;
  v1::WeightDtype dtype() const;
  // The payload once complete and verified: FAILED_PRECONDITION if chunks are missing,
  // DATA_LOSS if the chunk checksums do not make the announced one. Resets the
  // assembler either way; the bytes stay valid until the next Add.
  absl::StatusOr<std::string_view> Take();
  void Reset();

 private:
  const uint64_t max_bytes_;
  mutable absl::Mutex mu_;
  // The receive buffer, reused while payloads fit: no zero-filling, no second copy.
  std::unique_ptr<char[]> buffer_ ABSL_GUARDED_BY(mu_);
  uint64_t capacity_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t version_ ABSL_GUARDED_BY(mu_) = -1;
  int total_chunks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t total_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t chunk_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t checksum_ ABSL_GUARDED_BY(mu_) = 0;
  v1::WeightDtype dtype_ ABSL_GUARDED_BY(mu_) = v1::WEIGHT_DTYPE_UNSPECIFIED;
  std::vector<uint64_t> chunk_checksums_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> claimed_ ABSL_GUARDED_BY(mu_);  // a stream is copying it in, or has
  int landed_ ABSL_GUARDED_BY(mu_) = 0;             // chunks copied in
};

}  // namespace grpo

#endif  // GRPO_MODEL_WEIGHT_TRANSFER_H_
