// trainer_check: the trainer's device checks without gtest (a GPU machine lacks it), the
// same GrpoTrainer code the CPU tests run, with the device a flag. On --device cuda:
//   1. a GRPO step there equals the same step on the CPU (float32, same weights and batch);
//   2. micro-batches, chunked log-probs and checkpointed layers give the one-shot step, and
//      the fused attention (scaled_dot_product_attention) the explicit one's;
//   3. bfloat16 mixed precision trains with float32 master weights and a bfloat16
//      reference, and sees a sampler mismatch (the samples' log-probs are the float32 CPU
//      model's);
//   4. PPO (a critic on the device) in micro-batches equals its one-shot step;
//   5. the sampler's static decode (model/static_decode.h) replayed as CUDA graphs gives
//      the tokens and log-probs of the same steps run eagerly, every token's log-prob is
//      a fresh forward pass's, and rows stop at different lengths (compaction ran); in
//      float32 and in bfloat16;
//   6. a short GRPO loop on the device: the policy samples (the static decode, CUDA graphs
//      on a GPU), a rule rewards one token, the trainer steps on the stamped groups, and the
//      policy's probability of that token grows several-fold;
//   7. a job's order of events: a policy that trained on the CPU first (as SFT leaves it,
//      gradients and all) moves to the device and steps there; the trainer's checkpoint,
//      written from the device, resumes a trainer on the CPU whose next step has the
//      device's gradients.
// Prints "trainer_check: <check>: ok" or "FAILED (...)" per check; exits 1 if any failed.
// Builds and runs on the CPU as well (--device cpu), where it checks the same things
// against itself: how it is kept compiling (tools/cuda_check/README.md).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "learner/batch.h"
#include "learner/grpo_trainer.h"
#include "learner/learner_device.h"
#include "model/model.h"
#include "model/sampler.h"

