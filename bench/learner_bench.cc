// learner_bench: one GRPO (or PPO) learner step, the GrpoTrainer the service runs, on a model shape
// with random weights in the Hugging Face layout (bench-26m, qwen2.5-0.5b, qwen2.5-1.5b,
// qwen2.5-7b: the shapes of shared/bench/pytorch_eager_baseline.py), with each memory and
// precision setting of the job spec's `training` as a flag. The batch is random tokens:
// --sequences rows (groups of 8) of --prompt_tokens + --completion_tokens, rewards spread
// within each group, β = 0.04 (so the reference runs too).
//
// Prints one JSON line: step time, tokens/s, achieved TFLOP/s (8N per token, as the
// baseline counts: policy forward and backward plus the reference's forward; PPO 16N,
// with the critic's values before the step and its forward and backward; the
// recomputation of activation checkpointing and of the chunked LM head is not counted),
// the fraction of this device's measured matmul peak, and peak memory: the process's
// peak resident set on the CPU (run one configuration per process), CUDA's peak allocated
// bytes on a GPU. Progress goes to stderr: a 0.5B step takes minutes on two cores.
//
// Memory per component (the method's claim: GRPO drops PPO's critic): --algorithm ppo adds
// the critic (the policy's shape, its gradients and AdamW moments). The line splits the
// peak into the bytes of parameters (policy and critic), reference, gradients and
// optimizer state (counted from the tensors; all float32 master copies here), the
// process's memory before the model existed (CPU: libraries and runtime), and the rest,
// activations and workspace: peak − all of those.
//
// A shape too big for one device (7B with float32 AdamW: 16 bytes a parameter) is measured
// on --layers of its layers: a second line ("learner_projection") scales each measured
// component to the whole shape (parameters, gradients, optimizer and reference by the
// parameter count, activations by the layer count: an over-estimate, since the LM head's
// share does not grow) and shows one rank's bytes without and with the optimizer state
// sharded over --project_ranks ranks (ZeRO stage 1: every rank keeps the parameters and
// gradients, 1/R of the AdamW moments).
#include <sys/resource.h>
#include <torch/torch.h>
#if defined(GRPO_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_shapes.h"
#include "learner/grpo_trainer.h"
#include "learner/learner_device.h"
#include "model/model.h"
#include "model/runtime.h"

ABSL_FLAG(std::string, shape, "bench-26m", "bench-26m, qwen2.5-0.5b, qwen2.5-1.5b or qwen2.5-7b");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, precision, "float32", "float32 or bf16_mixed (float32 master weights)");
ABSL_FLAG(int, sequences, 64, "rows per step (groups of 8)");
ABSL_FLAG(int, prompt_tokens, 32, "prompt tokens per row");
ABSL_FLAG(int, completion_tokens, 224, "completion tokens per row");
ABSL_FLAG(int64_t, micro_batch_tokens, 0, "micro-batches of at most this many tokens; 0 = one shot");
ABSL_FLAG(int64_t, logprob_chunk, 0, "LM head over chunks of this many positions; 0 = all");
ABSL_FLAG(bool, activation_checkpointing, false, "recompute each decoder layer in backward");
ABSL_FLAG(int, warmup, 1, "untimed steps first");
ABSL_FLAG(int, repeats, 1, "timed steps");
ABSL_FLAG(int, threads, 0, "intra-op threads; 0 = all cores");
ABSL_FLAG(std::string, algorithm, "grpo", "grpo, or ppo (a critic of the policy's shape)");
ABSL_FLAG(int, layers, 0,
          "decoder layers to build, fewer than the shape's to measure a shape too big for the "
          "device (a projection line then scales it to all layers); 0 = the shape's own");
ABSL_FLAG(int, project_ranks, 8,
          "ranks the projection shards the optimizer state over");

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kGroup = 8;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Sync(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

// The best of a few square matmuls: float32 on the CPU, bfloat16 on a GPU.
double MatmulPeakTflops(const c10::Device& device) {
  const at::ScalarType dtype = device.is_cuda() ? at::kBFloat16 : at::kFloat;
  double best = 0;
  for (int64_t n : device.is_cuda() ? std::vector<int64_t>{4096, 8192}
                                    : std::vector<int64_t>{1024, 2048}) {
    at::Tensor a = at::randn({n, n}, at::TensorOptions().device(device).dtype(dtype));
    at::Tensor b = at::randn({n, n}, at::TensorOptions().device(device).dtype(dtype));
    at::mm(a, b);
    Sync(device);
    const int iterations = device.is_cuda() ? 20 : 5;
    const auto start = Clock::now();
    for (int i = 0; i < iterations; ++i) at::mm(a, b);
    Sync(device);
    best = std::max(best, 2.0 * n * n * n * iterations / Seconds(start) / 1e12);
  }
  return best;
}

double PeakMemoryMb(const c10::Device& device) {
#if defined(GRPO_WITH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::cuda::CUDACachingAllocator::StatType::AGGREGATE)]
               .peak /
           1048576.0;
  }
#endif
  (void)device;
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // KiB on Linux
}

