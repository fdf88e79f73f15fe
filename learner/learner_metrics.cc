#include "learner/learner_metrics.h"

#include <memory>

namespace grpo {
namespace {

using metrics::ExponentialBuckets;

metrics::Gauge& G(metrics::Registry* r, const std::string& name, const std::string& help,
                  const metrics::Labels& labels = {}) {
  return r->AddGauge(name, help).Add(labels);
}

metrics::Counter& C(metrics::Registry* r, const std::string& name, const std::string& help) {
  return r->AddCounter(name, help).Add();
}

// The ingest buffer's counters start again at each job; Prometheus counters must not.
struct IngestTotals {
  IngestCounters last;
  void Advance(metrics::Counter& counter, int64_t now, int64_t before) {
    counter.Increment(static_cast<double>(now >= before ? now - before : now));
  }
};

}  // namespace

LearnerMetrics::LearnerMetrics(metrics::Registry* r, const IngestBuffer* buffer)
    : step_(G(r, "grpo_learner_step", "GRPO steps done in the running job.")),
      version_(G(r, "grpo_learner_policy_version", "Version of the newest published policy.")),
      reward_mean_(G(r, "grpo_reward_mean", "Mean total reward of the last step's samples.")),
      reward_std_(G(r, "grpo_reward_std", "Standard deviation of the last step's rewards.")),
      kl_(G(r, "grpo_kl", "KL divergence to the reference policy, last step.")),
      entropy_(G(r, "grpo_entropy", "Mean token entropy of the policy, last step.")),
      grad_norm_(G(r, "grpo_grad_norm", "Gradient norm before clipping, last step.")),
      logprob_mismatch_(G(r, "grpo_sampler_logprob_mismatch",
                          "Mean |learner - sampler| log-prob of the last step's tokens.")),
      sampler_kl_(G(r, "grpo_sampler_kl",
                    "KL(sampler || learner) over the last step's tokens (k3 estimate).")),
      recomputed_old_(G(r, "grpo_recomputed_old_logprobs_fraction",
                        "Of the last step's samples, those whose pi_old the learner "
                        "recomputed (a sampler of another precision, or RECOMPUTE).")),
      value_loss_(G(r, "grpo_ppo_value_loss",
                    "PPO: the critic's clipped value loss, last step (0 under GRPO).")),
      explained_variance_(G(r, "grpo_ppo_explained_variance",
                            "PPO: 1 - Var(return - value) / Var(return), last step.")),
      value_mean_(G(r, "grpo_ppo_value_mean",
                    "PPO: mean critic value over the last step's tokens.")),
      clip_low_(G(r, "grpo_clip_fraction", "Fraction of tokens whose ratio was clipped.",
                  {{"side", "low"}})),
      clip_high_(G(r, "grpo_clip_fraction", "Fraction of tokens whose ratio was clipped.",
                   {{"side", "high"}})),
      completion_length_(G(r, "grpo_completion_length_tokens",
                           "Mean completion length of the last step, in tokens.")),
      zero_variance_(G(r, "grpo_zero_variance_group_fraction",
                       "Fraction of the last step's groups whose rewards were all equal.")),
      policy_lag_(G(r, "grpo_policy_lag_versions",
                    "Mean versions between the policy trained and the one that sampled.")),
      learning_rate_(G(r, "grpo_learning_rate", "Learning rate of the last step.")),
      tokens_per_second_(G(r, "grpo_learner_tokens_per_second",
                           "Completion tokens trained per second of step time, last step.")),
      reward_function_(r->AddGauge("grpo_reward_function_mean",
                                   "Mean reward of each reward function, last step.")),
      step_seconds_(r->AddHistogram("grpo_step_seconds", "Time of a whole GRPO step.",
                                    ExponentialBuckets(0.05, 2, 12))
                        .Add()),
      phase_seconds_(r->AddHistogram("grpo_step_phase_seconds",
                                     "Time of a step's phases: waiting for groups, training "
                                     "(all-reduce included), the all-reduce, publishing weights.",
                                     ExponentialBuckets(0.005, 2, 14))),
      steps_(C(r, "grpo_learner_steps_total", "GRPO steps trained.")),
      groups_(C(r, "grpo_learner_groups_trained_total", "Groups trained on.")),
      samples_(C(r, "grpo_learner_samples_trained_total", "Samples trained on.")),
      tokens_(C(r, "grpo_learner_completion_tokens_total", "Completion tokens trained on.")),
      nonfinite_skips_(C(r, "grpo_learner_nonfinite_skips_total",
                         "Updates skipped because the loss or gradient was not finite.")) {
  auto& buffered = G(r, "grpo_learner_ingest_buffered_groups",
                     "Scored groups waiting in the ingest buffer.");
  auto& accepted = C(r, "grpo_learner_groups_accepted_total", "Groups taken in from workers.");
  auto& duplicates = C(r, "grpo_learner_duplicate_groups_total",
                       "Groups for prompts taken in before: ignored.");
  auto& stale = C(r, "grpo_learner_stale_groups_dropped_total",
                  "Groups dropped as older than max_policy_lag allows.");
  auto& full = C(r, "grpo_learner_ingest_full_total",
                 "Submissions refused because the ingest buffer was full.");
  auto totals = std::make_shared<IngestTotals>();
  r->OnCollect([=, &buffered, &accepted, &duplicates, &stale, &full] {
    const IngestCounters now = buffer->counters();
    buffered.Set(static_cast<double>(buffer->size()));
    totals->Advance(accepted, now.accepted_groups, totals->last.accepted_groups);
    totals->Advance(duplicates, now.duplicate_groups, totals->last.duplicate_groups);
    totals->Advance(stale, now.stale_groups_dropped, totals->last.stale_groups_dropped);
    totals->Advance(full, now.rejected_full, totals->last.rejected_full);
    totals->last = now;
  });
}

void LearnerMetrics::RecordStep(const StepMetrics& m, const std::vector<std::string>& names,
                                const StepTimes& times, double policy_lag,
                                double tokens_per_second) {
  step_.Set(static_cast<double>(m.step));
  version_.Set(static_cast<double>(m.policy_version));
  reward_mean_.Set(m.reward_mean);
  reward_std_.Set(m.reward_std);
  kl_.Set(m.kl);
  entropy_.Set(m.entropy);
  grad_norm_.Set(m.grad_norm);
  logprob_mismatch_.Set(m.logprob_mismatch);
  sampler_kl_.Set(m.sampler_kl);
  recomputed_old_.Set(m.recomputed_old_fraction);
  value_loss_.Set(m.value_loss);
  explained_variance_.Set(m.explained_variance);
  value_mean_.Set(m.value_mean);
  clip_low_.Set(m.clip_low_fraction);
  clip_high_.Set(m.clip_high_fraction);
  completion_length_.Set(m.completion_length_mean);
  zero_variance_.Set(m.zero_variance_fraction);
  policy_lag_.Set(policy_lag);
  learning_rate_.Set(m.learning_rate);
  tokens_per_second_.Set(tokens_per_second);
  for (size_t i = 0; i < names.size() && i < m.reward_per_function_mean.size(); ++i)
    reward_function_.Add({{"function", names[i]}}).Set(m.reward_per_function_mean[i]);
  step_seconds_.Observe(times.step);
  phase_seconds_.Add({{"phase", "wait"}}).Observe(times.wait);
  phase_seconds_.Add({{"phase", "train"}}).Observe(times.train);
  phase_seconds_.Add({{"phase", "allreduce"}}).Observe(times.allreduce);
  phase_seconds_.Add({{"phase", "publish"}}).Observe(times.publish);
  steps_.Increment();
  groups_.Increment(m.groups);
  samples_.Increment(m.samples);
  tokens_.Increment(static_cast<double>(m.completion_tokens));
}

}  // namespace grpo
