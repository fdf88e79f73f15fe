#include "coordinator/coordinator_service.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "coordinator/state_store.h"
#include "data/job_data.h"
#include "jobspec/job_spec.h"
#include "rpc/status.h"

namespace grpo {
namespace {

// Request limits (docs/design.md §7): no call can make the coordinator hold without bound.
constexpr int kMaxRequestPrompts = 100000;     // per RequestPrompts
constexpr int kMaxWaitingPrompts = 1000000;    // waiting in one job's queue
constexpr int kMaxAckIds = 100000;             // per AckPrompts
constexpr size_t kMaxSpecBytes = 64 << 10;     // a job spec, serialized
constexpr size_t kMaxNameBytes = 256;          // a worker's name or address
constexpr size_t kMaxProgressBytes = 16 << 10; // a progress report, serialized
// WatchJob wakes at least this often to notice a cancelled client.
constexpr absl::Duration kWatchPoll = absl::Milliseconds(500);

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

grpc::Status Invalid(absl::string_view message) {
  return ToGrpcStatus(absl::InvalidArgumentError(message));
}

grpc::Status Exhausted(absl::string_view message) {
  return ToGrpcStatus(absl::ResourceExhaustedError(message));
}

// What AckPrompts and FailPrompts check of their request before looking at the job.
grpc::Status CheckPromptIdsRequest(const std::string& job_id, int prompt_ids) {
  if (job_id.empty()) return Invalid("job_id: required");
  if (prompt_ids > kMaxAckIds)
    return Exhausted(absl::StrCat("prompt_ids: ", prompt_ids, " ids, at most ", kMaxAckIds,
                                  " per call"));
  return grpc::Status::OK;
}

grpc::Status NoSuchJob(const std::string& job_id) {
  return ToGrpcStatus(absl::NotFoundError(absl::StrCat("job_id: no job \"", job_id, "\"")));
}

grpc::Status NotRunning(const v1::Job& job) {
  return ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
      "job ", job.job_id(), " is ", v1::JobState_Name(job.state()), ", not RUNNING")));
}

// Data errors name the spec field the file came from, so the user knows what to fix.
absl::Status DataError(const v1::JobSpec& spec, const absl::Status& status) {
  const v1::DatasetSpec& d = spec.dataset();
  std::string field = "dataset";
  if (d.kind() == "jsonl") {
    field = !d.eval_path().empty() && absl::StrContains(status.message(), d.eval_path()) &&
                    !absl::StrContains(status.message(), absl::StrCat(d.train_path(), ":"))
                ? "dataset.eval_path"
                : "dataset.train_path";
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", status.message()));
}

}  // namespace

CoordinatorServiceImpl::CoordinatorServiceImpl(CoordinatorOptions options)
    : options_(std::move(options)),
      state_path_(options_.state_dir.empty() ? "" : options_.state_dir + "/state.pb") {}

absl::StatusOr<std::unique_ptr<CoordinatorServiceImpl>> CoordinatorServiceImpl::Create(
    CoordinatorOptions options) {
  // Not make_unique: the constructor is private so that nobody skips the loading below.
  std::unique_ptr<CoordinatorServiceImpl> service(
      new CoordinatorServiceImpl(std::move(options)));
  if (service->state_path_.empty()) return service;

  std::error_code error;
  std::filesystem::create_directories(service->options_.state_dir, error);
  if (error) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--state_dir ", service->options_.state_dir, ": cannot create: ", error.message()));
  }
  absl::StatusOr<std::optional<v1::CoordinatorState>> loaded =
      LoadCoordinatorState(service->state_path_);
  if (!loaded.ok()) return loaded.status();
  {
    absl::MutexLock lock(&service->mu_);
    uint64_t incarnation = 1;
    if (loaded->has_value()) {
      if (absl::Status s = service->Restore(**loaded); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(service->state_path_, ": ", s.message(),
                                                   "; refusing to start over it"));
      }
      incarnation = (*loaded)->incarnation() + 1;
    }
    service->incarnation_ = incarnation;
    service->MarkDirty();
  }
  // Saved once before serving: the new incarnation must be on disk before any id made
  // with it is handed out, and an unwritable directory is better found now than at the
  // first SubmitJob.
  v1::CoordinatorState first;
  {
    absl::MutexLock lock(&service->mu_);
    first = service->Snapshot();
    service->attempted_version_ = service->saved_version_ = service->dirty_version_;
  }
  if (absl::Status s = SaveCoordinatorState(service->state_path_, first); !s.ok()) return s;
  service->writer_ = std::thread([raw = service.get()] { raw->WriterLoop(); });
  return service;
}

CoordinatorServiceImpl::~CoordinatorServiceImpl() {
  Shutdown();
  if (writer_.joinable()) {
    {
      absl::MutexLock lock(&mu_);
      stop_writer_ = true;
      persist_cv_.SignalAll();
    }
    writer_.join();
  }
}

void CoordinatorServiceImpl::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.SignalAll();
}

