#include "rollout_worker/worker.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "coordinator/registration.h"
#include "grpo/v1/coordinator.grpc.pb.h"
#include "grpo/v1/learner.grpc.pb.h"
#include "grpo/v1/reward.grpc.pb.h"
#include "hf/job_model.h"
#include "jobspec/job_spec.h"
#include "model/model.h"
#include "model/torch_status.h"
#include "rl/scored_group_proto.h"
#include "rollout_worker/remote_scorer.h"
#include "rollout_worker/rollout.h"
#include "rollout_worker/weight_client.h"
#include "rpc/backoff.h"
#include "rpc/status.h"

namespace grpo {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kCallDeadline = std::chrono::seconds(10);

std::string DefaultName() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, ":", getpid());
}

}  // namespace

// What a worker exports (docs/design.md §6), kept alongside RolloutWorkerCounters: these are
// atomic, so a scrape may read them while the worker runs.
struct WorkerMetrics {
  explicit WorkerMetrics(metrics::Registry* r)
      : weight_pulls(r->AddCounter("grpo_worker_weight_pulls_total",
                                   "Policy weights fetched whole and verified.").Add()),
        bad_transfers(r->AddCounter("grpo_worker_bad_weight_transfers_total",
                                    "Weight transfers refused (cut short or corrupt).").Add()),
        groups_submitted(r->AddCounter("grpo_worker_groups_submitted_total",
                                       "Scored groups the learner accepted.").Add()),
        duplicates(r->AddCounter("grpo_worker_duplicate_groups_total",
                                 "Groups the learner had already (a reissued lease).").Add()),
        full_backoffs(r->AddCounter("grpo_worker_full_backoffs_total",
                                    "Submissions refused because the learner was full.").Add()),
        batches_failed(r->AddCounter("grpo_worker_batches_failed_total",
                                     "Batches dropped (their leases are reissued).").Add()),
        prompts_skipped(r->AddCounter("grpo_worker_prompts_skipped_total",
                                      "Prompts that could not be scored, dropped and replaced "
                                      "(grpo.reward_failure = SKIP).").Add()),
        tokens(r->AddCounter("grpo_worker_tokens_generated_total",
                             "Completion tokens sampled.").Add()),
        policy_version(r->AddGauge("grpo_worker_policy_version",
                                   "Version of the weights this worker samples with.").Add()),
        weight_sync_seconds(r->AddHistogram("grpo_worker_weight_sync_seconds",
                                            "Time to fetch and load a policy version.",
                                            metrics::ExponentialBuckets(0.01, 2, 12)).Add()),
        generation_seconds(r->AddHistogram("grpo_worker_generation_seconds",
                                           "Time to sample one lease's groups.",
                                           metrics::ExponentialBuckets(0.01, 2, 14)).Add()),
        scoring_seconds(r->AddHistogram("grpo_worker_scoring_seconds",
                                        "Time to have one lease's samples scored.",
                                        metrics::ExponentialBuckets(0.001, 2, 14)).Add()) {}
  metrics::Counter &weight_pulls, &bad_transfers, &groups_submitted, &duplicates, &full_backoffs,
      &batches_failed, &prompts_skipped, &tokens;
  metrics::Gauge& policy_version;
  metrics::Histogram &weight_sync_seconds, &generation_seconds, &scoring_seconds;
};

struct RolloutWorker::State {
  explicit State(RolloutWorkerOptions o)
      : options(std::move(o)),
        metrics(options.registry ? options.registry : &own_registry) {}

  RolloutWorkerOptions options;
  metrics::Registry own_registry;  // when the options name none
  WorkerMetrics metrics;
  std::unique_ptr<v1::CoordinatorService::Stub> coordinator;
  std::unique_ptr<v1::RewardService::Stub> reward;
  std::unique_ptr<Registration> registration;
  std::unique_ptr<TextTokenizer> tokenizer;  // the job's (hf/job_model.h)
  RolloutWorkerCounters counters;