namespace grpo {
namespace {

ModelConfig Config() {
  ModelConfig c;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 128;
  c.vocab_size = 96;
  c.max_seq_len = 64;
  c.tie_embeddings = false;
  return c;
}

// Four groups of four, prompts and completions of different lengths, rewards that differ
// within each group, the sampler's log-probs those of a float32 CPU copy of the policy.
std::vector<ScoredGroup> Batch(const Transformer& cpu_policy) {
  std::vector<ScoredGroup> groups;
  for (int g = 0; g < 4; ++g) {
    ScoredGroup group;
    group.prompt_id = "p" + std::to_string(g);
    for (int t = 0; t < 3 + 2 * g; ++t) group.prompt.push_back(3 + (t * 7 + g) % 90);
    for (int i = 0; i < 4; ++i) {
      ScoredSample s;
      for (int t = 0; t < 2 + (g * 5 + i * 3) % 9; ++t) s.completion.push_back(3 + (t * 11 + i) % 90);
      s.reward = (i * 7 + g) % 3;
      group.samples.push_back(s);
    }
    groups.push_back(group);
  }
  for (ScoredGroup& group : groups) {
    std::vector<std::vector<int32_t>> prompts, completions;
    for (const ScoredSample& s : group.samples) {
      prompts.push_back(group.prompt);
      completions.push_back(s.completion);
    }
    TokenBatch b = *PackBatch(prompts, completions, 0, cpu_policy.config().vocab_size);
    at::NoGradGuard no_grad;
    const at::Tensor lp = CompletionLogprobs(cpu_policy, b, 1.0);
    for (size_t i = 0; i < group.samples.size(); ++i)
      for (size_t t = 0; t < group.samples[i].completion.size(); ++t)
        group.samples[i].logprobs.push_back(lp[i][t].item<float>());
  }
  return groups;
}

struct Outcome {
  // The step's gradients (policy, then critic), on the CPU in float64: compared rather
  // than updates, which float32 weights round to a few ulps.
  std::vector<at::Tensor> updates;
  StepMetrics metrics;
  std::string error;
};

// Every parameter's gradient, on the CPU in float64 (zeros where there is none).
Outcome GradientsOf(const std::vector<at::Tensor>& params) {
  Outcome out;
  for (const at::Tensor& p : params)
    out.updates.push_back(p.grad().defined() ? p.grad().to(at::kCPU, at::kDouble)
                                             : at::zeros(p.sizes(), at::kDouble));
  return out;
}

// One step of a fresh policy (seed 7) on `device`, its attention fused or explicit; its
// gradients (left in place by the optimizer: no clipping here).
Outcome Step(const c10::Device& device, TrainerOptions options,
             const std::vector<ScoredGroup>& batch,
             const std::function<void(const GrpoTrainer&, const Transformer&, Outcome*)>&
                 inspect = {},
             bool fused_attention = Transformer::FusedAttentionByDefault()) {
  Outcome out;
  Transformer policy(Config(), 7);
  policy.SetFusedAttention(fused_attention);
  if (absl::Status s = policy.To(device, at::kFloat); !s.ok()) return {{}, {}, s.ToString()};
  auto trainer = GrpoTrainer::Create(&policy, options);
  if (!trainer.ok()) return {{}, {}, trainer.status().ToString()};
  absl::StatusOr<StepMetrics> m = (*trainer)->Step(batch);
  if (!m.ok()) return {{}, {}, m.status().ToString()};
  std::vector<at::Tensor> params = policy.parameters();
  if ((*trainer)->critic())
    for (const at::Tensor& p : (*trainer)->critic()->parameters()) params.push_back(p);
  out = GradientsOf(params);
  out.metrics = *m;
  if (inspect) inspect(**trainer, policy, &out);
  return out;
}

// max |a − b| over max |b|, over every parameter's update.
double RelativeDifference(const Outcome& a, const Outcome& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.updates.size() && i < b.updates.size(); ++i) {
    diff = std::max(diff, (a.updates[i] - b.updates[i]).abs().max().item<double>());
    scale = std::max(scale, b.updates[i].abs().max().item<double>());
  }
  return scale > 0 ? diff / scale : INFINITY;
}

TrainerOptions Base() {
  TrainerOptions o;
  o.optimizer.learning_rate = 1e-3;
  o.optimizer.max_grad_norm = 0;  // the gradients stay as computed
  o.loss.beta = 0.04;
  return o;
}

TrainerOptions Bounded(TrainerOptions o) {
  o.micro_batch_tokens = 48;
  o.logprob_chunk = 7;
  o.activation_checkpointing = true;
  return o;
}

int failures = 0;

void Report(const std::string& check, bool ok, const std::string& detail) {
  std::printf("trainer_check: %s: %s (%s)\n", check.c_str(), ok ? "ok" : "FAILED", detail.c_str());
  std::fflush(stdout);
  failures += !ok;
}

void Compare(const std::string& check, const Outcome& got, const Outcome& want, double tolerance) {
  if (!got.error.empty() || !want.error.empty())
    return Report(check, false, got.error + want.error);
  const double d = RelativeDifference(got, want);
  char detail[160];
  std::snprintf(detail, sizeof(detail), "relative difference %.2e, tolerance %.0e; loss %.6f vs %.6f",
                d, tolerance, got.metrics.loss, want.metrics.loss);
  Report(check, d <= tolerance, detail);
}

// 5. Sixteen rows (four prompts of 3 to 9 tokens, four samples each) decoded statically
// on `device` in `dtype`, with graphs and without; the stop token is the one the model
// finds likeliest after the prompts, so lengths vary.
void CheckStaticDecode(const c10::Device& device, at::ScalarType dtype) {
  const std::string check = std::string("static decode in ") + c10::toString(dtype);
  Transformer model(Config(), 9);
  if (absl::Status s = model.To(device, dtype); !s.ok()) return Report(check, false, s.ToString());
  std::vector<std::vector<int32_t>> rows;
  for (int p = 0; p < 4; ++p)
    for (int g = 0; g < 4; ++g) {
      rows.emplace_back();
      for (int t = 0; t < 3 + 2 * p; ++t) rows.back().push_back(3 + (t * 13 + p * 5) % 90);
    }
  SamplingOptions o;
  o.max_new_tokens = 32;
  o.seed = 3;
  o.decode = SamplingOptions::Decode::kStatic;
  o.sync_every = 4;
  {
    at::NoGradGuard no_grad;
    auto prompts = *MakePromptBatch(rows, 0);
    const at::Tensor hidden = model.Forward(prompts.tokens.to(device), prompts.is_pad.to(device));
    const at::Tensor last = model.Logits(hidden.select(1, -1)).to(at::kFloat);
    o.stop_token = static_cast<int>(at::softmax(last, -1).mean(0).argmax().item<int64_t>());
  }
  absl::StatusOr<SampleResult> graphs = Sample(model, rows, o);
  o.cuda_graphs = false;
  absl::StatusOr<SampleResult> eager = Sample(model, rows, o);
  if (!graphs.ok() || !eager.ok())
    return Report(check, false, graphs.status().ToString() + " " + eager.status().ToString());
  const bool same = at::equal(graphs->tokens, eager->tokens) &&
                    at::equal(graphs->completion_mask, eager->completion_mask) &&
                    at::equal(graphs->logprobs, eager->logprobs);
  Report(check + ": graphs replay the eager steps", same,
         same ? "tokens and log-probs identical" : "they differ");
  // Against a fresh forward pass of each row (padding and all), on the device.
  std::vector<std::vector<int32_t>> completions;
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i)
    completions.push_back(graphs->Completion(i));
  TokenBatch b = *PackBatch(rows, completions, 0, model.config().vocab_size);
  b.tokens = b.tokens.to(device);
  b.is_pad = b.is_pad.to(device);
  at::NoGradGuard no_grad;
  const at::Tensor fresh = CompletionLogprobs(model, b, 1.0).to(at::kCPU, at::kFloat);
  double worst = 0;
  std::set<size_t> lengths;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::vector<float> lp = graphs->CompletionLogprobs(i);
    lengths.insert(lp.size());
    for (size_t t = 0; t < lp.size(); ++t)
      worst = std::max(worst, std::abs(lp[t] - fresh[i][t].item<double>()));
  }
  // bfloat16: the sampler's logits and a batched forward pass round differently.
  const double tolerance = dtype == at::kFloat ? 1e-3 : 0.25;
  char detail[160];
  std::snprintf(detail, sizeof(detail), "max |log-prob - fresh| %.2e, tolerance %.0e; %zu lengths",
                worst, tolerance, lengths.size());
  Report(check + ": log-probs are the model's", worst <= tolerance && lengths.size() >= 3, detail);
}

