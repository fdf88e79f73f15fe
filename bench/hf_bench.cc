// hf_bench: a Hugging Face checkpoint of real size, end to end on one machine.
//   1. writes a random checkpoint in Qwen2 layout with Qwen2.5-0.5B's shape (24 layers,
//      d 896, 14 heads / 2 kv heads, FFN 4864, vocabulary 151936, tied embeddings, q/k/v
//      biases: 494M parameters) in bfloat16 with our saver (hf/hf_checkpoint.h);
//   2. loads it back as the service does (config.json + safetensors, float32 on the CPU),
//      timed;
//   3. moves it to --device in --dtype and decodes: B sequences x --new_tokens after a
//      32-token prompt, KV cache, temperature-1 sampling, for each B in --batches.
// Prints one line per measurement and a JSON line. No targets: a report.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "hf/hf_checkpoint.h"
#include "model/runtime.h"
#include "model/sampler.h"

ABSL_FLAG(std::string, dir, "/tmp/grpo-hf-bench", "where the checkpoint is written (1 GB)");
ABSL_FLAG(std::string, device, "cpu", "decode on: cpu or cuda");
ABSL_FLAG(std::string, dtype, "float32", "decode in: float32, bfloat16 or float16");
ABSL_FLAG(std::string, batches, "1,8", "sequences decoded together, comma-separated");
ABSL_FLAG(int, new_tokens, 64, "tokens generated per sequence");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads; 0 = all cores");

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr char kQwen25HalfB[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
  "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
  "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
  "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
  "tie_word_embeddings": true, "use_sliding_window": false, "torch_dtype": "bfloat16",
  "bos_token_id": 151643, "eos_token_id": 151645})";

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "hf_bench: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const std::string dir = absl::GetFlag(FLAGS_dir);
  const int new_tokens = absl::GetFlag(FLAGS_new_tokens);
  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(b, &n) || n < 1) return Fail(absl::InvalidArgumentError("--batches"));
    batches.push_back(n);
  }
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  const at::ScalarType dtype = dtype_name == "bfloat16" ? at::kBFloat16
                               : dtype_name == "float16" ? at::kHalf
                                                          : at::kFloat;
  const std::string device_name = absl::GetFlag(FLAGS_device);
  if (device_name == "cuda" && !torch::cuda::is_available())
    return Fail(absl::FailedPreconditionError("--device cuda: no CUDA device or a CPU LibTorch"));

  // --- 1. The checkpoint.
  absl::StatusOr<grpo::hf::HfModelConfig> config =
      grpo::hf::ParseHfConfig(kQwen25HalfB, "Qwen2.5-0.5B shape", 4096);
  if (!config.ok()) return Fail(config.status());
  {
    auto start = Clock::now();
    grpo::Transformer random(config->model, grpo::Transformer::Uninitialized{});
    // Drawn on the bench's device (the CPU draws on one core) and brought back to be saved.
    absl::Status s = random.To(device_name, "float32");
    if (s.ok()) s = random.Randomize(1);
    if (s.ok()) s = random.To("cpu", "float32");
    if (!s.ok()) return Fail(s);
    const double init = Seconds(start);
    start = Clock::now();
    grpo::hf::SaveOptions save;
    save.dtype = grpo::hf::Dtype::kBF16;
    if (absl::Status s = grpo::hf::SaveHfModel(random, *config, dir, save); !s.ok()) return Fail(s);
    std::printf("checkpoint  %.1fM parameters, Qwen2 layout, bfloat16: random init %.1fs, "
                "written in %.1fs (%.2f GB) to %s\n",
                config->model.NumParameters() / 1e6, init, Seconds(start),
                std::filesystem::file_size(std::filesystem::path(dir) / "model.safetensors") / 1e9,
                dir.c_str());
  }

  // --- 2. Load, as a learner does.
  auto start = Clock::now();
  absl::StatusOr<grpo::hf::HfModel> loaded = grpo::hf::LoadHfModel(dir);
  if (!loaded.ok()) return Fail(loaded.status());
  const double load_seconds = Seconds(start);
  std::printf("load        config.json + model.safetensors -> float32 model: %.2fs\n", load_seconds);
  start = Clock::now();
  if (absl::Status s = loaded->model->To(c10::Device(device_name), dtype); !s.ok()) return Fail(s);
  if (device_name == "cuda") torch::cuda::synchronize();
  std::printf("to device   %s %s: %.2fs\n", device_name.c_str(), dtype_name.c_str(), Seconds(start));

  // --- 3. Decode.
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> token(0, 151642);
  std::vector<std::string> json;
  for (const int batch : batches) {
    std::vector<std::vector<int32_t>> prompts(batch, std::vector<int32_t>(32));
    for (auto& p : prompts)
      for (auto& id : p) id = token(rng);
    grpo::SamplingOptions sampling;
    sampling.max_new_tokens = new_tokens;
    sampling.stop_token = -1;  // every sequence runs the full length
    sampling.sample_vocab = 151643;
    grpo::SamplingOptions warm = sampling;
    warm.max_new_tokens = 4;
    if (auto w = grpo::Sample(*loaded->model, prompts, warm); !w.ok()) return Fail(w.status());
    if (device_name == "cuda") torch::cuda::synchronize();
    start = Clock::now();
    absl::StatusOr<grpo::SampleResult> result = grpo::Sample(*loaded->model, prompts, sampling);
    if (!result.ok()) return Fail(result.status());
    if (device_name == "cuda") torch::cuda::synchronize();
    const double seconds = Seconds(start);
    const double tokens = static_cast<double>(result->generated_tokens);
    std::printf("decode      batch %3d x %d new tokens (32-token prompt): %.2fs, %.1f tok/s\n",
                batch, new_tokens, seconds, tokens / seconds);
    json.push_back(absl::StrCat("{\"batch\":", batch, ",\"tokens_per_second\":", tokens / seconds, "}"));
  }
  std::printf("{\"bench\":\"hf_bench\",\"params\":%lld,\"device\":\"%s\",\"dtype\":\"%s\","
              "\"threads\":%d,\"load_seconds\":%.3f,\"decode\":[%s]}\n",
              static_cast<long long>(config->model.NumParameters()), device_name.c_str(),
              dtype_name.c_str(), at::get_num_threads(), load_seconds,
              absl::StrJoin(json, ",").c_str());
  return 0;
}
