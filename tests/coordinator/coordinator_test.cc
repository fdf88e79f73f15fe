// The coordinator over real gRPC on a loopback port picked by the kernel, with a fake
// clock: leases expire and workers go silent by advancing it, never by sleeping.
#include "coordinator/coordinator_service.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/coordinator_client.h"
#include "coordinator/state_store.h"
#include "data/job_data.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobspec/job_spec.h"
#include "rpc/grpc_server.h"
#include "rpc/process.h"

extern char** environ;

namespace grpo {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kLeaseSeconds = 30;
constexpr int kHeartbeatTimeoutMs = 5000;

// Per process: ctest runs these tests in parallel, and a file rewritten under another
// test's reader would hand it a half-written (or empty) dataset.
std::string WriteFile(const std::string& name, const std::string& contents) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", getpid(), ".", name);
  std::ofstream(path) << contents;
  return path;
}

// A five-prompt JSONL pool, so the cursor's wrap-around is easy to see.
v1::JobSpec SmallSpec(const std::string& name = "small") {
  std::string lines;
  for (int i = 0; i < 5; ++i)
    absl::StrAppend(&lines, "{\"prompt\": \"p", i, "=\", \"answer\": \"", i, "\"}\n");
  v1::JobSpec spec;
  spec.set_name(name);
  spec.set_seed(7);
  spec.mutable_dataset()->set_kind("jsonl");
  spec.mutable_dataset()->set_train_path(WriteFile("small.jsonl", lines));
  return spec;
}

// A fresh, empty directory for one test's coordinator state.
std::string FreshDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/", name, ".", getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { StartService(); }
  void TearDown() override { StopService(); }

  CoordinatorOptions Options(const std::string& state_dir = "") {
    CoordinatorOptions options;
    options.heartbeat_timeout_ms = kHeartbeatTimeoutMs;
    options.lease_seconds = kLeaseSeconds;
    options.max_prompts_per_lease = 4;
    options.retry_after_ms = 123;
    options.now_ms = [this] { return now_.load(); };
    options.state_dir = state_dir;
    if (tweak_) tweak_(options);
    return options;
  }

  // A coordinator (in memory, or kept in `state_dir`) behind a server on a new port.
  void StartService(const std::string& state_dir = "") {
    auto service = CoordinatorServiceImpl::Create(Options(state_dir));
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = std::move(*service);
    GrpcServerOptions server_options;
    server_options.listen_address = "127.0.0.1:0";
    auto server = GrpcServer::Start(server_options, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    address_ = "127.0.0.1:" + std::to_string(server_->port());
    stub_ = v1::CoordinatorService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  // As the binary stops: watchers ended, server drained, then the service destroyed.
  void StopService() {
    if (service_ == nullptr) return;
    service_->Shutdown();
    if (server_ != nullptr) server_->Shutdown(std::chrono::milliseconds(0));
    stub_.reset();
    server_.reset();
    service_.reset();
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return context;
  }

  // Advances the fake clock while the given workers keep heartbeating.
  void Advance(int64_t ms, const std::vector<std::string>& alive = {}) {
    while (ms > 0) {
      const int64_t step = std::min<int64_t>(ms, kHeartbeatTimeoutMs / 2);
      now_ += step;
      ms -= step;
      for (const std::string& id : alive) ASSERT_TRUE(Heartbeat(id).ok()) << id;
    }
  }

  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec) {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    v1::Job job;
    grpc::Status s = stub_->SubmitJob(Context().get(), request, &job);
    if (!s.ok()) return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                                     s.error_message());
    return job;
  }
  v1::Job Get(const std::string& id) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    EXPECT_TRUE(stub_->GetJob(Context().get(), request, &job).ok()) << id;
    return job;
  }
  std::vector<v1::Job> List() {
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->ListJobs(Context().get(), v1::ListJobsRequest(), &response).ok());
    return {response.jobs().begin(), response.jobs().end()};
  }
  grpc::Status Cancel(const std::string& id, v1::Job* job) {
    v1::CancelJobRequest request;
    request.set_job_id(id);
    return stub_->CancelJob(Context().get(), request, job);
  }
  std::string Register(v1::WorkerRole role = v1::WORKER_ROLE_ROLLOUT) {
    v1::RegisterRequest request;
    request.set_role(role);
    request.set_name("test");
    v1::RegisterResponse response;
    EXPECT_TRUE(stub_->Register(Context().get(), request, &response).ok());
    EXPECT_EQ(response.heartbeat_timeout_ms(), kHeartbeatTimeoutMs);
    return response.worker_id();
  }
  grpc::Status Heartbeat(const std::string& worker_id) {
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id);
    v1::HeartbeatResponse response;
    return stub_->Heartbeat(Context().get(), request, &response);
  }
  v1::AcquireJobResponse Acquire(const std::string& learner_address = "learner:1") {
    v1::AcquireJobRequest request;
    request.set_worker_id("w-learner");
    request.set_learner_address(learner_address);
    v1::AcquireJobResponse response;
    EXPECT_TRUE(stub_->AcquireJob(Context().get(), request, &response).ok());
    return response;
  }
  grpc::Status RequestPrompts(const std::string& job_id, int count, int64_t version = 0,
                              v1::RequestPromptsResponse* response = nullptr) {
    v1::RequestPromptsRequest request;
    request.set_job_id(job_id);
    request.set_count(count);
    request.set_min_policy_version(version);
    v1::RequestPromptsResponse ignored;
    return stub_->RequestPrompts(Context().get(), request, response ? response : &ignored);
  }
  grpc::Status Lease(const std::string& worker_id, int max_prompts,
                     v1::LeasePromptsResponse* response) {
    v1::LeasePromptsRequest request;
    request.set_worker_id(worker_id);
    request.set_max_prompts(max_prompts);
    response->Clear();
    return stub_->LeasePrompts(Context().get(), request, response);
  }
  std::vector<std::string> LeasedIds(const std::string& worker_id, int max_prompts) {
    v1::LeasePromptsResponse response;
    EXPECT_TRUE(Lease(worker_id, max_prompts, &response).ok());
    std::vector<std::string> ids;
    for (const auto& l : response.leases()) ids.push_back(l.prompt_id());
    return ids;
  }
  grpc::Status Ack(const std::string& job_id, const std::vector<std::string>& ids,
                   v1::AckPromptsResponse* response) {
    v1::AckPromptsRequest request;
    request.set_job_id(job_id);
    for (const auto& id : ids) request.add_prompt_ids(id);
    return stub_->AckPrompts(Context().get(), request, response);
  }
  grpc::Status Report(const std::string& job_id, int step,
                      v1::ReportProgressResponse* response) {
    v1::ReportProgressRequest request;
    request.set_job_id(job_id);
    request.mutable_progress()->set_phase(v1::JOB_PHASE_TRAINING);
    request.mutable_progress()->set_step(step);
    request.mutable_progress()->set_total_steps(10);
    return stub_->ReportProgress(Context().get(), request, response);
  }
  grpc::Status Finish(const std::string& job_id, v1::JobState state, v1::Job* job = nullptr) {
    v1::FinishJobRequest request;
    request.set_job_id(job_id);
    request.set_state(state);
    request.set_run_dir("/runs/" + job_id);
    request.set_result_json("{\"pass@1\": 0.5}");
    v1::Job ignored;
    return stub_->FinishJob(Context().get(), request, job ? job : &ignored);
  }
  // Submits SmallSpec and starts it.
  std::string StartSmallJob() {
    absl::StatusOr<v1::Job> job = Submit(SmallSpec());
    EXPECT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(Acquire().job().job_id(), job->job_id());
    return job->job_id();
  }

  std::function<void(CoordinatorOptions&)> tweak_;  // applied by Options()
  std::atomic<int64_t> now_{1'700'000'000'000};
  std::unique_ptr<CoordinatorServiceImpl> service_;  // outlives the server
  std::unique_ptr<GrpcServer> server_;
  std::string address_;
  std::unique_ptr<v1::CoordinatorService::Stub> stub_;
};

