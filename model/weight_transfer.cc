#include "model/weight_transfer.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "base/parallel.h"

namespace grpo {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ull;

uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
uint64_t Mix(uint64_t lane, uint64_t word) { return Rotl(lane + word * kPrime2, 31) * kPrime1; }

uint64_t Word(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

}  // namespace

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

uint64_t Checksum64(std::string_view bytes) {
  const char* p = bytes.data();
  const size_t n = bytes.size();
  // Four lanes, so the multiplies of consecutive words do not wait on each other.
  uint64_t lane[4] = {kPrime1 + kPrime2, kPrime2, 0, 0 - kPrime1};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) lane[k] = Mix(lane[k], Word(p + i + 8 * k));
  }
  uint64_t h = n * kPrime3;
  for (int k = 0; k < 4; ++k) h = Mix(h, lane[k]);
  for (; i + 8 <= n; i += 8) h = Mix(h, Word(p + i));
  for (; i < n; ++i) h = Mix(h, static_cast<unsigned char>(p[i]) + 1);
  // Final avalanche: every input bit reaches every output bit.
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

uint64_t CombineChecksums(const std::vector<uint64_t>& chunk_checksums) {
  return Checksum64(std::string_view(reinterpret_cast<const char*>(chunk_checksums.data()),
                                     chunk_checksums.size() * sizeof(uint64_t)));
}

int ChunkCount(uint64_t total_bytes, uint64_t chunk_bytes) {
  if (chunk_bytes == 0) return 0;
  return static_cast<int>(std::max<uint64_t>(1, (total_bytes + chunk_bytes - 1) / chunk_bytes));
}

std::vector<uint64_t> ChunkChecksums(std::string_view payload, size_t chunk_bytes) {
  std::vector<uint64_t> sums(ChunkCount(payload.size(), chunk_bytes));
  // Chunks are independent: a model's worth of them over the cores (each thread a run of
  // at least 8 MB).
  const size_t per_thread =
      std::max<size_t>(1, (size_t{8} << 20) / std::max<size_t>(chunk_bytes, 1));
  ParallelFor(sums.size(), per_thread, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      sums[i] = Checksum64(payload.substr(i * chunk_bytes, chunk_bytes));
  });
  return sums;
}

std::vector<v1::WeightChunk> ChunkPayload(std::string_view payload, int64_t version,
                                          size_t chunk_bytes, v1::WeightDtype dtype) {
  if (chunk_bytes == 0) chunk_bytes = kWeightChunkBytes;
  const std::vector<uint64_t> sums = ChunkChecksums(payload, chunk_bytes);
  const uint64_t checksum = CombineChecksums(sums);
  std::vector<v1::WeightChunk> chunks;
  for (size_t i = 0; i < sums.size(); ++i) {
    v1::WeightChunk c;
    c.set_version(version);
    c.set_index(static_cast<int>(i));
    c.set_total_chunks(static_cast<int>(sums.size()));
    c.set_total_bytes(payload.size());
    c.set_chunk_bytes(chunk_bytes);
    c.set_checksum(checksum);
    c.set_dtype(dtype);
    c.set_data_checksum(sums[i]);
    const std::string_view data = payload.substr(i * chunk_bytes, chunk_bytes);
    c.set_data(data.data(), data.size());
    chunks.push_back(std::move(c));
  }
  return chunks;
}

WeightAssembler::WeightAssembler(uint64_t max_bytes) : max_bytes_(max_bytes) {}

