// CoordinatorServiceImpl: the control plane of docs/design.md §2, grpo.v1.CoordinatorService.
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
// Thread-safe: one mutex guards everything.
//
// Persistence (Options::state_dir; empty = in memory only): every change to the jobs or
// the running job's prompt bookkeeping marks the state dirty, and a writer thread saves
// the latest snapshot to <state_dir>/state.pb (coordinator/state_store.h: atomic, fsynced)
// without holding up the RPCs; concurrent changes share one write. SubmitJob, CancelJob,
// AcquireJob, RequestPrompts, AckPrompts and FinishJob additionally wait for the save that
// covers their change before answering, so their OK means "durable": the job queue, the
// data cursor and the acked set, which keep a prompt from being trained twice, never go
// back after a crash. LeasePrompts and ReportProgress do not wait: their leases are
// reissued on load anyway and the next report supersedes the progress. If a save fails,
// the change stays in memory (nothing is rolled back; the next change retries the save
// with the whole state) and a waiting RPC answers INTERNAL saying so.
// On Create() an existing state.pb is loaded: jobs keep their states, the running job its
// cursor and acked prompts, its leases go back to the front of the waiting queue (counted
// as reissues). Workers are not persisted: they get NOT_FOUND and register again.
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
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "data/dataset.h"
#include "grpo/v1/coordinator.grpc.pb.h"
#include "grpo/v1/coordinator_state.pb.h"
#include "metrics/registry.h"
#include "rpc/security.h"

namespace grpo {

struct CoordinatorOptions {
  int heartbeat_interval_ms = 1000;  // told to workers at Register
  int heartbeat_timeout_ms = 5000;   // silent this long: dropped, leases reissued
  int lease_seconds = 120;
  int max_prompts_per_lease = 64;  // caps LeasePrompts.max_prompts
  int retry_after_ms = 200;        // told to callers when there is no work
  // Unix milliseconds; the system clock when empty.
  std::function<int64_t()> now_ms;
  // Where the state is kept across restarts (created if missing); empty: memory only.
  std::string state_dir;
  // Every call's token is checked against it (all calls pass when it has none).
  CallAuthorizer authorizer;
  // Bounds on what callers can make the coordinator keep (RESOURCE_EXHAUSTED past them).
  int max_queued_jobs = 256;    // jobs QUEUED at once
  int max_workers = 4096;       // registered processes at once
};

class CoordinatorServiceImpl final : public v1::CoordinatorService::Service {
 public:
  // With a state_dir: loads <state_dir>/state.pb if there is one and saves the resumed
  // state before returning. Fails (naming the file) if the directory cannot be created
  // or written, or the file is unreadable, corrupt or inconsistent; the file is left as
  // it was, never replaced by an empty state.
  static absl::StatusOr<std::unique_ptr<CoordinatorServiceImpl>> Create(
      CoordinatorOptions options = {});
  // Saves what is not saved yet (state_dir only) and stops the writer. Destroy the
  // service after the server has stopped, so no RPC is left waiting on a save.
  ~CoordinatorServiceImpl() override;

  // <state_dir>/state.pb; empty without a state_dir.
  const std::string& state_path() const { return state_path_; }

  // Ends every WatchJob stream (UNAVAILABLE) and refuses new ones. Idempotent.
  void Shutdown();

  // Exports the queue, the registry and the lease bookkeeping to `registry`, read at each
  // scrape: grpo_coordinator_jobs{state}, grpo_coordinator_workers{role},
  // grpo_coordinator_prompts_waiting, grpo_coordinator_leases_open and the totals
  // grpo_coordinator_{leases_granted,lease_reissues,prompts_acked,duplicate_acks}_total.
  // The service must outlive the registry's scrapes.
  void ExportMetrics(metrics::Registry* registry);

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
  grpc::Status FailPrompts(grpc::ServerContext* context, const v1::FailPromptsRequest* request,
                           v1::FailPromptsResponse* response) override;
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
    absl::flat_hash_set<uint64_t> acked;  // cursors of acked prompt ids; kept to the end
  };

  explicit CoordinatorServiceImpl(CoordinatorOptions options);

  int64_t Now() const;
  JobEntry* FindJob(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  JobEntry* Running() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `cursor` out of its lease or the waiting queue (it is done); returns the minimum
  // policy version it was to be sampled with (0 if it was in neither).
  int64_t Withdraw(JobEntry* entry, uint64_t cursor) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The data cursors of `ids` ("train-N", each handed out for `entry`); INVALID_ARGUMENT
  // naming the first that is not.
  absl::StatusOr<std::vector<uint64_t>> PromptCursors(
      const JobEntry& entry, const google::protobuf::RepeatedPtrField<std::string>& ids) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Changed(JobEntry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops workers silent past the timeout and puts expired or orphaned leases back at
  // the front of the waiting queue.
  void Sweep(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reissues the leases of `entry` for which `expired` holds.
  void ReissueLeases(JobEntry* entry, const std::function<bool(const Lease&)>& expired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndJob(JobEntry* entry, v1::JobState state, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // "w-N" / "l-N", with the incarnation when persistent ("w-3-N") so that ids from before
  // a restart, still held by workers that have not noticed it, never name new ones.
  std::string NewId(absl::string_view prefix, int64_t n) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Persistence (no-ops without a state_dir).
  // Records that the persisted state changed; the writer thread will save it.
  void MarkDirty() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For the RPCs whose OK means durable: if the state changed since `dirty_before` (the
  // dirty version when the RPC began), waits until a save covers it. INTERNAL if that
  // save failed; the change is kept in memory either way.
  grpc::Status WaitDurable(int64_t dirty_before) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::CoordinatorState Snapshot() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rebuilds jobs and the running job's prompt pool from a loaded state.
  absl::Status Restore(const v1::CoordinatorState& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriterLoop();

  const CoordinatorOptions options_;
  const std::string state_path_;
  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // signalled with every JobEntry::changes bump and at Shutdown
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t incarnation_ ABSL_GUARDED_BY(mu_) = 0;  // 0: not persistent
  // Dirty versions: bumped by MarkDirty; the writer saves snapshots of them in order.
  absl::CondVar persist_cv_;  // dirty_version_ bumped, a save done, or the writer stopping
  int64_t dirty_version_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t attempted_version_ ABSL_GUARDED_BY(mu_) = 0;  // newest snapshot a save was tried on
  absl::Status attempt_status_ ABSL_GUARDED_BY(mu_);    // how that save went
  int64_t saved_version_ ABSL_GUARDED_BY(mu_) = 0;      // newest snapshot saved
  bool stop_writer_ ABSL_GUARDED_BY(mu_) = false;
  bool writer_done_ ABSL_GUARDED_BY(mu_) = false;  // no save will be tried any more
  std::thread writer_;
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
