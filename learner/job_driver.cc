#include "learner/job_driver.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/clock.h"
#include "base/file.h"
#include "hf/hf_checkpoint.h"
#include "data/job_data.h"
#include "jobspec/job_spec.h"
#include "learner/checkpoint.h"
#include "learner/job_phases.h"
#include "rewards/code_tests.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Keeps the first `lines` lines of a file (metrics of the steps a checkpoint covers).
absl::Status TruncateLines(const std::string& path, int64_t lines) {
  std::ifstream in(path);
  std::string kept, line;
  for (int64_t i = 0; i < lines && std::getline(in, line); ++i) kept += line + "\n";
  in.close();
  return WriteFileDurably(path, kept);
}

class Driver {
 public:
  Driver(const JobInputs& in, BatchSource& source, JobEvents& events)
      : in_(in), spec_(in.spec), source_(source), events_(events), policy_(*in.policy),
        reward_names_(RewardNames(in.spec)) {}

  absl::StatusOr<JobOutcome> Run() {
    const bool resuming = !in_.resume.dir.empty();
    // --- 2. Starting policy (and the other ranks get it whatever happened).
    PrepareStartingPolicy(resuming);
    if (absl::Status s = source_.Share(policy_, prepared_.ok()); !s.ok()) return s;
    // --- 3. Trainer, the source's data position, the run files.
    if (prepared_.ok()) StartTrainer(resuming);
    // --- 4. Steps.
    if (absl::Status s = TrainSteps(); !s.ok()) return s;
    // --- 5. The end.
    Finish();
    return std::move(outcome_);
  }

 private:
  // Reports and remembers a cancellation.
  void Report(v1::JobPhase phase, const std::string& message) {
    events_.Report(phase, message);
    cancelled_ = cancelled_ || events_.Cancelled();
  }

  void Evaluate(const std::string& label, std::optional<EvalResult>* out) {
    Report(v1::JOB_PHASE_EVAL, last_line_);  // the phase says what happens now
    const auto start = Clock::now();
    EvalOptions options = EvalOptionsFromSpec(spec_);
    absl::StatusOr<const RewardFunction*> judge = TestsJudge();
    if (!judge.ok()) {
      prepared_ = judge.status();
      return;
    }
    options.tests_judge = *judge;
    absl::StatusOr<EvalResult> r =
        grpo::Evaluate(policy_, *in_.tokenizer, in_.data->held_out, options);
    if (!r.ok()) {
      prepared_ = r.status();
      return;
    }
    if (out) *out = *r;
    Line(v1::JOB_PHASE_EVAL, EvalLine(label, *r, SecondsSince(start)));
  }

  // Held-out examples with tests are judged by a code_tests function of this process's own
  // (its sandbox), with the spec's code_tests settings; made on first use.
  absl::StatusOr<const RewardFunction*> TestsJudge() {
    if (tests_judge_) return tests_judge_.get();
    const auto& held_out = in_.data->held_out;
    if (std::none_of(held_out.begin(), held_out.end(), HasTests)) return nullptr;
    RewardParams params;
    for (const v1::RewardFunctionSpec& r : spec_.rewards())
      if (r.name() == "code_tests") params = RewardParams(r.params().begin(), r.params().end());
    absl::StatusOr<std::unique_ptr<RewardFunction>> judge = MakeCodeTestsFunction(params);
    if (!judge.ok()) return judge.status();
    tests_judge_ = std::move(*judge);
    return tests_judge_.get();
  }

  void Line(v1::JobPhase phase, const std::string& line) {
    last_line_ = line;
    events_.Log(line);
    Report(phase, line);
  }