// 6. Eight prompts, four samples each, eight new tokens; the reward of a completion is the
// share of its tokens that are kTarget. Judged by the policy's mean probability of kTarget
// after each prompt, computed exactly (not sampled) before and after 15 steps: ~1/96 at
// the start, and a rewarded token's probability grows by an order of magnitude in such a
// run; a loop whose samples, rewards or updates did not connect leaves it where it was.
void CheckTrainingLoop(const c10::Device& device) {
  constexpr int kTarget = 7;
  const std::string check = "grpo loop on " + device.str();
  Transformer policy(Config(), 11);
  if (absl::Status s = policy.To(device, at::kFloat); !s.ok())
    return Report(check, false, s.ToString());
  TrainerOptions options = Base();
  options.optimizer.learning_rate = 1e-2;
  options.optimizer.max_grad_norm = 1;
  options.loss.beta = 0;
  options.recompute_on_precision_mismatch = true;
  auto trainer = GrpoTrainer::Create(&policy, options);
  if (!trainer.ok()) return Report(check, false, trainer.status().ToString());
  std::vector<std::vector<int32_t>> prompts;
  for (int p = 0; p < 8; ++p) prompts.push_back({3 + p, 20 + 3 * p, 50 + p});
  auto target_probability = [&] {
    at::NoGradGuard no_grad;
    const PromptBatch batch = *MakePromptBatch(prompts, 0);
    const at::Tensor hidden = policy.Forward(batch.tokens.to(device), batch.is_pad.to(device));
    const at::Tensor logits = policy.Logits(hidden.select(1, -1)).to(at::kFloat);
    return at::softmax(logits, -1).select(1, kTarget).mean().item<double>();
  };
  const double before = target_probability();
  std::vector<std::vector<int32_t>> rows;
  for (const auto& prompt : prompts)
    for (int g = 0; g < 4; ++g) rows.push_back(prompt);
  SamplingOptions sampling;
  sampling.max_new_tokens = 8;
  sampling.stop_token = -1;
  double reward = 0;
  for (int step = 0; step < 15; ++step) {
    sampling.seed = 100 + step;
    absl::StatusOr<SampleResult> sampled = Sample(policy, rows, sampling);
    if (!sampled.ok()) return Report(check, false, sampled.status().ToString());
    std::vector<ScoredGroup> groups(prompts.size());
    reward = 0;
    for (size_t p = 0; p < prompts.size(); ++p) {
      groups[p].prompt_id = "s" + std::to_string(step) + "p" + std::to_string(p);
      groups[p].prompt = prompts[p];
      groups[p].sampling_precision = policy.sampling_precision();
      for (int g = 0; g < 4; ++g) {
        ScoredSample s;
        s.completion = sampled->Completion(4 * p + g);
        s.logprobs = sampled->CompletionLogprobs(4 * p + g);
        s.policy_version = (*trainer)->policy_version();
        s.reward = static_cast<double>(std::count(s.completion.begin(), s.completion.end(),
                                                  kTarget)) / s.completion.size();
        reward += s.reward / rows.size();
        groups[p].samples.push_back(s);
      }
    }
    absl::StatusOr<StepMetrics> m = (*trainer)->Step(groups);
    if (!m.ok()) return Report(check, false, m.status().ToString());
  }
  const double after = target_probability();
  char detail[160];
  std::snprintf(detail, sizeof(detail), "p(target) %.4f -> %.4f, last step's reward %.3f",
                before, after, reward);
  Report(check, after > 5 * before, detail);
}