int64_t CoordinatorServiceImpl::Now() const {
  return options_.now_ms ? options_.now_ms() : absl::ToUnixMillis(absl::Now());
}

CoordinatorServiceImpl::JobEntry* CoordinatorServiceImpl::FindJob(const std::string& job_id) {
  auto it = job_index_.find(job_id);
  return it == job_index_.end() ? nullptr : it->second;
}

CoordinatorServiceImpl::JobEntry* CoordinatorServiceImpl::Running() {
  return running_.empty() ? nullptr : FindJob(running_);
}

void CoordinatorServiceImpl::Changed(JobEntry* entry) {
  ++entry->changes;
  changed_.SignalAll();
  MarkDirty();
}

std::string CoordinatorServiceImpl::NewId(absl::string_view prefix, int64_t n) const {
  return incarnation_ == 0 ? absl::StrCat(prefix, "-", n)
                           : absl::StrCat(prefix, "-", incarnation_, "-", n);
}

// --- Persistence.

void CoordinatorServiceImpl::MarkDirty() {
  if (state_path_.empty()) return;
  ++dirty_version_;
  persist_cv_.SignalAll();
}

grpc::Status CoordinatorServiceImpl::WaitDurable(int64_t dirty_before) {
  if (state_path_.empty() || dirty_version_ == dirty_before) return grpc::Status::OK;
  const int64_t version = dirty_version_;
  // Attempts are made in version order, so a failed attempt at or past `version` means
  // the save covering it failed (a later success would have advanced saved_version_).
  while (saved_version_ < version && !writer_done_ &&
         (attempted_version_ < version || attempt_status_.ok())) {
    persist_cv_.Wait(&mu_);
  }
  if (saved_version_ >= version) return grpc::Status::OK;
  const absl::Status why =
      writer_done_ ? absl::UnavailableError("the coordinator is stopping") : attempt_status_;
  // Nothing is rolled back: undoing a job start or an ack would be worse than keeping it
  // in memory, and the next save (any later change) writes the whole state again.
  return ToGrpcStatus(absl::InternalError(absl::StrCat(
      "the change was made but could not be saved to ", state_path_, " (", why.message(),
      "); it is lost if the coordinator restarts before a later save succeeds")));
}

v1::CoordinatorState CoordinatorServiceImpl::Snapshot() const {
  v1::CoordinatorState state;
  state.set_format(kCoordinatorStateFormat);
  state.set_incarnation(incarnation_);
  state.set_next_job_number(next_job_);
  for (const auto& owned : jobs_) {
    const JobEntry& entry = *owned;
    v1::JobRecord* record = state.add_jobs();
    *record->mutable_job() = entry.job;
    if (entry.job.job_id() != running_) continue;
    v1::RunningJobState* running = record->mutable_running();
    running->set_learner_address(entry.learner_address);
    running->set_next_cursor(entry.next_cursor);
    for (const Waiting& w : entry.waiting) {
      v1::PendingPrompt* p = running->add_waiting();
      p->set_cursor(w.cursor);
      p->set_min_policy_version(w.min_policy_version);
    }
    // Sorted so that equal states give equal files (hash map order is arbitrary).
    std::vector<const Lease*> leases;
    for (const auto& [id, lease] : entry.leases) leases.push_back(&lease);
    std::sort(leases.begin(), leases.end(),
              [](const Lease* a, const Lease* b) { return a->cursor < b->cursor; });
    for (const Lease* lease : leases) {
      v1::PendingPrompt* p = running->add_leased();
      p->set_cursor(lease->cursor);
      p->set_min_policy_version(lease->min_policy_version);
    }
    std::vector<uint64_t> acked(entry.acked.begin(), entry.acked.end());
    std::sort(acked.begin(), acked.end());
    running->mutable_acked_cursors()->Reserve(static_cast<int>(acked.size()));
    for (uint64_t cursor : acked) running->add_acked_cursors(cursor);
  }
  return state;
}

