#include "learner/grpo_trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "learner/batch.h"
#include "model/torch_status.h"
#include "rl/ppo.h"

namespace grpo {
namespace {

constexpr int kMaxConsecutiveSkips = 8;

}  // namespace

TrainerOptions TrainerOptionsFromSpec(const v1::JobSpec& s) {
  const v1::GrpoSpec& g = s.grpo();
  TrainerOptions o;
  switch (g.advantage_estimator()) {
    case v1::ADVANTAGE_ESTIMATOR_PROCESS:
      o.advantage.estimator = AdvantageEstimator::kProcess; break;
    case v1::ADVANTAGE_ESTIMATOR_ONLINE_RFT:
      o.advantage.estimator = AdvantageEstimator::kOnlineRft; break;
    default: o.advantage.estimator = AdvantageEstimator::kOutcome;
  }
  switch (g.advantage_scale()) {
    case v1::ADVANTAGE_SCALE_BATCH: o.advantage.scale = AdvantageScale::kBatch; break;
    case v1::ADVANTAGE_SCALE_NONE: o.advantage.scale = AdvantageScale::kNone; break;
    default: o.advantage.scale = AdvantageScale::kGroup;
  }
  o.advantage.rft_negative = g.rft_negative();
  o.advantage.correct_threshold = g.correct_threshold();
  o.loss.epsilon_low = g.epsilon_low();
  o.loss.epsilon_high = g.epsilon_high();
  o.loss.beta = g.beta();
  switch (g.kl_estimator()) {
    case v1::KL_ESTIMATOR_K1: o.loss.kl_estimator = KlEstimator::kK1; break;
    case v1::KL_ESTIMATOR_K2: o.loss.kl_estimator = KlEstimator::kK2; break;
    default: o.loss.kl_estimator = KlEstimator::kK3;
  }
  switch (g.aggregation()) {
    case v1::LOSS_AGGREGATION_TOKEN_MEAN: o.loss.aggregation = Aggregation::kTokenMean; break;
    case v1::LOSS_AGGREGATION_SEQ_MEAN_TOKEN_SUM_NORM:
      o.loss.aggregation = Aggregation::kSeqMeanTokenSumNorm; break;
    default: o.loss.aggregation = Aggregation::kSeqMeanTokenMean;
  }
  o.loss.max_new_tokens = s.sampling().max_new_tokens();
  o.loss.ratio = g.importance_ratio() == v1::IMPORTANCE_RATIO_SEQUENCE ? RatioLevel::kSequence
                                                                       : RatioLevel::kToken;
  // Online RFT (the paper's baseline): a plain weighted likelihood, no clipping, no KL.
  if (o.advantage.estimator == AdvantageEstimator::kOnlineRft) {
    o.loss.clip = false;
    o.loss.beta = 0;
  }
  o.filter_zero_variance_groups = g.filter_zero_variance_groups();
  o.inner_iterations = g.inner_iterations();
  o.reference_refresh_steps = g.reference_refresh_steps();
  o.max_policy_lag = g.max_policy_lag();
  o.temperature = s.sampling().temperature();
  o.optimizer = OptimizerOptionsFromSpec(s.optimizer());
  o.micro_batch_tokens = s.training().micro_batch_tokens();
  o.logprob_chunk = s.training().logprob_chunk_positions();
  o.bf16_mixed = s.training().precision() == v1::TRAINING_PRECISION_BF16_MIXED;
  o.activation_checkpointing = s.training().activation_checkpointing();
  o.shard_optimizer = s.training().shard_optimizer();
  o.recompute_old_logprobs = s.training().old_logprobs() == v1::OLD_LOGPROBS_RECOMPUTE;
  o.recompute_on_precision_mismatch = s.training().old_logprobs() == v1::OLD_LOGPROBS_AUTO;
  o.tis_cap = s.training().tis_cap();
  if (s.algorithm() == v1::ALGORITHM_PPO) {
    const v1::PpoSpec& p = s.ppo();
    o.ppo.enabled = true;
    o.ppo.gamma = p.gamma();
    o.ppo.lambda = p.gae_lambda();
    o.ppo.value_clip = p.value_clip();
    o.ppo.whiten_advantages = p.whiten_advantages();
    o.ppo.critic_init = p.critic_init();
    o.ppo.optimizer = o.optimizer;
    if (p.critic_learning_rate() > 0) o.ppo.optimizer.learning_rate = p.critic_learning_rate();
    // InstructGPT's penalty: the KL is part of the reward the critic learns, not a loss term.
    o.ppo.kl_coef = o.loss.beta;
    o.loss.beta = 0;
  }
  return o;
}

GrpoTrainer::GrpoTrainer(Transformer* policy, const TrainerOptions& options)
    : policy_(policy), options_(options) {}

GrpoTrainer::~GrpoTrainer() = default;

absl::StatusOr<std::unique_ptr<GrpoTrainer>> GrpoTrainer::Create(
    Transformer* policy, const TrainerOptions& options) {
  if (policy == nullptr) return absl::InvalidArgumentError("policy: null");
  if (options.inner_iterations < 1)
    return absl::InvalidArgumentError("grpo.inner_iterations must be >= 1");
  if (options.tis_cap < 0) return absl::InvalidArgumentError("training.tis_cap must be >= 0");
  const at::TensorOptions placement = policy->tensor_options();
  if (options.bf16_mixed && placement.dtype().toScalarType() != at::kFloat)
    return absl::InvalidArgumentError(
        "training.precision BF16_MIXED needs a float32 policy (its master weights)");
  std::unique_ptr<GrpoTrainer> t(new GrpoTrainer(policy, options));
  if (absl::Status s = policy->SetComputeDtype(options.bf16_mixed ? at::kBFloat16
                                                                  : at::ScalarType::Undefined);
      !s.ok())
    return s;
  policy->SetActivationCheckpointing(options.activation_checkpointing);
  // The reference computes beside the policy, on its device, in the compute dtype: it
  // needs no master weights, gradients or optimizer state.
  t->reference_ = std::make_unique<Transformer>(policy->config(), Transformer::Uninitialized{});
  if (absl::Status s = t->reference_->To(placement.device(), policy->compute_dtype()); !s.ok())
    return s;
  if (absl::Status s = t->reference_->CopyFrom(*policy); !s.ok()) return s;
  t->reference_->SetFusedAttention(policy->fused_attention());
  for (at::Tensor p : t->reference_->parameters()) p.requires_grad_(false);
  t->optimizer_ = std::make_unique<Optimizer>(policy->parameters(), options.optimizer,
                                              options.shard_optimizer ? options.group : nullptr);
  if (options.ppo.enabled) {
    absl::StatusOr<std::unique_ptr<ValueModel>> critic =
        options.ppo.critic_init.empty()
            ? ValueModel::FromPolicy(*policy)
            : ValueModel::FromRewardModel(options.ppo.critic_init, *policy);
    if (!critic.ok()) return critic.status();
    t->critic_ = *std::move(critic);
    t->critic_->backbone().SetActivationCheckpointing(options.activation_checkpointing);
    t->critic_optimizer_ = std::make_unique<Optimizer>(
        t->critic_->parameters(), options.ppo.optimizer,
        options.shard_optimizer ? options.group : nullptr);
  }
  return t;
}

// What this rank trains on: its shard of the batch, packed, with the normalisers of the
// whole batch.
// The first pass's metrics as sums over this rank's completion tokens (the loss terms are
// already each micro-batch's share of the whole batch's, normalised by global counts).
// One float64 tensor on the policy's device: a micro-batch adds to it without waiting for
// the device (an item() per metric would stall a GPU's queue a dozen times a micro-batch),
// and the step reads it once, after the all-reduce (Fetch, then Into).
struct GrpoTrainer::LossSums {
  enum Field {
    kLoss, kPolicyLoss, kKl, kClipLow, kClipHigh, kEntropy, kMismatch, kSamplerKl,
    kTisTruncated, kTokens,
    // PPO's critic: the value loss (already normalised by the batch's tokens), clipped
    // tokens, and Σ V, Σ R, Σ R², Σ (R − V), Σ (R − V)² for the means and explained
    // variance.
    kValueLoss, kValueClip, kValues, kReturns, kReturnsSq, kResidual, kResidualSq,
    kFields
  };
  at::Tensor sums;  // [kFields] float64, on the device
  at::Tensor host;  // the same, read back (Fetch)

