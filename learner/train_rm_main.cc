// grpo_train_rm: trains a neural reward model with the Bradley-Terry loss on preference
// pairs (JSONL: prompt, chosen, rejected) and reports held-out pairwise accuracy before
// and after. Without --train it uses synthetic pairs from the arithmetic task (correct
// worked solution vs. one with a number off), held-out pairs from held-out prompts.
// The directory it writes is what grpo_reward_server --reward_model loads.
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
ABSL_FLAG(std::string, train, "", "preference JSONL; empty = synthetic arithmetic pairs");
ABSL_FLAG(std::string, eval, "", "held-out preference JSONL (with --train)");
ABSL_FLAG(int, synthetic_pairs, 4000, "synthetic training pairs (held-out: a tenth)");
ABSL_FLAG(std::string, preset, "tiny", "model preset");
ABSL_FLAG(int, steps, 400, "optimiser steps");
ABSL_FLAG(int, batch, 32, "pairs per step");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate");
ABSL_FLAG(int64_t, seed, 1, "seed");
ABSL_FLAG(int, threads, 0, "compute threads; 0 = all cores");

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  absl::SetProgramUsageMessage("grpo_train_rm --out DIR [--train pairs.jsonl --eval pairs.jsonl]");
  absl::ParseCommandLine(argc, argv);
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_out).empty()) {
    std::cerr << "error: --out is required\n";
    return 2;
  }
  std::vector<grpo::PreferencePair> train, eval;
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  if (!absl::GetFlag(FLAGS_train).empty()) {
    auto loaded = grpo::LoadPreferenceJsonl(absl::GetFlag(FLAGS_train));
    if (!loaded.ok()) {
      std::cerr << "error: " << loaded.status().message() << "\n";
      return 2;
    }
    train = *loaded;
    if (!absl::GetFlag(FLAGS_eval).empty()) {
      auto held_out = grpo::LoadPreferenceJsonl(absl::GetFlag(FLAGS_eval));
      if (!held_out.ok()) {
        std::cerr << "error: " << held_out.status().message() << "\n";
        return 2;
      }
      eval = *held_out;
    }
  } else {
    grpo::ArithmeticTask task(grpo::ArithmeticOptions{}, 1234);
    const int n = absl::GetFlag(FLAGS_synthetic_pairs);
    train = grpo::ArithmeticPreferences(task.TrainSet(n, seed), seed);
    eval = grpo::ArithmeticPreferences(task.HeldOutSet(std::max(1, n / 10)), seed + 1);
  }
  auto config = grpo::ModelPreset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) {
    std::cerr << "error: --preset: " << config.status().message() << "\n";
    return 2;
  }
  grpo::RewardModel model(*config, seed);
  grpo::CharTokenizer tokenizer;
  auto report = [&](const char* label) -> bool {
    if (eval.empty()) return true;
    auto accuracy = grpo::PairwiseAccuracy(model, tokenizer, eval);
    if (!accuracy.ok()) {
      std::cerr << "error: " << accuracy.status().message() << "\n";
      return false;
    }
    std::cout << absl::StrFormat("held-out pairwise accuracy %s: %.3f (%d pairs)\n", label,
                                 *accuracy, eval.size());
    return true;
  };
  std::cout << absl::StrFormat("reward model %s: %d train pairs, %d held-out pairs\n",
                               absl::GetFlag(FLAGS_preset), train.size(), eval.size());
  if (!report("before")) return 1;
  grpo::RewardModelTrainOptions options;
  options.steps = absl::GetFlag(FLAGS_steps);
  options.batch_size = absl::GetFlag(FLAGS_batch);
  options.optimizer.learning_rate = absl::GetFlag(FLAGS_lr);
  options.optimizer.warmup_steps = std::max(1, options.steps / 20);
  options.optimizer.weight_decay = 0.01;
  options.seed = seed;
  const int every = std::max(1, options.steps / 10);
  auto loss = grpo::TrainRewardModel(&model, tokenizer, train, options,
                                     [&](const grpo::RewardModelProgress& p) {
    if (p.step % every == 0)
      std::cout << absl::StrFormat("rm step %4d/%d | loss %.4f | batch accuracy %.3f\n", p.step,
                                   options.steps, p.loss, p.batch_accuracy)
                << std::flush;
  });
  if (!loss.ok()) {
    std::cerr << "error: " << loss.status().message() << "\n";
    return 1;
  }
  if (!report("after")) return 1;
  if (auto s = model.Save(absl::GetFlag(FLAGS_out)); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  std::cout << "saved to " << absl::GetFlag(FLAGS_out) << "\n";
  return 0;
}