absl::Status CoordinatorServiceImpl::Restore(const v1::CoordinatorState& state) {
  const int64_t now = Now();
  next_job_ = std::max<int64_t>(state.next_job_number(), 1);
  bool seen_running = false;
  for (const v1::JobRecord& record : state.jobs()) {
    const v1::Job& job = record.job();
    const std::string& id = job.job_id();
    if (id.empty() || job_index_.contains(id))
      return absl::DataLossError(absl::StrCat("job id \"", id, "\" missing or repeated"));
    if (job.state() == v1::JOB_STATE_UNSPECIFIED || !v1::JobState_IsValid(job.state()))
      return absl::DataLossError(absl::StrCat("job ", id, " has no valid state"));
    const bool is_running = job.state() == v1::JOB_STATE_RUNNING;
    if (is_running != record.has_running() || (is_running && seen_running)) {
      return absl::DataLossError(
          absl::StrCat("job ", id, ": prompt state must be kept for exactly one RUNNING job"));
    }
    auto owned = std::make_unique<JobEntry>();
    JobEntry* entry = owned.get();
    entry->job = job;
    job_index_[id] = entry;
    jobs_.push_back(std::move(owned));
    if (!is_running) continue;
    seen_running = true;

    const v1::RunningJobState& r = record.running();
    const uint64_t next = r.next_cursor();
    auto check = [&](uint64_t cursor) {
      return cursor < next ? absl::OkStatus()
                           : absl::DataLossError(absl::StrCat(
                                 "job ", id, ": prompt ", TrainPromptId(cursor),
                                 " is past the data cursor ", next));
    };
    for (uint64_t cursor : r.acked_cursors()) {
      if (absl::Status s = check(cursor); !s.ok()) return s;
      entry->acked.insert(cursor);
    }
    for (const v1::PendingPrompt& p : r.waiting()) {
      if (absl::Status s = check(p.cursor()); !s.ok()) return s;
    }
    for (const v1::PendingPrompt& p : r.leased()) {
      if (absl::Status s = check(p.cursor()); !s.ok()) return s;
    }
    running_ = id;
    entry->learner_address = r.learner_address();
    entry->next_cursor = next;
    // Prompt texts are not stored: the pool is rebuilt exactly as AcquireJob built it.
    absl::StatusOr<JobData> data = LoadJobData(job.spec());
    if (!data.ok()) {
      // A coordinator that refused to start would block every other job behind this one;
      // failing it says what to fix and lets the queue move.
      entry->job.set_error(absl::StrCat("after a coordinator restart: ",
                                        DataError(job.spec(), data.status()).message()));
      EndJob(entry, v1::JOB_STATE_FAILED, now);
      continue;
    }
    entry->train = std::move(data->train);
    entry->order = TrainingOrder(entry->train.size(), job.spec().seed());
    for (const v1::PendingPrompt& p : r.waiting()) {
      if (!entry->acked.contains(p.cursor()))
        entry->waiting.push_back(Waiting{p.cursor(), p.min_policy_version()});
    }
    // Leases died with the old process (their workers must register again): their
    // prompts are redone first, oldest at the front, as if they had expired.
    std::vector<Waiting> back;
    for (const v1::PendingPrompt& p : r.leased()) {
      if (!entry->acked.contains(p.cursor()))
        back.push_back(Waiting{p.cursor(), p.min_policy_version()});
    }
    std::sort(back.begin(), back.end(),
              [](const Waiting& a, const Waiting& b) { return a.cursor > b.cursor; });
    for (const Waiting& w : back) entry->waiting.push_front(w);
    entry->job.set_lease_reissues(entry->job.lease_reissues() +
                                  static_cast<int64_t>(back.size()));
  }
  return absl::OkStatus();
}

void CoordinatorServiceImpl::WriterLoop() {
  for (;;) {
    int64_t version = 0;
    v1::CoordinatorState state;
    {
      absl::MutexLock lock(&mu_);
      while (dirty_version_ == attempted_version_ && !stop_writer_) persist_cv_.Wait(&mu_);
      // At stop, one last try for anything not saved, including after a failed attempt.
      if (stop_writer_ && saved_version_ == dirty_version_) break;
      version = dirty_version_;
      // The snapshot is taken under the lock; the disk is written without it.
      state = Snapshot();
    }
    absl::Status status = SaveCoordinatorState(state_path_, state);
    if (!status.ok()) std::cerr << "grpo_coordinator: saving state: " << status << std::endl;
    absl::MutexLock lock(&mu_);
    attempted_version_ = version;
    attempt_status_ = status;
    if (status.ok()) saved_version_ = version;
    persist_cv_.SignalAll();
    if (stop_writer_ && !status.ok()) break;
  }
  absl::MutexLock lock(&mu_);
  writer_done_ = true;
  persist_cv_.SignalAll();
}

void CoordinatorServiceImpl::ReissueLeases(JobEntry* entry,
                                           const std::function<bool(const Lease&)>& expired) {
  std::vector<Lease> back;
  for (auto it = entry->leases.begin(); it != entry->leases.end();) {
    if (expired(it->second)) {
      back.push_back(it->second);
      entry->lease_of.erase(it->second.cursor);
      entry->leases.erase(it++);
    } else {
      ++it;
    }
  }
  if (back.empty()) return;
  // Pushed to the front highest cursor first, so the oldest prompt ends up first.
  std::sort(back.begin(), back.end(),
            [](const Lease& a, const Lease& b) { return a.cursor > b.cursor; });
  for (const Lease& lease : back)
    entry->waiting.push_front(Waiting{lease.cursor, lease.min_policy_version});
  entry->job.set_lease_reissues(entry->job.lease_reissues() + static_cast<int64_t>(back.size()));
  Changed(entry);
}