TEST_F(CoordinatorTest, BadSpecsAreRejectedNamingTheFieldAndNothingIsQueued) {
  v1::JobSpec zero_group;
  zero_group.mutable_grpo()->set_group_size(0);
  absl::StatusOr<v1::Job> job = Submit(zero_group);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("grpo.group_size"));

  // Unknown fields never reach the wire: the parser rejects them, naming the field.
  absl::StatusOr<v1::JobSpec> unknown = ParseJobSpec(R"({"grpo": {"group_sise": 4}})");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("group_sise"));

  v1::JobSpec missing = SmallSpec();
  missing.mutable_dataset()->set_train_path("/nonexistent/train.jsonl");
  job = Submit(missing);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("dataset.train_path"));
  EXPECT_THAT(job.status().message(), HasSubstr("/nonexistent/train.jsonl"));

  EXPECT_TRUE(List().empty());
  EXPECT_TRUE(Acquire().job().job_id().empty());
  job = Submit(SmallSpec());  // rejected submissions used up no ids
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->job_id(), "job-1");
  EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job->name(), "small");
  EXPECT_EQ(job->submit_time_unix_ms(), now_.load());
  EXPECT_EQ(job->spec().grpo().group_size(), 8);  // resolved: defaults filled in
}

TEST_F(CoordinatorTest, JobsRunOneAtATimeInSubmissionOrder) {
  ASSERT_TRUE(Submit(SmallSpec("first")).ok());
  ASSERT_TRUE(Submit(SmallSpec("second")).ok());

  v1::AcquireJobResponse acquired = Acquire();
  EXPECT_EQ(acquired.job().job_id(), "job-1");
  EXPECT_EQ(acquired.job().state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(acquired.job().progress().phase(), v1::JOB_PHASE_STARTING);
  EXPECT_EQ(acquired.job().start_time_unix_ms(), now_.load());
  EXPECT_EQ(acquired.job().spec().name(), "first");
  // A restarted learner gets the running job back; the second one stays queued.
  EXPECT_EQ(Acquire().job().job_id(), "job-1");
  EXPECT_EQ(Get("job-2").state(), v1::JOB_STATE_QUEUED);

  std::vector<v1::Job> jobs = List();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].job_id(), "job-1");
  EXPECT_EQ(jobs[1].job_id(), "job-2");
  EXPECT_FALSE(jobs[0].has_spec());  // lists leave specs out
  EXPECT_TRUE(Get("job-1").has_spec());

  now_ += 1000;
  v1::Job finished;
  ASSERT_TRUE(Finish("job-1", v1::JOB_STATE_SUCCEEDED, &finished).ok());
  EXPECT_EQ(finished.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(finished.end_time_unix_ms(), now_.load());
  EXPECT_EQ(finished.run_dir(), "/runs/job-1");
  EXPECT_EQ(finished.result_json(), "{\"pass@1\": 0.5}");
  EXPECT_EQ(Finish("job-1", v1::JOB_STATE_SUCCEEDED).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  acquired = Acquire();
  EXPECT_EQ(acquired.job().job_id(), "job-2");
  EXPECT_EQ(acquired.job().state(), v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(Finish("job-2", v1::JOB_STATE_FAILED).ok());
  acquired = Acquire();
  EXPECT_TRUE(acquired.job().job_id().empty());
  EXPECT_EQ(acquired.retry_after_ms(), 123);
}

TEST_F(CoordinatorTest, CancelQueuedRunningAndEndedJobs) {
  ASSERT_TRUE(Submit(SmallSpec("running")).ok());
  ASSERT_TRUE(Submit(SmallSpec("queued")).ok());
  ASSERT_EQ(Acquire().job().job_id(), "job-1");

  v1::Job job;
  ASSERT_TRUE(Cancel("job-2", &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.end_time_unix_ms(), now_.load());

  v1::ReportProgressResponse progress;
  ASSERT_TRUE(Report("job-1", 1, &progress).ok());
  EXPECT_FALSE(progress.cancel_requested());
  ASSERT_TRUE(Cancel("job-1", &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);  // the learner ends it
  EXPECT_TRUE(job.cancel_requested());
  ASSERT_TRUE(Report("job-1", 2, &progress).ok());
  EXPECT_TRUE(progress.cancel_requested());
  ASSERT_TRUE(Finish("job-1", v1::JOB_STATE_CANCELLED, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);

  for (const char* id : {"job-1", "job-2"}) {
    grpc::Status s = Cancel(id, &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << id;
  }
  EXPECT_EQ(Cancel("job-3", &job).error_code(), grpc::StatusCode::NOT_FOUND);
  // The cancelled queued job is never started.
  EXPECT_TRUE(Acquire().job().job_id().empty());
}

TEST_F(CoordinatorTest, LeasesHandOutPromptsInCursorOrderWithSpecAndLearner) {
  const std::string worker = Register();
  v1::LeasePromptsResponse response;
  ASSERT_TRUE(Lease(worker, 2, &response).ok());
  EXPECT_TRUE(response.job_id().empty());  // nothing runs yet
  EXPECT_EQ(response.retry_after_ms(), 123);

  const std::string job_id = StartSmallJob();
  ASSERT_TRUE(Lease(worker, 2, &response).ok());
  EXPECT_TRUE(response.job_id().empty());  // running, but no prompts requested yet

  v1::RequestPromptsResponse requested;
  ASSERT_TRUE(RequestPrompts(job_id, 7, 3, &requested).ok());
  EXPECT_EQ(requested.prompts_waiting(), 7);

  absl::StatusOr<JobData> data = LoadJobData(Get(job_id).spec());
  ASSERT_TRUE(data.ok());
  const std::vector<size_t> order = TrainingOrder(data->train.size(), 7);
  std::vector<std::string> prompt_ids, lease_ids;
  for (int max : {2, 100, 100}) {  // 100 is capped at max_prompts_per_lease = 4
    ASSERT_TRUE(Lease(worker, max, &response).ok());
    EXPECT_EQ(response.job_id(), job_id);
    EXPECT_EQ(response.learner_address(), "learner:1");
    EXPECT_EQ(response.spec().SerializeAsString(), Get(job_id).spec().SerializeAsString());
    for (const v1::PromptLease& lease : response.leases()) {
      const size_t n = prompt_ids.size();
      EXPECT_EQ(lease.prompt_id(), TrainPromptId(n));
      EXPECT_EQ(lease.prompt(), data->train[order[n % 5]].prompt);
      EXPECT_EQ(lease.answer(), data->train[order[n % 5]].answer);
      EXPECT_EQ(lease.deadline_unix_ms(), now_.load() + kLeaseSeconds * 1000);
      EXPECT_EQ(lease.min_policy_version(), 3);
      prompt_ids.push_back(lease.prompt_id());
      lease_ids.push_back(lease.lease_id());
    }
  }
  EXPECT_THAT(prompt_ids, ElementsAre("train-0", "train-1", "train-2", "train-3", "train-4",
                                      "train-5", "train-6"));
  EXPECT_EQ(std::set<std::string>(lease_ids.begin(), lease_ids.end()).size(), 7u);
  ASSERT_TRUE(Lease(worker, 4, &response).ok());
  EXPECT_TRUE(response.leases().empty());
  EXPECT_TRUE(response.job_id().empty());

  v1::Job job = Get(job_id);
  EXPECT_EQ(job.prompts_requested(), 7);
  EXPECT_EQ(job.leases_granted(), 7);
  EXPECT_EQ(job.lease_reissues(), 0);

  // Finishing the job drops what was left; nothing of it is handed out again.
  ASSERT_TRUE(RequestPrompts(job_id, 3).ok());
  ASSERT_TRUE(Finish(job_id, v1::JOB_STATE_SUCCEEDED).ok());
  ASSERT_TRUE(Lease(worker, 4, &response).ok());
  EXPECT_TRUE(response.job_id().empty());
  EXPECT_EQ(RequestPrompts(job_id, 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(CoordinatorTest, ExpiredLeaseIsReissuedFirst) {
  const std::string worker = Register();
  const std::string job_id = StartSmallJob();
  ASSERT_TRUE(RequestPrompts(job_id, 3).ok());
  v1::LeasePromptsResponse first;
  ASSERT_TRUE(Lease(worker, 1, &first).ok());
  ASSERT_EQ(first.leases_size(), 1);

  Advance(kLeaseSeconds * 1000 - 1, {worker});
  EXPECT_THAT(LeasedIds(worker, 1), ElementsAre("train-1"));  // not expired yet
  EXPECT_EQ(Get(job_id).lease_reissues(), 0);

  Advance(1, {worker});
  v1::LeasePromptsResponse again;
  ASSERT_TRUE(Lease(worker, 1, &again).ok());
  ASSERT_EQ(again.leases_size(), 1);
  EXPECT_EQ(again.leases(0).prompt_id(), "train-0");  // back at the front of the queue
  EXPECT_NE(again.leases(0).lease_id(), first.leases(0).lease_id());
  EXPECT_EQ(again.leases(0).prompt(), first.leases(0).prompt());
  v1::Job job = Get(job_id);
  EXPECT_EQ(job.lease_reissues(), 1);
  EXPECT_EQ(job.leases_granted(), 3);
}

TEST_F(CoordinatorTest, SilentWorkerIsDroppedAndItsLeasesGoToAnotherAtOnce) {
  const std::string lost = Register();
  const std::string healthy = Register();
  const std::string job_id = StartSmallJob();
  ASSERT_TRUE(RequestPrompts(job_id, 4).ok());
  EXPECT_THAT(LeasedIds(lost, 2), ElementsAre("train-0", "train-1"));

  Advance(kHeartbeatTimeoutMs, {healthy});
  EXPECT_TRUE(Heartbeat(lost).ok());  // exactly at the timeout it still counts
  Advance(kHeartbeatTimeoutMs + 1, {healthy});
  EXPECT_EQ(Heartbeat(lost).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::LeasePromptsResponse response;
  EXPECT_EQ(Lease(lost, 1, &response).error_code(), grpc::StatusCode::NOT_FOUND);

  // Long before the leases' deadline, the healthy worker gets them, oldest first.
  EXPECT_THAT(LeasedIds(healthy, 3), ElementsAre("train-0", "train-1", "train-2"));
  EXPECT_EQ(Get(job_id).lease_reissues(), 2);
  EXPECT_EQ(Get(job_id).leases_granted(), 5);
  EXPECT_EQ(Heartbeat("w-99").error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CoordinatorTest, AcksCountDuplicatesAndAckedPromptsAreNeverLeasedAgain) {
  const std::string worker = Register();
  const std::string job_id = StartSmallJob();
  ASSERT_TRUE(RequestPrompts(job_id, 4).ok());
  EXPECT_THAT(LeasedIds(worker, 3), ElementsAre("train-0", "train-1", "train-2"));

  v1::AckPromptsResponse acked;
  ASSERT_TRUE(Ack(job_id, {"train-0", "train-1", "train-0"}, &acked).ok());
  EXPECT_EQ(acked.acked(), 2);
  EXPECT_EQ(acked.duplicates(), 1);
  ASSERT_TRUE(Ack(job_id, {"train-1"}, &acked).ok());
  EXPECT_EQ(acked.acked(), 0);
  EXPECT_EQ(acked.duplicates(), 1);

  // Past every deadline only the unacknowledged lease comes back.
  Advance(kLeaseSeconds * 1000 + 1, {worker});
  EXPECT_THAT(LeasedIds(worker, 4), ElementsAre("train-2", "train-3"));
  EXPECT_EQ(Get(job_id).lease_reissues(), 1);

  // A late worker's groups arrive after its lease went back to the queue: the prompt
  // leaves the queue and is not sampled again.
  Advance(kLeaseSeconds * 1000 + 1, {worker});
  ASSERT_TRUE(Ack(job_id, {"train-2"}, &acked).ok());
  EXPECT_EQ(acked.acked(), 1);
  EXPECT_THAT(LeasedIds(worker, 4), ElementsAre("train-3"));

  v1::Job job = Get(job_id);
  EXPECT_EQ(job.prompts_acked(), 3);
  EXPECT_EQ(job.duplicate_acks(), 2);

  EXPECT_EQ(Ack("job-9", {"train-0"}, &acked).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::Status s = Ack(job_id, {"train-3", "train-4"}, &acked);  // train-4 never handed out
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("prompt_ids[1]"));
  s = Ack(job_id, {""}, &acked);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Get(job_id).SerializeAsString(), job.SerializeAsString());  // changed nothing
}

TEST_F(CoordinatorTest, WatchDeliversUpdatesAndEndsOnTheTerminalState) {
  ASSERT_TRUE(Submit(SmallSpec()).ok());
  absl::Mutex mu;
  std::vector<v1::Job> seen;
  absl::Status watch_status;
  bool done = false;
  auto client = CoordinatorClient::Connect(address_);
  std::thread watcher([&] {
    absl::Status s = client->Watch("job-1", [&](const v1::Job& job) {
      absl::MutexLock lock(&mu);
      seen.push_back(job);
    });
    absl::MutexLock lock(&mu);
    watch_status = s;
    done = true;
  });
  auto wait_for = [&](const std::function<bool(const v1::Job&)>& what) {
    absl::MutexLock lock(&mu);
    auto found = [&] { return !seen.empty() && what(seen.back()); };
    return mu.AwaitWithTimeout(absl::Condition(&found), absl::Seconds(30));
  };

  ASSERT_TRUE(wait_for([](const v1::Job& j) { return j.state() == v1::JOB_STATE_QUEUED; }));
  ASSERT_EQ(Acquire().job().job_id(), "job-1");
  ASSERT_TRUE(wait_for([](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; }));
  v1::ReportProgressResponse progress;
  ASSERT_TRUE(Report("job-1", 3, &progress).ok());
  ASSERT_TRUE(wait_for([](const v1::Job& j) { return j.progress().step() == 3; }));
  ASSERT_TRUE(Finish("job-1", v1::JOB_STATE_SUCCEEDED).ok());
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(30)));
  }
  watcher.join();
  EXPECT_TRUE(watch_status.ok()) << watch_status;
  ASSERT_GE(seen.size(), 4u);
  EXPECT_EQ(seen.back().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(seen.back().run_dir(), "/runs/job-1");

  // An ended job: one message and the stream ends.
  std::vector<v1::Job> again;
  EXPECT_TRUE(client->Watch("job-1", [&](const v1::Job& j) { again.push_back(j); }).ok());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(client->Watch("job-7", [](const v1::Job&) {}).code(), absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, ShutdownEndsWatchers) {
  ASSERT_TRUE(Submit(SmallSpec()).ok());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchJobRequest request;
  request.set_job_id("job-1");
  auto reader = stub_->WatchJob(&context, request);
  v1::Job job;
  ASSERT_TRUE(reader->Read(&job));  // the stream is up
  service_->Shutdown();
  EXPECT_FALSE(reader->Read(&job));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(CoordinatorTest, MalformedRequestsAreRejectedNamingTheFieldAndChangeNothing) {
  const std::string worker = Register();
  const std::string job_id = StartSmallJob();
  ASSERT_TRUE(RequestPrompts(job_id, 2).ok());
  const v1::Job before = Get(job_id);

  auto expect_invalid = [](const grpc::Status& s, const std::string& field) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  };
  v1::Job job;
  {
    v1::GetJobRequest request;
    expect_invalid(stub_->GetJob(Context().get(), request, &job), "job_id");
  }
  expect_invalid(Cancel("", &job), "job_id");
  v1::LeasePromptsResponse lease;
  expect_invalid(Lease(worker, 0, &lease), "max_prompts");
  expect_invalid(Lease("", 1, &lease), "worker_id");
  expect_invalid(RequestPrompts(job_id, 0), "count");
  expect_invalid(RequestPrompts(job_id, 100001), "count");
  expect_invalid(RequestPrompts(job_id, 1, -1), "min_policy_version");
  expect_invalid(RequestPrompts("", 1), "job_id");
  expect_invalid(Heartbeat(""), "worker_id");
  expect_invalid(Finish(job_id, v1::JOB_STATE_RUNNING), "state");
  expect_invalid(Finish(job_id, v1::JOB_STATE_UNSPECIFIED), "state");
  {
    v1::RegisterRequest request;  // role unspecified
    v1::RegisterResponse response;
    expect_invalid(stub_->Register(Context().get(), request, &response), "role");
  }
  {
    v1::ReportProgressRequest request;
    v1::ReportProgressResponse response;
    expect_invalid(stub_->ReportProgress(Context().get(), request, &response), "job_id");
  }
  EXPECT_EQ(Get(job_id).SerializeAsString(), before.SerializeAsString());
  EXPECT_EQ(Get(job_id).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Heartbeat("w-2").error_code(), grpc::StatusCode::NOT_FOUND);  // none registered
  EXPECT_THAT(LeasedIds(worker, 4), ElementsAre("train-0", "train-1"));

  // Wrong state, not wrong shape.
  ASSERT_TRUE(Submit(SmallSpec()).ok());
  v1::ReportProgressResponse progress;
  EXPECT_EQ(Report("job-2", 1, &progress).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(RequestPrompts("job-2", 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Finish("job-2", v1::JOB_STATE_FAILED).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(RequestPrompts("job-9", 1).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Every request that would make the coordinator keep more is bounded: past a bound the
// answer is RESOURCE_EXHAUSTED naming the field, and nothing changes.
TEST_F(CoordinatorTest, RequestLimitsAnswerResourceExhaustedAndChangeNothing) {
  StopService();
  tweak_ = [](CoordinatorOptions& o) {
    o.max_queued_jobs = 2;
    o.max_workers = 2;
  };
  StartService();
  const std::string worker = Register();
  const std::string job_id = StartSmallJob();  // RUNNING: not counted as queued
  ASSERT_TRUE(Submit(SmallSpec()).ok());
  ASSERT_TRUE(Submit(SmallSpec()).ok());
  const v1::Job before = Get(job_id);
  auto expect_exhausted = [](const absl::Status& s, const std::string& words) {
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(words));
  };
  auto as_absl = [](const grpc::Status& s) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  };
  expect_exhausted(Submit(SmallSpec()).status(), "--max_queued_jobs");
  v1::JobSpec huge = SmallSpec();
  huge.set_name(std::string(70 << 10, 'x'));
  expect_exhausted(Submit(huge).status(), "spec:");

  Register();  // the second process
  {
    v1::RegisterRequest request;
    request.set_role(v1::WORKER_ROLE_ROLLOUT);
    v1::RegisterResponse response;
    expect_exhausted(as_absl(stub_->Register(Context().get(), request, &response)),
                     "--max_workers");
    request.set_name(std::string(300, 'n'));
    EXPECT_EQ(stub_->Register(Context().get(), request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    std::vector<std::string> ids(100001, "train-0");
    v1::AckPromptsResponse response;
    expect_exhausted(as_absl(Ack(job_id, ids, &response)), "prompt_ids");
  }
  {
    v1::ReportProgressRequest request;
    request.set_job_id(job_id);
    request.mutable_progress()->set_message(std::string(20 << 10, 'm'));
    v1::ReportProgressResponse response;
    expect_exhausted(as_absl(stub_->ReportProgress(Context().get(), request, &response)),
                     "progress");
  }
  EXPECT_EQ(Get(job_id).SerializeAsString(), before.SerializeAsString());
  v1::ListJobsResponse list;
  ASSERT_TRUE(stub_->ListJobs(Context().get(), v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.jobs_size(), 3);

  // The waiting queue of a job is bounded too; what fits is still accepted.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(RequestPrompts(job_id, 100000).ok()) << i;
  expect_exhausted(as_absl(RequestPrompts(job_id, 1)), "count");
  EXPECT_EQ(Get(job_id).prompts_requested(), 1000000);
  EXPECT_THAT(LeasedIds(worker, 2), ElementsAre("train-0", "train-1"));
}

// grpo.reward_failure = SKIP: prompts a worker could not get scored are never handed out
// again, and as many fresh ones are queued; repeating it or naming a bad id changes nothing.
TEST_F(CoordinatorTest, FailedPromptsAreReplacedAndNeverLeasedAgain) {
  const std::string worker = Register();
  const std::string job_id = StartSmallJob();
  ASSERT_TRUE(RequestPrompts(job_id, 3, /*version=*/2).ok());
  ASSERT_THAT(LeasedIds(worker, 2), ElementsAre("train-0", "train-1"));
  auto fail = [&](const std::vector<std::string>& ids, v1::FailPromptsResponse* response) {
    v1::FailPromptsRequest request;
    request.set_job_id(job_id);
    for (const std::string& id : ids) request.add_prompt_ids(id);
    request.set_reason("reward server: INVALID_ARGUMENT");
    return stub_->FailPrompts(Context().get(), request, response);
  };
  v1::FailPromptsResponse response;
  // train-0 is leased, train-2 still waits: both are dropped.
  ASSERT_TRUE(fail({"train-0", "train-2"}, &response).ok());
  EXPECT_EQ(response.failed(), 2);
  const v1::Job after = Get(job_id);
  EXPECT_EQ(after.prompts_failed(), 2);
  EXPECT_EQ(after.prompts_requested(), 5);
  EXPECT_EQ(fail({"train-9"}, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(fail({"train-0"}, &response).ok());
  EXPECT_EQ(response.ignored(), 1);
  EXPECT_EQ(Get(job_id).SerializeAsString(), after.SerializeAsString());
  // The replacements, with the failed prompts' minimum version; never train-0 or train-2.
  v1::LeasePromptsResponse lease;
  ASSERT_TRUE(Lease(worker, 4, &lease).ok());
  ASSERT_EQ(lease.leases_size(), 2);
  EXPECT_EQ(lease.leases(0).prompt_id(), "train-3");
  EXPECT_EQ(lease.leases(1).prompt_id(), "train-4");
  EXPECT_EQ(lease.leases(0).min_policy_version(), 2);
}

// A job resumed from another job's checkpoint moves its data cursor forward, never back.
TEST_F(CoordinatorTest, SkipToCursorMovesTheCursorForwardOnly) {
  const std::string worker = Register();
  const std::string job_id = StartSmallJob();
  auto request = [&](int count, uint64_t skip_to) {
    v1::RequestPromptsRequest r;
    r.set_job_id(job_id);
    r.set_count(count);
    r.set_skip_to_cursor(skip_to);
    v1::RequestPromptsResponse response;
    return stub_->RequestPrompts(Context().get(), r, &response);
  };
  ASSERT_TRUE(request(2, 10).ok());
  ASSERT_TRUE(request(1, 3).ok());  // behind the cursor: ignored
  EXPECT_THAT(LeasedIds(worker, 4), ElementsAre("train-10", "train-11", "train-12"));
}

// --- Persistence (--state_dir).

TEST_F(CoordinatorTest, RestartResumesJobsCursorAndAckedPrompts) {
  StopService();
  const std::string dir = FreshDir("restart");
  StartService(dir);
  const std::string worker = Register();
  ASSERT_TRUE(Submit(SmallSpec("first")).ok());
  ASSERT_TRUE(Submit(SmallSpec("second")).ok());
  ASSERT_TRUE(Submit(SmallSpec("cancelled")).ok());
  v1::Job job;
  ASSERT_TRUE(Cancel("job-3", &job).ok());
  ASSERT_EQ(Acquire().job().job_id(), "job-1");
  ASSERT_TRUE(RequestPrompts("job-1", 4, /*version=*/2).ok());
  EXPECT_THAT(LeasedIds(worker, 3), ElementsAre("train-0", "train-1", "train-2"));
  v1::AckPromptsResponse acked;
  ASSERT_TRUE(Ack("job-1", {"train-0", "train-2"}, &acked).ok());
  ASSERT_EQ(acked.acked(), 2);
  v1::ReportProgressResponse progress;
  ASSERT_TRUE(Report("job-1", 3, &progress).ok());

  // An OK from AckPrompts means durable: it is on disk while the service still runs.
  absl::StatusOr<std::optional<v1::CoordinatorState>> on_disk =
      LoadCoordinatorState(service_->state_path());
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  ASSERT_TRUE(on_disk->has_value());
  ASSERT_EQ((*on_disk)->jobs_size(), 3);
  EXPECT_EQ((*on_disk)->next_job_number(), 4);
  const v1::RunningJobState& running = (*on_disk)->jobs(0).running();
  EXPECT_EQ(running.next_cursor(), 4u);
  EXPECT_THAT(running.acked_cursors(), ElementsAre(0u, 2u));
  EXPECT_FALSE((*on_disk)->jobs(1).has_running());

  v1::Job before1 = Get("job-1");
  const v1::Job before2 = Get("job-2"), before3 = Get("job-3");
  std::vector<v1::Job> before_list = List();
  StopService();
  StartService(dir);

  // Same jobs, same states; the running job's one unacked lease was reissued.
  EXPECT_EQ(Get("job-2").SerializeAsString(), before2.SerializeAsString());
  EXPECT_EQ(Get("job-3").SerializeAsString(), before3.SerializeAsString());
  EXPECT_EQ(before1.lease_reissues(), 0);
  before1.set_lease_reissues(1);
  EXPECT_EQ(Get("job-1").SerializeAsString(), before1.SerializeAsString());
  EXPECT_EQ(Get("job-1").progress().step(), 3);  // saved in the background, flushed at stop
  before_list[0].set_lease_reissues(1);
  std::vector<v1::Job> after_list = List();
  ASSERT_EQ(after_list.size(), before_list.size());
  for (size_t i = 0; i < after_list.size(); ++i)
    EXPECT_EQ(after_list[i].SerializeAsString(), before_list[i].SerializeAsString()) << i;

  // Workers are not persisted: the old one must register again, and gets a new id.
  EXPECT_EQ(Heartbeat(worker).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::LeasePromptsResponse response;
  EXPECT_EQ(Lease(worker, 1, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string again = Register();
  EXPECT_NE(again, worker);

  // The unacked lease comes first, then the prompt that was waiting; acked ones never.
  absl::StatusOr<JobData> data = LoadJobData(before1.spec());
  ASSERT_TRUE(data.ok());
  const std::vector<size_t> order = TrainingOrder(data->train.size(), 7);
  ASSERT_TRUE(Lease(again, 4, &response).ok());
  EXPECT_EQ(response.job_id(), "job-1");
  EXPECT_EQ(response.learner_address(), "learner:1");
  ASSERT_EQ(response.leases_size(), 2);
  EXPECT_EQ(response.leases(0).prompt_id(), "train-1");
  EXPECT_EQ(response.leases(0).prompt(), data->train[order[1]].prompt);
  EXPECT_EQ(response.leases(0).min_policy_version(), 2);
  EXPECT_EQ(response.leases(1).prompt_id(), "train-3");
  EXPECT_EQ(response.leases(1).answer(), data->train[order[3]].answer);

  // The data cursor continues, the acked set is intact, the job numbers go on.
  ASSERT_TRUE(RequestPrompts("job-1", 2).ok());
  EXPECT_THAT(LeasedIds(again, 4), ElementsAre("train-4", "train-5"));
  ASSERT_TRUE(Ack("job-1", {"train-0", "train-1"}, &acked).ok());
  EXPECT_EQ(acked.acked(), 1);
  EXPECT_EQ(acked.duplicates(), 1);
  absl::StatusOr<v1::Job> fourth = Submit(SmallSpec("fourth"));
  ASSERT_TRUE(fourth.ok()) << fourth.status();
  EXPECT_EQ(fourth->job_id(), "job-4");

  // A learner restarted on a new address gets the running job back, then the queue moves.
  EXPECT_EQ(Acquire("learner:2").job().job_id(), "job-1");
  ASSERT_TRUE(RequestPrompts("job-1", 1).ok());
  ASSERT_TRUE(Lease(again, 4, &response).ok());
  EXPECT_EQ(response.learner_address(), "learner:2");
  ASSERT_TRUE(Finish("job-1", v1::JOB_STATE_SUCCEEDED).ok());
  EXPECT_EQ(Acquire().job().job_id(), "job-2");

  // And once more: the finished job stays finished, job-2 runs from cursor 0.
  StopService();
  StartService(dir);
  EXPECT_EQ(Get("job-1").state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Get("job-1").run_dir(), "/runs/job-1");
  EXPECT_EQ(Acquire().job().job_id(), "job-2");
  ASSERT_TRUE(RequestPrompts("job-2", 1).ok());
  EXPECT_THAT(LeasedIds(Register(), 4), ElementsAre("train-0"));
  EXPECT_EQ(Get("job-4").state(), v1::JOB_STATE_QUEUED);
}

TEST_F(CoordinatorTest, UnreadableStateFileRefusesToStartAndIsLeftAlone) {
  StopService();
  const std::string dir = FreshDir("corrupt");
  StartService(dir);
  ASSERT_TRUE(Submit(SmallSpec()).ok());
  const std::string path = service_->state_path();
  StopService();
  const std::string good = ReadAll(path);

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"garbage", "this is not a coordinator state"},
      {"empty", ""},
      {"truncated", good.substr(0, good.size() - 1)},
      {"bit flip", [&] {
         std::string flipped = good;
         flipped[flipped.size() - 3] ^= 0x10;
         return flipped;
       }()}};
  for (const auto& [what, contents] : bad) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << contents;
    auto service = CoordinatorServiceImpl::Create(Options(dir));
    ASSERT_FALSE(service.ok()) << what;
    EXPECT_EQ(service.status().code(), absl::StatusCode::kDataLoss) << what;
    EXPECT_THAT(service.status().message(), HasSubstr(path)) << what;
    EXPECT_EQ(ReadAll(path), contents) << what;  // never replaced by an empty state
  }

  // Well-formed but from a newer format, or inconsistent: refused too, naming the file.
  v1::CoordinatorState state;
  state.set_format(kCoordinatorStateFormat + 1);
  ASSERT_TRUE(SaveCoordinatorState(path, state).ok());
  auto service = CoordinatorServiceImpl::Create(Options(dir));
  EXPECT_EQ(service.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(service.status().message(), HasSubstr(path));
  state.set_format(kCoordinatorStateFormat);
  v1::JobRecord* record = state.add_jobs();
  record->mutable_job()->set_job_id("job-1");
  record->mutable_job()->set_state(v1::JOB_STATE_RUNNING);  // without its prompt state
  ASSERT_TRUE(SaveCoordinatorState(path, state).ok());
  const std::string inconsistent = ReadAll(path);
  service = CoordinatorServiceImpl::Create(Options(dir));
  EXPECT_EQ(service.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(service.status().message(), HasSubstr(path));
  EXPECT_THAT(service.status().message(), HasSubstr("job-1"));
  EXPECT_EQ(ReadAll(path), inconsistent);

  // The good file loads again.
  std::ofstream(path, std::ios::binary | std::ios::trunc) << good;
  StartService(dir);
  EXPECT_EQ(Get("job-1").state(), v1::JOB_STATE_QUEUED);
}

TEST_F(CoordinatorTest, FailedSaveAnswersInternalAndKeepsThePreviousFile) {
  StopService();
  const std::string dir = FreshDir("failed_save");
  StartService(dir);
  ASSERT_TRUE(Submit(SmallSpec("saved")).ok());
  const std::string path = service_->state_path();
  const std::string saved = ReadAll(path);

  // A directory where the temporary file goes makes every save fail (even for root).
  ASSERT_TRUE(std::filesystem::create_directory(path + ".tmp"));
  absl::StatusOr<v1::Job> job = Submit(SmallSpec("unsaved"));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(job.status().message(), HasSubstr("could not be saved"));
  EXPECT_THAT(job.status().message(), HasSubstr(path));
  EXPECT_EQ(ReadAll(path), saved);
  EXPECT_EQ(Get("job-2").state(), v1::JOB_STATE_QUEUED);  // kept in memory, as documented

  // The next change saves the whole state, the earlier one included.
  std::filesystem::remove(path + ".tmp");
  ASSERT_TRUE(Submit(SmallSpec("third")).ok());
  absl::StatusOr<std::optional<v1::CoordinatorState>> on_disk = LoadCoordinatorState(path);
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  ASSERT_TRUE(on_disk->has_value());
  EXPECT_EQ((*on_disk)->jobs_size(), 3);
}

TEST_F(CoordinatorTest, RunningJobWhoseDataVanishedFailsOnLoad) {
  StopService();
  const std::string dir = FreshDir("vanished");
  StartService(dir);
  v1::JobSpec spec = SmallSpec("doomed");
  const std::string data = ::testing::TempDir() + "/doomed." + std::to_string(getpid());
  std::filesystem::copy_file(spec.dataset().train_path(), data,
                             std::filesystem::copy_options::overwrite_existing);
  spec.mutable_dataset()->set_train_path(data);
  ASSERT_TRUE(Submit(spec).ok());
  ASSERT_TRUE(Submit(SmallSpec("next")).ok());
  ASSERT_EQ(Acquire().job().job_id(), "job-1");
  StopService();
  std::filesystem::remove(data);

  StartService(dir);
  v1::Job job = Get("job-1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error(), HasSubstr("dataset.train_path"));
  EXPECT_EQ(Acquire().job().job_id(), "job-2");  // the queue is not stuck behind it
}

TEST(CoordinatorFormatTest, LinesShowProgressAndCounters) {
  v1::Job job;
  job.set_job_id("job-3");
  job.set_name("arith");
  job.set_state(v1::JOB_STATE_RUNNING);
  job.set_lease_reissues(2);
  job.set_duplicate_acks(1);
  v1::JobProgress* p = job.mutable_progress();
  p->set_phase(v1::JOB_PHASE_TRAINING);
  p->set_step(57);
  p->set_total_steps(120);
  p->set_reward_mean(0.873);
  p->set_reward_std(0.42);
  p->set_kl(0.00482);
  p->set_grad_norm(0.194);
  p->set_tokens_per_second(3537);
  p->set_elapsed_seconds(52);
  p->set_eta_seconds(3725);
  p->set_message("eval pass@1 0.61");
  const std::string line = FormatProgress(job);
  for (const char* part : {"job-3 RUNNING training", "step   57/120", "reward 0.873 ±0.420",
                           "kl 0.00482", "grad 0.194", "3537 tok/s", "0:52 elapsed",
                           "ETA 1:02:05", "eval pass@1 0.61", "reissued 2", "duplicate acks 1"}) {
    EXPECT_THAT(line, HasSubstr(part));
  }
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const std::string list_line = FormatJobLine(job);
  EXPECT_THAT(list_line, HasSubstr("job-3"));
  EXPECT_THAT(list_line, HasSubstr("RUNNING"));
  EXPECT_THAT(list_line, HasSubstr("arith"));
  EXPECT_THAT(list_line, HasSubstr("step 57/120"));
  EXPECT_THAT(list_line, HasSubstr("reward 0.873"));
}

// grpoctl as a user runs it, against the in-process coordinator.
struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult RunGrpoctl(const std::string& address, const std::string& args) {
  const std::string command =
      absl::StrCat(GRPOCTL_BINARY, " --coordinator=", address, " ", args, " 2>&1");
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

TEST_F(CoordinatorTest, GrpoctlSubmitsListsAndCancels) {
  const std::string bad = WriteFile("bad_spec.json", R"({"grpo": {"group_size": 0}})");
  CommandResult r = RunGrpoctl(address_, "submit " + bad);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("grpo.group_size"));
  const std::string typo = WriteFile("typo_spec.json", R"({"grpo": {"group_sise": 4}})");
  r = RunGrpoctl(address_, "submit " + typo);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("group_sise"));
  EXPECT_TRUE(List().empty());

  const std::string good = WriteFile(
      "good_spec.json",
      absl::StrCat(R"({"name": "from-grpoctl", "dataset": {"kind": "jsonl", "train_path": ")",
                   SmallSpec().dataset().train_path(), R"("}})"));
  r = RunGrpoctl(address_, "submit " + good);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "job-1\n");

  r = RunGrpoctl(address_, "list");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("job-1"));
  EXPECT_THAT(r.output, HasSubstr("QUEUED"));
  EXPECT_THAT(r.output, HasSubstr("from-grpoctl"));

  r = RunGrpoctl(address_, "get job-1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("\"group_size\": 8"));

  r = RunGrpoctl(address_, "cancel job-1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("CANCELLED"));
  EXPECT_EQ(Get("job-1").state(), v1::JOB_STATE_CANCELLED);

  r = RunGrpoctl(address_, "cancel job-1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("error: FAILED_PRECONDITION"));

  r = RunGrpoctl(address_, "watch job-1");  // already ended: prints it, not SUCCEEDED
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("job-1 CANCELLED"));

  r = RunGrpoctl(address_, "frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

// The binary serves until SIGTERM, ends open watch streams itself (rather than leaving
// them to the drain deadline) and exits 0.
TEST(CoordinatorBinaryTest, ServesPublishesItsPortAndStopsOnSigterm) {
  const std::string port_file = ::testing::TempDir() + "/coordinator.port";
  unlink(port_file.c_str());
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  const std::string port_flag = "--port_file=" + port_file;
  const char* binary = GRPO_COORDINATOR_BINARY;
  char* argv[] = {const_cast<char*>(binary), const_cast<char*>("--listen=127.0.0.1:0"),
                  const_cast<char*>(port_flag.c_str()),
                  const_cast<char*>("--drain_seconds=60"), nullptr};
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, binary, &actions, nullptr, argv, environ), 0);
  close(out[1]);
  FILE* lines = fdopen(out[0], "r");
  char line[256] = {0};
  ASSERT_NE(fgets(line, sizeof(line), lines), nullptr);  // blocks until it serves
  int port = 0;
  // After the log line's timestamp and level (rpc/structured_log.h).
  const char* serving = strstr(line, "grpo_coordinator: serving on port ");
  if (serving == nullptr || sscanf(serving, "grpo_coordinator: serving on port %d", &port) != 1) {
    kill(pid, SIGKILL);  // not left running, holding the test's output open
    waitpid(pid, nullptr, 0);
    FAIL() << line;
  }
  absl::StatusOr<int> published = ReadPortFile(port_file);
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(*published, port);

  auto client = CoordinatorClient::Connect("127.0.0.1:" + std::to_string(port));
  absl::StatusOr<v1::Job> job = client->Submit(SmallSpec());
  ASSERT_TRUE(job.ok()) << job.status();
  auto stub = v1::CoordinatorService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchJobRequest request;
  request.set_job_id(job->job_id());
  auto reader = stub->WatchJob(&context, request);
  v1::Job seen;
  ASSERT_TRUE(reader->Read(&seen));

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  EXPECT_FALSE(reader->Read(&seen));
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("shutting down"));
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  fclose(lines);
  posix_spawn_file_actions_destroy(&actions);
}

// Starts grpo_coordinator with `flags`, its stdout on a pipe; returns the pid, or -1.
pid_t SpawnCoordinator(const std::vector<std::string>& flags, FILE** out) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  const char* binary = GRPO_COORDINATOR_BINARY;
  std::vector<char*> argv = {const_cast<char*>(binary)};
  for (const std::string& flag : flags) argv.push_back(const_cast<char*>(flag.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, binary, &actions, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  *out = fdopen(fds[0], "r");
  return pid;
}

// Starts the coordinator on `state_dir`, submits with grpoctl, stops it with SIGTERM and
// starts it again on another port: the job is still there.
TEST(CoordinatorBinaryTest, StateDirSurvivesARestart) {
  const std::string dir = FreshDir("binary_state");
  const std::string port_file = ::testing::TempDir() + "/coordinator_state.port";
  const std::vector<std::string> flags = {"--listen=127.0.0.1:0", "--port_file=" + port_file,
                                          "--state_dir=" + dir};
  const std::string spec = WriteFile(
      "restart_spec.json",
      absl::StrCat(R"({"name": "survivor", "dataset": {"kind": "jsonl", "train_path": ")",
                   SmallSpec().dataset().train_path(), R"("}})"));
  for (int run = 0; run < 2; ++run) {
    unlink(port_file.c_str());
    FILE* out = nullptr;
    const pid_t pid = SpawnCoordinator(flags, &out);
    ASSERT_GT(pid, 0);
    ASSERT_NE(out, nullptr);
    char line[256] = {0};
    ASSERT_NE(fgets(line, sizeof(line), out), nullptr) << "run " << run;  // serving
    absl::StatusOr<int> port = ReadPortFile(port_file);  // this run's, not the last one's
    ASSERT_TRUE(port.ok()) << port.status();
    const std::string address = "127.0.0.1:" + std::to_string(*port);
    if (run == 0) {
      CommandResult r = RunGrpoctl(address, "submit " + spec);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      EXPECT_EQ(r.output, "job-1\n");
    }
    CommandResult r = RunGrpoctl(address, "get job-1");
    EXPECT_EQ(r.exit_code, 0) << "run " << run << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr("\"name\": \"survivor\""));
    EXPECT_THAT(r.output, HasSubstr("JOB_STATE_QUEUED"));
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    fclose(out);
  }

  // A state file it cannot read: exit 1 naming the file, which is left as it was.
  const std::string path = dir + "/state.pb";
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "not a state";
  const std::string command = absl::StrCat(GRPO_COORDINATOR_BINARY,
                                           " --listen=127.0.0.1:0 --state_dir=", dir, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 1) << output;
  EXPECT_THAT(output, HasSubstr(path));
  EXPECT_EQ(ReadAll(path), "not a state");
}

}  // namespace
}  // namespace grpo