std::vector<grpo::ScoredGroup> RandomBatch(int sequences, int prompt, int completion,
                                           int vocab) {
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> token(3, vocab - 1);
  std::vector<grpo::ScoredGroup> groups(sequences / kGroup);
  for (size_t g = 0; g < groups.size(); ++g) {
    groups[g].prompt_id = std::to_string(g);
    groups[g].prompt.resize(prompt);
    for (int32_t& t : groups[g].prompt) t = token(rng);
    for (int i = 0; i < kGroup; ++i) {
      grpo::ScoredSample s;
      s.completion.resize(completion);
      for (int32_t& t : s.completion) t = token(rng);
      s.logprobs.assign(completion, -std::log(static_cast<float>(vocab)));
      s.reward = i % 2;
      groups[g].samples.push_back(std::move(s));
    }
  }
  return groups;
}

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "learner_bench: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  absl::ParseCommandLine(argc, argv);
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const std::string shape_name = absl::GetFlag(FLAGS_shape);
  absl::StatusOr<c10::Device> device = grpo::ResolveLearnerDevice(absl::GetFlag(FLAGS_device), 0);
  if (!device.ok()) return Fail("--device", device.status());
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (precision != "float32" && precision != "bf16_mixed")
    return Fail("--precision", absl::InvalidArgumentError(precision + ": float32 or bf16_mixed"));
  const int sequences = absl::GetFlag(FLAGS_sequences);
  const int prompt = absl::GetFlag(FLAGS_prompt_tokens);
  const int completion = absl::GetFlag(FLAGS_completion_tokens);
  if (sequences < kGroup || sequences % kGroup != 0 || prompt < 1 || completion < 1)
    return Fail("--sequences/--prompt_tokens/--completion_tokens",
                absl::InvalidArgumentError("sequences: a positive multiple of 8; lengths >= 1"));

  const std::string algorithm = absl::GetFlag(FLAGS_algorithm);
  if (algorithm != "grpo" && algorithm != "ppo")
    return Fail("--algorithm", absl::InvalidArgumentError(algorithm + ": grpo or ppo"));
  const double base_mb = PeakMemoryMb(*device);

  absl::StatusOr<grpo::ModelConfig> shape = grpo::BenchShape(shape_name, prompt + completion);
  if (!shape.ok()) return Fail("--shape", shape.status());
  grpo::ModelConfig config = *shape;
  const int full_layers = config.n_layers;
  const double full_params = config.NumParameters();
  const int layers = absl::GetFlag(FLAGS_layers);
  if (layers < 0 || layers > full_layers)
    return Fail("--layers", absl::InvalidArgumentError(absl::StrCat(
                                layers, ": must be in [0, ", full_layers, "] for ", shape_name)));
  if (layers > 0) config.n_layers = layers;
  const int ranks = absl::GetFlag(FLAGS_project_ranks);
  if (ranks < 1) return Fail("--project_ranks", absl::InvalidArgumentError("must be >= 1"));
  const double params = config.NumParameters();
  const double peak = MatmulPeakTflops(*device);
  std::fprintf(stderr, "learner_bench: %s, %.0fM parameters, %s %s, %d x %d tokens; "
               "matmul peak %.2f TFLOP/s\n",
               shape_name.c_str(), params / 1e6, device->str().c_str(), precision.c_str(),
               sequences, prompt + completion, peak);

  // Placed, then drawn there (Transformer::Randomize: the same weights on the CPU; the
  // constructor would draw on one CPU core, a minute or more at the larger shapes).
  grpo::Transformer policy(config, grpo::Transformer::Uninitialized{});
  if (absl::Status st = policy.To(*device, at::kFloat); !st.ok()) return Fail("placing", st);
  if (absl::Status st = policy.Randomize(0); !st.ok()) return Fail("drawing weights", st);
  grpo::TrainerOptions options;
  options.optimizer.learning_rate = 1e-5;
  options.max_policy_lag = 1 << 30;  // the same batch is reused for every step
  options.micro_batch_tokens = absl::GetFlag(FLAGS_micro_batch_tokens);
  options.logprob_chunk = absl::GetFlag(FLAGS_logprob_chunk);
  options.activation_checkpointing = absl::GetFlag(FLAGS_activation_checkpointing);
  options.bf16_mixed = precision == "bf16_mixed";
  options.recompute_old_logprobs = options.bf16_mixed;
  if (algorithm == "ppo") {
    options.ppo.enabled = true;
    options.ppo.kl_coef = options.loss.beta;  // the same KL, as a reward penalty
    options.loss.beta = 0;
    options.ppo.optimizer = options.optimizer;
  }
  auto trainer = grpo::GrpoTrainer::Create(&policy, options);
  if (!trainer.ok()) return Fail("trainer", trainer.status());
  const std::vector<grpo::ScoredGroup> batch =
      RandomBatch(sequences, prompt, completion, config.vocab_size);

  double total = 0, best = 1e300;
  const int warmup = absl::GetFlag(FLAGS_warmup), repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  for (int i = 0; i < warmup + repeats; ++i) {
    Sync(*device);
    const auto start = Clock::now();
    absl::StatusOr<grpo::StepMetrics> m = (*trainer)->Step(batch);
    Sync(*device);
    const double seconds = Seconds(start);
    if (!m.ok()) return Fail("step", m.status());
    std::fprintf(stderr, "learner_bench: step %d of %d%s: %.2f s, loss %.4f\n", i + 1,
                 warmup + repeats, i < warmup ? " (warm-up)" : "", seconds, m->loss);
    if (i < warmup) continue;
    total += seconds;
    best = std::min(best, seconds);
  }
  // What the tensors hold (float32 master copies: 4 bytes a parameter, AdamW 8 more).
  auto mb_of = [](const std::vector<at::Tensor>& tensors) {
    double bytes = 0;
    for (const at::Tensor& t : tensors) bytes += t.numel() * t.element_size();
    return bytes / 1048576.0;
  };
  const double policy_mb = mb_of(policy.parameters());
  const double critic_mb = (*trainer)->critic() ? mb_of((*trainer)->critic()->parameters()) : 0;
  // The reference is held in the compute dtype: the policy's size scaled by it.
  const double reference_mb = policy_mb * (options.bf16_mixed ? 0.5 : 1.0);
  const double gradients_mb = policy_mb + critic_mb;
  const double optimizer_mb = 2 * (policy_mb + critic_mb);
  const double peak_mb = PeakMemoryMb(*device);
  const double rest_mb = peak_mb - (device->is_cuda() ? 0 : base_mb) - policy_mb - critic_mb -
                         reference_mb - gradients_mb - optimizer_mb;
  const double step_seconds = total / repeats;
  const double tokens = static_cast<double>(sequences) * (prompt + completion);
  // PPO adds the critic's no-grad pass (2N) and its forward and backward (6N).
  const double flops_per_token = (algorithm == "ppo" ? 16 : 8) * params;
  const double tflops = flops_per_token * tokens / step_seconds / 1e12;
  std::printf(
      "{\"bench\":\"learner\",\"shape\":\"%s\",\"params\":%.0f,\"device\":\"%s\","
      "\"precision\":\"%s\",\"threads\":%d,\"sequences\":%d,\"tokens_per_row\":%d,"
      "\"micro_batch_tokens\":%d,\"logprob_chunk\":%d,\"activation_checkpointing\":%s,"
      "\"step_s\":%.3f,\"best_step_s\":%.3f,\"tokens_per_s\":%.1f,\"tflops\":%.4f,"
      "\"peak_tflops\":%.4f,\"frac_peak\":%.3f,\"peak_memory_mb\":%.0f,"
      "\"algorithm\":\"%s\",\"parameters_mb\":%.0f,\"critic_parameters_mb\":%.0f,"
      "\"reference_mb\":%.0f,\"gradients_mb\":%.0f,\"optimizer_mb\":%.0f,"
      "\"process_base_mb\":%.0f,\"activations_mb\":%.0f}\n",
      shape_name.c_str(), params, device->str().c_str(), precision.c_str(),
      at::get_num_threads(), sequences, prompt + completion,
      static_cast<int>(options.micro_batch_tokens), static_cast<int>(options.logprob_chunk), options.activation_checkpointing ? "true" : "false", step_seconds,
      best, tokens / step_seconds, tflops, peak, tflops / peak, peak_mb, algorithm.c_str(),
      policy_mb, critic_mb, reference_mb, gradients_mb, optimizer_mb,
      device->is_cuda() ? 0.0 : base_mb, rest_mb);
  if (config.n_layers < full_layers) {
    const double by_params = full_params / params;
    const double by_layers = static_cast<double>(full_layers) / config.n_layers;
    const double p = (policy_mb + critic_mb) * by_params, g = gradients_mb * by_params;
    const double o = optimizer_mb * by_params, r = reference_mb * by_params;
    const double a = std::max(0.0, rest_mb) * by_layers;
    const double gb = 1024.0;
    std::printf(
        "{\"bench\":\"learner_projection\",\"shape\":\"%s\",\"measured_layers\":%d,"
        "\"layers\":%d,\"params\":%.0f,\"parameters_gb\":%.2f,\"gradients_gb\":%.2f,"
        "\"optimizer_gb\":%.2f,\"reference_gb\":%.2f,\"activations_gb\":%.2f,"
        "\"one_rank_gb\":%.2f,\"ranks\":%d,\"zero1_per_rank_gb\":%.2f}\n",
        shape_name.c_str(), config.n_layers, full_layers, full_params, p / gb, g / gb, o / gb,
        r / gb, a / gb, (p + g + o + r + a) / gb, ranks, (p + g + o / ranks + r + a) / gb);
  }
  return 0;
}