void CoordinatorServiceImpl::Sweep(int64_t now) {
  std::vector<std::string> dropped;
  for (const auto& [id, worker] : workers_) {
    if (now - worker.last_heartbeat_ms > options_.heartbeat_timeout_ms) dropped.push_back(id);
  }
  for (const std::string& id : dropped) workers_.erase(id);
  JobEntry* entry = Running();
  if (entry == nullptr) return;
  ReissueLeases(entry, [&](const Lease& lease) {
    return lease.deadline_ms <= now || !workers_.contains(lease.worker_id);
  });
}

void CoordinatorServiceImpl::EndJob(JobEntry* entry, v1::JobState state, int64_t now) {
  entry->job.set_state(state);
  entry->job.set_end_time_unix_ms(now);
  entry->train.clear();
  entry->train.shrink_to_fit();
  entry->order.clear();
  entry->order.shrink_to_fit();
  entry->waiting.clear();
  entry->leases.clear();
  entry->lease_of.clear();
  if (running_ == entry->job.job_id()) running_.clear();
  Changed(entry);
}

// --- Metrics.

void CoordinatorServiceImpl::ExportMetrics(metrics::Registry* registry) {
  auto& jobs = registry->AddGauge("grpo_coordinator_jobs", "Jobs by state.");
  auto& workers = registry->AddGauge("grpo_coordinator_workers",
                                     "Registered processes by role (silent ones are dropped).");
  auto& waiting = registry->AddGauge("grpo_coordinator_prompts_waiting",
                                     "Prompts of the running job queued for a lease.").Add();
  auto& open = registry->AddGauge("grpo_coordinator_leases_open",
                                  "Prompt leases handed out and not yet acknowledged.").Add();
  auto& granted = registry->AddCounter("grpo_coordinator_leases_granted_total",
                                       "Prompt leases handed out, reissues included.").Add();
  auto& reissued = registry->AddCounter("grpo_coordinator_lease_reissues_total",
                                        "Leases expired or orphaned and handed out again.").Add();
  auto& acked = registry->AddCounter("grpo_coordinator_prompts_acked_total",
                                     "Prompts the learner acknowledged as ingested.").Add();
  auto& duplicates = registry->AddCounter("grpo_coordinator_duplicate_acks_total",
                                          "Acknowledgements of prompts acknowledged before.").Add();
  auto& failed = registry->AddCounter("grpo_coordinator_prompts_failed_total",
                                      "Prompts dropped as unscorable and replaced.").Add();
  registry->OnCollect([=, &jobs, &workers, &waiting, &open, &granted, &reissued, &acked,
                       &duplicates, &failed] {
    absl::MutexLock lock(&mu_);
    std::map<std::string, int> by_state = {{"queued", 0}, {"running", 0}, {"succeeded", 0},
                                           {"failed", 0}, {"cancelled", 0}};
    int64_t g = 0, r = 0, a = 0, d = 0, f = 0, w = 0, o = 0;
    for (const auto& entry : jobs_) {
      const v1::Job& job = entry->job;
      std::string state = v1::JobState_Name(job.state());
      state = absl::AsciiStrToLower(absl::StripPrefix(state, "JOB_STATE_"));
      ++by_state[state];
      g += job.leases_granted();
      r += job.lease_reissues();
      a += job.prompts_acked();
      d += job.duplicate_acks();
      f += job.prompts_failed();
      if (job.state() == v1::JOB_STATE_RUNNING) {
        w += static_cast<int64_t>(entry->waiting.size());
        o += static_cast<int64_t>(entry->leases.size());
      }
    }
    for (const auto& [state, n] : by_state) jobs.Add({{"state", state}}).Set(n);
    std::map<std::string, int> by_role = {{"rollout", 0}, {"learner", 0}, {"reward", 0}};
    for (const auto& [id, worker] : workers_) {
      std::string role = v1::WorkerRole_Name(worker.role);
      ++by_role[absl::AsciiStrToLower(absl::StripPrefix(role, "WORKER_ROLE_"))];
    }
    for (const auto& [role, n] : by_role) workers.Add({{"role", role}}).Set(n);
    waiting.Set(static_cast<double>(w));
    open.Set(static_cast<double>(o));
    metrics::IncrementTo(granted, static_cast<double>(g));
    metrics::IncrementTo(reissued, static_cast<double>(r));
    metrics::IncrementTo(acked, static_cast<double>(a));
    metrics::IncrementTo(duplicates, static_cast<double>(d));
    metrics::IncrementTo(failed, static_cast<double>(f));
  });
}

// --- Users.

