// CoordinatorServiceImpl: the control plane of DESIGN.md §2, grpo.v1.CoordinatorService.
//
// It owns the job queue (jobs run one at a time, in submission order), the worker
// registry, and for the running job its data cursor and prompt leases:
//   learner RequestPrompts  -> prompts move from the cursor to the waiting queue;
//   worker  LeasePrompts    -> waiting prompts become leases with ids and deadlines;
//   learner AckPrompts      -> a prompt's lease is done and the prompt is never handed
//                              out again; a second ack counts as a duplicate.
// A lease whose deadline passes, or whose worker stops heartbeating, goes back to the
// front of the waiting queue (lease_reissues) so the oldest work is redone first.
//
// Time comes from Options::now_ms so tests can expire leases and heartbeats without
// sleeping; expiry is checked lazily by every call that touches workers or leases.
// Every malformed request gets INVALID_ARGUMENT naming the field and changes nothing.
// State lives in memory only. Thread-safe: one mutex guards everything.
//
// WatchJob streams hold a handler thread each; call Shutdown() before stopping the
// gRPC server so they end instead of keeping the server's drain waiting.
#ifndef GRPO_COORDINATOR_COORDINATOR_SERVICE_H_
#define GRPO_COORDINATOR_COORDINATOR_SERVICE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/dataset.h"
#include "grpo/v1/coordinator.grpc.pb.h"

namespace grpo {

struct CoordinatorOptions {
  int heartbeat_interval_ms = 1000;  // told to workers at Register
  int heartbeat_timeout_ms = 5000;   // silent this long: dropped, leases reissued
  int lease_seconds = 120;
  int max_prompts_per_lease = 64;  // caps LeasePrompts.max_prompts
  int retry_after_ms = 200;        // told to callers when there is no work
  // Unix milliseconds; the system clock when empty.
  std::function<int64_t()> now_ms;
};

class CoordinatorServiceImpl final : public v1::CoordinatorService::Service {
 public:
  explicit CoordinatorServiceImpl(CoordinatorOptions options = {});
  ~CoordinatorServiceImpl() override;

  // Ends every WatchJob stream (UNAVAILABLE) and refuses new ones. Idempotent.
  void Shutdown();

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::Job>* writer) override;

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;

  grpc::Status LeasePrompts(grpc::ServerContext* context,
                            const v1::LeasePromptsRequest* request,
                            v1::LeasePromptsResponse* response) override;

  grpc::Status AcquireJob(grpc::ServerContext* context, const v1::AcquireJobRequest* request,
                          v1::AcquireJobResponse* response) override;
  grpc::Status RequestPrompts(grpc::ServerContext* context,
                              const v1::RequestPromptsRequest* request,
                              v1::RequestPromptsResponse* response) override;
  grpc::Status AckPrompts(grpc::ServerContext* context, const v1::AckPromptsRequest* request,
                          v1::AckPromptsResponse* response) override;
  grpc::Status ReportProgress(grpc::ServerContext* context,
                              const v1::ReportProgressRequest* request,
                              v1::ReportProgressResponse* response) override;
  grpc::Status FinishJob(grpc::ServerContext* context, const v1::FinishJobRequest* request,
                         v1::Job* response) override;

 private:
  struct Worker {
    v1::WorkerRole role = v1::WORKER_ROLE_UNSPECIFIED;
    std::string address;
    std::string name;
    int64_t last_heartbeat_ms = 0;
    int64_t policy_version = 0;
  };
  // A prompt waiting to be leased: its data cursor position and the weights it needs.
  struct Waiting {
    uint64_t cursor = 0;
    int64_t min_policy_version = 0;
  };
  struct Lease {
    uint64_t cursor = 0;
    int64_t min_policy_version = 0;
    std::string worker_id;
    int64_t deadline_ms = 0;
  };
  struct JobEntry {
    v1::Job job;          // what GetJob shows; job.spec() is resolved
    int64_t changes = 0;  // bumped on every mutation; WatchJob waits on it
    std::string learner_address;
    // Loaded when the job starts running, dropped when it ends.
    std::vector<Example> train;
    std::vector<size_t> order;
    uint64_t next_cursor = 0;
    std::deque<Waiting> waiting;
    absl::flat_hash_map<std::string, Lease> leases;           // by lease id, outstanding
    absl::flat_hash_map<uint64_t, std::string> lease_of;      // cursor -> lease id
    absl::flat_hash_set<std::string> acked;                   // prompt ids; kept to the end
  };

  int64_t Now() const;
  JobEntry* FindJob(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  JobEntry* Running() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Changed(JobEntry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops workers silent past the timeout and puts expired or orphaned leases back at
  // the front of the waiting queue.
  void Sweep(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reissues the leases of `entry` for which `expired` holds.
  void ReissueLeases(JobEntry* entry, const std::function<bool(const Lease&)>& expired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndJob(JobEntry* entry, v1::JobState state, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // signalled with every JobEntry::changes bump and at Shutdown
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  int64_t next_job_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_worker_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_lease_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::unique_ptr<JobEntry>> jobs_ ABSL_GUARDED_BY(mu_);  // submission order
  absl::flat_hash_map<std::string, JobEntry*> job_index_ ABSL_GUARDED_BY(mu_);
  std::string running_ ABSL_GUARDED_BY(mu_);  // at most one job runs
  absl::flat_hash_map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace grpo

#endif  // GRPO_COORDINATOR_COORDINATOR_SERVICE_H_
