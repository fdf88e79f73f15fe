// grpo_bench: the numbers docs/design.md §8 and the foundation issue ask for, in one run.
//   1. the machine's fp32 matmul peak (LibTorch mm, 1024² and 2048², best of both);
//   2. decode: 64 sequences x 64 new tokens after a 32-token prompt, KV cache, sampling;
//   3. one learner step on those 64 sequences (8 groups x 8): policy forward + backward,
//      reference forward, AdamW — the GrpoTrainer the service runs.
// for the `tiny` and `bench-26m` models. FLOPs are counted as in
// shared/bench/pytorch_eager_baseline.py (8N per trained token, 2N per decoded token,
// attention ignored), so its JSON line and ours compare directly.
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "learner/grpo_trainer.h"
#include "model/model.h"
#include "model/packed_matmul.h"
#include "model/runtime.h"
#include "model/sampler.h"

ABSL_FLAG(int, threads, 0, "intra-op threads; 0 = all cores");
ABSL_FLAG(std::string, models, "tiny,bench-26m", "comma-separated model presets");
ABSL_FLAG(std::string, matmul_dtype, "float32",
          "float32 or bfloat16: the sampler's matmuls (Transformer::SetInferenceMatmulDtype); "
          "bfloat16 also lets OpenMP threads spin briefly (runtime.h), which slows the float32 "
          "learner steps: time those with float32");
ABSL_FLAG(bool, packed_matmuls, true,
          "float32: the sampler multiplies by prepacked weight copies (packed_matmul.h) where "
          "the CPU has AVX2/FMA; false = LibTorch's linear");
ABSL_FLAG(int, repeats, 3, "timed learner steps (after one warm-up); 0 = decode only");
ABSL_FLAG(int64_t, micro_batch_tokens, 0,
          "learner micro-batches of at most this many tokens (job spec training.*); 0 = one shot");
ABSL_FLAG(int64_t, logprob_chunk, 0, "LM head over chunks of this many positions; 0 = all");

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kSequences = 64, kPrompt = 32, kGenerate = 64, kGroup = 8;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The process's peak resident memory so far (decode and learner steps of every model run
// before it): compare runs of one model in separate processes.
double PeakRssMb() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // KiB on Linux
}

double MatmulPeak() {
  double best = 0;
  for (int64_t n : {1024, 2048}) {
    at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
    at::mm(a, b);
    const int iterations = 5;
    auto start = Clock::now();
    for (int i = 0; i < iterations; ++i) at::mm(a, b);
    best = std::max(best, 2.0 * n * n * n * iterations / Seconds(start) / 1e9);
  }
  return best;
}

int Run(const std::string& preset, double peak) {
  auto config = grpo::ModelPreset(preset);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  grpo::Transformer policy(*config, 0);
  const double params = config->NumParameters();
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> token(3, config->vocab_size - 1);
  std::vector<std::vector<int32_t>> prompts(kSequences, std::vector<int32_t>(kPrompt));
  for (auto& p : prompts)
    for (auto& t : p) t = token(rng);

  grpo::SamplingOptions sampling;
  sampling.max_new_tokens = kGenerate;
  sampling.stop_token = -1;  // every sequence decodes all 64 tokens
  sampling.seed = 1;
  const std::string matmuls = absl::GetFlag(FLAGS_matmul_dtype);
  if (absl::Status s =
          grpo::SetSamplerMatmuls(policy, matmuls, absl::GetFlag(FLAGS_packed_matmuls));
      !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  const bool packed = policy.packed_matmuls();
  if (!grpo::Sample(policy, prompts, sampling).ok()) return 1;  // warm-up
  auto start = Clock::now();
  auto sampled = grpo::Sample(policy, prompts, sampling);
  const double decode_seconds = Seconds(start);
  if (!sampled.ok()) {
    std::fprintf(stderr, "%s\n", std::string(sampled.status().message()).c_str());
    return 1;
  }
  (void)policy.SetInferenceMatmulDtype(at::kFloat);  // the learner steps below train in float32

  std::vector<grpo::ScoredGroup> groups(kSequences / kGroup);
  std::uniform_real_distribution<double> reward(0, 1);
  for (size_t g = 0; g < groups.size(); ++g) {
    groups[g].prompt_id = std::to_string(g);
    groups[g].prompt = prompts[g * kGroup];
    for (int i = 0; i < kGroup; ++i) {
      grpo::ScoredSample s;
      s.completion = sampled->Completion(g * kGroup + i);
      s.logprobs = sampled->CompletionLogprobs(g * kGroup + i);
      s.reward = reward(rng);
      groups[g].samples.push_back(std::move(s));
    }
  }
  grpo::TrainerOptions options;
  options.optimizer.learning_rate = 1e-5;
  options.max_policy_lag = 1 << 30;  // the same batch is reused for every timed step
  options.micro_batch_tokens = absl::GetFlag(FLAGS_micro_batch_tokens);
  options.logprob_chunk = absl::GetFlag(FLAGS_logprob_chunk);
  auto trainer = grpo::GrpoTrainer::Create(&policy, options);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  if (!trainer.ok() || (repeats > 0 && !(*trainer)->Step(groups).ok())) return 1;  // warm-up
  start = Clock::now();
  for (int i = 0; i < repeats; ++i) {
    auto m = (*trainer)->Step(groups);
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", std::string(m.status().message()).c_str());
      return 1;
    }
  }
  const double decode_tokens_per_s = kSequences * kGenerate / decode_seconds;
  const double decode_gflops = 2 * params * kSequences * kGenerate / decode_seconds / 1e9;
  // With --repeats 0 nothing was timed: the training fields are left out rather than
  // printed as NaN, which no JSON reader accepts.
  std::string train_fields;
  if (repeats > 0) {
    const double step_seconds = Seconds(start) / repeats;
    const double train_gflops =
        8 * params * kSequences * (kPrompt + kGenerate) / step_seconds / 1e9;
    train_fields = absl::StrFormat(
        "\"train_step_s\":%.3f,\"train_gflops\":%.1f,\"train_frac_peak\":%.3f,"
        "\"micro_batch_tokens\":%d,\"logprob_chunk\":%d,",
        step_seconds, train_gflops, train_gflops / peak, options.micro_batch_tokens,
        options.logprob_chunk);
  }
  std::printf(
      "{\"model\":\"%s\",\"params\":%.0f,\"threads\":%d,\"peak_gflops\":%.1f,%s"
      "\"matmul_dtype\":\"%s\",\"packed_matmuls\":%s,\"packed_kernel\":\"%s\","
      "\"decode_tokens_per_s\":%.1f,\"decode_gflops\":%.1f,\"decode_frac_peak\":%.3f,"
      "\"peak_rss_mb\":%.0f}\n",
      preset.c_str(), params, at::get_num_threads(), peak, train_fields.c_str(),
      matmuls.c_str(), packed ? "true" : "false",
      packed ? grpo::PackedKernelName(grpo::PackedKernel::kWidest) : "none",
      decode_tokens_per_s, decode_gflops, decode_gflops / peak, PeakRssMb());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As the rollout worker does: bfloat16 matmuls run on the OpenMP threads (runtime.h).
  grpo::EnsureThreadEnvironment(argv, grpo::MatmulThreadsFor(absl::GetFlag(FLAGS_matmul_dtype),
                                                          absl::GetFlag(FLAGS_packed_matmuls)));
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const double peak = MatmulPeak();
  for (absl::string_view preset : absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
    if (int rc = Run(std::string(preset), peak); rc != 0) return rc;
  }
  return 0;
}
