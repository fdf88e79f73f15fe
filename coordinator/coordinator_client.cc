#include "coordinator/coordinator_client.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "rpc/backoff.h"
#include "rpc/status.h"

namespace grpo {
namespace {

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  return std::string(absl::StripPrefix(name, "JOB_STATE_"));
}

std::string PhaseName(v1::JobPhase phase) {
  std::string name = v1::JobPhase_Name(phase);
  return absl::AsciiStrToLower(absl::StripPrefix(name, "JOB_PHASE_"));
}

// "1:02:03" or "2:03": what a person reads at a glance.
std::string Clock(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "-";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace

bool IsTerminalJobState(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

std::unique_ptr<CoordinatorClient> CoordinatorClient::Connect(const std::string& address,
                                                              CoordinatorClientOptions options) {
  return std::make_unique<CoordinatorClient>(
      v1::CoordinatorService::NewStub(options.security.Channel(address)),
      options);
}

CoordinatorClient::CoordinatorClient(std::unique_ptr<v1::CoordinatorService::StubInterface> stub,
                                     CoordinatorClientOptions options)
    : stub_(std::move(stub)), options_(options) {}

std::unique_ptr<grpc::ClientContext> CoordinatorClient::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
  return context;
}

absl::StatusOr<v1::Job> CoordinatorClient::Submit(const v1::JobSpec& spec) {
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::Job job;
  absl::Status s =
      FromGrpcStatus(stub_->SubmitJob(NewContext().get(), request, &job), "SubmitJob");
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<v1::Job> CoordinatorClient::GetJob(const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  absl::Status s = FromGrpcStatus(stub_->GetJob(NewContext().get(), request, &job), "GetJob");
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<std::vector<v1::Job>> CoordinatorClient::ListJobs() {
  v1::ListJobsResponse response;
  absl::Status s = FromGrpcStatus(
      stub_->ListJobs(NewContext().get(), v1::ListJobsRequest(), &response), "ListJobs");
  if (!s.ok()) return s;
  return std::vector<v1::Job>(response.jobs().begin(), response.jobs().end());
}

absl::StatusOr<v1::Job> CoordinatorClient::Cancel(const std::string& job_id) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  absl::Status s =
      FromGrpcStatus(stub_->CancelJob(NewContext().get(), request, &job), "CancelJob");
  if (!s.ok()) return s;
  return job;
}

absl::Status CoordinatorClient::Watch(const std::string& job_id,
                                      const std::function<void(const v1::Job&)>& on_update) {
  using SteadyClock = std::chrono::steady_clock;
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(2));
  SteadyClock::time_point last_contact = SteadyClock::now();
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  for (;;) {
    // No deadline on the stream itself: a job may run for hours.
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderInterface<v1::Job>> reader =
        stub_->WatchJob(&context, request);
    v1::Job job;
    bool terminal = false;
    while (reader->Read(&job)) {
      last_contact = SteadyClock::now();
      backoff.Reset();
      on_update(job);
      terminal = terminal || IsTerminalJobState(job.state());
    }
    grpc::Status status = reader->Finish();
    if (terminal) return absl::OkStatus();
    absl::Status s = FromGrpcStatus(status, "WatchJob");
    if (s.ok()) s = absl::UnavailableError("WatchJob: stream ended before the job did");
    // CANCELLED too: this client never cancels its stream, so that is the server going
    // away mid-call (a shutdown), which a reconnect rides out like UNAVAILABLE.
    if (s.code() != absl::StatusCode::kUnavailable && s.code() != absl::StatusCode::kCancelled)
      return s;
    const std::chrono::milliseconds wait = backoff.Next();
    if (SteadyClock::now() + wait > last_contact + options_.reconnect_for) return s;
    std::this_thread::sleep_for(wait);
  }
}

std::string FormatJobLine(const v1::Job& job) {
  const v1::JobProgress& p = job.progress();
  std::string line = absl::StrFormat("%-8s %-10s %-24s", job.job_id(), StateName(job.state()),
                                     job.name());
  const int total = p.total_steps() > 0 ? p.total_steps() : job.spec().steps();
  if (job.state() != v1::JOB_STATE_QUEUED) {
    absl::StrAppendFormat(&line, " step %d", p.step());
    if (total > 0) absl::StrAppendFormat(&line, "/%d", total);
    if (p.step() > 0) absl::StrAppendFormat(&line, "  reward %.3f", p.reward_mean());
  }
  if (job.cancel_requested() && job.state() == v1::JOB_STATE_RUNNING)
    absl::StrAppend(&line, "  (cancel requested)");
  absl::StripTrailingAsciiWhitespace(&line);
  return line;
}

std::string FormatProgress(const v1::Job& job) {
  const v1::JobProgress& p = job.progress();
  std::vector<std::string> parts;
  std::string head = absl::StrCat(job.job_id(), " ", StateName(job.state()));
  if (p.phase() != v1::JOB_PHASE_UNSPECIFIED) absl::StrAppend(&head, " ", PhaseName(p.phase()));
  if (job.cancel_requested() && !IsTerminalJobState(job.state()))
    absl::StrAppend(&head, " (cancelling)");
  parts.push_back(head);
  if (p.total_steps() > 0 || p.step() > 0) {
    parts.push_back(absl::StrFormat("step %4d/%d", p.step(), p.total_steps()));
    parts.push_back(absl::StrFormat("reward %.3f ±%.3f", p.reward_mean(), p.reward_std()));
    parts.push_back(absl::StrFormat("kl %.5f", p.kl()));
    parts.push_back(absl::StrFormat("grad %.3f", p.grad_norm()));
    parts.push_back(absl::StrFormat("%6.0f tok/s", p.tokens_per_second()));
  }
  if (p.elapsed_seconds() > 0) {
    std::string time = absl::StrCat(Clock(p.elapsed_seconds()), " elapsed");
    if (p.eta_seconds() > 0) absl::StrAppend(&time, ", ETA ", Clock(p.eta_seconds()));
    parts.push_back(time);
  }
  if (!p.message().empty()) parts.push_back(p.message());
  if (job.lease_reissues() > 0 || job.duplicate_acks() > 0 || p.duplicate_groups() > 0) {
    parts.push_back(absl::StrFormat("reissued %d, duplicate acks %d, duplicate groups %d",
                                    job.lease_reissues(), job.duplicate_acks(),
                                    p.duplicate_groups()));
  }
  return absl::StrJoin(parts, " | ");
}

}  // namespace grpo