  void Start(const at::TensorOptions& device) {
    sums = at::zeros({kFields}, device.dtype(at::kDouble));
  }
  void Add(Field field, const at::Tensor& scalar) {
    sums.select(0, field).add_(scalar.detach().to(at::kDouble));
  }
  void Add(Field field, double value) { sums.select(0, field).add_(value); }
  void Fetch() { host = sums.to(at::kCPU); }

  // One all-reduce makes them the whole batch's on every rank, as one rank would report
  // them.
  absl::Status Reduce(LearnerGroup& group) {
    std::vector<at::Tensor> t{sums};
    return group.AllReduceSum(t);
  }

  void Into(StepMetrics* m) const {
    const auto s = host.accessor<double, 1>();
    const double n = std::max(1.0, s[kTokens]);
    m->loss = s[kLoss];
    m->policy_loss = s[kPolicyLoss];
    m->kl = s[kKl] / n;
    m->clip_low_fraction = s[kClipLow] / n;
    m->clip_high_fraction = s[kClipHigh] / n;
    m->clip_fraction = (s[kClipLow] + s[kClipHigh]) / n;
    m->entropy = s[kEntropy] / n;
    m->logprob_mismatch = s[kMismatch] / n;
    m->sampler_kl = s[kSamplerKl] / n;
    m->tis_truncated_fraction = s[kTisTruncated] / n;
    m->completion_tokens = static_cast<int64_t>(s[kTokens]);
    m->value_loss = s[kValueLoss];
    m->value_clip_fraction = s[kValueClip] / n;
    m->value_mean = s[kValues] / n;
    m->return_mean = s[kReturns] / n;
    // Population variances, as rl/ppo.h's ExplainedVariance.
    const double var_returns = s[kReturnsSq] / n - (s[kReturns] / n) * (s[kReturns] / n);
    const double var_residual =
        s[kResidualSq] / n - (s[kResidual] / n) * (s[kResidual] / n);
    m->explained_variance = var_returns > 0 ? 1.0 - var_residual / var_returns : 0.0;
  }
};

struct GrpoTrainer::Shard {
  std::vector<std::vector<int32_t>> prompts, completions;
  std::vector<std::vector<float>> old_logprobs, advantages;
  std::vector<double> rewards;  // PPO: each sample's, for its last token
  std::vector<uint8_t> recompute;  // 1: π_old is the learner's own (UseOwnLogprobs)
  LossOptions loss;     // with the whole batch's normalisers, whatever the micro-batching
  int64_t samples = 0;  // in the whole batch
  int64_t recomputed_samples = 0;  // of them, those whose π_old is the learner's own
};

// Part of a shard, packed, on the policy's device; its gradient is accumulated with the
// others'. All [n, M]. old_logprobs is π_old: the sampler's, or (recomputed) the first
// pass's own; advantages carry the TIS weights once the first pass has set them.
struct GrpoTrainer::MicroBatch {
  TokenBatch batch;
  at::Tensor sampler_logprobs, old_logprobs, advantages;
  // bool [n, 1]: the rows whose π_old is recomputed; undefined when none is.
  at::Tensor recompute;
  at::Tensor reference_logprobs;  // if a KL term needs it
  // PPO: the sample's reward at its last token, the pre-step critic's values, GAE's returns.
  at::Tensor token_rewards, old_values, returns;
};

namespace {

// Reward statistics over everything received (what the policy produced), filtered or not.
void RecordRewards(const std::vector<ScoredGroup>& received, StepMetrics* m) {
  std::vector<double> rewards;
  double length = 0;
  for (const ScoredGroup& group : received) {
    for (const ScoredSample& s : group.samples) {
      rewards.push_back(s.reward);
      length += s.completion.size();
      if (m->reward_per_function_mean.size() < s.reward_per_function.size())
        m->reward_per_function_mean.resize(s.reward_per_function.size(), 0.0);
      for (size_t f = 0; f < s.reward_per_function.size(); ++f)
        m->reward_per_function_mean[f] += s.reward_per_function[f];
    }
  }
  for (double r : rewards) m->reward_mean += r;
  m->reward_mean /= rewards.size();
  for (double r : rewards) m->reward_std += (r - m->reward_mean) * (r - m->reward_mean);
  m->reward_std = rewards.size() > 1 ? std::sqrt(m->reward_std / (rewards.size() - 1)) : 0;
  for (double& f : m->reward_per_function_mean) f /= rewards.size();
  m->completion_length_mean = length / rewards.size();
}

}  // namespace

// Stale samples first (their group's statistics must not see them), then zero variance.
std::vector<ScoredGroup> GrpoTrainer::SelectGroups(const std::vector<ScoredGroup>& received,
                                                   StepMetrics* m) const {
  std::vector<ScoredGroup> groups;
  int zero_variance = 0;
  for (const ScoredGroup& group : received) {
    ScoredGroup fresh = group;
    fresh.samples.clear();
    for (const ScoredSample& s : group.samples) {
      if (s.policy_version < policy_version_ - options_.max_policy_lag) {
        ++m->dropped_stale_samples;
      } else {
        fresh.samples.push_back(s);
      }
    }
    if (fresh.samples.empty()) continue;
    const bool flat = HasZeroVariance(fresh, options_.advantage.estimator);
    zero_variance += flat;
    if (flat && options_.filter_zero_variance_groups) continue;
    groups.push_back(std::move(fresh));
  }
  m->zero_variance_fraction = static_cast<double>(zero_variance) / received.size();
  return groups;
}

// π_old is the learner's own log-prob where asked, or (AUTO) where the group was sampled in
// another precision than the learner trains in: a bfloat16 sampler's log-probs carry its
// rounding, which would otherwise enter every ratio (docs/design.md §3).
bool GrpoTrainer::RecomputesOldLogprobs(const ScoredGroup& group) const {
  if (options_.recompute_old_logprobs) return true;
  return options_.recompute_on_precision_mismatch &&
         group.sampling_precision != v1::COMPUTE_PRECISION_UNSPECIFIED &&
         group.sampling_precision != policy_->training_precision();
}

// Data parallel: every rank holds the whole batch (advantages need whole groups and, for
// scale = batch, all of them); rank r trains on samples r, r + W, r + 2W, ... and the loss
// is normalised by the whole batch's counts, so summing gradients over ranks (and over
// micro-batches) gives the gradient of the full batch.
absl::StatusOr<GrpoTrainer::Shard> GrpoTrainer::ShardBatch(
    const std::vector<ScoredGroup>& groups) const {
  // PPO's advantages come from its critic, per micro-batch (EstimateAdvantages).
  absl::StatusOr<std::vector<std::vector<float>>> advantages =
      critic_ ? absl::StatusOr<std::vector<std::vector<float>>>(
                    std::vector<std::vector<float>>())
              : ComputeAdvantages(groups, options_.advantage);
  if (!advantages.ok()) return advantages.status();
  const int world = options_.group ? options_.group->world_size() : 1;
  const int rank = options_.group ? options_.group->rank() : 0;
  Shard shard;
  shard.loss = options_.loss;
  for (const ScoredGroup& group : groups) {
    const bool recompute = RecomputesOldLogprobs(group);
    for (const ScoredSample& s : group.samples) {
      shard.recomputed_samples += recompute;
      if (shard.samples % world == rank) {
        shard.recompute.push_back(recompute);
        shard.prompts.push_back(group.prompt);
        shard.completions.push_back(s.completion);
        shard.old_logprobs.push_back(s.logprobs);
        shard.advantages.push_back(critic_ ? std::vector<float>(s.completion.size(), 0.0f)
                                           : (*advantages)[shard.samples]);
        shard.rewards.push_back(s.reward);
      }
      ++shard.samples;
      shard.loss.global_tokens += s.completion.size();
    }
  }
  shard.loss.global_sequences = shard.samples;
  if (shard.samples < world)
    return absl::InvalidArgumentError(absl::StrCat("a batch of ", shard.samples,
                                                   " samples cannot be sharded over ", world,
                                                   " learner ranks"));
  return shard;
}

// Rows sorted by length (so padding is small), cut into micro-batches of at most
// options_.micro_batch_tokens tokens (rows × the longest row; one row at least), packed,
// with the reference's log-probs. Every row is checked here, before any update.
absl::StatusOr<std::vector<GrpoTrainer::MicroBatch>> GrpoTrainer::PackMicroBatches(
    const Shard& shard) const {
  std::vector<size_t> order(shard.prompts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto length = [&](size_t i) { return shard.prompts[i].size() + shard.completions[i].size(); };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return length(a) < length(b); });
  const int64_t budget = options_.micro_batch_tokens > 0
                             ? options_.micro_batch_tokens
                             : std::numeric_limits<int64_t>::max();
  std::vector<std::vector<size_t>> parts;
  size_t longest_prompt = 0, longest_completion = 0;
  for (size_t i : order) {
    const size_t p = std::max(longest_prompt, shard.prompts[i].size());
    const size_t c = std::max(longest_completion, shard.completions[i].size());
    if (parts.empty() ||
        static_cast<int64_t>((parts.back().size() + 1) * (p + c)) > budget) {
      parts.emplace_back();
      longest_prompt = shard.prompts[i].size();
      longest_completion = shard.completions[i].size();
    } else {
      longest_prompt = p;
      longest_completion = c;
    }
    parts.back().push_back(i);
  }
  std::vector<MicroBatch> out;
  for (const std::vector<size_t>& part : parts) {
    std::vector<std::vector<int32_t>> prompts, completions;
    std::vector<std::vector<float>> old_logprobs, advantages, token_rewards;
    std::vector<uint8_t> recompute;
    for (size_t i : part) {
      recompute.push_back(shard.recompute[i]);
      prompts.push_back(shard.prompts[i]);
      completions.push_back(shard.completions[i]);
      old_logprobs.push_back(shard.old_logprobs[i]);
      advantages.push_back(shard.advantages[i]);
      if (critic_) {
        token_rewards.emplace_back(shard.completions[i].size(), 0.0f);
        token_rewards.back().back() = static_cast<float>(shard.rewards[i]);
      }
    }
    absl::StatusOr<TokenBatch> batch =
        PackBatch(prompts, completions, /*pad_token=*/0, policy_->config().vocab_size);
    if (!batch.ok()) return batch.status();
    MicroBatch mb;
    absl::Status moved = CatchTorch("moving a micro-batch to the policy's device", [&] {
      const c10::Device device = policy_->tensor_options().device();
      mb.batch = *std::move(batch);
      mb.batch.tokens = mb.batch.tokens.to(device);
      mb.batch.is_pad = mb.batch.is_pad.to(device);
      mb.batch.mask = mb.batch.mask.to(device);
      mb.batch.positions = mb.batch.positions.to(device);
      mb.sampler_logprobs = PadRows(old_logprobs, mb.batch.completion_length).to(device);
      mb.old_logprobs = mb.sampler_logprobs;
      mb.advantages = PadRows(advantages, mb.batch.completion_length).to(device);
      if (std::find(recompute.begin(), recompute.end(), 1) != recompute.end())
        mb.recompute = at::tensor(std::vector<int64_t>(recompute.begin(), recompute.end()))
                           .to(device, at::kBool)
                           .view({-1, 1});
      if (critic_)
        mb.token_rewards = PadRows(token_rewards, mb.batch.completion_length).to(device);
    });
    if (!moved.ok()) return moved;
    out.push_back(std::move(mb));
  }
  if (options_.loss.beta != 0 || (critic_ && options_.ppo.kl_coef != 0)) {
    absl::Status s = CatchTorch("reference log-probs", [&] {
      at::NoGradGuard no_grad;
      for (MicroBatch& mb : out)
        mb.reference_logprobs = CompletionLogprobsChunked(*reference_, mb.batch,
                                                          options_.temperature,
                                                          options_.logprob_chunk)
                                    .logprobs;
    });
    if (!s.ok()) return s;
  }
  if (critic_)
    if (absl::Status s = EstimateAdvantages(out); !s.ok()) return s;
  return out;
}

