// GrpoTrainer: one learner step of GRPO (docs/design.md §3) on a batch of scored groups: drop
// stale samples, (optionally) drop zero-variance groups, compute advantages, run μ passes
// of the clipped loss with the KL to a frozen reference, step AdamW, bump the policy
// version, refresh the reference every K steps when asked (iterative GRPO).
//
// With options.ppo.enabled the same step is PPO's (docs/design.md §3b): a critic
// (learner/value_model.h) with its own AdamW estimates per-token values, the advantages
// come from GAE over them (the KL to the reference a per-token reward penalty), whitened
// over the whole batch, and each pass also takes a clipped value-loss step for the critic.
// The critic is data-parallel and sharded like the policy, and checkpointed beside it.
//
// Device and precision are the policy's (Transformer::To before Create) and the options':
// the same code trains on the CPU in float32/float64 and on a GPU in bfloat16; batches are
// built on the CPU and moved to the policy's device.
//
// Borrows the policy (it must outlive the trainer) and owns the reference and optimizer.
// A step that fails validation changes nothing. Not thread-safe.
#ifndef GRPO_LEARNER_GRPO_TRAINER_H_
#define GRPO_LEARNER_GRPO_TRAINER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/job.pb.h"
#include "learner/learner_group.h"
#include "learner/optimizer.h"
#include "learner/value_model.h"
#include "model/model.h"
#include "rl/grpo.h"
#include "rl/scored_group.h"

namespace grpo {

// PPO's critic side (the spec's `ppo`, and grpo.beta as the reward's KL coefficient).
struct PpoOptions {
  bool enabled = false;
  double gamma = 1.0;
  double lambda = 0.95;
  double value_clip = 0.2;
  double kl_coef = 0;            // β of r_t = −β·(log πold − log πref)_t (+ R at the end)
  bool whiten_advantages = true;
  std::string critic_init;       // empty: the policy's weights, a zero head
  OptimizerOptions optimizer;    // the critic's AdamW
};

struct TrainerOptions {
  AdvantageOptions advantage;
  LossOptions loss;
  bool filter_zero_variance_groups = false;
  int inner_iterations = 1;          // μ
  int reference_refresh_steps = 0;   // 0 = frozen for the whole run
  int64_t max_policy_lag = 0;        // samples older than version − lag are dropped
  double temperature = 1.0;          // the sampler's, so ρ = 1 on-policy
  OptimizerOptions optimizer;
  // Memory (the spec's `training`): micro-batches of at most this many tokens, gradients
  // accumulated (0 = the whole shard at once); the LM head over chunks of this many
  // positions (0 = all at once). The step's result does not depend on either.
  int64_t micro_batch_tokens = 0;
  int64_t logprob_chunk = 0;
  // bfloat16 compute over float32 master weights (Transformer::SetComputeDtype); the
  // reference in bfloat16. Otherwise the policy's own dtype throughout.
  bool bf16_mixed = false;
  bool activation_checkpointing = false;
  // ZeRO-1 over `group` (learner/optimizer.h); no effect without one.
  bool shard_optimizer = false;
  // π_old = the learner's pre-step log-probs instead of the sampler's; with tis_cap > 0
  // each token's policy loss is weighted by min(π_old / π_sampler, tis_cap).
  bool recompute_old_logprobs = false;
  // OLD_LOGPROBS_AUTO: π_old recomputed for the groups whose sampling_precision is
  // reported and is not the policy's training_precision (the sampler's kept for the rest);
  // TIS, when on, weighs those groups' tokens only.
  bool recompute_on_precision_mismatch = false;
  double tis_cap = 0;
  // Data-parallel learner ranks (borrowed, outlives the trainer); null = one process.
  LearnerGroup* group = nullptr;
  // PPO instead of GRPO (then loss.beta is 0: the KL is in the reward, ppo.kl_coef).
  PpoOptions ppo;
};

TrainerOptions TrainerOptionsFromSpec(const v1::JobSpec& resolved);

struct StepMetrics {
  int64_t step = 0;
  int64_t policy_version = 0;  // after the step
  bool trained = false;        // false when every group was filtered out, or skipped
  // The loss or the gradient was not finite, so the update was skipped and the weights
  // are as they were (trained stays false when it was the first inner iteration).
  bool skipped_nonfinite = false;
  int64_t nonfinite_skips = 0;  // updates skipped so far by this trainer
  int groups = 0;              // groups trained on
  int samples = 0;
  double reward_mean = 0;
  double reward_std = 0;
  std::vector<double> reward_per_function_mean;
  double zero_variance_fraction = 0;  // of the groups received
  int dropped_stale_samples = 0;
  // The loss terms, token means and token count below are of the first inner iteration
  // and of the whole (global) batch: with several learner ranks they are reduced over
  // the group, so every rank reports what one rank would.
  double loss = 0;
  double policy_loss = 0;
  double kl = 0;
  double clip_fraction = 0;
  double clip_low_fraction = 0;
  double clip_high_fraction = 0;
  double grad_norm = 0;  // pre-clipping, first inner iteration
  double entropy = 0;
  // The sampler against the learner with the pre-step weights, over the trained tokens:
  // mean |log π_learner − log π_sampler|, and KL(π_sampler ‖ π_learner) by the k3
  // estimator (≥ 0, 0 when they agree). The learner's device, precision and batch shape
  // differ from the worker's, so these are not 0 in general; they are what TIS corrects.
  double logprob_mismatch = 0;
  double sampler_kl = 0;
  double tis_truncated_fraction = 0;  // tokens whose TIS weight hit tis_cap
  // Of the trained samples, those whose π_old was the learner's recomputed log-prob.
  double recomputed_old_fraction = 0;
  // PPO's critic (has_critic), first inner iteration, over the trained tokens: the value
  // loss (its share of the whole batch), the tokens where its clipped branch won, the
  // mean pre-step value and return, and 1 − Var(R − V)/Var(R).
  bool has_critic = false;
  double value_loss = 0;
  double value_clip_fraction = 0;
  double value_mean = 0;
  double return_mean = 0;
  double explained_variance = 0;
  double completion_length_mean = 0;
  int64_t completion_tokens = 0;
  double learning_rate = 0;
  double seconds = 0;
};

class GrpoTrainer {
 public:
  static absl::StatusOr<std::unique_ptr<GrpoTrainer>> Create(Transformer* policy,
                                                             const TrainerOptions& options);
  ~GrpoTrainer();

