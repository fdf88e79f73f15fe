#include "learner/distributed_learner.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "data/job_data.h"
#include "evaluation/evaluation.h"
#include "grpo/v1/learner.pb.h"
#include "hf/hf_checkpoint.h"
#include "hf/job_model.h"
#include "jobspec/job_spec.h"
#include "learner/checkpoint.h"
#include "learner/grpo_trainer.h"
#include "learner/job_driver.h"
#include "learner/job_phases.h"
#include "learner/learner_metrics.h"
#include "model/model.h"
#include "model/torch_status.h"
#include "model/weight_transfer.h"
#include "rl/scored_group_proto.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

bool Distributed(const LearnerGroup* group) { return group && group->world_size() > 1; }

// Rank 0's command to every rank: its size, then its bytes, as two c10d broadcasts.
absl::Status BroadcastCommand(LearnerGroup* group, v1::LearnerCommand* command) {
  if (!Distributed(group)) return absl::OkStatus();
  std::string bytes;
  if (group->rank() == 0) bytes = command->SerializeAsString();
  std::vector<at::Tensor> size{torch::full({1}, static_cast<int64_t>(bytes.size()), torch::kLong)};
  if (absl::Status s = group->Broadcast(size, 0); !s.ok()) return s;
  const int64_t n = size[0].item<int64_t>();
  if (n == 0) {  // an all-default command (never sent: every command sets its kind)
    command->Clear();
    return absl::OkStatus();
  }
  std::vector<at::Tensor> data{torch::empty({n}, torch::kUInt8)};
  if (group->rank() == 0) std::memcpy(data[0].data_ptr(), bytes.data(), n);
  if (absl::Status s = group->Broadcast(data, 0); !s.ok()) return s;
  if (group->rank() != 0 && !command->ParseFromArray(data[0].data_ptr(), static_cast<int>(n)))
    return absl::DataLossError("learner command from rank 0 does not parse");
  return absl::OkStatus();
}

absl::Status BroadcastParameters(LearnerGroup* group, Transformer* policy) {
  if (!Distributed(group)) return absl::OkStatus();
  std::vector<at::Tensor> params = policy->parameters();
  torch::NoGradGuard no_grad;
  return group->Broadcast(params, 0);
}

