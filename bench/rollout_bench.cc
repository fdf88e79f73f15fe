// rollout_bench: GRPO-shaped sampling, P prompts x G samples each (the rows a rollout
// lease decodes), with the engine's prefix sharing and finished-row compaction on and
// then off (the plain path), in one process. The stop token is the one the random model
// finds likeliest after the prompts, so completions end at different lengths (a tail), as
// trained policies' do. One JSON line per prompt length: generated tokens per second,
// prefill and decode seconds are not split (one Sample call), mean and longest completion,
// peak memory (CUDA's peak allocated on a GPU, the process's peak RSS on the CPU) and,
// with --memory_gbps, the bound one decode step cannot beat: (weight bytes + KV-cache
// bytes read) / memory bandwidth, for the full batch at its mean cached length.
#include <sys/resource.h>
#include <torch/torch.h>

#if defined(GRPO_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_shapes.h"
#include "model/model.h"
#include "model/packed_matmul.h"
#include "model/runtime.h"
#include "model/sampler.h"

ABSL_FLAG(std::string, model, "bench-26m",
          "model preset (tiny, bench-26m) or Hugging Face shape (qwen2.5-0.5b, qwen2.5-1.5b, "
          "qwen2.5-7b; random weights)");
ABSL_FLAG(std::string, device, "cpu", "where to sample: cpu or cuda[:N]");
ABSL_FLAG(std::string, dtype, "float32", "the model's dtype there: float32, bfloat16, float16");
ABSL_FLAG(double, memory_gbps, 0,
          "memory bandwidth in GB/s (H200: 4800) to print the decode bound; 0 = none");
ABSL_FLAG(int, prompts, 8, "distinct prompts (P)");
ABSL_FLAG(int, group, 8, "samples per prompt (G)");
ABSL_FLAG(std::string, prompt_tokens, "32,256", "comma-separated prompt lengths");
ABSL_FLAG(int, max_new_tokens, 64, "longest completion");
ABSL_FLAG(int, repeats, 2, "timed samplings per setting (the best is kept)");
ABSL_FLAG(bool, no_stop, false, "no stop token: every row decodes max_new_tokens");
ABSL_FLAG(int, threads, 0, "intra-op threads; 0 = all cores");
ABSL_FLAG(std::string, decode, "auto",
          "the engine's decode loop: auto (static on a GPU, eager on a CPU), eager, or "
          "static (model/static_decode.h); the plain path is always eager");
ABSL_FLAG(bool, cuda_graphs, true, "static decode on a GPU: replay each step as a CUDA graph");
ABSL_FLAG(std::string, matmul_dtype, "float32",
          "float32 or bfloat16: the sampler's matmuls (Transformer::SetInferenceMatmulDtype)");
ABSL_FLAG(bool, packed_matmuls, true,
          "float32 on the CPU: multiply by prepacked weight copies (model/packed_matmul.h) "
          "where the CPU has AVX2/FMA; false = LibTorch's linear");

namespace {

using Clock = std::chrono::steady_clock;

struct Timed {
  double seconds = 1e300;
  grpo::SampleResult result;
};

Timed Best(const grpo::Transformer& model, const std::vector<std::vector<int32_t>>& rows,
           const grpo::SamplingOptions& o, int repeats) {
  Timed best;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    absl::StatusOr<grpo::SampleResult> r = grpo::Sample(model, rows, o);
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (!r.ok()) {
      std::fprintf(stderr, "rollout_bench: %s\n", r.status().ToString().c_str());
      std::exit(1);
    }
    if (s < best.seconds) best = {s, *std::move(r)};
  }
  return best;
}

// CUDA's peak counts from here (the process's peak on a CPU cannot be reset).
void ResetPeakMemory(const c10::Device& device) {
#if defined(GRPO_WITH_CUDA)
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  (void)device;
}

double PeakMemoryMb(const c10::Device& device) {
#if defined(GRPO_WITH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    using c10::cuda::CUDACachingAllocator::StatType;
    return stats.allocated_bytes[static_cast<size_t>(StatType::AGGREGATE)].peak / 1048576.0;
  }
#endif
  (void)device;
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // KiB on Linux
}

