#include "learner/job_phases.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "hf/hf_checkpoint.h"
#include "learner/optimizer.h"
#include "learner/sft.h"
#include "model/torch_status.h"

namespace grpo {

absl::Status BuildPolicy(const v1::JobSpec& spec, const ModelConfig& config,
                         std::unique_ptr<Transformer>* policy) {
  return CatchTorch("building the policy", [&] {
    *policy = spec.model().hf_dir().empty()
                  ? std::make_unique<Transformer>(config, spec.seed())
                  : std::make_unique<Transformer>(config, Transformer::Uninitialized{});
  });
}

absl::Status PrepareStartingPolicy(const v1::JobSpec& spec, const TextTokenizer& tokenizer,
                                   const std::vector<Example>& train, Transformer* policy,
                                   const std::function<void(const std::string&)>& progress) {
  if (!spec.model().hf_dir().empty()) {
    const auto start = std::chrono::steady_clock::now();
    if (absl::Status s = hf::LoadHfWeights(spec.model().hf_dir(), *policy); !s.ok()) return s;
    progress(absl::StrFormat(
        "loaded %s (%.1fM parameters) in %.1fs", spec.model().hf_dir(),
        policy->config().NumParameters() / 1e6,
        SecondsSince(start)));
  } else if (!spec.model().init_checkpoint().empty()) {
    if (absl::Status s = policy->Load(spec.model().init_checkpoint() + "/model.pt"); !s.ok())
      return s;
    progress(absl::StrCat("loaded ", spec.model().init_checkpoint()));
    return absl::OkStatus();
  }
  if (spec.sft().steps() <= 0) return absl::OkStatus();
  SftOptions sft;
  sft.steps = spec.sft().steps();
  sft.batch_size = spec.sft().batch_size();
  sft.optimizer = OptimizerOptionsFromSpec(spec.sft().optimizer());
  sft.seed = spec.seed() + 1;
  const auto start = std::chrono::steady_clock::now();
  const int every = std::max(1, sft.steps / 10);
  absl::StatusOr<double> loss =
      RunSft(policy, tokenizer, train, sft, [&](const SftProgress& p) {
        if (p.step % every != 0 && p.step != sft.steps) return;
        const double elapsed =
            SecondsSince(start);
        progress(absl::StrFormat("sft  %4d/%d | loss %.4f | grad %.3f | %s elapsed, ETA %s",
                                 p.step, sft.steps, p.loss, p.grad_norm,
                                 FormatDuration(elapsed),
                                 FormatDuration(elapsed / p.step * (sft.steps - p.step))));
      });
  return loss.status();
}

EvalOptions EvalOptionsFromSpec(const v1::JobSpec& spec) {
  EvalOptions eval;
  eval.k = spec.eval().k();
  eval.temperature = spec.eval().temperature();
  eval.max_new_tokens = spec.sampling().max_new_tokens();
  eval.seed = 7919;
  return eval;
}

std::string FormatDuration(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string EvalLine(const std::string& label, const EvalResult& r, double seconds) {
  return absl::StrFormat(
      "eval %-6s | pass@1 %.3f | pass@%d %.3f | maj@%d %.3f | greedy %.3f | %d prompts, %.1fs",
      label, r.pass_at_1, r.k, r.pass_at_k, r.k, r.maj_at_k, r.greedy_accuracy, r.num_prompts,
      seconds);
}

std::string MetricsJson(const StepMetrics& m, const std::vector<std::string>& reward_names,
                        double tokens_per_second, double elapsed, double sample_seconds,
                        const std::string& extra) {
  std::string out = absl::StrFormat(
      "{\"step\":%d,\"policy_version\":%d,\"trained\":%s,\"reward_mean\":%.6g,"
      "\"reward_std\":%.6g,\"loss\":%.6g,\"policy_loss\":%.6g,\"kl\":%.6g,"
      "\"clip_fraction\":%.6g,\"clip_low_fraction\":%.6g,\"clip_high_fraction\":%.6g,"
      "\"grad_norm\":%.6g,\"entropy\":%.6g,\"completion_length_mean\":%.6g,"
      "\"zero_variance_fraction\":%.6g,\"learning_rate\":%.6g,\"tokens_per_second\":%.6g,"
      "\"sample_seconds\":%.6g,\"train_seconds\":%.6g,\"elapsed_seconds\":%.6g,"
      "\"nonfinite_skips\":%d,\"logprob_mismatch\":%.6g,\"sampler_kl\":%.6g,"
      "\"tis_truncated_fraction\":%.6g,\"recomputed_old_fraction\":%.6g",
      m.step, m.policy_version, m.trained ? "true" : "false", m.reward_mean, m.reward_std,
      m.loss, m.policy_loss, m.kl, m.clip_fraction, m.clip_low_fraction,
      m.clip_high_fraction, m.grad_norm, m.entropy, m.completion_length_mean,
      m.zero_variance_fraction, m.learning_rate, tokens_per_second, sample_seconds,
      m.seconds, elapsed, m.nonfinite_skips, m.logprob_mismatch, m.sampler_kl,
      m.tis_truncated_fraction, m.recomputed_old_fraction);
  if (m.has_critic)
    absl::StrAppendFormat(&out,
                          ",\"value_loss\":%.6g,\"value_clip_fraction\":%.6g,"
                          "\"value_mean\":%.6g,\"return_mean\":%.6g,"
                          "\"explained_variance\":%.6g",
                          m.value_loss, m.value_clip_fraction, m.value_mean, m.return_mean,
                          m.explained_variance);
  for (size_t i = 0; i < reward_names.size() && i < m.reward_per_function_mean.size(); ++i)
    absl::StrAppendFormat(&out, ",\"reward/%s\":%.6g", reward_names[i],
                          m.reward_per_function_mean[i]);
  return out + extra + "}\n";
}

std::string EvalJson(const EvalResult& r) {
  return absl::StrFormat(
      "{\"num_prompts\":%d,\"k\":%d,\"pass@1\":%.6g,\"pass@k\":%.6g,\"maj@k\":%.6g,"
      "\"greedy_accuracy\":%.6g,\"mean_completion_tokens\":%.6g}",
      r.num_prompts, r.k, r.pass_at_1, r.pass_at_k, r.maj_at_k, r.greedy_accuracy,
      r.mean_completion_tokens);
}

std::vector<std::string> RewardNames(const v1::JobSpec& resolved) {
  std::vector<std::string> names;
  for (const v1::RewardFunctionSpec& r : resolved.rewards()) names.push_back(r.name());
  return names;
}

}  // namespace grpo
