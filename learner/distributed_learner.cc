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
#include "core/job_data.h"
#include "core/job_spec.h"
#include "core/model.h"
#include "core/scored_group_proto.h"
#include "core/text_tokenizer.h"
#include "hf/hf_checkpoint.h"
#include "hf/job_model.h"
#include "core/torch_status.h"
#include "core/weight_transfer.h"
#include "grpo/v1/learner.pb.h"
#include "learner/checkpoint.h"
#include "learner/grpo_trainer.h"
#include "learner/job_phases.h"
#include "learner/learner_metrics.h"
#include "rollout_worker/evaluation.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

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
    at::Tensor t = tensor.detach().contiguous();
    bytes.append(name);
    bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return absl::StrFormat("%016x", Fnv1a64(bytes));
}

absl::Status WriteDigest(const std::string& run_dir, int rank, const Transformer& policy) {
  return WriteFileDurably(absl::StrCat(run_dir, "/param_digest.rank-", rank),
                          ParameterDigest(policy) + "\n");
}

// What every rank holds for the job in hand.
struct RankJob {
  std::string job_id;
  v1::JobSpec spec;
  std::string run_dir;
  std::unique_ptr<Transformer> policy;
  std::unique_ptr<GrpoTrainer> trainer;
  // Rank 0: prompts this learner requested for the job (counted on from the checkpoint
  // after a restart), and that count as it stood when the last completed step ended
  // (before the next step's request): the data position a checkpoint records, where a
  // job started from it (spec.resume_from) continues. Prompts the coordinator handed out
  // beyond it (before a crash, or as replacements) may be seen again by such a job, never
  // twice by one job.
  uint64_t requested = 0;
  uint64_t cursor_at_step_end = 0;
  // Rank 0, model.hf_dir jobs: config.json, for the hf/ copy in each checkpoint.
  std::optional<hf::HfModelConfig> hf_config;
};