// 7. See the header. The gradients compared are the next step's, on the same batch: its
// KL term reads the restored reference model.
void CheckMoveAndResume(const c10::Device& device, const std::vector<ScoredGroup>& batch) {
  const std::string check = "cpu-trained policy steps on " + device.str() + ", resumes on cpu";
  Transformer policy(Config(), 7);
  policy.Logits(policy.Forward(at::arange(3, 15, at::kLong).view({2, 6}), at::Tensor()))
      .square()
      .mean()
      .backward();
  if (absl::Status s = policy.To(device, at::kFloat); !s.ok())
    return Report(check, false, s.ToString());
  auto trainer = GrpoTrainer::Create(&policy, Base());
  if (!trainer.ok()) return Report(check, false, trainer.status().ToString());
  if (absl::StatusOr<StepMetrics> m = (*trainer)->Step(batch); !m.ok())
    return Report(check, false, "the step on the device: " + m.status().ToString());
  char dir_template[] = "/tmp/trainer_check.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) return Report(check, false, "mkdtemp failed");
  if (absl::Status s = (*trainer)->Save(dir); !s.ok()) return Report(check, false, s.ToString());
  Transformer cpu_policy(Config(), 8);
  if (absl::Status s = cpu_policy.CopyFrom(policy); !s.ok())
    return Report(check, false, s.ToString());
  auto resumed = GrpoTrainer::Create(&cpu_policy, Base());
  if (!resumed.ok()) return Report(check, false, resumed.status().ToString());
  absl::Status loaded = (*resumed)->Load(dir);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  if (!loaded.ok()) return Report(check, false, "loading on the cpu: " + loaded.ToString());
  // Stamped with the version the device's trainer is at, which the resumed one must share.
  std::vector<ScoredGroup> next = batch;
  for (ScoredGroup& group : next)
    for (ScoredSample& sample : group.samples) sample.policy_version = (*trainer)->policy_version();
  absl::StatusOr<StepMetrics> there = (*trainer)->Step(next);
  absl::StatusOr<StepMetrics> here = (*resumed)->Step(next);
  if (!there.ok() || !here.ok())
    return Report(check, false, there.status().ToString() + " " + here.status().ToString());
  const Outcome a = GradientsOf(policy.parameters()), b = GradientsOf(cpu_policy.parameters());
  const double d = RelativeDifference(a, b);
  const bool same_step = (*trainer)->step() == (*resumed)->step();
  char detail[200];
  std::snprintf(detail, sizeof(detail),
                "next step's gradients: relative difference %.2e, tolerance 1e-03; kl %.3e there, "
                "%.3e resumed; step %lld there, %lld resumed",
                d, there->kl, here->kl, static_cast<long long>((*trainer)->step()),
                static_cast<long long>((*resumed)->step()));
  Report(check, d <= 1e-3 && here->kl > 0 && same_step && here->dropped_stale_samples == 0,
         detail);
}

}  // namespace
}  // namespace grpo