// FNV-1a 64 over every parameter's bytes, in name order: equal iff bit-identical.
std::string ParameterDigest(const Transformer& policy) {
  std::string bytes;
  for (const auto& [name, tensor] : policy.named_parameters()) {
    // Through the host: a GPU learner's parameters are not readable from here.
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    bytes.append(name);
    bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return absl::StrFormat("%016x", Fnv1a64(bytes));
}

absl::Status WriteDigest(const std::string& run_dir, int rank, const Transformer& policy) {
  return WriteFileDurably(absl::StrCat(run_dir, "/param_digest.rank-", rank),
                          ParameterDigest(policy) + "\n");
}

// What a follower rank holds for the job in hand.
struct RankJob {
  std::string job_id;
  v1::JobSpec spec;
  std::string run_dir;
  std::unique_ptr<Transformer> policy;
  std::unique_ptr<GrpoTrainer> trainer;
};

// --- Rank 0 -------------------------------------------------------------------------------

// One job on rank 0: the driver's batch source (the ingest buffer, fed by rollout workers
// with the prompts this asks the coordinator for) and its events (the coordinator's
// progress, the log, Prometheus). Also sends every command the other ranks follow.
class LeaderJob : public BatchSource, public JobEvents {
 public:
  struct Context {
    LearnerGroup* group;
    JobSource* jobs;
    IngestBuffer* buffer;
    WeightPublisher* weights;
    const DistributedLearnerOptions* options;
    absl::Notification* stop;
    LearnerMetrics* metrics;  // may be null
    std::function<absl::Status(v1::LearnerCommand*)> send;
    std::function<absl::Status()> keep_alive;
  };

  LeaderJob(const Context& c, std::string job_id, const v1::JobSpec& spec,
            const ModelConfig& model)
      : c_(c), job_id_(std::move(job_id)), spec_(spec), model_(model),
        reward_names_(RewardNames(spec)) {}

  v1::JobProgress& progress() { return progress_; }

  // --- BatchSource.
  // The other ranks wait in this broadcast whatever happened to the starting policy.
  absl::Status Share(Transformer& policy, bool) override {
    return BroadcastParameters(c_.group, &policy);
  }

  absl::Status Begin(const Transformer& policy, int64_t version, int step, uint64_t cursor,
                     const std::vector<std::string>& seen, bool from_other_job) override {
    requested_ = cursor_at_step_end_ = cursor;
    version_ = version;
    c_.buffer->StartJob(job_id_, spec_.grpo().group_size(), seen, model_.max_seq_len,
                        model_.vocab_size);
    if (absl::Status s = Publish(policy, version); !s.ok()) return s;
    const int steps = spec_.steps(), batch = spec_.grpo().prompts_per_step();
    if (step >= steps) return absl::OkStatus();
    // Prompts for this step and the next `lag` ones are out with the workers at any time.
    const int count = batch * static_cast<int>(std::min<int64_t>(steps - step, 1 + lag()));
    if (absl::Status s =
            c_.jobs->RequestPrompts(job_id_, count, version, from_other_job ? cursor : 0);
        !s.ok())
      return s;
    requested_ += count;
    return absl::OkStatus();
  }

  absl::StatusOr<SourcedBatch> Next(const Transformer&, int64_t version, int step) override {
    const auto wait_start = Clock::now();
    auto last_report = Clock::now();
    const int batch = spec_.grpo().prompts_per_step();
    version_ = version;
    SourcedBatch out;
    while (out.groups.empty() && !c_.stop->HasBeenNotified() && !cancelled_) {
      out.groups = c_.buffer->Take(batch, std::max<int64_t>(0, version - lag()),
                                   absl::Now() + absl::Milliseconds(500));
      Acknowledge();
      if (const int64_t stale = c_.buffer->DrainStaleCount(); stale > 0) {
        stale_samples_ += stale * spec_.grpo().group_size();
        Request(static_cast<int>(stale));  // replacements, sampled with today's weights
      }
      if (owed_ > 0) Request(std::exchange(owed_, 0));
      if (!out.groups.empty()) break;
      if (absl::Status s = c_.keep_alive(); !s.ok()) return s;
      if (SecondsSince(last_report) > 2) {
        last_report = Clock::now();
        Report(v1::JOB_PHASE_TRAINING,
               absl::StrFormat("step %d: waiting for groups (%d of %d buffered)", step,
                               c_.buffer->size(), batch));
      }
    }
    if (cancelled_ || c_.stop->HasBeenNotified()) out.groups.clear();
    out.wait_seconds = SecondsSince(wait_start);
    return out;
  }

  absl::Status BeforeStep(const std::vector<ScoredGroup>& groups) override {
    v1::LearnerCommand command;
    command.set_kind(v1::LearnerCommand::KIND_STEP);
    if (Distributed(c_.group))
      for (const ScoredGroup& g : groups) *command.add_groups() = ToProto(g, job_id_);
    return c_.send(&command);
  }

  void Replace() override { Request(spec_.grpo().prompts_per_step()); }

  absl::StatusOr<double> Trained(const Transformer& policy, int64_t version,
                                 int step) override {
    const auto start = Clock::now();
    version_ = version;
    if (absl::Status s = Publish(policy, version); !s.ok()) return s;
    // With max_policy_lag > 0 the next `lag` steps' prompts are out already: a job
    // resumed from here skips them (it never trains a prompt twice, it may skip some).
    cursor_at_step_end_ = requested_;
    if (step + lag() < spec_.steps()) Request(spec_.grpo().prompts_per_step());
    return SecondsSince(start);
  }

  absl::StatusOr<uint64_t> SettleForCheckpoint() override {
    // Everything recorded as seen must have reached the coordinator as acknowledged, or
    // after a resume its lease would come back forever as a duplicate.
    std::vector<std::string> unacked = c_.buffer->DrainNewIds();
    if (absl::Status s = c_.jobs->AckPrompts(job_id_, unacked); !s.ok()) {
      c_.buffer->ReturnIds(unacked);
      return s;
    }
    if (Distributed(c_.group) && spec_.training().shard_optimizer()) {
      v1::LearnerCommand command;
      command.set_kind(v1::LearnerCommand::KIND_CHECKPOINT);
      if (absl::Status s = c_.send(&command); !s.ok()) return s;
    }
    return cursor_at_step_end_;
  }

  std::vector<std::string> SeenIds() override { return c_.buffer->SeenIds(); }

  SourceCounters counters() override {
    const IngestCounters c = c_.buffer->counters();
    return {c.duplicate_groups, c.stale_groups_dropped};
  }

  // --- JobEvents. Coordinator trouble is logged, not fatal: training goes on and the
  // next report tries again.
  void Log(const std::string& line) override {
    if (c_.options->log) *c_.options->log << line << std::endl;
  }

  void Report(v1::JobPhase phase, const std::string& message) override {
    progress_.set_phase(phase);
    progress_.set_message(message);
    progress_.set_total_steps(spec_.steps());
    progress_.set_elapsed_seconds(SecondsSince(start_));
    progress_.set_groups_trained(groups_trained_);
    progress_.set_duplicate_groups(c_.buffer->counters().duplicate_groups);
    progress_.set_stale_samples_dropped(stale_samples_);
    absl::StatusOr<bool> cancel = c_.jobs->ReportProgress(job_id_, progress_);
    if (!cancel.ok()) {
      Log(absl::StrCat("ReportProgress: ", cancel.status().ToString()));
      return;
    }
    cancelled_ = cancelled_ || *cancel;
  }

  bool Cancelled() override { return cancelled_; }
  bool Stopping() override { return c_.stop->HasBeenNotified(); }

  void OnStep(const StepRecord& r) override {
    const StepMetrics& m = *r.metrics;
    groups_trained_ += m.groups;
    if (c_.metrics) {
      double lag = 0;
      int samples = 0;
      for (const ScoredGroup& g : *r.groups)
        for (const ScoredSample& s : g.samples) {
          lag += static_cast<double>(m.policy_version - 1 - s.policy_version);
          ++samples;
        }
      c_.metrics->RecordStep(m, reward_names_,
                             StepTimes{r.step_seconds, r.wait_seconds, m.seconds,
                                       r.allreduce_seconds, r.publish_seconds},
                             samples > 0 ? lag / samples : 0, r.tokens_per_second);
    }
    progress_.set_step(m.step);
    progress_.set_policy_version(m.policy_version);
    progress_.set_reward_mean(m.reward_mean);
    progress_.set_reward_std(m.reward_std);
    progress_.set_kl(m.kl);
    progress_.set_grad_norm(m.grad_norm);
    progress_.set_tokens_per_second(r.tokens_per_second);
    progress_.set_eta_seconds(r.eta_seconds);
  }

  void OnSkip(const StepMetrics&) override {
    if (c_.metrics) c_.metrics->RecordSkip();
  }

 private:
  int64_t lag() const { return spec_.grpo().max_policy_lag(); }

  absl::Status Publish(const Transformer& policy, int64_t version) {
    // float32 whatever the training precision: the publisher converts for bfloat16 workers.
    absl::StatusOr<std::string> flat = policy.ExportFlat(
        v1::WEIGHT_DTYPE_FLOAT32, c_.weights->SpareBuffer(v1::WEIGHT_DTYPE_FLOAT32));
    if (!flat.ok()) return flat.status();
    return c_.weights->Publish(job_id_, version, std::move(*flat));
  }

  // Prompts to be sampled with the policy's current version or newer. Those asked for but
  // refused (coordinator down) are owed: asked for again while waiting, or the pipeline
  // would stay short of a batch for good.
  void Request(int count) {
    if (absl::Status s = c_.jobs->RequestPrompts(job_id_, count, version_, 0); !s.ok()) {
      Log(absl::StrCat("RequestPrompts: ", s.ToString()));
      owed_ += count;
    } else {
      requested_ += count;
    }
  }

  void Acknowledge() {
    std::vector<std::string> ids = c_.buffer->DrainNewIds();
    if (absl::Status s = c_.jobs->AckPrompts(job_id_, ids); !s.ok()) {
      Log(absl::StrCat("AckPrompts: ", s.ToString()));
      c_.buffer->ReturnIds(ids);
    }
  }

  const Context c_;
  const std::string job_id_;
  const v1::JobSpec& spec_;
  const ModelConfig model_;
  const std::vector<std::string> reward_names_;
  const Clock::time_point start_ = Clock::now();
  v1::JobProgress progress_;
  bool cancelled_ = false;
  // Prompts requested for the job (counted on from the checkpoint after a restart), and
  // that count as it stood when the last completed step ended (before the next step's
  // request): the data position a checkpoint records, where a job started from it
  // (spec.resume_from) continues. Prompts the coordinator handed out beyond it (before a
  // crash, or as replacements) may be seen again by such a job, never twice by one job.
  uint64_t requested_ = 0, cursor_at_step_end_ = 0;
  int owed_ = 0;
  int64_t version_ = 0;  // the policy's, as of the last call
  int64_t groups_trained_ = 0;
  int64_t stale_samples_ = 0;
};

class Leader {
 public:
  Leader(LearnerGroup* group, JobSource* jobs, IngestBuffer* buffer, WeightPublisher* weights,
         const DistributedLearnerOptions& options, absl::Notification* stop)
      : group_(group), jobs_(jobs), buffer_(buffer), weights_(weights), options_(options),
        stop_(stop),
        metrics_(options.registry ? std::make_unique<LearnerMetrics>(options.registry, buffer)
                                  : nullptr) {}

  absl::Status Run() {
    Log("learner rank 0: waiting for jobs");
    while (!stop_->HasBeenNotified()) {
      absl::StatusOr<v1::Job> job = jobs_->AcquireJob();
      if (job.ok() && !job->job_id().empty()) {
        if (absl::Status s = RunJob(*job); !s.ok()) return s;  // a collective failed
        continue;
      }
      if (!job.ok()) Log(absl::StrCat("AcquireJob: ", job.status().ToString()));
      if (absl::Status s = KeepAlive(); !s.ok()) return s;
      stop_->WaitForNotificationWithTimeout(absl::Milliseconds(250));
    }
    v1::LearnerCommand shutdown;
    shutdown.set_kind(v1::LearnerCommand::KIND_SHUTDOWN);
    return BroadcastCommand(group_, &shutdown);
  }

 private:
  void Log(const std::string& line) {
    if (options_.log) *options_.log << line << std::endl;
  }

  absl::Status KeepAlive() {
    if (SecondsSince(last_command_) < std::chrono::duration<double>(options_.keepalive).count())
      return absl::OkStatus();
    v1::LearnerCommand noop;
    noop.set_kind(v1::LearnerCommand::KIND_NOOP);
    return Send(&noop);
  }

  absl::Status Send(v1::LearnerCommand* command) {
    last_command_ = Clock::now();
    return BroadcastCommand(group_, command);
  }

  absl::Status Finish(const std::string& job_id, const std::string& run_dir, v1::JobState state,
                      const std::string& error, const std::string& result_json) {
    v1::FinishJobRequest request;
    request.set_job_id(job_id);
    request.set_state(state);
    request.set_error(error);
    request.set_run_dir(run_dir);
    request.set_result_json(result_json);
    absl::Status s = jobs_->FinishJob(request);
    if (!s.ok()) Log(absl::StrCat("FinishJob: ", s.ToString()));
    buffer_->EndJob();
    weights_->Clear();
    Log(absl::StrCat("job ", job_id, ": ", v1::JobState_Name(state),
                     error.empty() ? "" : absl::StrCat(" (", error, ")")));
    return absl::OkStatus();
  }

  // Everything that can fail on bad input fails here, before any other rank is involved.
  absl::StatusOr<PreparedJob> Prepare(const v1::JobSpec& spec, const std::string& run_dir) {
    absl::StatusOr<PreparedJob> p = PrepareJob(spec, run_dir);
    if (p.ok() && static_cast<size_t>(spec.grpo().prompts_per_step()) > buffer_->capacity())
      return absl::InvalidArgumentError(absl::StrCat(
          "grpo.prompts_per_step = ", spec.grpo().prompts_per_step(),
          ": more than this learner's ingest buffer holds (--buffer_groups ",
          buffer_->capacity(), ")"));
    return p;
  }

  // Returns an error only when a collective failed (the group is then unusable); a job
  // that fails is finished as FAILED and the leader goes on to the next one.
  absl::Status RunJob(const v1::Job& acquired) {
    const std::string job_id = acquired.job_id();
    const v1::JobSpec& spec = acquired.spec();
    const std::string run_dir = (fs::path(options_.run_root) / job_id).string();
    Log(absl::StrCat("job ", job_id, " (", spec.name(), "): run directory ", run_dir));
    absl::StatusOr<PreparedJob> p = Prepare(spec, run_dir);
    if (!p.ok()) return Finish(job_id, run_dir, v1::JOB_STATE_FAILED, p.status().ToString(), "");

    v1::LearnerCommand start;
    start.set_kind(v1::LearnerCommand::KIND_START_JOB);
    start.set_job_id(job_id);
    *start.mutable_spec() = spec;
    start.set_run_dir(run_dir);
    start.set_resume_dir(p->resume.dir);
    if (absl::Status s = Send(&start); !s.ok()) return s;

    LeaderJob job({group_, jobs_, buffer_, weights_, &options_, stop_, metrics_.get(),
                   [this](v1::LearnerCommand* c) { return Send(c); },
                   [this] { return KeepAlive(); }},
                  job_id, spec, p->model.config);
    JobInputs inputs = p->Inputs(spec, run_dir, Distributed(group_) ? group_ : nullptr,
                                 options_.keep_checkpoints);
    inputs.device = options_.device;
    absl::StatusOr<JobOutcome> outcome = RunGrpoJob(inputs, job, job);
    if (!outcome.ok()) return outcome.status();

    v1::LearnerCommand end;
    end.set_kind(v1::LearnerCommand::KIND_END_JOB);
    if (absl::Status s = Send(&end); !s.ok()) return s;
    absl::Status digest = WriteDigest(run_dir, 0, *p->policy);
    if (!digest.ok() && outcome->state != v1::JOB_STATE_FAILED) {
      outcome->state = v1::JOB_STATE_FAILED;
      outcome->failure = digest;
    }
    if (outcome->state == v1::JOB_STATE_RUNNING) {
      // Checkpointed; the job stays RUNNING and the next learner resumes it.
      Log(absl::StrCat("job ", job_id, ": stopped at step ", outcome->step,
                       ", checkpointed; it resumes when a learner starts again"));
      buffer_->EndJob();
      weights_->Clear();
      return absl::OkStatus();
    }
    return Finish(job_id, run_dir, outcome->state,
                  outcome->failure.ok() ? "" : outcome->failure.ToString(), outcome->result_json);
  }

  LearnerGroup* group_;
  JobSource* jobs_;
  IngestBuffer* buffer_;
  WeightPublisher* weights_;
  const DistributedLearnerOptions& options_;
  absl::Notification* stop_;
  const std::unique_ptr<LearnerMetrics> metrics_;
  Clock::time_point last_command_ = Clock::now();
};

}  // namespace