  // The job this worker last sampled for.
  std::string job_id;
  v1::JobSpec spec;
  std::string learner_address;
  std::unique_ptr<v1::LearnerService::Stub> learner;
  std::unique_ptr<Transformer> policy;
  int64_t version = -1;
  WeightReceiver weights;  // keeps its receive buffer from version to version
  std::unique_ptr<RemoteScorer> scorer;
  // The last job this worker could not switch to, and why.
  std::string unusable_job_id;
  absl::Status unusable_status;

  std::ostream* log() { return options.log; }
  void Log(const std::string& line) {
    if (options.log) *options.log << "rollout_worker " << registration->worker_id() << ": "
                                  << line << std::endl;
  }

  // Fails when the job's model is unusable here (model.hf_dir unreadable on this worker):
  // then nothing changes, the lease expires and another worker gets its prompts. Once the
  // model is readable the old policy goes before the new one is built: two at once may
  // not fit a GPU (two 32B policies do not fit an 80 GB card), and out of memory would
  // then fail every switch. A policy that cannot be built (out of memory) leaves the
  // worker with no job; the old job's next lease builds its policy again.
  absl::Status SwitchJob(const v1::LeasePromptsResponse& lease) {
    absl::StatusOr<hf::JobModel> job_model = hf::LoadJobModel(lease.spec());
    if (!job_model.ok()) return job_model.status();
    if (policy) {
      policy.reset();
      job_id.clear();
      learner_address.clear();
      HoldVersion(-1);
    }
    std::unique_ptr<Transformer> job_policy;
    if (absl::Status s = CatchTorch("building the policy", [&] {
          // Its weights always come from the learner (version 0 included).
          job_policy =
              std::make_unique<Transformer>(job_model->config, Transformer::Uninitialized{});
        });
        !s.ok()) {
      return s;
    }
    if (options.device != "cpu" || options.dtype != "float32") {
      if (absl::Status s = job_policy->To(options.device, options.dtype); !s.ok()) return s;
    }
    if (absl::Status s =
            SetSamplerMatmuls(*job_policy, options.matmul_dtype, options.packed_matmuls);
        !s.ok()) {
      return s;
    }
    job_id = lease.job_id();
    spec = lease.spec();
    learner_address = lease.learner_address();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(8 << 20);
    learner = v1::LearnerService::NewStub(options.security.Channel(learner_address, args));
    policy = std::move(job_policy);
    tokenizer = std::move(job_model->tokenizer);  // version is -1: no policy held or released
    scorer = std::make_unique<RemoteScorer>(
        reward.get(), std::vector<v1::RewardFunctionSpec>(spec.rewards().begin(),
                                                          spec.rewards().end()));
    Log(absl::StrCat("job ", job_id, " (", spec.name(), "), learner at ", learner_address));
    return absl::OkStatus();
  }

