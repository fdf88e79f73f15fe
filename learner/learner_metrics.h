// LearnerMetrics: what learner rank 0 exports to Prometheus (docs/design.md §6) — the GRPO
// step's statistics as gauges (the latest step's), its time as histograms (the whole
// step and its phases), totals as counters, and the ingest buffer read at each scrape.
// Families are registered in the constructor; Record* are called from the job loop.
#ifndef GRPO_LEARNER_LEARNER_METRICS_H_
#define GRPO_LEARNER_LEARNER_METRICS_H_

#include <string>
#include <vector>

#include "learner/grpo_trainer.h"
#include "learner/ingest_buffer.h"
#include "metrics/registry.h"

namespace grpo {

struct StepTimes {
  double step = 0, wait = 0, train = 0, allreduce = 0, publish = 0;  // seconds
};

class LearnerMetrics {
 public:
  // Borrows both; `buffer` is read at every scrape and must outlive the registry's use.
  LearnerMetrics(metrics::Registry* registry, const IngestBuffer* buffer);

  // A trained step. `policy_lag`: mean of (version trained - version that sampled) over
  // the batch's samples.
  void RecordStep(const StepMetrics& m, const std::vector<std::string>& reward_names,
                  const StepTimes& times, double policy_lag, double tokens_per_second);
  // An update skipped as non-finite.
  void RecordSkip() { nonfinite_skips_.Increment(); }

 private:
  metrics::Gauge &step_, &version_, &reward_mean_, &reward_std_, &kl_, &entropy_, &grad_norm_,
      &logprob_mismatch_, &sampler_kl_, &recomputed_old_, &value_loss_, &explained_variance_,
      &value_mean_, &clip_low_, &clip_high_, &completion_length_, &zero_variance_,
      &policy_lag_, &learning_rate_, &tokens_per_second_;
  metrics::Family<metrics::Gauge>& reward_function_;
  metrics::Histogram& step_seconds_;
  metrics::Family<metrics::Histogram>& phase_seconds_;
  metrics::Counter &steps_, &groups_, &samples_, &tokens_, &nonfinite_skips_;
};

}  // namespace grpo

#endif  // GRPO_LEARNER_LEARNER_METRICS_H_