int main(int argc, char** argv) {
  using namespace grpo;
  const std::string flag = argc > 1 ? argv[1] : "--device=cuda";
  const std::string name = flag.rfind("--device=", 0) == 0 ? flag.substr(9) : "cuda";
  absl::StatusOr<c10::Device> device = ResolveLearnerDevice(name, 0);
  if (!device.ok()) {
    std::fprintf(stderr, "trainer_check: %s\n", device.status().ToString().c_str());
    return 1;
  }
  const c10::Device cpu(at::kCPU);
  Transformer cpu_policy(Config(), 7);
  const std::vector<ScoredGroup> batch = Batch(cpu_policy);

  // 1. The device against the CPU (float32 both; TF32 is off by default for matmuls).
  Compare("grpo step on " + device->str() + " = on cpu", Step(*device, Base(), batch),
          Step(cpu, Base(), batch), 1e-3);
  // 2. Memory-bounded against one-shot, on the device.
  Compare("micro-batched, chunked, checkpointed step = one-shot",
          Step(*device, Bounded(Base()), batch), Step(*device, Base(), batch), 1e-4);
  // 3. bfloat16 mixed precision.
  {
    TrainerOptions o = Base();
    o.bf16_mixed = true;
    o.recompute_old_logprobs = true;
    Outcome mixed = Step(*device, o, batch, [](const GrpoTrainer&, const Transformer& p, Outcome* out) {
      for (const at::Tensor& t : p.parameters())
        if (t.scalar_type() != at::kFloat) out->error = "a master weight is not float32";
    });
    const bool ok = mixed.error.empty() && std::isfinite(mixed.metrics.loss) &&
                    mixed.metrics.logprob_mismatch > 0 && RelativeDifference(mixed, Step(*device, Base(), batch)) < 0.2;
    char detail[200];
    std::snprintf(detail, sizeof(detail), "%s loss %.5f, sampler mismatch %.2e, sampler kl %.2e",
                  mixed.error.c_str(), mixed.metrics.loss, mixed.metrics.logprob_mismatch,
                  mixed.metrics.sampler_kl);
    Report("bf16 mixed precision", ok, detail);
  }
  // 4. PPO with its critic on the device.
  {
    TrainerOptions o = Base();
    o.ppo.enabled = true;
    o.ppo.kl_coef = o.loss.beta;
    o.loss.beta = 0;
    o.ppo.optimizer = o.optimizer;
    auto on_device = [&](const GrpoTrainer& t, const Transformer&, Outcome* out) {
      for (const at::Tensor& p : t.critic()->parameters())
        if (p.device() != *device || p.scalar_type() != at::kFloat)
          out->error = "a critic parameter is not float32 on " + device->str();
    };
    Outcome one_shot = Step(*device, o, batch, on_device);
    Compare("ppo micro-batched = one-shot", Step(*device, Bounded(o), batch), one_shot, 1e-4);
    Report("ppo metrics", one_shot.error.empty() && one_shot.metrics.has_critic &&
                              std::isfinite(one_shot.metrics.value_loss),
           one_shot.error.empty() ? "value loss " + std::to_string(one_shot.metrics.value_loss)
                                  : one_shot.error);
  }
  // 2b. LibTorch's fused attention (flash or memory-efficient kernels on a GPU) against
  // the explicit scores and softmax, in a whole step with padding, forward and backward.
  Compare("grpo step, fused attention = explicit", Step(*device, Base(), batch, {}, true),
          Step(*device, Base(), batch, {}, false), 1e-3);
  // 5. The sampler's static decode, CUDA graphs on a GPU.
  CheckStaticDecode(*device, at::kFloat);
  CheckStaticDecode(*device, at::kBFloat16);
  // 6. Sampling and training in one loop on the device.
  CheckTrainingLoop(*device);
  // 7. Trained on the CPU, moved, checkpointed there and resumed here.
  CheckMoveAndResume(*device, batch);
  std::printf("trainer_check: %d failed\n", failures);
  return failures ? 1 : 0;
}