  // grpo.reward_failure = SKIP: tells the coordinator these prompts failed, so fresh ones
  // take their place and the step does not wait for them. If it cannot be told, the
  // original error stands (the leases are then reissued, as with RETRY).
  absl::Status Skip(const std::vector<std::string>& ids, const absl::Status& why) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    v1::FailPromptsRequest request;
    request.set_job_id(job_id);
    for (const std::string& id : ids) request.add_prompt_ids(id);
    request.set_reason(why.ToString());
    v1::FailPromptsResponse response;
    if (absl::Status s = FromGrpcStatus(coordinator->FailPrompts(&context, request, &response),
                                        "coordinator FailPrompts");
        !s.ok()) {
      Log(absl::StrCat("could not skip ", ids.size(), " prompts: ", s.ToString()));
      return why;
    }
    counters.prompts_skipped += response.failed();
    metrics.prompts_skipped.Increment(response.failed());
    Log(absl::StrCat(response.failed(), " prompt(s) skipped, fresh ones queued instead: ",
                     why.ToString()));
    return absl::OkStatus();
  }

  // The weights now held are version v (-1: none), as the coordinator and metrics see it.
  void HoldVersion(int64_t v) {
    version = v;
    registration->set_policy_version(version);
    metrics.policy_version.Set(static_cast<double>(version));
  }

  // Makes sure we sample with weights at least `need` new, or the learner's newest when
  // it is behind `need` (it restarted from a checkpoint: its newest is the freshest policy
  // there is, and waiting for `need` would wait for a step that needs our groups first).
  // Weights newer than the learner's newest came from before such a restart: dropped.
  absl::Status EnsureVersion(int64_t need, absl::Notification* stop) {
    Backoff backoff(std::chrono::milliseconds(50), std::chrono::seconds(1));
    const auto give_up = Clock::now() + options.weights_deadline;
    Clock::time_point unreachable_since = Clock::time_point::max();  // max: reachable
    for (;;) {
      absl::Status status;
      bool bad_transfer = false;
      {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
        v1::GetPolicyVersionRequest request;
        request.set_job_id(job_id);
        v1::PolicyVersion latest;
        status = FromGrpcStatus(learner->GetPolicyVersion(&context, request, &latest),
                                "learner GetPolicyVersion");
        if (status.ok() && latest.version() >= 0) {
          if (version > latest.version()) {
            Log(absl::StrCat("learner is at v", latest.version(), ", behind our v", version,
                             ": it restarted; taking its weights"));
            version = -1;
          }
          if (version >= std::min(need, latest.version())) return absl::OkStatus();
          const auto start = Clock::now();
          PullOptions pull;
          pull.deadline = options.weights_deadline;
          pull.dtype = policy->transfer_dtype();
          pull.streams = options.weight_streams;
          pull.version = latest.version();
          absl::StatusOr<PulledWeights> pulled = weights.Pull(learner.get(), job_id, pull);
          if (pulled.ok() && pulled->version > version) {
            if (absl::Status s = policy->ImportFlat(pulled->payload); !s.ok()) {
              // A failure part-way (the device out of memory) may leave some tensors new:
              // the weights are no version's until a pull lands whole.
              HoldVersion(-1);
              return s;
            }
            HoldVersion(pulled->version);
            ++counters.weight_pulls;
            counters.last_weight_pull_seconds = SecondsSince(start);
            metrics.weight_pulls.Increment();
            metrics.weight_sync_seconds.Observe(counters.last_weight_pull_seconds);
            Log(absl::StrFormat("weights v%d (%.1f MB) in %.3fs", version,
                                pulled->payload.size() / 1e6, counters.last_weight_pull_seconds));
            continue;
          }
          status = pulled.status();
          // A transfer cut short or corrupted (a chunk that contradicts the others, a
          // checksum that does not match): the weights we have stay, and we ask again.
          bad_transfer = status.code() == absl::StatusCode::kDataLoss ||
                         status.code() == absl::StatusCode::kInvalidArgument;
          if (bad_transfer) {
            ++counters.bad_weight_transfers;
            metrics.bad_transfers.Increment();
            Log(absl::StrCat("weight transfer rejected, keeping v", version, ": ",
                             status.ToString()));
          }
        } else if (status.ok()) {
          status = absl::FailedPreconditionError("the learner has published no weights yet");
        }
      }
      // ABORTED: the version we asked for was superseded while the streams started.
      if (!RetryableCode(status.code()) && status.code() != absl::StatusCode::kFailedPrecondition &&
          status.code() != absl::StatusCode::kAborted && !bad_transfer && !status.ok())
        return status;
      // A learner that stays unreachable has most likely been replaced: drop the batch and
      // learn its new address from the next lease instead of waiting out the deadline.
      if (status.code() == absl::StatusCode::kUnavailable) {
        unreachable_since = std::min(unreachable_since, Clock::now());
        if (Clock::now() - unreachable_since > options.learner_unreachable_grace) return status;
      } else {
        unreachable_since = Clock::time_point::max();
      }
      if (Clock::now() > give_up)
        return absl::DeadlineExceededError(absl::StrCat(
            "weights v", need, " not available from ", learner_address, ": ", status.ToString()));
      if (stop->WaitForNotificationWithTimeout(absl::FromChrono(backoff.Next())))
        return absl::CancelledError("stopping");
    }
  }

  // Sends the groups; while the learner's buffer is full, backs off and sends them again
  // (all or nothing on its side, so a retry never half-applies). Gives up at `give_up`,
  // when the leases will have been handed to someone else anyway.
  absl::Status Submit(const std::vector<ScoredGroup>& groups, Clock::time_point give_up,
                      absl::Notification* stop) {
    Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(2));
    for (;;) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
      v1::SubmitGroupsResponse response;
      auto writer = learner->SubmitGroups(&context, &response);
      for (const ScoredGroup& group : groups) {
        v1::ScoredGroupProto proto = ToProto(group, job_id);
        proto.set_worker_id(registration->worker_id());
        if (!writer->Write(proto)) break;
      }
      writer->WritesDone();
      absl::Status status = FromGrpcStatus(writer->Finish(), "learner SubmitGroups");
      if (status.ok()) {
        counters.groups_submitted += response.accepted();
        counters.groups_duplicate += response.duplicates();
        metrics.groups_submitted.Increment(response.accepted());
        metrics.duplicates.Increment(response.duplicates());
        return status;
      }
      if (!RetryableCode(status.code())) return status;
      if (status.code() == absl::StatusCode::kResourceExhausted) {
        ++counters.full_backoffs;
        metrics.full_backoffs.Increment();
      }
      if (status.code() == absl::StatusCode::kUnavailable)
        give_up = std::min(give_up, Clock::now() + options.learner_unreachable_grace);
      const auto wait = backoff.Next();
      if (Clock::now() + wait > give_up) return status;
      if (stop->WaitForNotificationWithTimeout(absl::FromChrono(wait)))
        return absl::CancelledError("stopping");
    }
  }

  // One lease's worth of work. Errors are logged by the caller; the leases then expire
  // and the coordinator hands them to another worker.
  absl::Status Work(const v1::LeasePromptsResponse& lease, absl::Notification* stop) {
    // A restarted learner may listen elsewhere and has other weights under the same
    // version numbers: start over with it.
    if (lease.job_id() != job_id || lease.learner_address() != learner_address) {
      // A job whose model this worker cannot use is not tried again for every lease
      // (reading an 11 MB tokenizer each time); its leases expire to other workers.
      if (lease.job_id() == unusable_job_id) return unusable_status;
      if (absl::Status s = SwitchJob(lease); !s.ok()) {
        // Out of memory passes (another process on the GPU may free it): the next lease
        // tries again rather than finding the job marked unusable here.
        if (s.code() == absl::StatusCode::kResourceExhausted) return s;
        unusable_job_id = lease.job_id();
        unusable_status = absl::FailedPreconditionError(
            absl::StrCat("job ", lease.job_id(), " cannot run on this worker: ", s.message()));
        return unusable_status;
      }
    }
    int64_t need = 0;
    int64_t deadline_ms = INT64_MAX;
    std::vector<Example> examples;
    std::vector<std::string> ids;
    for (const v1::PromptLease& l : lease.leases()) {
      need = std::max(need, l.min_policy_version());
      deadline_ms = std::min(deadline_ms, l.deadline_unix_ms());
      examples.push_back(Example{l.prompt(), l.answer(), "", l.tests()});
      ids.push_back(l.prompt_id());
    }
    if (absl::Status s = EnsureVersion(need, stop); !s.ok()) return s;
    const auto start = Clock::now();
    SamplingOptions sampling = SamplingOptionsFromSpec(spec, *tokenizer);
    sampling.decode = options.decode;
    sampling.cuda_graphs = options.cuda_graphs;
    // A function of the job, the prompts and the weights alone, so that a run restarted
    // from a checkpoint samples what the uninterrupted run would have sampled.
    sampling.seed = std::hash<std::string>()(
        absl::StrCat(spec.seed(), "/", absl::StrJoin(ids, ","), "/", version));
    Rollout rollout(tokenizer.get(), scorer.get());
    absl::StatusOr<RolloutBatch> batch = rollout.Generate(
        *policy, version, examples, ids, spec.grpo().group_size(), sampling);
    if (!batch.ok() && spec.grpo().reward_failure() == v1::REWARD_FAILURE_SKIP)
      return Skip(ids, batch.status());
    if (!batch.ok()) return batch.status();
    metrics.tokens.Increment(static_cast<double>(batch->generated_tokens));
    metrics.generation_seconds.Observe(batch->sample_seconds);
    metrics.scoring_seconds.Observe(batch->score_seconds);
    const int64_t left_ms = deadline_ms - absl::ToUnixMillis(absl::Now());
    const auto give_up = Clock::now() + std::chrono::milliseconds(std::max<int64_t>(0, left_ms));
    if (absl::Status s = Submit(batch->groups, give_up, stop); !s.ok()) return s;
    Log(absl::StrFormat("%d groups at v%d: sample %.2fs, score %.2fs, %.0f tok/s, total %.2fs",
                        batch->groups.size(), version, batch->sample_seconds,
                        batch->score_seconds,
                        batch->generated_tokens / std::max(1e-9, batch->sample_seconds),
                        SecondsSince(start)));
    return absl::OkStatus();
  }
};