// PPO: the pre-step critic's values, the per-token rewards (the outcome at the last token,
// minus β times the sampled tokens' log-ratio to the reference), GAE, and the advantages
// whitened over the whole batch: two float64 all-reduces (the mean, then the squared
// deviations), so the result is WhitenMasked's over the full batch on every rank.
absl::Status GrpoTrainer::EstimateAdvantages(std::vector<MicroBatch>& parts) const {
  // Summed on the device as the micro-batches go, all-reduced, then read once: the mean
  // and deviation are host scalars, as WhitenMasked's arithmetic has them.
  at::Tensor sums;  // float64 on the device: [Σ A, tokens], then [Σ (A − mean)²]
  double moments[2] = {0, 0};
  auto reduce_and_read = [&](int n) -> absl::Status {
    if (options_.group && options_.group->world_size() > 1) {
      std::vector<at::Tensor> one{sums};
      if (absl::Status s = options_.group->AllReduceSum(one); !s.ok()) return s;
    }
    return CatchTorch("reading PPO advantage moments", [&] {
      const at::Tensor host = sums.to(at::kCPU);
      for (int i = 0; i < n; ++i) moments[i] = host[i].item<double>();
    });
  };
  absl::Status s = CatchTorch("PPO advantages", [&] {
    at::NoGradGuard no_grad;
    sums = at::zeros({2}, policy_->tensor_options().dtype(at::kDouble));
    for (MicroBatch& mb : parts) {
      mb.old_values = critic_->Values(mb.batch);
      const at::TensorOptions like = mb.old_values.options();
      const at::Tensor mask = mb.batch.mask.to(like);
      at::Tensor rewards = mb.token_rewards.to(like);
      if (options_.ppo.kl_coef != 0)
        rewards = rewards - options_.ppo.kl_coef *
                                (mb.sampler_logprobs.to(like) - mb.reference_logprobs.to(like)) *
                                mask;
      GaeResult gae = GeneralizedAdvantages(rewards, mb.old_values, mask, options_.ppo.gamma,
                                            options_.ppo.lambda);
      mb.advantages = gae.advantages;
      mb.returns = gae.returns;
      sums.select(0, 0).add_(gae.advantages.sum().to(at::kDouble));
      sums.select(0, 1).add_(static_cast<double>(mb.batch.positions.numel()));
    }
  });
  if (!s.ok() || !options_.ppo.whiten_advantages) return s;
  if (absl::Status r = reduce_and_read(2); !r.ok()) return r;
  const double mean = moments[0] / std::max(1.0, moments[1]), tokens = moments[1];
  s = CatchTorch("PPO advantage whitening", [&] {
    sums = at::zeros({1}, sums.options());
    for (MicroBatch& mb : parts) {
      const at::Tensor mask = mb.batch.mask.to(mb.advantages.options());
      sums.add_(((mb.advantages - mean) * mask).pow(2).sum().to(at::kDouble));
    }
  });
  if (!s.ok()) return s;
  if (absl::Status r = reduce_and_read(1); !r.ok()) return r;
  const double deviation = std::sqrt(moments[0] / std::max(1.0, tokens - 1));
  return CatchTorch("PPO advantage whitening", [&] {
    for (MicroBatch& mb : parts) {
      const at::Tensor mask = mb.batch.mask.to(mb.advantages.options());
      mb.advantages = (mb.advantages - mean) / (deviation + 1e-8) * mask;
    }
  });
}