absl::Status RunLearnerLeader(LearnerGroup* group, JobSource* jobs, IngestBuffer* buffer,
                              WeightPublisher* weights, const DistributedLearnerOptions& options,
                              absl::Notification* stop) {
  Leader leader(group, jobs, buffer, weights, options, stop);
  return leader.Run();
}

absl::Status RunLearnerFollower(LearnerGroup* group, const DistributedLearnerOptions& options) {
  auto log = [&](const std::string& line) {
    if (options.log) *options.log << line << std::endl;
  };
  log(absl::StrCat("learner rank ", group->rank(), ": following rank 0"));
  RankJob job;
  for (;;) {
    v1::LearnerCommand command;
    if (absl::Status s = BroadcastCommand(group, &command); !s.ok()) return s;
    switch (command.kind()) {
      case v1::LearnerCommand::KIND_START_JOB: {
        job = RankJob{};
        job.job_id = command.job_id();
        job.spec = command.spec();
        job.run_dir = command.run_dir();
        // Rank 0 read the same spec successfully before it sent the command. (A rank that
        // cannot read model.hf_dir stops here, and rank 0 then waits in the parameter
        // broadcast until the collective timeout: every rank needs the directory.)
        absl::StatusOr<ModelConfig> model_config = hf::JobModelConfig(job.spec);
        if (!model_config.ok()) return model_config.status();
        if (absl::Status s = BuildPolicy(job.spec, *model_config, &job.policy); !s.ok()) return s;
        if (absl::Status s = BroadcastParameters(group, job.policy.get()); !s.ok()) return s;
        absl::StatusOr<std::unique_ptr<GrpoTrainer>> trainer =
            CreateJobTrainer(job.spec, job.policy.get(), group, command.resume_dir(),
                             options.device);
        if (trainer.ok()) {
          job.trainer = std::move(*trainer);
        } else {
          log(absl::StrCat("job ", job.job_id, ": ", trainer.status().ToString()));
        }
        log(absl::StrCat("job ", job.job_id, ": parameters received"));
        break;
      }
      case v1::LearnerCommand::KIND_STEP: {
        if (!job.trainer) return absl::FailedPreconditionError("step command without a job");
        std::vector<ScoredGroup> groups;
        for (const v1::ScoredGroupProto& proto : command.groups()) {
          absl::StatusOr<ScoredGroup> g = FromProto(proto);
          if (!g.ok()) return g.status();
          groups.push_back(std::move(*g));
        }
        // Rank 0 checks the same batch and fails the same way, so a rejected step leaves
        // every rank's parameters as they were.
        if (absl::StatusOr<StepMetrics> m = job.trainer->Step(groups); !m.ok())
          log(absl::StrCat("step: ", m.status().ToString()));
        break;
      }
      case v1::LearnerCommand::KIND_CHECKPOINT:
        if (!job.trainer)
          return absl::FailedPreconditionError("checkpoint command without a job");
        // A failed gather is a failed collective: the group is unusable either way.
        if (absl::Status s = job.trainer->GatherForSave(); !s.ok()) return s;
        break;
      case v1::LearnerCommand::KIND_END_JOB:
        if (job.policy)
          if (absl::Status s = WriteDigest(job.run_dir, group->rank(), *job.policy); !s.ok())
            log(s.ToString());
        log(absl::StrCat("job ", job.job_id, ": done"));
        job = RankJob{};
        break;
      case v1::LearnerCommand::KIND_SHUTDOWN:
        return absl::OkStatus();
      default:
        break;
    }
  }
}

}  // namespace grpo
