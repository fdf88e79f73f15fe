// Fuzzes weight-chunk assembly (model/weight_transfer.h): what a rollout worker does with
// the WeightChunk stream a learner (or anything that reached its channel) sends.
//
// The input drives a sequence of operations on one WeightAssembler: Add of a chunk with
// fields chosen by the input (any version, index, totals, chunk size, checksums and data)
// or of chunks of a well-formed transfer (ChunkPayload of bytes from the input) in any
// order, repeated, with a field or a data byte changed (and its chunk checksum forged or
// not); and Take.
// Checks, besides "no crash, no sanitizer report" (docs/design.md §7: a corrupt transfer
// leaves the previous weights in place):
//   - Add fails only with INVALID_ARGUMENT or DATA_LOSS, Take only with
//     FAILED_PRECONDITION or DATA_LOSS, and Take always leaves an empty assembler behind;
//   - a payload Take returns is complete and has the size and checksum that the first
//     chunk accepted announced (no mix of transfers, no corrupt bytes get through);
//   - all chunks of a well-formed transfer, in any order and with repeats, into an empty
//     assembler give back exactly its payload.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/weights.pb.h"
#include "model/weight_transfer.h"

namespace {

// Small, so that announced sizes are allocated for real and the sanitizer sees every byte.
constexpr uint64_t kMaxBytes = 1 << 16;

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "weight_chunk_fuzzer: %s\n%s\n", what, detail.c_str());
  std::abort();
}

// The assembler under test, with what the first chunk it accepted since it was last
// empty announced: the transfer any payload it returns must match.
struct Transfer {
  grpo::WeightAssembler assembler{kMaxBytes};
  int accepted = 0;  // chunks since it was last empty
  int announced_chunks = 0;
  uint64_t announced_bytes = 0;
  uint64_t announced_checksum = 0;
  uint64_t announced_chunk_bytes = 0;
};

void Add(Transfer& t, const grpo::v1::WeightChunk& chunk) {
  const absl::Status status = t.assembler.Add(chunk);
  if (status.ok() && t.accepted++ == 0) {
    t.announced_chunks = chunk.total_chunks();
    t.announced_bytes = chunk.total_bytes();
    t.announced_checksum = chunk.checksum();
    t.announced_chunk_bytes = chunk.chunk_bytes();
  } else if (!status.ok() && status.code() != absl::StatusCode::kInvalidArgument &&
             status.code() != absl::StatusCode::kDataLoss) {
    Fail("Add: unexpected status code", status.ToString());
  }
  if (t.accepted > t.announced_chunks) Fail("Add took more chunks than announced", "");
  if (t.assembler.complete() != (t.accepted > 0 && t.accepted == t.announced_chunks))
    Fail("complete() disagrees with the chunks accepted", "");
}

void Take(Transfer& t) {
  const bool complete = t.assembler.complete();
  absl::StatusOr<std::string_view> payload = t.assembler.Take();
  t.accepted = 0;
  if (t.assembler.version() != -1 || t.assembler.complete())
    Fail("Take did not reset the assembler", "");
  if (payload.ok()) {
    if (!complete) Fail("Take returned the payload of an incomplete transfer", "");
    if (payload->size() != t.announced_bytes ||
        grpo::CombineChecksums(grpo::ChunkChecksums(*payload, t.announced_chunk_bytes)) !=
            t.announced_checksum)
      Fail("Take returned a payload that is not the announced one", "");
  } else if (payload.status().code() != absl::StatusCode::kFailedPrecondition &&
             payload.status().code() != absl::StatusCode::kDataLoss) {
    Fail("Take: unexpected status code", payload.status().ToString());
  }
}

grpo::v1::WeightChunk ArbitraryChunk(FuzzedDataProvider& in) {
  grpo::v1::WeightChunk c;
  c.set_version(in.ConsumeIntegralInRange<int64_t>(-2, 3));
  // Mostly small values, where Add's range checks and the completeness count meet.
  c.set_total_chunks(in.ConsumeBool() ? in.ConsumeIntegral<int32_t>()
                                      : in.ConsumeIntegralInRange<int32_t>(-1, 4));
  c.set_index(in.ConsumeBool() ? in.ConsumeIntegral<int32_t>()
                               : in.ConsumeIntegralInRange<int32_t>(-1, 4));
  c.set_total_bytes(in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>()
                                     : in.ConsumeIntegralInRange<uint64_t>(0, 64));
  c.set_chunk_bytes(in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>()
                                     : in.ConsumeIntegralInRange<uint64_t>(0, 64));
  c.set_checksum(in.ConsumeIntegral<uint64_t>());
  c.set_dtype(static_cast<grpo::v1::WeightDtype>(in.ConsumeIntegralInRange<int>(0, 3)));
  c.set_data(in.ConsumeRandomLengthString(64));
  // Mostly a checksum that matches the data, so the checks behind it are reached.
  c.set_data_checksum(in.ConsumeBool() ? grpo::Checksum64(c.data())
                                       : in.ConsumeIntegral<uint64_t>());
  return c;
}

