// The phases of a GRPO job that do not depend on where rollouts come from, shared by the
// in-process local job and the distributed learner: the starting policy (a checkpoint or
// the SFT warm-up), held-out evaluation settings, and the run directory's JSON lines
// (metrics.jsonl, eval.json; docs/design.md §5).
#ifndef GRPO_LEARNER_JOB_PHASES_H_
#define GRPO_LEARNER_JOB_PHASES_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "data/dataset.h"
#include "evaluation/evaluation.h"
#include "grpo/v1/job.pb.h"
#include "learner/grpo_trainer.h"
#include "model/model.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {

// The job's policy before its weights: drawn from spec.seed, or only allocated when
// model.hf_dir's weights are loaded next (drawing 0.5B numbers costs seconds). Running out
// of memory for a large config is an error, not a crash.
absl::Status BuildPolicy(const v1::JobSpec& resolved, const ModelConfig& config,
                         std::unique_ptr<Transformer>* policy);

// Loads spec.model.init_checkpoint (and stops there), or loads spec.model.hf_dir's weights
// and/or runs spec.sft on `train` with `tokenizer`; `progress` gets about ten lines
// ("sft  300/1000 | loss ..."). A no-op when none is set.
absl::Status PrepareStartingPolicy(const v1::JobSpec& resolved, const TextTokenizer& tokenizer,
                                   const std::vector<Example>& train, Transformer* policy,
                                   const std::function<void(const std::string&)>& progress);

// The same draw before and after GRPO, so the two evaluations are comparable.
EvalOptions EvalOptionsFromSpec(const v1::JobSpec& resolved);

// "m:ss".
std::string FormatDuration(double seconds);
// "eval before | pass@1 0.525 | pass@8 ... | 200 prompts, 9.1s".
std::string EvalLine(const std::string& label, const EvalResult& result, double seconds);

// One metrics.jsonl line. `extra` holds more ",\"key\":value" members, already formatted.
std::string MetricsJson(const StepMetrics& m, const std::vector<std::string>& reward_names,
                        double tokens_per_second, double elapsed, double sample_seconds,
                        const std::string& extra = "");
std::string EvalJson(const EvalResult& r);

// The names of the spec's reward functions, in order (metrics.jsonl's reward/<name> keys).
std::vector<std::string> RewardNames(const v1::JobSpec& resolved);

}  // namespace grpo

#endif  // GRPO_LEARNER_JOB_PHASES_H_