namespace {

// Counts into `flags` whether the scalar is not finite, on the device.
void FlagNonFinite(const at::Tensor& scalar, at::Tensor* flags) {
  flags->add_(at::logical_not(at::isfinite(scalar.detach())).to(flags->scalar_type()));
}

}  // namespace

// PPO: the critic's clipped value loss on one micro-batch, as its share of the whole
// batch's token mean, and its backward pass (gradients accumulated in the critic).
void GrpoTrainer::AddValueLoss(const Shard& shard, const MicroBatch& mb, LossSums* sums,
                               at::Tensor* nonfinite) const {
  const at::Tensor values = critic_->Values(mb.batch);
  const at::Tensor mask = mb.batch.mask.to(values.options());
  ValueLossTerms v =
      ClippedValueLoss(values, mb.old_values, mb.returns, mask, options_.ppo.value_clip);
  const double tokens = static_cast<double>(mb.batch.positions.numel());  // exact, host
  const at::Tensor share = v.loss * (tokens / std::max(1.0, shard.loss.global_tokens));
  FlagNonFinite(share, nonfinite);
  share.backward();
  if (sums) {
    const at::Tensor v_now = values.detach();
    const at::Tensor residual = (mb.returns - v_now) * mask;
    sums->Add(LossSums::kValueLoss, share);
    sums->Add(LossSums::kValueClip, v.clip_fraction * tokens);
    sums->Add(LossSums::kValues, v_now.sum());
    sums->Add(LossSums::kReturns, mb.returns.sum());
    sums->Add(LossSums::kReturnsSq, (mb.returns * mb.returns).sum());
    sums->Add(LossSums::kResidual, residual.sum());
    sums->Add(LossSums::kResidualSq, (residual * residual).sum());
  }
}