grpc::Status CoordinatorServiceImpl::SubmitJob(grpc::ServerContext* context,
                                               const v1::SubmitJobRequest* request,
                                               v1::Job* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (const size_t bytes = request->spec().ByteSizeLong(); bytes > kMaxSpecBytes)
    return Exhausted(absl::StrCat("spec: ", bytes, " bytes, at most ", kMaxSpecBytes));
  // Validation and the data check run outside the lock: reading a dataset may be slow.
  absl::StatusOr<v1::JobSpec> resolved = ResolveJobSpec(request->spec());
  if (!resolved.ok()) {
    return ToGrpcStatus(absl::InvalidArgumentError(resolved.status().message()));
  }
  absl::StatusOr<JobData> data = LoadJobData(*resolved);
  if (!data.ok()) return ToGrpcStatus(DataError(*resolved, data.status()));

  absl::MutexLock lock(&mu_);
  const int64_t queued = std::count_if(jobs_.begin(), jobs_.end(), [](const auto& e) {
    return e->job.state() == v1::JOB_STATE_QUEUED;
  });
  if (queued >= options_.max_queued_jobs)
    return Exhausted(absl::StrCat("the job queue is full: ", queued,
                                  " jobs queued (--max_queued_jobs); cancel some or retry later"));
  const int64_t dirty_before = dirty_version_;
  auto entry = std::make_unique<JobEntry>();
  v1::Job& job = entry->job;
  job.set_job_id(absl::StrCat("job-", next_job_++));
  job.set_name(resolved->name());
  job.set_state(v1::JOB_STATE_QUEUED);
  *job.mutable_spec() = *std::move(resolved);
  job.set_submit_time_unix_ms(Now());
  *response = job;
  job_index_[job.job_id()] = entry.get();
  jobs_.push_back(std::move(entry));
  MarkDirty();
  return WaitDurable(dirty_before);
}

grpc::Status CoordinatorServiceImpl::GetJob(grpc::ServerContext* context,
                                            const v1::GetJobRequest* request,
                                            v1::Job* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->job_id().empty()) return Invalid("job_id: required");
  absl::MutexLock lock(&mu_);
  JobEntry* entry = FindJob(request->job_id());
  if (entry == nullptr) return NoSuchJob(request->job_id());
  *response = entry->job;
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest*,
                                              v1::ListJobsResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  absl::MutexLock lock(&mu_);
  for (const auto& entry : jobs_) {
    v1::Job* job = response->add_jobs();
    *job = entry->job;
    job->clear_spec();
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::CancelJob(grpc::ServerContext* context,
                                               const v1::CancelJobRequest* request,
                                               v1::Job* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->job_id().empty()) return Invalid("job_id: required");
  absl::MutexLock lock(&mu_);
  const int64_t dirty_before = dirty_version_;
  JobEntry* entry = FindJob(request->job_id());
  if (entry == nullptr) return NoSuchJob(request->job_id());
  switch (entry->job.state()) {
    case v1::JOB_STATE_QUEUED:
      entry->job.set_cancel_requested(true);
      EndJob(entry, v1::JOB_STATE_CANCELLED, Now());
      break;
    case v1::JOB_STATE_RUNNING:
      // The learner stops at its next step boundary and calls FinishJob(CANCELLED); until
      // then its prompts keep flowing so the step in progress can complete.
      if (!entry->job.cancel_requested()) {
        entry->job.set_cancel_requested(true);
        Changed(entry);
      }
      break;
    default:
      return ToGrpcStatus(absl::FailedPreconditionError(
          absl::StrCat("job ", entry->job.job_id(), " already ended: ",
                       v1::JobState_Name(entry->job.state()))));
  }
  *response = entry->job;
  return WaitDurable(dirty_before);
}

grpc::Status CoordinatorServiceImpl::WatchJob(grpc::ServerContext* context,
                                              const v1::WatchJobRequest* request,
                                              grpc::ServerWriter<v1::Job>* writer) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->job_id().empty()) return Invalid("job_id: required");
  mu_.Lock();
  JobEntry* entry = FindJob(request->job_id());  // entries are never freed
  if (entry == nullptr) {
    mu_.Unlock();
    return NoSuchJob(request->job_id());
  }
  int64_t sent = -1;
  for (;;) {
    if (shutdown_) {
      mu_.Unlock();
      return ToGrpcStatus(absl::UnavailableError("coordinator shutting down"));
    }
    if (entry->changes != sent) {
      sent = entry->changes;
      v1::Job job = entry->job;
      // Written without the lock: a slow client must not stall the control plane.
      mu_.Unlock();
      if (!writer->Write(job)) {
        return ToGrpcStatus(absl::CancelledError("watcher went away"));
      }
      if (IsTerminal(job.state())) return grpc::Status::OK;
      mu_.Lock();
      continue;
    }
    if (context->IsCancelled()) {
      mu_.Unlock();
      return ToGrpcStatus(absl::CancelledError("watcher went away"));
    }
    changed_.WaitWithTimeout(&mu_, kWatchPoll);
  }
}

// --- Every service process.