absl::Status WeightAssembler::Add(const v1::WeightChunk& c) {
  if (c.version() < 0)
    return absl::InvalidArgumentError(absl::StrCat("weight chunk version ", c.version(), " < 0"));
  if (c.chunk_bytes() < 1 || c.chunk_bytes() > kMaxWeightChunkMessage)
    return absl::InvalidArgumentError(
        absl::StrCat("weight chunk_bytes ", c.chunk_bytes(), " is not in [1, ",
                     kMaxWeightChunkMessage, "]"));
  if (c.total_bytes() > max_bytes_)
    return absl::InvalidArgumentError(absl::StrCat("weight transfer of ", c.total_bytes(),
                                                   " bytes: over the ", max_bytes_, " allowed"));
  if (c.total_chunks() != ChunkCount(c.total_bytes(), c.chunk_bytes()))
    return absl::InvalidArgumentError(absl::StrCat(
        "weight transfer of ", c.total_bytes(), " bytes in chunks of ", c.chunk_bytes(),
        " is not ", c.total_chunks(), " chunks"));
  if (c.index() < 0 || c.index() >= c.total_chunks())
    return absl::InvalidArgumentError(absl::StrCat("weight chunk index ", c.index(), " of ",
                                                   c.total_chunks(), " is out of range"));
  const uint64_t offset = static_cast<uint64_t>(c.index()) * c.chunk_bytes();
  const uint64_t expected_size = std::min<uint64_t>(c.chunk_bytes(), c.total_bytes() - offset);
  if (c.data().size() != expected_size)
    return absl::InvalidArgumentError(absl::StrCat(
        "weight chunk ", c.index(), " has ", c.data().size(), " bytes, its place in the ",
        c.total_bytes(), " announced holds ", expected_size));
  // Verified before it is claimed, so a corrupt chunk can be sent again.
  if (Checksum64(c.data()) != c.data_checksum())
    return absl::DataLossError(
        absl::StrCat("weight chunk ", c.index(), " of version ", c.version(),
                     " does not match its checksum; weights not applied"));
  char* destination;
  {
    absl::MutexLock lock(&mu_);
    if (total_chunks_ == 0) {
      if (c.total_bytes() > capacity_) {
        std::unique_ptr<char[]> bigger(new (std::nothrow) char[c.total_bytes()]);
        if (bigger == nullptr)
          return absl::ResourceExhaustedError(absl::StrCat(
              "cannot allocate ", c.total_bytes(), " bytes for a weight transfer"));
        buffer_ = std::move(bigger);
        capacity_ = c.total_bytes();
      }
      version_ = c.version();
      total_chunks_ = c.total_chunks();
      total_bytes_ = c.total_bytes();
      chunk_bytes_ = c.chunk_bytes();
      checksum_ = c.checksum();
      dtype_ = c.dtype();
      chunk_checksums_.assign(total_chunks_, 0);
      claimed_.assign(total_chunks_, false);
      landed_ = 0;
    } else if (c.version() != version_ || c.total_chunks() != total_chunks_ ||
               c.total_bytes() != total_bytes_ || c.chunk_bytes() != chunk_bytes_ ||
               c.checksum() != checksum_ || c.dtype() != dtype_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weight chunk ", c.index(), " of version ", c.version(),
          " does not match the transfer in progress (version ", version_, ")"));
    }
    if (claimed_[c.index()])
      return absl::InvalidArgumentError(absl::StrCat("weight chunk ", c.index(), " repeated"));
    claimed_[c.index()] = true;
    chunk_checksums_[c.index()] = c.data_checksum();
    destination = buffer_.get() + offset;
  }
  // Chunks own disjoint ranges of the buffer: streams copy in at the same time.
  if (!c.data().empty()) std::memcpy(destination, c.data().data(), c.data().size());
  absl::MutexLock lock(&mu_);
  ++landed_;
  return absl::OkStatus();
}

bool WeightAssembler::complete() const {
  absl::MutexLock lock(&mu_);
  return total_chunks_ > 0 && landed_ == total_chunks_;
}

int64_t WeightAssembler::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

v1::WeightDtype WeightAssembler::dtype() const {
  absl::MutexLock lock(&mu_);
  return dtype_;
}

void WeightAssembler::Reset() {
  absl::MutexLock lock(&mu_);
  version_ = -1;
  total_chunks_ = 0;
  total_bytes_ = chunk_bytes_ = checksum_ = 0;
  dtype_ = v1::WEIGHT_DTYPE_UNSPECIFIED;
  chunk_checksums_.clear();
  claimed_.clear();
  landed_ = 0;
}

absl::StatusOr<std::string_view> WeightAssembler::Take() {
  int landed, total;
  uint64_t expected, bytes;
  std::vector<uint64_t> sums;
  const char* data;
  {
    absl::MutexLock lock(&mu_);
    landed = landed_;
    total = total_chunks_;
    expected = checksum_;
    bytes = total_bytes_;
    sums.swap(chunk_checksums_);
    data = buffer_.get();
  }
  Reset();
  if (total == 0 || landed != total)
    return absl::FailedPreconditionError(
        absl::StrCat("weight transfer incomplete: ", landed, " of ", total, " chunks"));
  if (CombineChecksums(sums) != expected)
    return absl::DataLossError("weight transfer checksum mismatch; weights not applied");
  return std::string_view(data, bytes);
}

}  // namespace grpo