// The first pass's own log-probs (pre-step weights, detached) against the sampler's: the
// mismatch metrics; with recomputation they become π_old, and TIS weighs the advantages
// by min(π_old / π_sampler, C) (a positive per-token factor on A scales the clipped term
// alike, so the loss itself is unchanged).
void GrpoTrainer::UseOwnLogprobs(const at::Tensor& logprobs, MicroBatch* mb,
                                 LossSums* sums) const {
  const at::Tensor own = logprobs.detach();
  const at::Tensor& mask = mb->batch.mask;
  const at::Tensor log_ratio = (own - mb->sampler_logprobs) * mask;  // log π_learner/π_sampler
  if (sums) {
    sums->Add(LossSums::kMismatch, log_ratio.abs().sum());
    // e^d − 1 − d for |d| ~ 1e-4 cancels to nothing in float32: float64 and expm1.
    const at::Tensor wide = log_ratio.to(at::kDouble);
    sums->Add(LossSums::kSamplerKl, ((at::expm1(wide) - wide) * mask).sum());
  }
  if (!mb->recompute.defined()) return;
  // The rows not recomputed keep the sampler's log-probs, and with them a TIS weight of 1.
  mb->old_logprobs = at::where(mb->recompute, own, mb->sampler_logprobs);
  if (options_.tis_cap > 0) {
    const at::Tensor weight = log_ratio.exp();
    const at::Tensor weighed = mask * mb->recompute.to(mask.scalar_type());
    if (sums)
      sums->Add(LossSums::kTisTruncated,
                ((weight > options_.tis_cap).to(mask.scalar_type()) * weighed).sum());
    mb->advantages =
        mb->advantages * at::where(mb->recompute, weight.clamp_max(options_.tis_cap), 1.0);
  }
}

