#include "local/local_job.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/dataset.h"
#include "core/job_data.h"
#include "core/job_spec.h"
#include "core/model.h"
#include "core/neural_rewards.h"
#include "core/rewards.h"
#include "hf/job_model.h"
#include "learner/checkpoint.h"
#include "learner/grpo_trainer.h"
#include "learner/job_phases.h"
#include "rollout_worker/rollout.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

absl::StatusOr<LocalJobResult> RunLocalJob(const v1::JobSpec& spec,
                                           const LocalJobOptions& options) {
  const auto job_start = Clock::now();
  std::ostream null_stream(nullptr);
  std::ostream& log = options.progress ? *options.progress : null_stream;
  if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;

  std::error_code ec;
  fs::create_directories(options.run_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", options.run_dir, ": ", ec.message()));
  const fs::path run_dir(options.run_dir);
  if (absl::Status s = WriteFileDurably((run_dir / "spec.json").string(), JobSpecToJson(spec));
      !s.ok())
    return s;

  absl::StatusOr<JobData> data = LoadJobData(spec);
  if (!data.ok()) return data.status();
  absl::StatusOr<CompositeReward> reward = MakeJobReward(spec.rewards());
  if (!reward.ok()) return reward.status();
  absl::StatusOr<hf::JobModel> model = hf::LoadJobModel(spec);
  if (!model.ok()) return model.status();
  const ModelConfig& config = model->config;
  const TextTokenizer& tokenizer = *model->tokenizer;
  std::unique_ptr<Transformer> built;
  if (absl::Status s = BuildPolicy(spec, config, &built); !s.ok()) return s;
  Transformer& policy = *built;
  log << absl::StrFormat("model: %s, %.2fM parameters; %d train / %d held-out prompts\n",
                         spec.model().hf_dir().empty() ? spec.model().preset()
                                                       : spec.model().hf_dir(),
                         config.NumParameters() / 1e6,
                         data->train.size(), data->held_out.size());

  // --- 1. Starting policy: a checkpoint, or the SFT warm-up.
  if (absl::Status s = PrepareStartingPolicy(spec, tokenizer, data->train, &policy,
                                             [&](const std::string& line) {
                                               log << line << "\n";
                                               log.flush();
                                             });
      !s.ok())
    return s;

  // --- 2. Held-out evaluation of the starting policy.
  const EvalOptions eval = EvalOptionsFromSpec(spec);
  LocalJobResult result;
  auto evaluate = [&](const char* label, EvalResult* out) -> absl::Status {
    const auto start = Clock::now();
    absl::StatusOr<EvalResult> r = Evaluate(policy, tokenizer, data->held_out, eval);
    if (!r.ok()) return r.status();
    *out = *r;
    log << EvalLine(label, *r, Since(start)) << "\n";
    return absl::OkStatus();
  };
  if (absl::Status s = evaluate("before", &result.before); !s.ok()) return s;

  // --- 3. GRPO.
  absl::StatusOr<std::unique_ptr<GrpoTrainer>> trainer =
      GrpoTrainer::Create(&policy, TrainerOptionsFromSpec(spec));
  if (!trainer.ok()) return trainer.status();
  LocalScorer scorer(&*reward);
  Rollout rollout(&tokenizer, &scorer);
  std::ofstream metrics(run_dir / "metrics.jsonl", std::ios::trunc);
  if (!metrics) return absl::InternalError(absl::StrCat("opening ", run_dir.string(), "/metrics.jsonl"));

  const int steps = spec.steps();
  const int prompts_per_step = spec.grpo().prompts_per_step();
  const int group_size = spec.grpo().group_size();
  SamplingOptions sampling = SamplingOptionsFromSpec(spec, tokenizer);

  // The data cursor walks a seeded permutation of the training pool.
  const std::vector<size_t> order = TrainingOrder(data->train.size(), spec.seed());
  uint64_t cursor = 0;

  auto save_checkpoint = [&](int64_t step) {
    return WriteCheckpoint(options.run_dir, step, [&](const std::string& dir) {
      if (absl::Status s = policy.Save(dir + "/model.pt"); !s.ok()) return s;
      if (absl::Status s = (*trainer)->Save(dir); !s.ok()) return s;
      return WriteFileDurably(dir + "/cursor.txt", absl::StrCat(cursor, "\n"));
    });
  };

  const auto grpo_start = Clock::now();
  auto last_checkpoint = grpo_start;
  std::vector<double> step_rewards;
  for (int step = 1; step <= steps; ++step) {
    std::vector<Example> batch;
    std::vector<std::string> ids;
    for (int i = 0; i < prompts_per_step; ++i, ++cursor) {
      batch.push_back(data->train[order[cursor % order.size()]]);
      ids.push_back(TrainPromptId(cursor));
    }
    sampling.seed = spec.seed() * 1000003 + step;
    absl::StatusOr<RolloutBatch> rolled =
        rollout.Generate(policy, (*trainer)->policy_version(), batch, ids, group_size, sampling);
    if (!rolled.ok()) return rolled.status();
    absl::StatusOr<StepMetrics> m = (*trainer)->Step(rolled->groups);
    if (!m.ok()) return m.status();
    m->step = step;  // a filtered-out step still counts as a step of the job

    const double elapsed = Since(grpo_start);
    const double step_seconds = rolled->sample_seconds + rolled->score_seconds + m->seconds;
    const double tokens_per_second = rolled->generated_tokens / std::max(1e-9, step_seconds);
    step_rewards.push_back(m->reward_mean);
    metrics << MetricsJson(*m, reward->names(), tokens_per_second, Since(job_start),
                           rolled->sample_seconds);
    metrics.flush();
    log << absl::StrFormat(
        "step %4d/%d | reward %.3f ±%.3f | kl %.5f | clip %.4f | grad %.3f | %6.0f tok/s | "
        "%s elapsed, ETA %s\n",
        step, steps, m->reward_mean, m->reward_std, m->kl, m->clip_fraction, m->grad_norm,
        tokens_per_second, FormatDuration(elapsed), FormatDuration(elapsed / step * (steps - step)));
    log.flush();
    const bool by_steps = spec.checkpoint_every() > 0 && step % spec.checkpoint_every() == 0;
    const bool by_time = spec.checkpoint_every_seconds() > 0 &&
                         Since(last_checkpoint) >= spec.checkpoint_every_seconds();
    if ((by_steps || by_time) && step < steps) {
      if (absl::Status s = save_checkpoint(step); !s.ok()) return s;
      last_checkpoint = Clock::now();
    }
    if (spec.eval().every_steps() > 0 && step % spec.eval().every_steps() == 0 && step < steps) {
      EvalResult mid;
      if (absl::Status s = evaluate(absl::StrCat("@", step).c_str(), &mid); !s.ok()) return s;
    }
  }
  if (absl::Status s = save_checkpoint(steps); !s.ok()) return s;

  // --- 4. Held-out evaluation after GRPO, and the summary.
  if (absl::Status s = evaluate("after", &result.after); !s.ok()) return s;
  if (absl::Status s = WriteFileDurably(
          (run_dir / "eval.json").string(),
          absl::StrCat("{\"before\":", EvalJson(result.before), ",\"after\":",
                       EvalJson(result.after), "}\n"));
      !s.ok())
    return s;

  const size_t fifth = std::max<size_t>(1, step_rewards.size() / 5);
  for (size_t i = 0; i < fifth && i < step_rewards.size(); ++i)
    result.first_steps_reward += step_rewards[i] / fifth;
  for (size_t i = step_rewards.size() - std::min(fifth, step_rewards.size()); i < step_rewards.size(); ++i)
    result.last_steps_reward += step_rewards[i] / fifth;
  result.seconds = Since(job_start);

  const int k = result.after.k;
  log << "\nheld-out evaluation (" << result.after.num_prompts << " prompts, k = " << k << ")\n"
      << absl::StrFormat("  %-12s %8s %8s %8s %8s\n", "policy", "pass@1",
                         absl::StrCat("pass@", k), absl::StrCat("maj@", k), "greedy")
      << absl::StrFormat("  %-12s %8.3f %8.3f %8.3f %8.3f\n", "SFT (before)",
                         result.before.pass_at_1, result.before.pass_at_k,
                         result.before.maj_at_k, result.before.greedy_accuracy)
      << absl::StrFormat("  %-12s %8.3f %8.3f %8.3f %8.3f\n", "GRPO (after)",
                         result.after.pass_at_1, result.after.pass_at_k,
                         result.after.maj_at_k, result.after.greedy_accuracy)
      << absl::StrFormat("training reward: first %.3f -> last %.3f; run directory %s; %s total\n",
                         result.first_steps_reward, result.last_steps_reward,
                         options.run_dir, FormatDuration(result.seconds));
  return result;
}

}  // namespace grpo
