#include "local/local_job.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "data/dataset.h"
#include "data/job_data.h"
#include "hf/job_model.h"
#include "jobspec/job_spec.h"
#include "learner/checkpoint.h"
#include "learner/grpo_trainer.h"
#include "learner/job_driver.h"
#include "learner/job_phases.h"
#include "model/model.h"
#include "rewards/neural_rewards.h"
#include "rewards/rewards.h"
#include "rollout_worker/rollout.h"

namespace grpo {
namespace {

using Clock = std::chrono::steady_clock;

// The driver's batch source in one process: the data cursor walks a seeded permutation of
// the training pool (the coordinator's order, data/job_data.h), and each batch is sampled
// and scored here. Prompt ids are cursor positions, so the cursor alone says what was
// seen.
class InProcessRollout : public BatchSource {
 public:
  InProcessRollout(const v1::JobSpec& spec, const JobData& data, const TextTokenizer& tokenizer,
                   const CompositeReward& reward)
      : spec_(spec), data_(data), order_(TrainingOrder(data.train.size(), spec.seed())),
        scorer_(&reward), rollout_(&tokenizer, &scorer_),
        sampling_(SamplingOptionsFromSpec(spec, tokenizer)) {}

  absl::Status Share(Transformer&, bool) override { return absl::OkStatus(); }

  absl::Status Begin(const Transformer&, int64_t, int, uint64_t cursor,
                     const std::vector<std::string>&, bool) override {
    cursor_ = cursor;
    return absl::OkStatus();
  }

  absl::StatusOr<SourcedBatch> Next(const Transformer& policy, int64_t version, int) override {
    const int prompts = spec_.grpo().prompts_per_step();
    std::vector<Example> batch;
    std::vector<std::string> ids;
    for (int i = 0; i < prompts; ++i, ++cursor_) {
      batch.push_back(data_.train[order_[cursor_ % order_.size()]]);
      ids.push_back(TrainPromptId(cursor_));
    }
    // One draw per batch of the data, so a resumed job samples as the straight run would.
    sampling_.seed = spec_.seed() * 1000003 + cursor_ / prompts;
    absl::StatusOr<RolloutBatch> rolled =
        rollout_.Generate(policy, version, batch, ids, spec_.grpo().group_size(), sampling_);
    if (!rolled.ok()) return rolled.status();
    SourcedBatch out;
    out.groups = std::move(rolled->groups);
    out.sample_seconds = rolled->sample_seconds + rolled->score_seconds;
    return out;
  }

  absl::Status BeforeStep(const std::vector<ScoredGroup>&) override { return absl::OkStatus(); }
  void Replace() override {}  // the cursor has moved on: the next batch is fresh
  absl::StatusOr<double> Trained(const Transformer&, int64_t, int) override { return 0.0; }
  absl::StatusOr<uint64_t> SettleForCheckpoint() override { return cursor_; }
  std::vector<std::string> SeenIds() override { return {}; }
  SourceCounters counters() override { return {}; }

 private:
  const v1::JobSpec& spec_;
  const JobData& data_;
  const std::vector<size_t> order_;
  LocalScorer scorer_;
  Rollout rollout_;
  SamplingOptions sampling_;
  uint64_t cursor_ = 0;
};

// Progress lines to a stream; nothing cancels a local job but the process's end.
class StreamEvents : public JobEvents {
 public:
  explicit StreamEvents(std::ostream& out) : out_(out) {}
  void Log(const std::string& line) override { out_ << line << std::endl; }
  void Report(v1::JobPhase, const std::string&) override {}
  bool Cancelled() override { return false; }
  bool Stopping() override { return false; }
  void OnStep(const StepRecord&) override {}
  void OnSkip(const StepMetrics&) override {}