// One pass over the micro-batches: forward, loss, backward, gradients accumulated. Returns
// a [1] tensor on the policy's device, in its dtype, that is not 0 when a micro-batch's
// loss was not finite (read once per pass, after the all-reduce); the first pass (`sums`
// set) also records its metrics and the pre-step log-probs (UseOwnLogprobs).
absl::StatusOr<at::Tensor> GrpoTrainer::AccumulateGradients(const Shard& shard,
                                                            std::vector<MicroBatch>& parts,
                                                            LossSums* sums) {
  at::Tensor nonfinite;
  absl::Status status = CatchTorch("GRPO step", [&] {
    nonfinite = at::zeros({1}, policy_->tensor_options());
    if (sums) sums->Start(policy_->tensor_options());
    optimizer_->ZeroGrad();
    if (critic_optimizer_) critic_optimizer_->ZeroGrad();
    for (MicroBatch& mb : parts) {
      CompletionOutputs out = CompletionLogprobsChunked(*policy_, mb.batch, options_.temperature,
                                                        options_.logprob_chunk);
      if (sums) UseOwnLogprobs(out.logprobs, &mb, sums);
      LossTerms terms = GrpoLoss(out.logprobs, mb.old_logprobs, mb.reference_logprobs,
                                 mb.advantages, mb.batch.mask, shard.loss);
      FlagNonFinite(terms.loss, &nonfinite);
      if (sums) {
        const double tokens = static_cast<double>(mb.batch.positions.numel());
        const double counted = std::max(1.0, tokens);  // GrpoLoss's token means
        sums->Add(LossSums::kLoss, terms.loss);
        sums->Add(LossSums::kPolicyLoss, terms.policy_loss);
        sums->Add(LossSums::kKl, terms.kl * counted);
        sums->Add(LossSums::kClipLow, terms.clip_low_fraction * counted);
        sums->Add(LossSums::kClipHigh, terms.clip_high_fraction * counted);
        sums->Add(LossSums::kEntropy, out.entropy.sum());
        sums->Add(LossSums::kTokens, tokens);
      }
      terms.loss.backward();
      // The critic's pass after the policy's backward: one model's activations at a time.
      if (critic_) AddValueLoss(shard, mb, sums, &nonfinite);
    }
  });
  if (!status.ok()) return status;
  return nonfinite;
}