  void PrepareStartingPolicy(bool resuming) {
    if (resuming) {
      Line(v1::JOB_PHASE_STARTING, absl::StrCat("resuming from ", in_.resume.dir));
      prepared_ = policy_.Load(in_.resume.dir + "/model.pt");
      before_json_ = ReadFileOrEmpty(in_.resume.dir + "/eval_before.json");
      return;
    }
    Report(v1::JOB_PHASE_SFT, "preparing the starting policy");
    if (cancelled_) return;
    prepared_ = grpo::PrepareStartingPolicy(
        spec_, *in_.tokenizer, in_.data->train, &policy_,
        [&](const std::string& line) { Line(v1::JOB_PHASE_SFT, line); });
    if (!prepared_.ok() || cancelled_) return;
    Evaluate("before", &outcome_.before);
    if (outcome_.before) before_json_ = EvalJson(*outcome_.before);
  }

  void StartTrainer(bool resuming) {
    absl::StatusOr<std::unique_ptr<GrpoTrainer>> trainer =
        CreateJobTrainer(spec_, &policy_, in_.group, in_.resume.dir, in_.device);
    if (!trainer.ok()) {
      prepared_ = trainer.status();
      return;
    }
    trainer_ = std::move(*trainer);
    step_ = static_cast<int>(trainer_->step());
    first_step_ = step_;
    uint64_t cursor = 0;
    std::vector<std::string> seen;
    if (resuming) {
      // A checkpoint from before data cursors were recorded starts the data over.
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(
                                ReadFileOrEmpty(in_.resume.dir + "/data_cursor.txt")),
                            &cursor))
        cursor = 0;
      if (!in_.resume.from_other_job)  // another job's ids mean nothing here
        for (absl::string_view id : absl::StrSplit(
                 ReadFileOrEmpty(in_.resume.dir + "/seen_prompts.txt"), '\n', absl::SkipEmpty()))
          seen.emplace_back(id);
    }
    prepared_ = source_.Begin(policy_, trainer_->policy_version(), step_, cursor, seen,
                              in_.resume.from_other_job);
    if (prepared_.ok()) OpenRunFiles(resuming && !in_.resume.from_other_job);
  }

  // metrics.jsonl keeps the steps the checkpoint covers; trained_prompts.txt keeps every
  // line ever written, so it shows that no prompt was trained twice across restarts.
  void OpenRunFiles(bool continuing) {
    const std::string metrics = in_.run_dir + "/metrics.jsonl";
    if (continuing) prepared_ = TruncateLines(metrics, step_);
    if (!prepared_.ok()) return;
    const auto mode = continuing ? std::ios::app : std::ios::trunc;
    metrics_.open(metrics, mode);
    // Audit trail of exactly-once training: one line per step, the prompt ids it used.
    trained_prompts_.open(in_.run_dir + "/trained_prompts.txt", mode);
    if (!in_.resume.dir.empty()) trained_prompts_ << "# resumed at step " << step_ << "\n";
    if (!metrics_ || !trained_prompts_)
      prepared_ = absl::InternalError(absl::StrCat("opening files in ", in_.run_dir));
  }

  // Returns an error only when the source failed fatally.
  absl::Status TrainSteps() {
    const int steps = spec_.steps();
    grpo_start_ = last_step_end_ = last_checkpoint_ = Clock::now();
    while (prepared_.ok() && !cancelled_ && step_ < steps && !events_.Stopping()) {
      absl::StatusOr<SourcedBatch> batch =
          source_.Next(policy_, trainer_->policy_version(), step_ + 1);
      if (!batch.ok()) return batch.status();
      cancelled_ = cancelled_ || events_.Cancelled();
      if (batch->groups.empty()) break;  // cancelled or stopping
      if (absl::Status s = source_.BeforeStep(batch->groups); !s.ok()) return s;
      const double allreduce_before = in_.group ? in_.group->allreduce_seconds() : 0;
      absl::StatusOr<StepMetrics> m = trainer_->Step(batch->groups);
      if (!m.ok()) {
        prepared_ = m.status();
        break;
      }
      if (!m->trained) {
        Rejected(*m);
        continue;
      }
      ++step_;
      m->step = step_;
      Record(*m, *batch, (in_.group ? in_.group->allreduce_seconds() : 0) - allreduce_before);
      if (!prepared_.ok()) break;
      MaybeCheckpoint();
      if (spec_.eval().every_steps() > 0 && step_ % spec_.eval().every_steps() == 0 &&
          step_ < steps)
        Evaluate(absl::StrCat("@", step_), nullptr);
    }
    return absl::OkStatus();
  }

  // Every group was filtered out (zero variance or stale), or the update was skipped as
  // non-finite: the step does not count and the batch is replaced, as DAPO's dynamic
  // sampling does.
  void Rejected(const StepMetrics& m) {
    if (m.skipped_nonfinite) {
      events_.OnSkip(m);
      events_.Log(absl::StrCat("step ", step_ + 1, ": update skipped, the loss or gradient was "
                               "not finite (", m.nonfinite_skips, " skipped so far)"));
    } else {
      events_.Log(absl::StrCat("step ", step_ + 1, ": every group was filtered out (",
                               m.dropped_stale_samples, " stale samples, zero-variance fraction ",
                               absl::StrFormat("%.2f", m.zero_variance_fraction),
                               "); taking another batch"));
    }
    source_.Replace();
  }

  // metrics.jsonl, trained_prompts.txt, the step line, and the source's publication.
  void Record(const StepMetrics& m, const SourcedBatch& batch, double allreduce_seconds) {
    for (const ScoredGroup& g : batch.groups) trained_prompts_ << g.prompt_id << " ";
    trained_prompts_ << "\n";
    trained_prompts_.flush();
    absl::StatusOr<double> publish_seconds =
        source_.Trained(policy_, trainer_->policy_version(), step_);
    if (!publish_seconds.ok()) {
      prepared_ = publish_seconds.status();
      return;
    }
    outcome_.step_rewards.push_back(m.reward_mean);
    const double step_seconds = SecondsSince(last_step_end_);
    last_step_end_ = Clock::now();
    const double tokens_per_second = m.completion_tokens / std::max(1e-9, step_seconds);
    const SourceCounters c = source_.counters();
    metrics_ << MetricsJson(
        m, reward_names_, tokens_per_second, SecondsSince(job_start_), batch.sample_seconds,
        absl::StrFormat(",\"wait_seconds\":%.6g,\"allreduce_seconds\":%.6g,"
                        "\"publish_seconds\":%.6g,\"step_seconds\":%.6g,"
                        "\"duplicate_groups\":%d,\"stale_groups_dropped\":%d,"
                        "\"world_size\":%d",
                        batch.wait_seconds, allreduce_seconds, *publish_seconds, step_seconds,
                        c.duplicate_groups, c.stale_groups_dropped,
                        in_.group ? in_.group->world_size() : 1));
    metrics_.flush();
    const int steps = spec_.steps();
    const double elapsed = SecondsSince(grpo_start_);
    const double eta = elapsed / (step_ - first_step_) * (steps - step_);
    const std::string line = absl::StrFormat(
        "step %4d/%d | reward %.3f ±%.3f | kl %.5f | clip %.4f | grad %.3f | %6.0f tok/s | "
        "wait %.2fs sample %.2fs train %.2fs | %s elapsed, ETA %s",
        step_, steps, m.reward_mean, m.reward_std, m.kl, m.clip_fraction, m.grad_norm,
        tokens_per_second, batch.wait_seconds, batch.sample_seconds, m.seconds,
        FormatDuration(elapsed), FormatDuration(eta));
    last_line_ = line;
    events_.Log(line);
    events_.OnStep({&m, &batch.groups, step_seconds, batch.wait_seconds, allreduce_seconds,
                    *publish_seconds, tokens_per_second, eta});
    Report(v1::JOB_PHASE_TRAINING, line);
  }

  void MaybeCheckpoint() {
    const bool by_steps =
        spec_.checkpoint_every() > 0 && step_ % spec_.checkpoint_every() == 0;
    const bool by_time = spec_.checkpoint_every_seconds() > 0 &&
                         SecondsSince(last_checkpoint_) >= spec_.checkpoint_every_seconds();
    if ((by_steps || by_time) && step_ < spec_.steps()) Checkpoint();
  }

  void Checkpoint() {
    absl::StatusOr<uint64_t> cursor = source_.SettleForCheckpoint();
    if (!cursor.ok()) {
      prepared_ = cursor.status();
      return;
    }
    // The collective part first, right after the source told the other ranks, before
    // anything that can fail here alone.
    prepared_ = trainer_->GatherForSave();
    if (!prepared_.ok()) return;
    prepared_ = WriteCheckpoint(in_.run_dir, step_, [&](const std::string& dir) {
      if (absl::Status s = policy_.Save(dir + "/model.pt"); !s.ok()) return s;
      if (absl::Status s = trainer_->Save(dir); !s.ok()) return s;
      if (absl::Status s = WriteFileDurably(dir + "/eval_before.json", before_json_); !s.ok())
        return s;
      // What it was trained with, so a checkpoint copied elsewhere explains itself.
      if (absl::Status s = WriteFileDurably(dir + "/spec.json", JobSpecToJson(spec_)); !s.ok())
        return s;
      // A Hugging Face job's policy also in its own layout (hf/), in the dtype it came in,
      // with its tokenizer files: loadable by any tool that reads that layout.
      if (in_.hf_config.has_value()) {
        hf::SaveOptions save;
        save.copy_from = spec_.model().hf_dir();
        if (in_.hf_config->torch_dtype == "bfloat16") save.dtype = hf::Dtype::kBF16;
        if (in_.hf_config->torch_dtype == "float16") save.dtype = hf::Dtype::kF16;
        if (absl::Status s = hf::SaveHfModel(policy_, *in_.hf_config, dir + "/hf", save);
            !s.ok())
          return s;
      }
      // Every prompt taken in so far — trained, buffered or dropped as stale: none may be
      // trained after a resume.
      std::string seen;
      for (const std::string& id : source_.SeenIds()) absl::StrAppend(&seen, id, "\n");
      if (absl::Status s = WriteFileDurably(dir + "/seen_prompts.txt", seen); !s.ok()) return s;
      return WriteFileDurably(dir + "/data_cursor.txt", absl::StrCat(*cursor, "\n"));
    });
    if (prepared_.ok()) prepared_ = PruneCheckpoints(in_.run_dir, in_.keep_checkpoints);
    last_checkpoint_ = Clock::now();
  }

  void Finish() {
    const int steps = spec_.steps();
    // A job of 0 steps (SFT only) leaves its starting policy as step-0, a checkpoint other
    // jobs can start from (model.init_checkpoint).
    if (prepared_.ok() && trainer_ && (step_ > 0 || steps == 0)) Checkpoint();
    if (prepared_.ok() && !cancelled_ && step_ == steps) {
      Evaluate("after", &outcome_.after);
      if (outcome_.after) {
        outcome_.result_json =
            absl::StrCat("{\"before\":", before_json_.empty() ? "null" : before_json_,
                         ",\"after\":", EvalJson(*outcome_.after), ",\"steps\":", step_, "}");
        prepared_ = WriteFileDurably(in_.run_dir + "/eval.json", outcome_.result_json + "\n");
      }
    }
    outcome_.step = step_;
    if (!prepared_.ok()) {
      outcome_.state = v1::JOB_STATE_FAILED;
      outcome_.failure = prepared_;
    } else if (cancelled_) {
      outcome_.state = v1::JOB_STATE_CANCELLED;
    } else if (step_ < steps && events_.Stopping()) {
      outcome_.state = v1::JOB_STATE_RUNNING;  // checkpointed above; resumed by a restart
    } else if (step_ < steps) {
      outcome_.state = v1::JOB_STATE_FAILED;
      outcome_.failure = absl::InternalError(
          absl::StrCat("learner stopped at step ", step_, " of ", steps));
    } else {
      outcome_.state = v1::JOB_STATE_SUCCEEDED;
    }
  }

  const JobInputs& in_;
  const v1::JobSpec& spec_;
  BatchSource& source_;
  JobEvents& events_;
  Transformer& policy_;
  const std::vector<std::string> reward_names_;
  std::unique_ptr<GrpoTrainer> trainer_;
  absl::Status prepared_;  // the job's first failure; nothing trains after it
  bool cancelled_ = false;
  int step_ = 0, first_step_ = 0;
  std::string before_json_;  // the starting policy's evaluation, for eval.json
  std::string last_line_;
  std::unique_ptr<RewardFunction> tests_judge_;  // TestsJudge
  std::ofstream metrics_, trained_prompts_;
  const Clock::time_point job_start_ = Clock::now();
  Clock::time_point grpo_start_, last_step_end_, last_checkpoint_;
  JobOutcome outcome_;
};

}  // namespace

