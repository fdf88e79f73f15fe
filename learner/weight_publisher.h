// WeightPublisher: the policy weights of learner rank 0 that StreamWeights sends
// (docs/design.md §7), as flat payloads (model/flat_weights.h) cut into checksummed chunks.
// The learner publishes float32; each other dtype a worker asks for is converted once per
// version (the first ask converts, later versions convert at publish). Publishing swaps
// shared pointers, so a stream in flight keeps sending the version it started with; an
// older version stays reachable while any stream still holds it, so parallel streams of
// one transfer agree. The memory of a version no stream holds any more is kept for the
// next ones (SpareBuffer): fresh memory costs a page fault per 4 KiB on first touch,
// seconds per GB on some VMs. Thread-safe.
#ifndef GRPO_LEARNER_WEIGHT_PUBLISHER_H_
#define GRPO_LEARNER_WEIGHT_PUBLISHER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpo/v1/weights.pb.h"

namespace grpo {

// One version in one dtype, chunked at kWeightChunkBytes.
struct WeightPayload {
  v1::WeightDtype dtype = v1::WEIGHT_DTYPE_FLOAT32;
  std::string bytes;
  std::vector<uint64_t> chunk_checksums;
  uint64_t checksum = 0;  // CombineChecksums(chunk_checksums)
};

struct PublishedWeights {
  std::string job_id;
  int64_t version = -1;  // -1: nothing published
  std::shared_ptr<const WeightPayload> payload;
};

class WeightPublisher {
 public:
  WeightPublisher();
  ~WeightPublisher();

  // `flat` is Transformer::ExportFlat(float32); INVALID_ARGUMENT (and nothing changes) if
  // it does not parse as flat float32 weights.
  absl::Status Publish(const std::string& job_id, int64_t version, std::string flat);
  void Clear();
  // The newest version in float32 (job and version only are enough for most callers).
  PublishedWeights Latest() const;
  // `version` (-1: the newest) in `dtype`. FAILED_PRECONDITION before anything is
  // published, ABORTED for a version no longer held, INVALID_ARGUMENT for an unknown dtype.
  absl::StatusOr<PublishedWeights> Get(int64_t version, v1::WeightDtype dtype);
  // A buffer of a superseded `dtype` version to build the next one in (ExportFlat's
  // `reuse`), or an empty one.
  std::string SpareBuffer(v1::WeightDtype dtype);

  class Spares;

 private:
  std::shared_ptr<const WeightPayload> Chunked(v1::WeightDtype dtype, std::string bytes);

  using ByDtype = std::map<v1::WeightDtype, std::shared_ptr<const WeightPayload>>;

  mutable absl::Mutex mu_;
  std::string job_id_ ABSL_GUARDED_BY(mu_);
  int64_t version_ ABSL_GUARDED_BY(mu_) = -1;
  ByDtype latest_ ABSL_GUARDED_BY(mu_);
  // Superseded versions, alive while a stream holds them.
  std::map<int64_t, std::map<v1::WeightDtype, std::weak_ptr<const WeightPayload>>> older_
      ABSL_GUARDED_BY(mu_);
  // Dtypes workers have asked for: converted at every publish from then on.
  std::set<v1::WeightDtype> wanted_ ABSL_GUARDED_BY(mu_);
  // One conversion at a time, outside mu_ (a 0.5B model takes ~0.2 s on two cores).
  absl::Mutex convert_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // Shared with every payload's deleter, which hands its bytes back.
  const std::shared_ptr<Spares> spares_;
};

}  // namespace grpo

#endif  // GRPO_LEARNER_WEIGHT_PUBLISHER_H_