// μ passes of the clipped loss over the shard, each an AdamW update. The first pass's
// metrics go to `m`. Returns the pass whose update was skipped as non-finite (every rank
// decides alike), or -1; an error only when a collective or LibTorch failed.
absl::StatusOr<int> GrpoTrainer::Update(const Shard& shard, StepMetrics* m) {
  absl::StatusOr<std::vector<MicroBatch>> parts = PackMicroBatches(shard);
  if (!parts.ok()) return parts.status();
  const int world = options_.group ? options_.group->world_size() : 1;
  for (int iteration = 0; iteration < options_.inner_iterations; ++iteration) {
    LossSums sums;
    absl::StatusOr<at::Tensor> nonfinite =
        AccumulateGradients(shard, *parts, iteration == 0 ? &sums : nullptr);
    if (!nonfinite.ok()) return nonfinite.status();
    // Whether to skip must be decided alike on every rank, or their collectives would
    // part ways: a rank's own non-finite loss travels as a flag in the gradients'
    // all-reduce, and a non-finite summed gradient is the same on every rank.
    at::Tensor& nonfinite_loss = *nonfinite;
    if (world > 1) {
      std::vector<at::Tensor> grads;
      for (at::Tensor& p : policy_->parameters()) grads.push_back(p.mutable_grad());
      if (critic_)
        for (at::Tensor& p : critic_->parameters()) grads.push_back(p.mutable_grad());
      grads.push_back(nonfinite_loss);
      if (absl::Status s = options_.group->AllReduceSum(grads); !s.ok()) return s;
      if (iteration == 0)
        if (absl::Status s = sums.Reduce(*options_.group); !s.ok()) return s;
    }
    // The step's reads from the device: the flag, and the first pass's metrics.
    bool skip = false;
    absl::Status read = CatchTorch("reading the step's loss flags and metrics", [&] {
      skip = nonfinite_loss.item<double>() > 0;
      if (iteration == 0) sums.Fetch();
    });
    if (!read.ok()) return read;
    if (skip) {
      optimizer_->ZeroGrad();
      if (critic_optimizer_) critic_optimizer_->ZeroGrad();
      return iteration;
    }
    // The critic first: if its gradient is not finite neither model moves. (A policy
    // gradient that is not finite after it leaves the critic one update ahead; harmless.)
    if (critic_optimizer_) {
      absl::StatusOr<double> critic_norm = critic_optimizer_->Step();
      if (absl::IsFailedPrecondition(critic_norm.status())) {
        optimizer_->ZeroGrad();
        return iteration;
      }
      if (!critic_norm.ok()) return critic_norm.status();
    }
    absl::StatusOr<double> norm = optimizer_->Step();
    if (absl::IsFailedPrecondition(norm.status())) return iteration;  // non-finite gradient
    if (!norm.ok()) return norm.status();
    if (iteration == 0) {
      sums.Into(m);
      m->grad_norm = *norm;
      m->has_critic = critic_ != nullptr;
    }
  }
  return -1;
}

