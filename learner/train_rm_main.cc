// grpo_train_rm: trains a neural reward model and reports its held-out accuracy before and
// after (learner/reward_model_trainer.h):
//   --kind outcome  Bradley-Terry on preference pairs (JSONL: prompt, chosen, rejected);
//   --kind process  cross-entropy on step labels (JSONL: prompt, steps, labels), steps
//                   split by --step_delimiter.
// Without --train it uses synthetic data from the arithmetic task (correct worked
// solutions vs. ones with a number off; held-out data from held-out prompts). The
// backbone is a preset (character tokenizer) or, with --hf_dir, a Hugging Face checkpoint
// with its own tokenizer. The directory it writes is what grpo_reward_server
// --reward_model and a job's reward_model / process_reward_model load.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "data/arithmetic_task.h"
#include "data/dataset.h"
#include "learner/reward_model_trainer.h"
#include "model/runtime.h"
#include "rewards/reward_model.h"

ABSL_FLAG(std::string, out, "", "directory to write the trained reward model to (required)");
ABSL_FLAG(std::string, kind, "outcome", "outcome (preference pairs) or process (step labels)");
ABSL_FLAG(std::string, train, "", "training JSONL; empty = synthetic arithmetic data");
ABSL_FLAG(std::string, eval, "", "held-out JSONL (with --train)");
ABSL_FLAG(int, synthetic_examples, 4000, "synthetic training pairs or completions (held-out: a tenth)");
ABSL_FLAG(std::string, step_delimiter, "newline",
          "process: how steps are split, newline, double_newline or marker:TEXT");
ABSL_FLAG(std::string, preset, "tiny", "model preset (without --hf_dir)");
ABSL_FLAG(std::string, hf_dir, "", "a Hugging Face checkpoint directory as the backbone");
ABSL_FLAG(int, max_seq_len, 1024, "with --hf_dir: positions at most");
ABSL_FLAG(int, steps, 400, "optimiser steps");
ABSL_FLAG(int, batch, 32, "pairs or completions per step");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate");
ABSL_FLAG(int64_t, seed, 1, "seed");
ABSL_FLAG(int, threads, 0, "compute threads; 0 = all cores");

namespace grpo {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "error: " << status.message() << "\n";
  return 2;
}

absl::StatusOr<std::unique_ptr<RewardModel>> MakeModel(uint64_t seed) {
  if (!absl::GetFlag(FLAGS_hf_dir).empty())
    return RewardModel::FromHuggingFace(absl::GetFlag(FLAGS_hf_dir), absl::GetFlag(FLAGS_max_seq_len));
  absl::StatusOr<ModelConfig> config = ModelPreset(absl::GetFlag(FLAGS_preset));
  if (!config.ok())
    return absl::InvalidArgumentError(absl::StrCat("--preset: ", config.status().message()));
  return std::make_unique<RewardModel>(*config, seed);
}

