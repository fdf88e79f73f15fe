// IngestBuffer: learner rank 0's bounded buffer of scored groups (docs/design.md §2). Rollout
// workers' SubmitGroups calls put groups in; the training loop takes B at a time.
//
// - All or nothing: a submission is taken whole or not at all (RESOURCE_EXHAUSTED when
//   the buffer cannot hold it; the worker backs off and sends it again).
// - Exactly once: a prompt id already taken in this job (buffered, trained or dropped) is
//   ignored and counted as a duplicate, so a reissued lease never trains twice.
// - Freshness: Take drops groups sampled with weights older than the caller's minimum.
// Thread-safe.
#ifndef GRPO_LEARNER_INGEST_BUFFER_H_
#define GRPO_LEARNER_INGEST_BUFFER_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpo/v1/learner.pb.h"
#include "rl/scored_group.h"

namespace grpo {

struct IngestCounters {
  int64_t accepted_groups = 0;
  int64_t duplicate_groups = 0;
  int64_t rejected_full = 0;          // submissions refused with RESOURCE_EXHAUSTED
  int64_t stale_groups_dropped = 0;   // older than Take's minimum version
  int64_t groups_taken = 0;
};

struct SubmitResult {
  int accepted = 0;
  int duplicates = 0;
};

class IngestBuffer {
 public:
  explicit IngestBuffer(size_t capacity) : capacity_(capacity) {}

  // Opens the buffer to `job_id`'s groups of `group_size` samples; forgets the last job.
  // `seen` restores the prompt ids taken before a checkpoint (a resumed job). With
  // `max_tokens` / `vocab_size` > 0, a sample longer than max_tokens (prompt + completion)
  // or holding a token id outside [0, vocab_size) is refused: the model could not take it.
  void StartJob(const std::string& job_id, int group_size,
                const std::vector<std::string>& seen = {}, int max_tokens = 0,
                int vocab_size = 0);
  // Every prompt id taken in this job (for checkpoints).
  std::vector<std::string> SeenIds() const;
  // Closes it: submissions get FAILED_PRECONDITION until the next StartJob.
  void EndJob();

  absl::StatusOr<SubmitResult> Submit(const std::vector<v1::ScoredGroupProto>& groups);

  // Drops groups older than `min_version`, then waits until `count` groups are buffered
  // or `deadline` passes. Returns `count` groups (oldest first), or none on timeout.
  std::vector<ScoredGroup> Take(int count, int64_t min_version, absl::Time deadline);

  // Prompt ids taken in (or offered again as duplicates: their first acknowledgement may
  // have been lost) since the last call, to acknowledge to the coordinator; and how
  // many groups went stale since the last call (to ask for replacements).
  std::vector<std::string> DrainNewIds();
  // Puts ids back after a failed acknowledgement, so the next drain sends them again.
  void ReturnIds(const std::vector<std::string>& ids);
  size_t capacity() const { return capacity_; }
  int64_t DrainStaleCount();

  IngestCounters counters() const;
  size_t size() const;

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::string job_id_ ABSL_GUARDED_BY(mu_);
  int group_size_ ABSL_GUARDED_BY(mu_) = 0;
  int max_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int vocab_size_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<ScoredGroup> groups_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> new_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> resend_ ABSL_GUARDED_BY(mu_);  // scratch of one Submit
  int64_t new_stale_ ABSL_GUARDED_BY(mu_) = 0;
  IngestCounters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace grpo

#endif  // GRPO_LEARNER_INGEST_BUFFER_H_