absl::StatusOr<StepMetrics> GrpoTrainer::Step(const std::vector<ScoredGroup>& received) {
  const auto start = std::chrono::steady_clock::now();
  if (received.empty()) return absl::InvalidArgumentError("groups: empty batch");
  if (absl::Status s = ValidateGroups(received); !s.ok()) return s;

  // --- 1. What to train on, and what the policy produced.
  StepMetrics m;
  m.step = step_ + 1;
  const std::vector<ScoredGroup> groups = SelectGroups(received, &m);
  RecordRewards(received, &m);
  m.learning_rate = optimizer_->learning_rate();
  m.policy_version = policy_version_;
  if (groups.empty()) {
    m.seconds = SecondsSince(start);
    return m;  // nothing to learn from; the caller leases more prompts
  }

  // --- 2. Advantages and this rank's shard.
  absl::StatusOr<Shard> shard = ShardBatch(groups);
  if (!shard.ok()) return shard.status();
  m.groups = groups.size();
  m.samples = shard->samples;
  m.recomputed_old_fraction =
      static_cast<double>(shard->recomputed_samples) / std::max<int64_t>(1, shard->samples);

  // --- 3. μ updates.
  absl::StatusOr<int> skipped_at = Update(*shard, &m);
  if (!skipped_at.ok()) return skipped_at.status();

  // --- 4. Counters, and the reference refreshed when asked (iterative GRPO).
  if (*skipped_at >= 0) {
    ++nonfinite_skips_;
    m.skipped_nonfinite = true;
    m.nonfinite_skips = nonfinite_skips_;
    if (*skipped_at == 0) {
      // Nothing changed; the caller takes a new batch for the same step. A run of them
      // means the policy itself is broken, which more batches will not fix.
      if (++consecutive_skips_ >= kMaxConsecutiveSkips)
        return absl::FailedPreconditionError(absl::StrCat(
            kMaxConsecutiveSkips, " updates in a row had a non-finite loss or gradient; "
            "lower optimizer.learning_rate or check the rewards"));
      m.seconds = SecondsSince(start);
      return m;
    }
  }
  consecutive_skips_ = 0;
  m.nonfinite_skips = nonfinite_skips_;
  ++step_;
  ++policy_version_;
  m.trained = true;
  m.policy_version = policy_version_;
  if (options_.reference_refresh_steps > 0 && step_ % options_.reference_refresh_steps == 0) {
    if (absl::Status s = reference_->CopyFrom(*policy_); !s.ok()) return s;
  }
  m.seconds = SecondsSince(start);
  return m;
}

absl::Status GrpoTrainer::GatherForSave() {
  if (absl::Status s = optimizer_->GatherForSave(); !s.ok()) return s;
  return critic_optimizer_ ? critic_optimizer_->GatherForSave() : absl::OkStatus();
}

absl::Status GrpoTrainer::Save(const std::string& dir) const {
  if (absl::Status s = reference_->Save(dir + "/reference.pt"); !s.ok()) return s;
  if (absl::Status s = optimizer_->Save(dir + "/optimizer.pt"); !s.ok()) return s;
  if (critic_) {
    if (absl::Status s = critic_->Save(dir); !s.ok()) return s;
    if (absl::Status s = critic_optimizer_->Save(dir + "/critic_optimizer.pt"); !s.ok())
      return s;
  }
  std::ofstream out(dir + "/trainer_state.txt");
  out << step_ << " " << policy_version_ << "\n";
  if (!out) return absl::InternalError(absl::StrCat("writing ", dir, "/trainer_state.txt"));
  return absl::OkStatus();
}

absl::Status GrpoTrainer::Load(const std::string& dir) {
  std::ifstream in(dir + "/trainer_state.txt");
  int64_t step = 0, version = 0;
  if (!(in >> step >> version) || step < 0 || version < 0)
    return absl::DataLossError(absl::StrCat(dir, "/trainer_state.txt: missing or malformed"));
  if (absl::Status s = reference_->Load(dir + "/reference.pt"); !s.ok()) return s;
  if (absl::Status s = optimizer_->Load(dir + "/optimizer.pt"); !s.ok()) return s;
  if (critic_) {
    if (!std::filesystem::exists(dir + "/critic.pt"))
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " has no critic.pt: a GRPO checkpoint cannot resume a PPO job"));
    if (absl::Status s = critic_->Load(dir); !s.ok()) return s;
    if (absl::Status s = critic_optimizer_->Load(dir + "/critic_optimizer.pt"); !s.ok())
      return s;
  }
  step_ = step;
  policy_version_ = version;
  return absl::OkStatus();
}

}  // namespace grpo
