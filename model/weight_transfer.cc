#include "model/weight_transfer.h"

#include "absl/strings/str_cat.h"

namespace grpo {

uint64_t Fnv1a64(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::vector<v1::WeightChunk> ChunkPayload(const std::string& payload, int64_t version,
                                          size_t chunk_bytes) {
  if (chunk_bytes == 0) chunk_bytes = kWeightChunkBytes;
  const int total = static_cast<int>(std::max<size_t>(1, (payload.size() + chunk_bytes - 1) / chunk_bytes));
  const uint64_t checksum = Fnv1a64(payload);
  std::vector<v1::WeightChunk> chunks;
  for (int i = 0; i < total; ++i) {
    v1::WeightChunk c;
    c.set_version(version);
    c.set_index(i);
    c.set_total_chunks(total);
    c.set_total_bytes(payload.size());
    c.set_checksum(checksum);
    c.set_data(payload.substr(static_cast<size_t>(i) * chunk_bytes, chunk_bytes));
    chunks.push_back(std::move(c));
  }
  return chunks;
}

absl::Status WeightAssembler::Add(const v1::WeightChunk& c) {
  if (c.total_chunks() < 1 || c.index() < 0 || c.index() >= c.total_chunks())
    return absl::InvalidArgumentError(absl::StrCat("weight chunk index ", c.index(), " of ",
                                                   c.total_chunks(), " is out of range"));
  if (c.version() < 0)
    return absl::InvalidArgumentError(absl::StrCat("weight chunk version ", c.version(), " < 0"));
  if (chunks_.empty()) {
    // No chunk can be larger than a gRPC message, so the announced size is bounded by the
    // chunk count: a peer cannot make us buffer more than it announced, nor announce more
    // than it could send.
    if (c.total_bytes() > static_cast<uint64_t>(c.total_chunks()) * kMaxWeightChunkMessage)
      return absl::InvalidArgumentError(absl::StrCat(
          "weight transfer of ", c.total_bytes(), " bytes in ", c.total_chunks(),
          " chunks: more than a chunk can carry"));
    version_ = c.version();
    total_chunks_ = c.total_chunks();
    total_bytes_ = c.total_bytes();
    checksum_ = c.checksum();
  } else if (c.version() != version_ || c.total_chunks() != total_chunks_ ||
             c.total_bytes() != total_bytes_ || c.checksum() != checksum_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight chunk ", c.index(), " of version ", c.version(),
        " does not match the transfer in progress (version ", version_, ")"));
  }
  if (received_bytes_ + c.data().size() > total_bytes_)
    return absl::InvalidArgumentError(absl::StrCat(
        "weight chunk ", c.index(), " brings the transfer past the ", total_bytes_,
        " bytes announced"));
  if (!chunks_.emplace(c.index(), c.data()).second)
    return absl::InvalidArgumentError(absl::StrCat("weight chunk ", c.index(), " repeated"));
  received_bytes_ += c.data().size();
  return absl::OkStatus();
}

bool WeightAssembler::complete() const {
  return total_chunks_ > 0 && static_cast<int>(chunks_.size()) == total_chunks_;
}

absl::StatusOr<std::string> WeightAssembler::Take() {
  const bool was_complete = complete();
  std::string payload;
  for (const auto& [index, data] : chunks_) payload += data;
  const uint64_t expected_bytes = total_bytes_, expected_sum = checksum_;
  const size_t received = chunks_.size();
  const int total = total_chunks_;
  *this = WeightAssembler();
  if (!was_complete)
    return absl::FailedPreconditionError(
        absl::StrCat("weight transfer incomplete: ", received, " of ", total, " chunks"));
  if (payload.size() != expected_bytes)
    return absl::DataLossError(absl::StrCat("weight transfer has ", payload.size(),
                                            " bytes, expected ", expected_bytes));
  if (Fnv1a64(payload) != expected_sum)
    return absl::DataLossError("weight transfer checksum mismatch; weights not applied");
  return payload;
}

}  // namespace grpo