 private:
  std::ostream& out_;
};

void PrintSummary(const LocalJobResult& r, const std::string& run_dir, const char* trained,
                  std::ostream& log) {
  const int k = r.after.k;
  log << "\nheld-out evaluation (" << r.after.num_prompts << " prompts, k = " << k << ")\n"
      << absl::StrFormat("  %-12s %8s %8s %8s %8s\n", "policy", "pass@1",
                         absl::StrCat("pass@", k), absl::StrCat("maj@", k), "greedy");
  if (r.resumed) {
    log << "  (resumed: the starting policy's evaluation is in " << run_dir << "/eval.json)\n";
  } else {
    log << absl::StrFormat("  %-12s %8.3f %8.3f %8.3f %8.3f\n", "SFT (before)",
                           r.before.pass_at_1, r.before.pass_at_k, r.before.maj_at_k,
                           r.before.greedy_accuracy);
  }
  log << absl::StrFormat("  %-12s %8.3f %8.3f %8.3f %8.3f\n", trained, r.after.pass_at_1,
                         r.after.pass_at_k, r.after.maj_at_k, r.after.greedy_accuracy)
      << absl::StrFormat("training reward: first %.3f -> last %.3f; run directory %s; %s total\n",
                         r.first_steps_reward, r.last_steps_reward, run_dir,
                         FormatDuration(r.seconds));
}

}  // namespace

absl::StatusOr<LocalJobResult> RunLocalJob(const v1::JobSpec& spec,
                                           const LocalJobOptions& options) {
  const auto job_start = Clock::now();
  std::ostream null_stream(nullptr);
  std::ostream& log = options.progress ? *options.progress : null_stream;

  // --- Everything a bad input can fail, before any work.
  absl::StatusOr<PreparedJob> prepared = PrepareJob(spec, options.run_dir);
  if (!prepared.ok()) return prepared.status();
  absl::StatusOr<CompositeReward> reward = MakeJobReward(spec.rewards());
  if (!reward.ok()) return reward.status();
  const hf::JobModel& model = prepared->model;
  log << absl::StrFormat("model: %s, %.2fM parameters; %d train / %d held-out prompts\n",
                         spec.model().hf_dir().empty() ? spec.model().preset()
                                                       : spec.model().hf_dir(),
                         model.config.NumParameters() / 1e6, prepared->data.train.size(),
                         prepared->data.held_out.size());

  // --- The job, by the driver every learner runs.
  InProcessRollout source(spec, prepared->data, *model.tokenizer, *reward);
  StreamEvents events(log);
  JobInputs inputs =
      prepared->Inputs(spec, options.run_dir, /*group=*/nullptr, options.keep_checkpoints);
  inputs.device = options.device;
  absl::StatusOr<JobOutcome> outcome = RunGrpoJob(inputs, source, events);
  if (!outcome.ok()) return outcome.status();
  if (!outcome->failure.ok()) return outcome->failure;
  if (outcome->state != v1::JOB_STATE_SUCCEEDED || !outcome->after)
    return absl::InternalError(
        absl::StrCat("the job ended ", v1::JobState_Name(outcome->state), " at step ",
                     outcome->step));

  // --- The summary.
  LocalJobResult result;
  result.resumed = !prepared->resume.dir.empty();
  if (outcome->before) result.before = *outcome->before;
  result.after = *outcome->after;
  const std::vector<double>& rewards = outcome->step_rewards;
  const size_t fifth = std::max<size_t>(1, rewards.size() / 5);
  for (size_t i = 0; i < fifth && i < rewards.size(); ++i)
    result.first_steps_reward += rewards[i] / fifth;
  for (size_t i = rewards.size() - std::min(fifth, rewards.size()); i < rewards.size(); ++i)
    result.last_steps_reward += rewards[i] / fifth;
  result.seconds = SecondsSince(job_start);
  PrintSummary(result, options.run_dir,
               spec.algorithm() == v1::ALGORITHM_PPO ? "PPO (after)" : "GRPO (after)", log);
  return result;
}

}  // namespace grpo