// The fastest a decode step of `rows` rows can go: every weight and the cached keys and
// values at `cached` positions read once from memory, in tokens/s.
double DecodeBoundTokensPerSecond(const grpo::ModelConfig& c, int64_t element_bytes,
                                  int64_t kv_element_bytes, int64_t rows, double cached,
                                  double gbps) {
  const double weights = static_cast<double>(c.NumParameters()) * element_bytes;
  const double kv = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim() * cached * rows *
                    kv_element_bytes;
  return rows / ((weights + kv) / (gbps * 1e9));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As the rollout worker does: bfloat16 matmuls run on the OpenMP threads (runtime.h).
  grpo::EnsureThreadEnvironment(
      argv, grpo::MatmulThreadsFor(absl::GetFlag(FLAGS_matmul_dtype),
                                   absl::GetFlag(FLAGS_packed_matmuls), absl::GetFlag(FLAGS_device),
                                   absl::GetFlag(FLAGS_dtype)));
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const std::string name = absl::GetFlag(FLAGS_model);
  int longest_prompt = 0;
  for (absl::string_view length_text : absl::StrSplit(absl::GetFlag(FLAGS_prompt_tokens), ','))
    if (int length = 0; absl::SimpleAtoi(length_text, &length))
      longest_prompt = std::max(longest_prompt, length);
  absl::StatusOr<grpo::ModelConfig> config = grpo::ModelPreset(name);
  if (!config.ok()) {
    config = grpo::BenchShape(name, longest_prompt + absl::GetFlag(FLAGS_max_new_tokens));
  }
  if (!config.ok()) {
    std::fprintf(stderr, "rollout_bench: --model %s: not a preset (tiny, bench-26m), and %s\n",
                 name.c_str(), std::string(config.status().message()).c_str());
    return 2;
  }
  std::fprintf(stderr, "rollout_bench: %s, %.0fM parameters, on %s in %s\n", name.c_str(),
               config->NumParameters() / 1e6, absl::GetFlag(FLAGS_device).c_str(),
               absl::GetFlag(FLAGS_dtype).c_str());
  // --decode checked before the model is built (seconds at the Qwen shapes).
  const std::string decode_name = absl::GetFlag(FLAGS_decode);
  absl::StatusOr<grpo::SamplingOptions::Decode> parsed_decode = grpo::ParseDecode(decode_name);
  if (!parsed_decode.ok()) {
    std::fprintf(stderr, "rollout_bench: --decode: %s\n",
                 std::string(parsed_decode.status().message()).c_str());
    return 2;
  }
  const grpo::SamplingOptions::Decode decode = *parsed_decode;
  // Placed first, then drawn there: the constructor draws on one CPU core (about two
  // minutes at 7B); on the CPU in float32 the weights are the same (Transformer::Randomize).
  grpo::Transformer model(*config, grpo::Transformer::Uninitialized{});
  if (absl::Status s = model.To(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_dtype));
      !s.ok()) {
    std::fprintf(stderr, "rollout_bench: --device/--dtype: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (absl::Status s = model.Randomize(0); !s.ok()) {
    std::fprintf(stderr, "rollout_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const c10::Device device = model.tensor_options().device();
  const std::string matmuls = absl::GetFlag(FLAGS_matmul_dtype);
  if (absl::Status s =
          grpo::SetSamplerMatmuls(model, matmuls, absl::GetFlag(FLAGS_packed_matmuls));
      !s.ok()) {
    std::fprintf(stderr, "rollout_bench: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  const int p = absl::GetFlag(FLAGS_prompts), g = absl::GetFlag(FLAGS_group);
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  for (absl::string_view length_text : absl::StrSplit(absl::GetFlag(FLAGS_prompt_tokens), ',')) {
    int length = 0;
    if (!absl::SimpleAtoi(length_text, &length) || length < 1) {
      std::fprintf(stderr, "rollout_bench: --prompt_tokens: bad length\n");
      return 2;
    }
    std::mt19937 rng(length);
    std::uniform_int_distribution<int> token(3, config->vocab_size - 1);
    std::vector<std::vector<int32_t>> distinct(p, std::vector<int32_t>(length)), rows;
    for (auto& prompt : distinct)
      for (int32_t& t : prompt) t = token(rng);
    for (const auto& prompt : distinct)
      for (int i = 0; i < g; ++i) rows.push_back(prompt);

    grpo::SamplingOptions o;
    o.decode = decode;
    o.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
    o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    o.seed = 1;
    o.stop_token = -1;
    if (!absl::GetFlag(FLAGS_no_stop)) {
      at::NoGradGuard no_grad;
      auto batch = grpo::MakePromptBatch(distinct, 0);
      at::Tensor hidden = model.Forward(batch->tokens.to(device), batch->is_pad.to(device));
      at::Tensor probs = at::softmax(model.Logits(hidden.select(1, length - 1)).to(at::kFloat), -1);
      o.stop_token = static_cast<int>(probs.mean(0).narrow(0, 3, config->vocab_size - 3)
                                          .argmax()
                                          .item<int64_t>()) + 3;
    }
    ResetPeakMemory(device);  // this setting's engine runs, not the earlier ones
    Best(model, rows, o, 1);  // warm-up
    const Timed engine = Best(model, rows, o, repeats);
    const double peak_memory_mb = PeakMemoryMb(device);
    grpo::SamplingOptions plain_options = o;
    plain_options.share_prefixes = false;
    plain_options.compact_finished = false;
    plain_options.decode = grpo::SamplingOptions::Decode::kEager;
    const Timed plain = Best(model, rows, plain_options, repeats);
    // The prefill's share: the engine stopped after its first token.
    grpo::SamplingOptions first_token = o;
    first_token.max_new_tokens = 1;
    const double prefill_seconds = Best(model, rows, first_token, repeats).seconds;
    auto lengths = [](const grpo::SampleResult& r) {
      at::Tensor per_row = r.completion_mask.sum(1);
      return std::pair<double, double>(per_row.mean().item<double>(),
                                       per_row.max().item<double>());
    };
    const auto [mean_len, max_len] = lengths(engine.result);
    const double engine_tps = engine.result.generated_tokens / engine.seconds;
    const double plain_tps = plain.result.generated_tokens / plain.seconds;
    std::string bound;
    if (const double gbps = absl::GetFlag(FLAGS_memory_gbps); gbps > 0) {
      // The weights a step reads: the bfloat16 copies where --matmul_dtype makes them.
      const bool copies = device.is_cpu() && model.tensor_options().dtype() == at::kFloat &&
                          model.inference_matmul_dtype() != at::kFloat;
      const int64_t element = copies ? c10::elementSize(model.inference_matmul_dtype())
                                     : model.tensor_options().dtype().itemsize();
      const int64_t kv_element = model.cache_options().dtype().itemsize();
      bound = absl::StrFormat(
          "\"memory_gbps\":%.0f,\"bound_tokens_per_s\":%.0f,", gbps,
          DecodeBoundTokensPerSecond(*config, element, kv_element, p * g,
                                     length + mean_len / 2, gbps));
    }
    std::printf(
        "{\"bench\":\"rollout\",\"model\":\"%s\",\"device\":\"%s\",\"dtype\":\"%s\","
        "\"matmul_dtype\":\"%s\",\"packed_matmuls\":%s,\"packed_kernel\":\"%s\","
        "\"peak_memory_mb\":%.0f,%s"
        "\"threads\":%d,\"prompts\":%d,\"group\":%d,"
        "\"prompt_tokens\":%d,\"max_new_tokens\":%d,\"stop_token\":%d,"
        "\"mean_completion\":%.1f,\"longest_completion\":%.0f,\"generated_tokens\":%lld,"
        "\"decode\":\"%s\",\"cuda_graphs\":%s,\"prefill_seconds\":%.3f,"
        "\"seconds\":%.3f,\"tokens_per_s\":%.1f,\"plain_seconds\":%.3f,"
        "\"plain_tokens_per_s\":%.1f,\"speedup\":%.2f}\n",
        name.c_str(), device.str().c_str(), absl::GetFlag(FLAGS_dtype).c_str(), matmuls.c_str(),
        model.packed_matmuls() ? "true" : "false",
        model.packed_matmuls() ? grpo::PackedKernelName(grpo::PackedKernel::kWidest) : "none",
        peak_memory_mb, bound.c_str(),
        at::get_num_threads(), p, g, length,
        o.max_new_tokens, o.stop_token, mean_len, max_len,
        static_cast<long long>(engine.result.generated_tokens), decode_name.c_str(),
        o.cuda_graphs && device.is_cuda() ? "true" : "false", prefill_seconds, engine.seconds,
        engine_tps,
        plain.seconds, plain_tps, engine_tps / plain_tps);
    std::fflush(stdout);
  }
  return 0;
}
