// RunGrpoJob: one GRPO job from its starting policy to its end, the same loop whatever
// produces the batches (docs/design.md §2). grpo_local feeds it from an in-process rollout;
// the distributed learner's rank 0 from its ingest buffer (prompts leased to rollout
// workers by the coordinator). So one spec gives the same step semantics, metrics.jsonl
// keys, checkpoint layout, evaluation cadence and resume behaviour in both modes.
//
// The phases, in order:
//   1. resume point: the run directory's newest checkpoint, else spec.resume_from;
//   2. starting policy: that checkpoint's weights, or the spec's (SFT warm-up, init
//      checkpoint, Hugging Face weights) followed by the held-out evaluation "before";
//   3. the trainer (AdamW, reference), loaded from the checkpoint when resuming;
//   4. steps until spec.steps: take a batch from the source, train on it (a batch that
//      trains nothing — every group filtered out, or a non-finite update — is replaced
//      and the step does not count), record metrics.jsonl and trained_prompts.txt,
//      checkpoint every checkpoint_every steps or checkpoint_every_seconds, evaluate
//      every eval.every_steps;
//   5. the end: a checkpoint (step-0 for a job of 0 steps: its starting policy, e.g. SFT
//      only), and when every step ran, the evaluation "after" and eval.json.
// A cancelled job (JobEvents::Report) or a stopping process (JobEvents::Stopping) ends at
// the next step boundary, checkpointed.
//
// Borrows everything it is given. Not thread-safe.
#ifndef GRPO_LEARNER_JOB_DRIVER_H_
#define GRPO_LEARNER_JOB_DRIVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/job_data.h"
#include "evaluation/evaluation.h"
#include "grpo/v1/coordinator.pb.h"
#include "grpo/v1/job.pb.h"
#include "hf/hf_config.h"
#include "hf/job_model.h"
#include "learner/grpo_trainer.h"
#include "learner/learner_group.h"
#include "model/model.h"
#include "rl/scored_group.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo {

// One step's groups and what it cost the source to get them.
struct SourcedBatch {
  std::vector<ScoredGroup> groups;  // empty: stop now (cancelled, or the process stops)
  double wait_seconds = 0;          // waiting for them to arrive (distributed)
  double sample_seconds = 0;        // sampling and scoring them here (local)
};

// What the source did besides the batch, for metrics.jsonl.
struct SourceCounters {
  int64_t duplicate_groups = 0;
  int64_t stale_groups_dropped = 0;
};

// Where the batches come from. Errors from Share and Next are fatal (the learner group
// is unusable); errors from Begin, Trained and SettleForCheckpoint fail the job.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // The starting policy is ready (or failed: `ok` false); ranks that wait for it get it
  // now. Called exactly once, on every path.
  virtual absl::Status Share(Transformer& policy, bool ok) = 0;
  // Before the first step: continue the job's data from `cursor`, never giving back a
  // prompt of `seen`; `version` is the policy's, `step` the steps done (after a resume,
  // the checkpoint's). `from_other_job`: the checkpoint came from spec.resume_from (its
  // ids mean nothing here).
  virtual absl::Status Begin(const Transformer& policy, int64_t version, int step,
                             uint64_t cursor, const std::vector<std::string>& seen,
                             bool from_other_job) = 0;
  // The next step's groups, for a policy at `version`. `step` counts from 1.
  virtual absl::StatusOr<SourcedBatch> Next(const Transformer& policy, int64_t version,
                                            int step) = 0;
  // Every rank is about to train on `groups` (the leader sends them to the others).
  virtual absl::Status BeforeStep(const std::vector<ScoredGroup>& groups) = 0;
  // The batch trained nothing; the next Next gives fresh prompts for the same step.
  virtual void Replace() = 0;
  // The step trained: the policy is now at `version`. Returns the seconds spent
  // publishing it.
  virtual absl::StatusOr<double> Trained(const Transformer& policy, int64_t version,
                                         int step) = 0;
  // Before a checkpoint: the data position where a job started from it continues, after
  // anything recorded as seen has been settled (the leader acknowledges it).
  virtual absl::StatusOr<uint64_t> SettleForCheckpoint() = 0;
  // Every prompt id this job has taken in so far (a resumed job never trains them).
  virtual std::vector<std::string> SeenIds() = 0;
  virtual SourceCounters counters() = 0;
};