// The chunks of a well-formed transfer (ChunkPayload of bytes from the input) in an order
// the input chooses.
std::vector<grpo::v1::WeightChunk> Shuffled(FuzzedDataProvider& in, std::string* payload) {
  *payload = in.ConsumeRandomLengthString(256);
  const size_t chunk_bytes = in.ConsumeIntegralInRange<size_t>(1, 64);
  const int64_t version = in.ConsumeIntegralInRange<int64_t>(0, 3);
  std::vector<grpo::v1::WeightChunk> chunks = grpo::ChunkPayload(*payload, version, chunk_bytes);
  for (size_t i = chunks.size(); i > 1; --i) {
    std::swap(chunks[i - 1], chunks[in.ConsumeIntegralInRange<size_t>(0, i - 1)]);
  }
  return chunks;
}

// Every chunk, some of them twice, into an empty assembler: exactly the payload back.
void RoundTrip(FuzzedDataProvider& in) {
  std::string payload;
  const std::vector<grpo::v1::WeightChunk> chunks = Shuffled(in, &payload);
  grpo::WeightAssembler assembler(kMaxBytes);
  for (const grpo::v1::WeightChunk& c : chunks) {
    if (absl::Status s = assembler.Add(c); !s.ok()) Fail("Add refused a good chunk", s.ToString());
    if (in.ConsumeBool() && assembler.Add(c).ok()) Fail("Add took a repeated chunk", "");
  }
  if (!assembler.complete()) Fail("every chunk added, but not complete", "");
  absl::StatusOr<std::string_view> taken = assembler.Take();
  if (!taken.ok()) Fail("a good transfer was refused", taken.status().ToString());
  if (*taken != payload) Fail("a good transfer came back changed", "");
}

// Some of the chunks of a well-formed transfer, some repeated, some with a field or a data
// byte changed, into the assembler under test (which may hold another transfer's chunks).
void Corrupted(Transfer& t, FuzzedDataProvider& in) {
  std::string payload;
  const std::vector<grpo::v1::WeightChunk> chunks = Shuffled(in, &payload);
  const size_t sends = in.ConsumeIntegralInRange<size_t>(0, chunks.size() + 2);
  for (size_t i = 0; i < sends; ++i) {
    grpo::v1::WeightChunk c = chunks[i % chunks.size()];
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
      case 4:  // and the chunk's checksum forged to match: only Take can tell
        if (!c.data().empty()) {
          (*c.mutable_data())[in.ConsumeIntegralInRange<size_t>(0, c.data().size() - 1)] ^=
              static_cast<char>(in.ConsumeIntegralInRange<int>(1, 255));
          if (in.ConsumeBool()) c.set_data_checksum(grpo::Checksum64(c.data()));
        }
        break;
      case 5:
        c.set_chunk_bytes(c.chunk_bytes() + in.ConsumeIntegralInRange<uint64_t>(1, 3));
        break;
      case 1:
        c.set_data(c.data() + in.ConsumeRandomLengthString(8));
        break;
      case 2:
        c.set_total_bytes(c.total_bytes() + in.ConsumeIntegralInRange<uint64_t>(1, 3));
        break;
      case 3:
        c.set_checksum(c.checksum() ^ in.ConsumeIntegralInRange<uint64_t>(1, UINT64_MAX));
        break;
      default:
        break;
    }
    Add(t, c);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Transfer t;
  for (int op = 0; op < 64 && in.remaining_bytes() > 0; ++op) {
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
      case 0:
        Add(t, ArbitraryChunk(in));
        break;
      case 1:
        Corrupted(t, in);
        break;
      case 2:
        RoundTrip(in);
        break;
      case 3:
        Take(t);
        break;
      case 4:
        (void)t.assembler.complete();
        break;
    }
  }
  Take(t);
  return 0;
}