  // With options.group set, every rank passes the same groups and trains on its shard;
  // the parameters stay bit-identical across ranks.
  absl::StatusOr<StepMetrics> Step(const std::vector<ScoredGroup>& groups);

  int64_t step() const { return step_; }
  int64_t policy_version() const { return policy_version_; }

  // With a sharded optimizer, a collective every rank makes before rank 0's Save (the
  // moments gathered to rank 0); a no-op otherwise.
  absl::Status GatherForSave();
  // Reference model, optimizer state and counters (and PPO's critic and its optimizer),
  // as files under `dir`.
  absl::Status Save(const std::string& dir) const;
  absl::Status Load(const std::string& dir);

  // PPO's critic; null for GRPO.
  ValueModel* critic() const { return critic_.get(); }

 private:
  GrpoTrainer(Transformer* policy, const TrainerOptions& options);
  // Step's phases (grpo_trainer.cc).
  struct Shard;
  struct MicroBatch;
  struct LossSums;
  std::vector<ScoredGroup> SelectGroups(const std::vector<ScoredGroup>& received,
                                        StepMetrics* m) const;
  bool RecomputesOldLogprobs(const ScoredGroup& group) const;
  absl::StatusOr<Shard> ShardBatch(const std::vector<ScoredGroup>& groups) const;
  absl::StatusOr<std::vector<MicroBatch>> PackMicroBatches(const Shard& shard) const;
  absl::Status EstimateAdvantages(std::vector<MicroBatch>& parts) const;
  void AddValueLoss(const Shard& shard, const MicroBatch& mb, LossSums* sums,
                    at::Tensor* nonfinite) const;
  void UseOwnLogprobs(const at::Tensor& logprobs, MicroBatch* mb, LossSums* sums) const;
  absl::StatusOr<at::Tensor> AccumulateGradients(const Shard& shard,
                                                 std::vector<MicroBatch>& parts, LossSums* sums);
  absl::StatusOr<int> Update(const Shard& shard, StepMetrics* m);

  Transformer* policy_;
  std::unique_ptr<Transformer> reference_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<ValueModel> critic_;               // PPO only
  std::unique_ptr<Optimizer> critic_optimizer_;      // PPO only
  TrainerOptions options_;
  int64_t step_ = 0;
  int64_t policy_version_ = 0;
  int64_t nonfinite_skips_ = 0;
  int consecutive_skips_ = 0;
};

}  // namespace grpo

#endif  // GRPO_LEARNER_GRPO_TRAINER_H_