grpc::Status CoordinatorServiceImpl::Register(grpc::ServerContext* context,
                                              const v1::RegisterRequest* request,
                                              v1::RegisterResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->role() == v1::WORKER_ROLE_UNSPECIFIED || !v1::WorkerRole_IsValid(request->role()))
    return Invalid(absl::StrCat("role: must be ROLLOUT, LEARNER or REWARD, got ",
                                static_cast<int>(request->role())));
  if (request->name().size() > kMaxNameBytes || request->address().size() > kMaxNameBytes)
    return Invalid(absl::StrCat("name, address: at most ", kMaxNameBytes, " bytes each"));
  absl::MutexLock lock(&mu_);
  const int64_t now = Now();
  Sweep(now);
  if (static_cast<int64_t>(workers_.size()) >= options_.max_workers)
    return Exhausted(absl::StrCat(workers_.size(), " processes registered already (--max_workers)"));
  const std::string id = NewId("w", next_worker_++);
  Worker& worker = workers_[id];
  worker.role = request->role();
  worker.address = request->address();
  worker.name = request->name();
  worker.last_heartbeat_ms = now;
  response->set_worker_id(id);
  response->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  response->set_heartbeat_timeout_ms(options_.heartbeat_timeout_ms);
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::Heartbeat(grpc::ServerContext* context,
                                               const v1::HeartbeatRequest* request,
                                               v1::HeartbeatResponse*) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->worker_id().empty()) return Invalid("worker_id: required");
  absl::MutexLock lock(&mu_);
  const int64_t now = Now();
  Sweep(now);
  auto it = workers_.find(request->worker_id());
  if (it == workers_.end()) {
    return ToGrpcStatus(absl::NotFoundError(
        absl::StrCat("worker_id: unknown or dropped worker \"", request->worker_id(),
                     "\"; register again")));
  }
  it->second.last_heartbeat_ms = now;
  it->second.policy_version = request->policy_version();
  return grpc::Status::OK;
}

// --- Rollout workers.

grpc::Status CoordinatorServiceImpl::LeasePrompts(grpc::ServerContext* context,
                                                  const v1::LeasePromptsRequest* request,
                                                  v1::LeasePromptsResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->worker_id().empty()) return Invalid("worker_id: required");
  if (request->max_prompts() < 1)
    return Invalid(absl::StrCat("max_prompts: must be at least 1, got ", request->max_prompts()));
  absl::MutexLock lock(&mu_);
  const int64_t now = Now();
  Sweep(now);
  if (!workers_.contains(request->worker_id())) {
    return ToGrpcStatus(absl::NotFoundError(
        absl::StrCat("worker_id: unknown or dropped worker \"", request->worker_id(),
                     "\"; register again")));
  }
  JobEntry* entry = Running();
  if (entry == nullptr || entry->waiting.empty()) {
    response->set_retry_after_ms(options_.retry_after_ms);
    return grpc::Status::OK;
  }
  const int n = std::min<int64_t>({request->max_prompts(), options_.max_prompts_per_lease,
                                   static_cast<int64_t>(entry->waiting.size())});
  const int64_t deadline = now + int64_t{options_.lease_seconds} * 1000;
  for (int i = 0; i < n; ++i) {
    const Waiting w = entry->waiting.front();
    entry->waiting.pop_front();
    const std::string lease_id = NewId("l", next_lease_++);
    entry->leases[lease_id] = Lease{w.cursor, w.min_policy_version, request->worker_id(),
                                    deadline};
    entry->lease_of[w.cursor] = lease_id;
    const Example& example = entry->train[entry->order[w.cursor % entry->order.size()]];
    v1::PromptLease* lease = response->add_leases();
    lease->set_lease_id(lease_id);
    lease->set_prompt_id(TrainPromptId(w.cursor));
    lease->set_prompt(example.prompt);
    lease->set_answer(example.answer);
    if (HasTests(example)) *lease->mutable_tests() = example.tests;
    lease->set_deadline_unix_ms(deadline);
    lease->set_min_policy_version(w.min_policy_version);
  }
  entry->job.set_leases_granted(entry->job.leases_granted() + n);
  Changed(entry);
  response->set_job_id(entry->job.job_id());
  *response->mutable_spec() = entry->job.spec();
  response->set_learner_address(entry->learner_address);
  return grpc::Status::OK;
}

// --- Learner rank 0.

grpc::Status CoordinatorServiceImpl::AcquireJob(grpc::ServerContext* context,
                                                const v1::AcquireJobRequest* request,
                                                v1::AcquireJobResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  absl::MutexLock lock(&mu_);
  const int64_t dirty_before = dirty_version_;
  const int64_t now = Now();
  Sweep(now);
  if (JobEntry* running = Running(); running != nullptr) {
    // A restarted learner resumes the job; it may serve on a new address.
    if (!request->learner_address().empty() &&
        running->learner_address != request->learner_address()) {
      running->learner_address = request->learner_address();
      MarkDirty();
    }
    *response->mutable_job() = running->job;
    return WaitDurable(dirty_before);
  }
  for (const auto& owned : jobs_) {
    JobEntry* entry = owned.get();
    if (entry->job.state() != v1::JOB_STATE_QUEUED) continue;
    // The data was checked at submission; it can still vanish while the job waits.
    absl::StatusOr<JobData> data = LoadJobData(entry->job.spec());
    if (!data.ok()) {
      entry->job.set_start_time_unix_ms(now);
      entry->job.set_error(std::string(DataError(entry->job.spec(), data.status()).message()));
      EndJob(entry, v1::JOB_STATE_FAILED, now);
      continue;
    }
    entry->train = std::move(data->train);
    entry->order = TrainingOrder(entry->train.size(), entry->job.spec().seed());
    entry->next_cursor = 0;
    entry->learner_address = request->learner_address();
    entry->job.set_state(v1::JOB_STATE_RUNNING);
    entry->job.set_start_time_unix_ms(now);
    entry->job.mutable_progress()->set_phase(v1::JOB_PHASE_STARTING);
    running_ = entry->job.job_id();
    Changed(entry);
    *response->mutable_job() = entry->job;
    return WaitDurable(dirty_before);
  }
  response->set_retry_after_ms(options_.retry_after_ms);
  return WaitDurable(dirty_before);  // jobs whose data vanished were failed above
}

