// RunLocalJob: a whole GRPO job in one process (local mode, DESIGN.md §2): SFT warm-up,
// held-out evaluation, GRPO steps (rollout -> rewards -> learner), evaluation again. It
// writes the run directory (resolved spec, metrics.jsonl, eval.json, checkpoints) and
// prints one progress line per step. The distributed services replace the in-process
// calls with RPCs; the pieces (Rollout, GrpoTrainer) are the same.
#ifndef GRPO_LOCAL_LOCAL_JOB_H_
#define GRPO_LOCAL_LOCAL_JOB_H_

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "grpo/v1/job.pb.h"
#include "rollout_worker/evaluation.h"

namespace grpo {

struct LocalJobOptions {
  std::string run_dir = "runs/local";
  std::ostream* progress = nullptr;  // progress lines; null = silent
};

struct LocalJobResult {
  EvalResult before;  // the SFT (or initial) policy
  EvalResult after;   // after GRPO
  double first_steps_reward = 0;  // mean training reward over the first 20% of steps
  double last_steps_reward = 0;   // ... and over the last 20%
  double seconds = 0;
};

absl::StatusOr<LocalJobResult> RunLocalJob(const v1::JobSpec& resolved_spec,
                                           const LocalJobOptions& options);

}  // namespace grpo

#endif  // GRPO_LOCAL_LOCAL_JOB_H_