// Where the job's progress goes.
class JobEvents {
 public:
  virtual ~JobEvents() = default;
  virtual void Log(const std::string& line) = 0;
  // Progress for whoever watches.
  virtual void Report(v1::JobPhase phase, const std::string& message) = 0;
  // The user cancelled the job (learned by a Report, or by the source while it waited).
  virtual bool Cancelled() = 0;
  // The process is stopping (SIGTERM): checkpoint and leave the job to be resumed.
  virtual bool Stopping() = 0;
  // A step trained (after metrics.jsonl has its line).
  struct StepRecord {
    const StepMetrics* metrics;
    const std::vector<ScoredGroup>* groups;
    double step_seconds, wait_seconds, allreduce_seconds, publish_seconds;
    double tokens_per_second;
    double eta_seconds;
  };
  virtual void OnStep(const StepRecord& record) = 0;
  // An update was skipped as non-finite.
  virtual void OnSkip(const StepMetrics& metrics) = 0;
};

// Where a job starts from: its run directory's newest checkpoint (a restart of this job),
// else spec.resume_from (another job's), else nowhere (dir empty).
struct ResumePoint {
  std::string dir;
  bool from_other_job = false;
};
// INVALID_ARGUMENT when resume_from is not a checkpoint; an error when `latest` names a
// directory that is not there (never a guess).
absl::StatusOr<ResumePoint> FindResumePoint(const std::string& run_dir,
                                            const v1::JobSpec& resolved);

// The job's trainer on every rank: the policy moved to `device`, the spec's options over
// `group` (null or one rank: alone), loaded from `resume_dir` when set.
absl::StatusOr<std::unique_ptr<GrpoTrainer>> CreateJobTrainer(const v1::JobSpec& resolved,
                                                              Transformer* policy,
                                                              LearnerGroup* group,
                                                              const std::string& resume_dir,
                                                              c10::Device device);

struct JobInputs {
  v1::JobSpec spec;  // resolved
  std::string run_dir;
  ResumePoint resume;
  const JobData* data = nullptr;
  const TextTokenizer* tokenizer = nullptr;
  Transformer* policy = nullptr;                 // built, not yet prepared
  std::optional<hf::HfModelConfig> hf_config;    // model.hf_dir jobs: checkpoints get hf/
  LearnerGroup* group = nullptr;                 // several ranks; null = one process
  int keep_checkpoints = 0;                      // newest step-N kept; < 1 = all
  // Where the trainer runs (learner/learner_device.h). The starting policy is prepared on
  // the CPU (SFT, the evaluation "before") and moved here before the trainer is built.
  c10::Device device = c10::kCPU;
};

struct JobOutcome {
  v1::JobState state = v1::JOB_STATE_FAILED;  // RUNNING: stopped, checkpointed, resumable
  absl::Status failure;     // why, when FAILED
  std::string result_json;  // eval.json's contents once every step ran
  int step = 0;             // the last completed step
  std::optional<EvalResult> before, after;  // after: only when every step ran
  std::vector<double> step_rewards;         // mean training reward of each step run here
};

// What a job needs before it runs, every input a user gave checked: the spec validated, the
// run directory created with spec.json, the data loaded, the model's shape and tokenizer
// (the preset's, or model.hf_dir's files), the policy built (not yet prepared) and the
// resume point found. The same in both modes; errors name the field, file or path.
struct PreparedJob {
  JobData data;
  hf::JobModel model;
  std::unique_ptr<Transformer> policy;
  ResumePoint resume;

  // The driver's inputs, pointing into this object (which must outlive the run).
  JobInputs Inputs(const v1::JobSpec& resolved, const std::string& run_dir,
                   LearnerGroup* group, int keep_checkpoints);
};
absl::StatusOr<PreparedJob> PrepareJob(const v1::JobSpec& resolved, const std::string& run_dir);

// A non-OK status only when the source failed fatally; every failure of the job itself
// is an outcome in state FAILED with its error.
absl::StatusOr<JobOutcome> RunGrpoJob(const JobInputs& inputs, BatchSource& source,
                                      JobEvents& events);

}  // namespace grpo

#endif  // GRPO_LEARNER_JOB_DRIVER_H_
