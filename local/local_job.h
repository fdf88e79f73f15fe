// RunLocalJob: a whole GRPO job in one process (local mode, docs/design.md §2): the same job
// driver as the distributed learner (learner/job_driver.h: SFT warm-up, held-out
// evaluation, GRPO steps, checkpoints, evaluation again) fed by an in-process rollout
// (sample -> rewards) instead of rollout workers. It writes the same run directory
// (resolved spec, metrics.jsonl, trained_prompts.txt, eval.json, step-N checkpoints) and
// prints one progress line per step. A run directory that holds a checkpoint is resumed
// from it: a job killed after a checkpoint finishes where it stopped.
#ifndef GRPO_LOCAL_LOCAL_JOB_H_
#define GRPO_LOCAL_LOCAL_JOB_H_

#include <c10/core/Device.h>

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "evaluation/evaluation.h"
#include "grpo/v1/job.pb.h"

namespace grpo {

struct LocalJobOptions {
  std::string run_dir = "runs/local";
  std::ostream* progress = nullptr;  // progress lines; null = silent
  int keep_checkpoints = 3;          // newest step-N kept; < 1 = all
  // The learner's device (learner/learner_device.h); sampling and evaluation use the
  // policy where it is.
  c10::Device device = c10::kCPU;
};

struct LocalJobResult {
  bool resumed = false;  // from a checkpoint in the run directory: `before` is not set
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
