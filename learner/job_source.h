// JobSource: what learner rank 0 needs from the coordinator (docs/design.md §2) — the next
// job, prompts for the workers to lease, acknowledgements of ingested groups, progress
// reports and the job's end. A small interface so the learner's loop can run against a
// fake in tests; NewCoordinatorJobSource is the gRPC one.
#ifndef GRPO_LEARNER_JOB_SOURCE_H_
#define GRPO_LEARNER_JOB_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/coordinator.grpc.pb.h"

namespace grpo {

class JobSource {
 public:
  virtual ~JobSource() = default;
  // A job with an empty job_id: nothing to run now.
  virtual absl::StatusOr<v1::Job> AcquireJob() = 0;
  // `skip_to_cursor` > 0 first moves the job's data cursor forward to it.
  virtual absl::Status RequestPrompts(const std::string& job_id, int count,
                                      int64_t min_policy_version, uint64_t skip_to_cursor) = 0;
  virtual absl::Status AckPrompts(const std::string& job_id,
                                  const std::vector<std::string>& prompt_ids) = 0;
  // Returns whether the user asked to cancel the job.
  virtual absl::StatusOr<bool> ReportProgress(const std::string& job_id,
                                              const v1::JobProgress& progress) = 0;
  virtual absl::Status FinishJob(const v1::FinishJobRequest& request) = 0;
};

// Over the coordinator's gRPC stub (borrowed). Every call has a deadline and is retried
// with backoff while the coordinator is UNAVAILABLE, for up to `retry_for`.
// `learner_address` is what workers dial for LearnerService; `worker_id` names us.
std::unique_ptr<JobSource> NewCoordinatorJobSource(
    v1::CoordinatorService::StubInterface* stub, std::string worker_id,
    std::string learner_address, std::chrono::milliseconds retry_for = std::chrono::minutes(2));

}  // namespace grpo

#endif  // GRPO_LEARNER_JOB_SOURCE_H_