absl::StatusOr<ResumePoint> FindResumePoint(const std::string& run_dir,
                                            const v1::JobSpec& resolved) {
  absl::StatusOr<std::string> latest = LatestCheckpoint(run_dir);
  if (latest.ok()) return ResumePoint{*latest, false};
  // `latest` names a missing directory: say so, never guess.
  if (latest.status().code() != absl::StatusCode::kNotFound) return latest.status();
  if (resolved.resume_from().empty()) return ResumePoint{};
  if (!fs::exists(fs::path(resolved.resume_from()) / "model.pt"))
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from: ", resolved.resume_from(), " is not a checkpoint (no model.pt there)"));
  return ResumePoint{resolved.resume_from(), true};
}

absl::StatusOr<std::unique_ptr<GrpoTrainer>> CreateJobTrainer(const v1::JobSpec& resolved,
                                                              Transformer* policy,
                                                              LearnerGroup* group,
                                                              const std::string& resume_dir,
                                                              c10::Device device) {
  const at::TensorOptions placement = policy->tensor_options();
  if (placement.device() != device)
    if (absl::Status s = policy->To(device, placement.dtype().toScalarType()); !s.ok())
      return s;
  TrainerOptions options = TrainerOptionsFromSpec(resolved);
  options.group = group && group->world_size() > 1 ? group : nullptr;
  absl::StatusOr<std::unique_ptr<GrpoTrainer>> trainer = GrpoTrainer::Create(policy, options);
  if (!trainer.ok()) return trainer.status();
  if (!resume_dir.empty())
    if (absl::Status s = (*trainer)->Load(resume_dir); !s.ok()) return s;
  return trainer;
}