RolloutWorker::RolloutWorker(RolloutWorkerOptions options) {
  if (options.name.empty()) options.name = DefaultName();
  state_ = std::make_unique<State>(std::move(options));
}

RolloutWorker::~RolloutWorker() = default;

RolloutWorkerCounters RolloutWorker::counters() const { return state_->counters; }

absl::Status RolloutWorker::Run(absl::Notification* stop) {
  State& s = *state_;
  s.coordinator =
      v1::CoordinatorService::NewStub(s.options.security.Channel(s.options.coordinator_address));
  s.reward = v1::RewardService::NewStub(s.options.security.Channel(s.options.reward_server_address));
  s.registration = std::make_unique<Registration>(s.coordinator.get(), v1::WORKER_ROLE_ROLLOUT,
                                                  "", s.options.name);
  if (absl::Status st = s.registration->Start(Clock::now() + std::chrono::minutes(5)); !st.ok())
    return st;
  s.Log(absl::StrCat("registered as ", s.options.name));
  Backoff idle(std::chrono::milliseconds(100), std::chrono::seconds(2));
  while (!stop->HasBeenNotified()) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    v1::LeasePromptsRequest request;
    request.set_worker_id(s.registration->worker_id());
    request.set_max_prompts(s.options.max_prompts_per_lease);
    v1::LeasePromptsResponse lease;
    absl::Status status =
        FromGrpcStatus(s.coordinator->LeasePrompts(&context, request, &lease),
                       "coordinator LeasePrompts");
    std::chrono::milliseconds wait(0);
    if (status.code() == absl::StatusCode::kNotFound) {
      if (absl::Status r = s.registration->Reregister(); r.ok()) {
        // The coordinator dropped us (silent past its heartbeat timeout, or restarted).
        s.Log(absl::StrCat("registered again as ", s.options.name));
        continue;
      }
      wait = idle.Next();
    } else if (!status.ok()) {
      wait = idle.Next();
    } else if (lease.leases().empty()) {
      wait = std::chrono::milliseconds(std::max(10, lease.retry_after_ms()));
    } else {
      idle.Reset();
      if (absl::Status st = s.Work(lease, stop); !st.ok()) {
        if (st.code() == absl::StatusCode::kCancelled && stop->HasBeenNotified()) break;
        ++s.counters.batches_failed;
        s.metrics.batches_failed.Increment();
        s.Log(absl::StrCat("batch dropped (its leases will be reissued): ", st.ToString()));
        wait = idle.Next();
      }
    }
    if (wait.count() > 0 && stop->WaitForNotificationWithTimeout(absl::FromChrono(wait))) break;
  }
  return absl::OkStatus();
}

}  // namespace grpo