grpc::Status CoordinatorServiceImpl::RequestPrompts(grpc::ServerContext* context,
                                                    const v1::RequestPromptsRequest* request,
                                                    v1::RequestPromptsResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->job_id().empty()) return Invalid("job_id: required");
  if (request->count() < 1 || request->count() > kMaxRequestPrompts)
    return Invalid(absl::StrCat("count: must be in [1, ", kMaxRequestPrompts, "], got ",
                                request->count()));
  if (request->min_policy_version() < 0)
    return Invalid(absl::StrCat("min_policy_version: must be >= 0, got ",
                                request->min_policy_version()));
  absl::MutexLock lock(&mu_);
  const int64_t dirty_before = dirty_version_;
  Sweep(Now());
  JobEntry* entry = FindJob(request->job_id());
  if (entry == nullptr) return NoSuchJob(request->job_id());
  if (entry->job.state() != v1::JOB_STATE_RUNNING) return NotRunning(entry->job);
  if (static_cast<int64_t>(entry->waiting.size()) + request->count() > kMaxWaitingPrompts)
    return Exhausted(absl::StrCat("count: ", entry->waiting.size(), " prompts wait already, at most ",
                                  kMaxWaitingPrompts));
  entry->next_cursor = std::max<uint64_t>(entry->next_cursor, request->skip_to_cursor());
  for (int i = 0; i < request->count(); ++i)
    entry->waiting.push_back(Waiting{entry->next_cursor++, request->min_policy_version()});
  entry->job.set_prompts_requested(entry->job.prompts_requested() + request->count());
  Changed(entry);
  response->set_prompts_waiting(static_cast<int64_t>(entry->waiting.size()));
  return WaitDurable(dirty_before);
}

grpc::Status CoordinatorServiceImpl::AckPrompts(grpc::ServerContext* context,
                                                const v1::AckPromptsRequest* request,
                                                v1::AckPromptsResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (grpc::Status bad = CheckPromptIdsRequest(request->job_id(), request->prompt_ids_size());
      !bad.ok())
    return bad;
  absl::MutexLock lock(&mu_);
  const int64_t dirty_before = dirty_version_;
  Sweep(Now());
  JobEntry* entry = FindJob(request->job_id());
  if (entry == nullptr) return NoSuchJob(request->job_id());
  // All ids are checked before any is counted, so a bad request changes nothing.
  absl::StatusOr<std::vector<uint64_t>> cursors = PromptCursors(*entry, request->prompt_ids());
  if (!cursors.ok()) return ToGrpcStatus(cursors.status());
  int acked = 0, duplicates = 0;
  for (const uint64_t cursor : *cursors) {
    if (!entry->acked.insert(cursor).second) {
      ++duplicates;
      continue;
    }
    ++acked;
    Withdraw(entry, cursor);
  }
  entry->job.set_prompts_acked(entry->job.prompts_acked() + acked);
  entry->job.set_duplicate_acks(entry->job.duplicate_acks() + duplicates);
  if (acked + duplicates > 0) Changed(entry);
  response->set_acked(acked);
  response->set_duplicates(duplicates);
  return WaitDurable(dirty_before);
}

int64_t CoordinatorServiceImpl::Withdraw(JobEntry* entry, uint64_t cursor) {
  if (auto it = entry->lease_of.find(cursor); it != entry->lease_of.end()) {
    const int64_t min_version = entry->leases[it->second].min_policy_version;
    entry->leases.erase(it->second);
    entry->lease_of.erase(it);
    return min_version;
  }
  // Waiting again after a reissue (the first worker was late but not lost): it must not
  // be sampled a second time.
  auto w = std::find_if(entry->waiting.begin(), entry->waiting.end(),
                        [&](const Waiting& x) { return x.cursor == cursor; });
  if (w == entry->waiting.end()) return 0;
  const int64_t min_version = w->min_policy_version;
  entry->waiting.erase(w);
  return min_version;
}