absl::StatusOr<PreparedJob> PrepareJob(const v1::JobSpec& spec, const std::string& run_dir) {
  if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", run_dir, ": ", ec.message()));
  if (absl::Status s = WriteFileDurably(run_dir + "/spec.json", JobSpecToJson(spec)); !s.ok())
    return s;
  PreparedJob p;
  absl::StatusOr<JobData> data = LoadJobData(spec);
  if (!data.ok()) return data.status();
  p.data = *std::move(data);
  absl::StatusOr<hf::JobModel> model = hf::LoadJobModel(spec);
  if (!model.ok()) return model.status();
  p.model = *std::move(model);
  if (absl::Status s = BuildPolicy(spec, p.model.config, &p.policy); !s.ok()) return s;
  absl::StatusOr<ResumePoint> resume = FindResumePoint(run_dir, spec);
  if (!resume.ok()) return resume.status();
  p.resume = *resume;
  return p;
}

JobInputs PreparedJob::Inputs(const v1::JobSpec& spec, const std::string& run_dir,
                              LearnerGroup* group, int keep_checkpoints) {
  JobInputs in;
  in.spec = spec;
  in.run_dir = run_dir;
  in.resume = resume;
  in.data = &data;
  in.tokenizer = model.tokenizer.get();
  in.policy = policy.get();
  in.hf_config = model.hf;
  in.group = group;
  in.keep_checkpoints = keep_checkpoints;
  return in;
}

absl::StatusOr<JobOutcome> RunGrpoJob(const JobInputs& inputs, BatchSource& source,
                                      JobEvents& events) {
  Driver driver(inputs, source, events);
  return driver.Run();
}

}  // namespace grpo