// After the parameter broadcast, on every rank; a resumed job then loads the reference,
// the optimizer and the counters from the checkpoint.
absl::Status CreateTrainer(LearnerGroup* group, const std::string& resume_dir, RankJob* job) {
  TrainerOptions options = TrainerOptionsFromSpec(job->spec);
  options.group = Distributed(group) ? group : nullptr;
  absl::StatusOr<std::unique_ptr<GrpoTrainer>> trainer =
      GrpoTrainer::Create(job->policy.get(), options);
  if (!trainer.ok()) return trainer.status();
  job->trainer = std::move(*trainer);
  if (!resume_dir.empty()) return job->trainer->Load(resume_dir);
  return absl::OkStatus();
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Keeps the first `lines` lines of a file (metrics of the steps a checkpoint covers).
absl::Status TruncateLines(const std::string& path, int64_t lines) {
  std::ifstream in(path);
  std::string kept, line;
  for (int64_t i = 0; i < lines && std::getline(in, line); ++i) kept += line + "\n";
  in.close();
  return WriteFileDurably(path, kept);
}

// --- Rank 0 -------------------------------------------------------------------------------

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
    if (Since(last_command_) < std::chrono::duration<double>(options_.keepalive).count())
      return absl::OkStatus();
    v1::LearnerCommand noop;
    noop.set_kind(v1::LearnerCommand::KIND_NOOP);
    return Send(&noop);
  }

  absl::Status Send(v1::LearnerCommand* command) {
    last_command_ = Clock::now();
    return BroadcastCommand(group_, command);
  }

  // Reports and returns whether the user cancelled. Coordinator trouble is logged, not
  // fatal: training goes on and the next report tries again.
  bool Report(const RankJob& job, v1::JobPhase phase, const std::string& message) {
    progress_.set_phase(phase);
    progress_.set_message(message);
    progress_.set_total_steps(job.spec.steps());
    progress_.set_elapsed_seconds(Since(job_start_));
    const IngestCounters c = buffer_->counters();
    progress_.set_groups_trained(groups_trained_);
    progress_.set_duplicate_groups(c.duplicate_groups);
    progress_.set_stale_samples_dropped(stale_samples_);
    absl::StatusOr<bool> cancel = jobs_->ReportProgress(job.job_id, progress_);
    if (!cancel.ok()) {
      Log(absl::StrCat("ReportProgress: ", cancel.status().ToString()));
      return false;
    }
    return *cancel;
  }

  absl::Status Finish(const RankJob& job, v1::JobState state, const std::string& error,
                      const std::string& result_json) {
    v1::FinishJobRequest request;
    request.set_job_id(job.job_id);
    request.set_state(state);
    request.set_error(error);
    request.set_run_dir(job.run_dir);
    request.set_result_json(result_json);
    absl::Status s = jobs_->FinishJob(request);
    if (!s.ok()) Log(absl::StrCat("FinishJob: ", s.ToString()));
    buffer_->EndJob();
    weights_->Clear();
    Log(absl::StrCat("job ", job.job_id, ": ", v1::JobState_Name(state),
                     error.empty() ? "" : absl::StrCat(" (", error, ")")));
    return absl::OkStatus();
  }

  absl::Status Publish(const RankJob& job) {
    absl::StatusOr<std::string> bytes = job.policy->SaveToString();
    if (!bytes.ok()) return bytes.status();
    weights_->Publish(job.job_id, job.trainer ? job.trainer->policy_version() : 0,
                      std::move(*bytes));
    return absl::OkStatus();
  }

  // Returns an error only when a collective failed (the group is then unusable); a job
  // that fails is finished as FAILED and the leader goes on to the next one.
  absl::Status RunJob(const v1::Job& acquired) {
    job_start_ = Clock::now();
    progress_.Clear();
    before_json_.clear();
    groups_trained_ = 0;
    stale_samples_ = 0;
    RankJob job;
    job.job_id = acquired.job_id();
    job.spec = acquired.spec();
    job.run_dir = (fs::path(options_.run_root) / job.job_id).string();
    Log(absl::StrCat("job ", job.job_id, " (", job.spec.name(), "): run directory ", job.run_dir));

    // Everything that can fail on bad input happens before the other ranks are involved.
    absl::Status prepared = ValidateJobSpec(job.spec);
    absl::StatusOr<JobData> data;
    if (prepared.ok()) {
      std::error_code ec;
      fs::create_directories(job.run_dir, ec);
      if (ec) prepared = absl::InternalError(absl::StrCat("creating ", job.run_dir, ": ", ec.message()));
    }
    if (prepared.ok())
      prepared = WriteFileDurably(job.run_dir + "/spec.json", JobSpecToJson(job.spec));
    if (prepared.ok()) {
      data = LoadJobData(job.spec);
      prepared = data.status();
    }
    // The model's shape and tokenizer: the preset's, or model.hf_dir's files.
    hf::JobModel model;
    if (prepared.ok()) {
      absl::StatusOr<hf::JobModel> loaded = hf::LoadJobModel(job.spec);
      prepared = loaded.status();
      if (loaded.ok()) model = *std::move(loaded);
    }
    const ModelConfig& model_config = model.config;
    std::unique_ptr<TextTokenizer>& tokenizer = model.tokenizer;
    job.hf_config = model.hf;
    std::unique_ptr<Transformer> policy;
    if (prepared.ok()) prepared = BuildPolicy(job.spec, model_config, &policy);
    reward_names_.clear();
    for (const v1::RewardFunctionSpec& r : job.spec.rewards()) reward_names_.push_back(r.name());
    std::string resume_dir;
    bool from_other_job = false;  // spec.resume_from: another job's checkpoint
    if (prepared.ok()) {
      absl::StatusOr<std::string> latest = LatestCheckpoint(job.run_dir);
      if (latest.ok()) {
        resume_dir = *latest;
      } else if (latest.status().code() != absl::StatusCode::kNotFound) {
        prepared = latest.status();  // `latest` names a missing directory: say so, not guess
      } else if (!job.spec.resume_from().empty()) {
        resume_dir = job.spec.resume_from();
        from_other_job = true;
        if (!fs::exists(fs::path(resume_dir) / "model.pt"))
          prepared = absl::InvalidArgumentError(absl::StrCat(
              "resume_from: ", resume_dir, " is not a checkpoint (no model.pt there)"));
      }
    }
    if (prepared.ok() &&
        static_cast<size_t>(job.spec.grpo().prompts_per_step()) > buffer_->capacity())
      prepared = absl::InvalidArgumentError(absl::StrCat(
          "grpo.prompts_per_step = ", job.spec.grpo().prompts_per_step(),
          ": more than this learner's ingest buffer holds (--buffer_groups ",
          buffer_->capacity(), ")"));
    if (!prepared.ok()) return Finish(job, v1::JOB_STATE_FAILED, prepared.ToString(), "");

    v1::LearnerCommand start;
    start.set_kind(v1::LearnerCommand::KIND_START_JOB);
    start.set_job_id(job.job_id);
    *start.mutable_spec() = job.spec;
    start.set_run_dir(job.run_dir);
    start.set_resume_dir(resume_dir);
    if (absl::Status s = Send(&start); !s.ok()) return s;
    job.policy = std::move(policy);
    std::vector<std::string> seen;
    uint64_t resume_cursor = 0;
    if (!resume_dir.empty()) {
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(
                                ReadWholeFile(resume_dir + "/data_cursor.txt")),
                            &resume_cursor))
        resume_cursor = 0;  // a checkpoint from before data cursors were recorded
      job.requested = job.cursor_at_step_end = resume_cursor;
    }
    if (!resume_dir.empty() && !from_other_job)  // another job's ids mean nothing here
      for (absl::string_view id : absl::StrSplit(ReadWholeFile(resume_dir + "/seen_prompts.txt"),
                                                 '\n', absl::SkipEmpty()))
        seen.emplace_back(id);
    buffer_->StartJob(job.job_id, job.spec.grpo().group_size(), seen, model_config.max_seq_len,
                      model_config.vocab_size);

    // --- 1. Starting policy and its evaluation (rank 0 alone; the others wait in the
    // parameter broadcast).
    const EvalOptions eval = EvalOptionsFromSpec(job.spec);
    EvalResult after;
    bool cancelled = false;
    if (!resume_dir.empty()) {
      const std::string line = absl::StrCat("resuming from ", resume_dir);
      Log(line);
      cancelled = Report(job, v1::JOB_PHASE_STARTING, line);
      prepared = job.policy->Load(resume_dir + "/model.pt");
      before_json_ = ReadWholeFile(resume_dir + "/eval_before.json");
    } else {
      cancelled = Report(job, v1::JOB_PHASE_SFT, "preparing the starting policy");
    }
    if (resume_dir.empty() && !cancelled)
      prepared = PrepareStartingPolicy(job.spec, *tokenizer, data->train, job.policy.get(),
                                       [&](const std::string& line) {
                                         Log(line);
                                         cancelled =
                                             Report(job, v1::JOB_PHASE_SFT, line) || cancelled;
                                       });
    if (resume_dir.empty() && prepared.ok() && !cancelled) {
      // The phase says what happens now; the message stays the last line a person saw.
      cancelled = Report(job, v1::JOB_PHASE_EVAL, progress_.message());
      const auto start_eval = Clock::now();
      absl::StatusOr<EvalResult> r = Evaluate(*job.policy, *tokenizer, data->held_out, eval);
      prepared = r.status();
      if (r.ok()) {
        before_json_ = EvalJson(*r);
        const std::string line = EvalLine("before", *r, Since(start_eval));
        Log(line);
        cancelled = Report(job, v1::JOB_PHASE_EVAL, line) || cancelled;
      }
    }
    // The other ranks are waiting for these parameters whatever happened above.
    if (absl::Status s = BroadcastParameters(group_, job.policy.get()); !s.ok()) return s;
    if (prepared.ok()) prepared = CreateTrainer(group_, resume_dir, &job);
    if (prepared.ok()) prepared = Publish(job);
    int step = prepared.ok() ? static_cast<int>(job.trainer->step()) : 0;

    // --- 2. GRPO steps.
    const int steps = job.spec.steps();
    const int batch = job.spec.grpo().prompts_per_step();
    const int64_t lag = job.spec.grpo().max_policy_lag();
    std::ofstream metrics, trained_prompts;
    // metrics.jsonl keeps the steps the checkpoint covers; trained_prompts.txt keeps every
    // line ever written, so it shows that no prompt was trained twice across restarts.
    if (prepared.ok() && !resume_dir.empty() && !from_other_job)
      prepared = TruncateLines(job.run_dir + "/metrics.jsonl", step);
    if (prepared.ok()) {
      const auto mode = resume_dir.empty() || from_other_job ? std::ios::trunc : std::ios::app;
      metrics.open(job.run_dir + "/metrics.jsonl", mode);
      // Audit trail of exactly-once training: one line per step, the prompt ids it used.
      trained_prompts.open(job.run_dir + "/trained_prompts.txt", mode);
      if (!resume_dir.empty()) trained_prompts << "# resumed at step " << step << "\n";
      if (!metrics || !trained_prompts)
        prepared = absl::InternalError(absl::StrCat("opening files in ", job.run_dir));
    }
    // Prompts for this step and the next `lag` ones are out with the workers at any time.
    if (prepared.ok() && step < steps) {
      const int count = batch * static_cast<int>(std::min<int64_t>(steps - step, 1 + lag));
      prepared = jobs_->RequestPrompts(job.job_id, count, job.trainer->policy_version(),
                                       from_other_job ? resume_cursor : 0);
      if (prepared.ok()) job.requested += count;
    }
    // Prompts asked for but refused (coordinator down): asked for again while waiting, or
    // the pipeline would stay short of a batch for good.
    int owed = 0;
    auto request = [&](int count) {
      if (absl::Status s =
              jobs_->RequestPrompts(job.job_id, count, job.trainer->policy_version(), 0);
          !s.ok()) {
        Log(absl::StrCat("RequestPrompts: ", s.ToString()));
        owed += count;
      } else {
        job.requested += count;
      }
    };
    auto acknowledge = [&] {
      std::vector<std::string> ids = buffer_->DrainNewIds();
      if (absl::Status s = jobs_->AckPrompts(job.job_id, ids); !s.ok()) {
        Log(absl::StrCat("AckPrompts: ", s.ToString()));
        buffer_->ReturnIds(ids);
      }
    };
    auto last_step_end = Clock::now();
    const auto grpo_start = Clock::now();
    const int first_step = step;  // > 0 after a resume: the ETA counts this run's steps
    auto last_checkpoint = Clock::now();
    while (prepared.ok() && !cancelled && step < steps && !stop_->HasBeenNotified()) {
      const int64_t version = job.trainer->policy_version();
      const auto wait_start = Clock::now();
      std::vector<ScoredGroup> groups;
      auto last_report = Clock::now();
      while (groups.empty() && !stop_->HasBeenNotified()) {
        groups = buffer_->Take(batch, std::max<int64_t>(0, version - lag),
                               absl::Now() + absl::Milliseconds(500));
        acknowledge();
        if (const int64_t stale = buffer_->DrainStaleCount(); stale > 0) {
          stale_samples_ += stale * job.spec.grpo().group_size();
          request(static_cast<int>(stale));  // replacements, sampled with today's weights
        }
        if (owed > 0) request(std::exchange(owed, 0));
        if (!groups.empty()) break;
        if (absl::Status s = KeepAlive(); !s.ok()) return s;
        if (Since(last_report) > 2) {
          last_report = Clock::now();
          cancelled = Report(job, v1::JOB_PHASE_TRAINING,
                             absl::StrFormat("step %d: waiting for groups (%d of %d buffered)",
                                             step + 1, buffer_->size(), batch));
          if (cancelled) break;
        }
      }
      if (groups.empty()) break;  // cancelled or stopping
      const double wait_seconds = Since(wait_start);

      v1::LearnerCommand command;
      command.set_kind(v1::LearnerCommand::KIND_STEP);
      if (Distributed(group_))
        for (const ScoredGroup& g : groups) *command.add_groups() = ToProto(g, job.job_id);
      if (absl::Status s = Send(&command); !s.ok()) return s;
      const double allreduce_before = group_ ? group_->allreduce_seconds() : 0;
      absl::StatusOr<StepMetrics> m = job.trainer->Step(groups);
      if (!m.ok()) {
        prepared = m.status();
        break;
      }
      if (!m->trained) {
        // Every group was filtered out (zero variance or stale), or the update was skipped
        // as non-finite: the step does not count and the batch is replaced, as DAPO's
        // dynamic sampling does.
        if (m->skipped_nonfinite) {
          if (metrics_) metrics_->RecordSkip();
          Log(absl::StrCat("step ", step + 1, ": update skipped, the loss or gradient was "
                           "not finite (", m->nonfinite_skips, " skipped so far)"));
        }
        request(batch);
        continue;
      }
      ++step;
      m->step = step;
      for (const ScoredGroup& g : groups) trained_prompts << g.prompt_id << " ";
      trained_prompts << "\n";
      trained_prompts.flush();
      groups_trained_ += m->groups;
      const double allreduce_seconds = (group_ ? group_->allreduce_seconds() : 0) - allreduce_before;
      const auto publish_start = Clock::now();
      if (absl::Status s = Publish(job); !s.ok()) {
        prepared = s;
        break;
      }
      const double publish_seconds = Since(publish_start);
      // With max_policy_lag > 0 the next `lag` steps' prompts are out already: a job
      // resumed from here skips them (it never trains a prompt twice, it may skip some).
      job.cursor_at_step_end = job.requested;
      if (step + lag < steps) request(batch);  // the prompts of step `step + 1 + lag`

      const double step_seconds = Since(last_step_end);
      last_step_end = Clock::now();
      const double tokens_per_second = m->completion_tokens / std::max(1e-9, step_seconds);
      const IngestCounters c = buffer_->counters();
      metrics << MetricsJson(*m, reward_names_, tokens_per_second, Since(job_start_),
                             /*sample_seconds=*/0,
                             absl::StrFormat(",\"wait_seconds\":%.6g,\"allreduce_seconds\":%.6g,"
                                             "\"publish_seconds\":%.6g,\"step_seconds\":%.6g,"
                                             "\"duplicate_groups\":%d,\"stale_groups_dropped\":%d,"
                                             "\"world_size\":%d",
                                             wait_seconds, allreduce_seconds, publish_seconds,
                                             step_seconds, c.duplicate_groups,
                                             c.stale_groups_dropped,
                                             group_ ? group_->world_size() : 1));
      metrics.flush();
      const double elapsed = Since(grpo_start);
      const std::string line = absl::StrFormat(
          "step %4d/%d | reward %.3f ±%.3f | kl %.5f | clip %.4f | grad %.3f | %6.0f tok/s | "
          "wait %.2fs train %.2fs | %s elapsed, ETA %s",
          step, steps, m->reward_mean, m->reward_std, m->kl, m->clip_fraction, m->grad_norm,
          tokens_per_second, wait_seconds, m->seconds, FormatDuration(elapsed),
          FormatDuration(elapsed / (step - first_step) * (steps - step)));
      Log(line);
      if (metrics_) {
        double lag = 0;
        int samples = 0;
        for (const ScoredGroup& g : groups)
          for (const ScoredSample& s : g.samples) {
            lag += static_cast<double>(version - s.policy_version);
            ++samples;
          }
        metrics_->RecordStep(*m, reward_names_,
                             StepTimes{step_seconds, wait_seconds, m->seconds, allreduce_seconds,
                                       publish_seconds},
                             samples > 0 ? lag / samples : 0, tokens_per_second);
      }
      progress_.set_step(step);
      progress_.set_policy_version(m->policy_version);
      progress_.set_reward_mean(m->reward_mean);
      progress_.set_reward_std(m->reward_std);
      progress_.set_kl(m->kl);
      progress_.set_grad_norm(m->grad_norm);
      progress_.set_tokens_per_second(tokens_per_second);
      progress_.set_eta_seconds(elapsed / (step - first_step) * (steps - step));
      cancelled = Report(job, v1::JOB_PHASE_TRAINING, line);
      const bool by_steps =
          job.spec.checkpoint_every() > 0 && step % job.spec.checkpoint_every() == 0;
      const bool by_time = job.spec.checkpoint_every_seconds() > 0 &&
                           Since(last_checkpoint) >= job.spec.checkpoint_every_seconds();
      if ((by_steps || by_time) && step < steps) {
        prepared = SaveCheckpoint(job, step);
        last_checkpoint = Clock::now();
      }
    }

    // --- 3. The end: checkpoint, evaluation, every rank's digest.
    std::string result_json;
    if (prepared.ok() && step > 0) prepared = SaveCheckpoint(job, step);
    if (prepared.ok() && !cancelled && step == steps) {
      Report(job, v1::JOB_PHASE_EVAL, progress_.message());
      const auto start_eval = Clock::now();
      absl::StatusOr<EvalResult> r = Evaluate(*job.policy, *tokenizer, data->held_out, eval);
      prepared = r.status();
      if (r.ok()) {
        after = *r;
        Log(EvalLine("after", after, Since(start_eval)));
        result_json = absl::StrCat("{\"before\":", before_json_.empty() ? "null" : before_json_,
                                   ",\"after\":", EvalJson(after), ",\"steps\":", step, "}");
        prepared = WriteFileDurably(job.run_dir + "/eval.json", result_json + "\n");
      }
    }
    v1::LearnerCommand end;
    end.set_kind(v1::LearnerCommand::KIND_END_JOB);
    if (absl::Status s = Send(&end); !s.ok()) return s;
    if (absl::Status s = WriteDigest(job.run_dir, 0, *job.policy); !s.ok() && prepared.ok())
      prepared = s;
    if (!prepared.ok()) return Finish(job, v1::JOB_STATE_FAILED, prepared.ToString(), "");
    if (cancelled) return Finish(job, v1::JOB_STATE_CANCELLED, "", "");
    if (stop_->HasBeenNotified() && step < steps) {
      // Checkpointed above; the job stays RUNNING and the next learner resumes it.
      Log(absl::StrCat("job ", job.job_id, ": stopped at step ", step,
                       ", checkpointed; it resumes when a learner starts again"));
      buffer_->EndJob();
      weights_->Clear();
      return absl::OkStatus();
    }
    if (step < steps)
      return Finish(job, v1::JOB_STATE_FAILED,
                    absl::StrCat("learner stopped at step ", step, " of ", steps), "");
    return Finish(job, v1::JOB_STATE_SUCCEEDED, "", result_json);
  }

  absl::Status SaveCheckpoint(const RankJob& job, int step) {
    // Everything recorded as seen below must have reached the coordinator as acknowledged,
    // or after a resume its lease would come back forever as a duplicate.
    std::vector<std::string> unacked = buffer_->DrainNewIds();
    if (absl::Status s = jobs_->AckPrompts(job.job_id, unacked); !s.ok()) {
      buffer_->ReturnIds(unacked);
      return s;
    }
    absl::Status s = WriteCheckpoint(job.run_dir, step, [&](const std::string& dir) {
      if (absl::Status s = job.policy->Save(dir + "/model.pt"); !s.ok()) return s;
      if (absl::Status s = job.trainer->Save(dir); !s.ok()) return s;
      if (absl::Status s = WriteFileDurably(dir + "/eval_before.json", before_json_); !s.ok())
        return s;
      // What it was trained with, so a checkpoint copied elsewhere explains itself.
      if (absl::Status s = WriteFileDurably(dir + "/spec.json", JobSpecToJson(job.spec)); !s.ok())
        return s;
      // A Hugging Face job's policy also in its own layout (hf/), in the dtype it came in,
      // with its tokenizer files: loadable by any tool that reads that layout.
      if (job.hf_config.has_value()) {
        const hf::HfModelConfig* config = &*job.hf_config;
        hf::SaveOptions save;
        save.copy_from = job.spec.model().hf_dir();
        if (config->torch_dtype == "bfloat16") save.dtype = hf::Dtype::kBF16;
        if (config->torch_dtype == "float16") save.dtype = hf::Dtype::kF16;
        if (absl::Status s = hf::SaveHfModel(*job.policy, *config, dir + "/hf", save); !s.ok())
          return s;
      }
      // Every prompt ingested so far — trained, buffered or dropped as stale: all were
      // acknowledged to the coordinator, so none may be trained after a resume.
      std::string seen;
      for (const std::string& id : buffer_->SeenIds()) absl::StrAppend(&seen, id, "\n");
      if (absl::Status s = WriteFileDurably(dir + "/seen_prompts.txt", seen); !s.ok()) return s;
      return WriteFileDurably(dir + "/data_cursor.txt",
                              absl::StrCat(job.cursor_at_step_end, "\n"));
    });
    if (!s.ok()) return s;
    return PruneCheckpoints(job.run_dir, options_.keep_checkpoints);
  }

  LearnerGroup* group_;
  JobSource* jobs_;
  IngestBuffer* buffer_;
  WeightPublisher* weights_;
  const DistributedLearnerOptions& options_;
  absl::Notification* stop_;
  const std::unique_ptr<LearnerMetrics> metrics_;
  Clock::time_point last_command_ = Clock::now();
  Clock::time_point job_start_ = Clock::now();
  v1::JobProgress progress_;
  std::vector<std::string> reward_names_;
  std::string before_json_;  // the starting policy's evaluation, for eval.json
  int64_t groups_trained_ = 0;
  int64_t stale_samples_ = 0;
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
        if (absl::Status s = CreateTrainer(group, command.resume_dir(), &job); !s.ok())
          log(absl::StrCat("job ", job.job_id, ": ", s.ToString()));
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