absl::StatusOr<std::vector<uint64_t>> CoordinatorServiceImpl::PromptCursors(
    const JobEntry& entry, const google::protobuf::RepeatedPtrField<std::string>& ids) const {
  std::vector<uint64_t> cursors;
  cursors.reserve(ids.size());
  for (int i = 0; i < ids.size(); ++i) {
    const std::string& id = ids.Get(i);
    uint64_t cursor = 0;
    const absl::string_view prefix = "train-";
    if (!absl::StartsWith(id, prefix) ||
        !absl::SimpleAtoi(absl::string_view(id).substr(prefix.size()), &cursor) ||
        TrainPromptId(cursor) != id || cursor >= entry.next_cursor) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt_ids[", i, "]: \"", id, "\" was never handed out for job ", entry.job.job_id()));
    }
    cursors.push_back(cursor);
  }
  return cursors;
}

grpc::Status CoordinatorServiceImpl::FailPrompts(grpc::ServerContext* context,
                                                 const v1::FailPromptsRequest* request,
                                                 v1::FailPromptsResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (grpc::Status bad = CheckPromptIdsRequest(request->job_id(), request->prompt_ids_size());
      !bad.ok())
    return bad;
  absl::MutexLock lock(&mu_);
  const int64_t dirty_before = dirty_version_;
  JobEntry* entry = FindJob(request->job_id());
  if (entry == nullptr) return NoSuchJob(request->job_id());
  if (entry->job.state() != v1::JOB_STATE_RUNNING) return NotRunning(entry->job);
  absl::StatusOr<std::vector<uint64_t>> cursors = PromptCursors(*entry, request->prompt_ids());
  if (!cursors.ok()) return ToGrpcStatus(cursors.status());
  int failed = 0, ignored = 0;
  for (const uint64_t cursor : *cursors) {
    // Done either way from here: acknowledged prompts are never handed out again.
    if (!entry->acked.insert(cursor).second) {
      ++ignored;
      continue;
    }
    ++failed;
    entry->waiting.push_back(Waiting{entry->next_cursor++, Withdraw(entry, cursor)});
  }
  if (failed > 0) {
    entry->job.set_prompts_failed(entry->job.prompts_failed() + failed);
    entry->job.set_prompts_requested(entry->job.prompts_requested() + failed);
    std::cerr << "grpo_coordinator: " << entry->job.job_id() << ": " << failed
              << " prompt(s) failed and replaced: " << request->reason().substr(0, 200)
              << std::endl;
    Changed(entry);
  }
  response->set_failed(failed);
  response->set_ignored(ignored);
  return WaitDurable(dirty_before);
}

grpc::Status CoordinatorServiceImpl::ReportProgress(grpc::ServerContext* context,
                                                    const v1::ReportProgressRequest* request,
                                                    v1::ReportProgressResponse* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->job_id().empty()) return Invalid("job_id: required");
  if (const size_t bytes = request->progress().ByteSizeLong(); bytes > kMaxProgressBytes)
    return Exhausted(absl::StrCat("progress: ", bytes, " bytes, at most ", kMaxProgressBytes));
  absl::MutexLock lock(&mu_);
  JobEntry* entry = FindJob(request->job_id());
  if (entry == nullptr) return NoSuchJob(request->job_id());
  if (entry->job.state() != v1::JOB_STATE_RUNNING) return NotRunning(entry->job);
  *entry->job.mutable_progress() = request->progress();
  Changed(entry);
  response->set_cancel_requested(entry->job.cancel_requested());
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::FinishJob(grpc::ServerContext* context,
                                               const v1::FinishJobRequest* request,
                                               v1::Job* response) {
  if (grpc::Status denied = options_.authorizer.Check(*context); !denied.ok()) return denied;
  if (request->job_id().empty()) return Invalid("job_id: required");
  if (!IsTerminal(request->state()))
    return Invalid(absl::StrCat("state: must be SUCCEEDED, FAILED or CANCELLED, got ",
                                v1::JobState_IsValid(request->state())
                                    ? v1::JobState_Name(request->state())
                                    : std::to_string(static_cast<int>(request->state()))));
  if (const size_t bytes = request->ByteSizeLong(); bytes > kMaxProgressBytes + kMaxSpecBytes)
    return Exhausted(absl::StrCat("error, run_dir, result_json: ", bytes, " bytes, at most ",
                                  kMaxProgressBytes + kMaxSpecBytes));
  absl::MutexLock lock(&mu_);
  const int64_t dirty_before = dirty_version_;
  JobEntry* entry = FindJob(request->job_id());
  if (entry == nullptr) return NoSuchJob(request->job_id());
  if (entry->job.state() != v1::JOB_STATE_RUNNING) return NotRunning(entry->job);
  entry->job.set_error(request->error());
  entry->job.set_run_dir(request->run_dir());
  entry->job.set_result_json(request->result_json());
  EndJob(entry, request->state(), Now());
  *response = entry->job;
  return WaitDurable(dirty_before);
}

}  // namespace grpo