// Loads --train/--eval with `load`, or makes synthetic data with `synthesize`.
template <typename T, typename Load, typename Synthesize>
absl::Status Data(std::vector<T>* train, std::vector<T>* eval, Load load, Synthesize synthesize) {
  if (absl::GetFlag(FLAGS_train).empty()) {
    ArithmeticTask task(ArithmeticOptions{}, 1234);
    const int n = absl::GetFlag(FLAGS_synthetic_examples);
    const uint64_t seed = absl::GetFlag(FLAGS_seed);
    *train = synthesize(task.TrainSet(n, seed), seed);
    *eval = synthesize(task.HeldOutSet(std::max(1, n / 10)), seed + 1);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<T>> loaded = load(absl::GetFlag(FLAGS_train));
  if (!loaded.ok()) return loaded.status();
  *train = *std::move(loaded);
  if (absl::GetFlag(FLAGS_eval).empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<T>> held_out = load(absl::GetFlag(FLAGS_eval));
  if (!held_out.ok()) return held_out.status();
  *eval = *std::move(held_out);
  return absl::OkStatus();
}

RewardModelTrainOptions TrainOptions() {
  RewardModelTrainOptions options;
  options.steps = absl::GetFlag(FLAGS_steps);
  options.batch_size = absl::GetFlag(FLAGS_batch);
  options.optimizer.learning_rate = absl::GetFlag(FLAGS_lr);
  options.optimizer.warmup_steps = std::max(1, options.steps / 20);
  options.optimizer.weight_decay = 0.01;
  options.seed = absl::GetFlag(FLAGS_seed);
  return options;
}

int Main() {
  const std::string kind = absl::GetFlag(FLAGS_kind);
  if (kind != "outcome" && kind != "process")
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--kind ", kind, ": must be outcome or process")));
  absl::StatusOr<StepRule> rule = ParseStepRule(absl::GetFlag(FLAGS_step_delimiter));
  if (!rule.ok()) return Fail(rule.status());
  absl::StatusOr<std::unique_ptr<RewardModel>> made = MakeModel(absl::GetFlag(FLAGS_seed));
  if (!made.ok()) return Fail(made.status());
  RewardModel& model = **made;
  model.set_step_rule(*rule);
  const RewardModelTrainOptions options = TrainOptions();
  const int every = std::max(1, options.steps / 10);
  auto progress = [&](const RewardModelProgress& p) {
    if (p.step % every == 0)
      std::cout << absl::StrFormat("rm step %4d/%d | loss %.4f | batch accuracy %.3f\n", p.step,
                                   options.steps, p.loss, p.batch_accuracy)
                << std::flush;
  };
  const std::string backbone = absl::GetFlag(FLAGS_hf_dir).empty() ? absl::GetFlag(FLAGS_preset)
                                                                   : absl::GetFlag(FLAGS_hf_dir);
  absl::StatusOr<double> loss;
  if (kind == "outcome") {
    std::vector<PreferencePair> train, eval;
    if (absl::Status s = Data(&train, &eval, &LoadPreferenceJsonl, &ArithmeticPreferences); !s.ok())
      return Fail(s);
    auto report = [&](const char* label) -> absl::Status {
      if (eval.empty()) return absl::OkStatus();
      absl::StatusOr<double> accuracy = PairwiseAccuracy(model, eval);
      if (!accuracy.ok()) return accuracy.status();
      std::cout << absl::StrFormat("held-out pairwise accuracy %s: %.3f (%d pairs)\n", label,
                                   *accuracy, eval.size());
      return absl::OkStatus();
    };
    std::cout << absl::StrFormat("outcome reward model %s: %d train pairs, %d held-out pairs\n",
                                 backbone, train.size(), eval.size());
    if (absl::Status s = report("before"); !s.ok()) return Fail(s);
    loss = TrainRewardModel(&model, train, options, progress);
    if (!loss.ok()) return Fail(loss.status());
    if (absl::Status s = report("after"); !s.ok()) return Fail(s);
  } else {
    std::vector<StepLabelledExample> train, eval;
    auto load = [&](const std::string& path) { return LoadStepJsonl(path, *rule); };
    if (absl::Status s = Data(&train, &eval, load, &ArithmeticStepLabels); !s.ok()) return Fail(s);
    auto report = [&](const char* label) -> absl::Status {
      if (eval.empty()) return absl::OkStatus();
      absl::StatusOr<StepAccuracy> accuracy = ProcessStepAccuracy(model, eval);
      if (!accuracy.ok()) return accuracy.status();
      std::cout << absl::StrFormat(
          "held-out step accuracy %s: %.3f (%d steps; the majority label alone: %.3f)\n", label,
          accuracy->accuracy, accuracy->steps, accuracy->majority_rate);
      return absl::OkStatus();
    };
    std::cout << absl::StrFormat(
        "process reward model %s (%s steps): %d train completions, %d held-out\n", backbone,
        StepRuleName(*rule), train.size(), eval.size());
    if (absl::Status s = report("before"); !s.ok()) return Fail(s);
    loss = TrainProcessRewardModel(&model, train, options, progress);
    if (!loss.ok()) return Fail(loss.status());
    if (absl::Status s = report("after"); !s.ok()) return Fail(s);
  }
  if (absl::Status s = model.Save(absl::GetFlag(FLAGS_out)); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  std::cout << "saved to " << absl::GetFlag(FLAGS_out) << "\n";
  return 0;
}

}  // namespace
}  // namespace grpo

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  absl::SetProgramUsageMessage(
      "grpo_train_rm --out DIR [--kind outcome|process] [--hf_dir DIR] [--train F --eval F]");
  absl::ParseCommandLine(argc, argv);
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_out).empty()) {
    std::cerr << "error: --out is required\n";
    return 2;
  }
  return grpo::Main();
}
