// rollout_bench: GRPO-shaped sampling, P prompts x G samples each (the rows a rollout
// lease decodes), with the engine's prefix sharing and finished-row compaction on and
// then off (the plain path), in one process. The stop token is the one the random model
// finds likeliest after the prompts, so completions end at different lengths (a tail), as
// trained policies' do. One JSON line per prompt length: generated tokens per second,
// prefill and decode seconds are not split (one Sample call), mean and longest completion.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "model/model.h"
#include "model/runtime.h"
#include "model/sampler.h"

ABSL_FLAG(std::string, model, "bench-26m", "model preset");
ABSL_FLAG(int, prompts, 8, "distinct prompts (P)");
ABSL_FLAG(int, group, 8, "samples per prompt (G)");
ABSL_FLAG(std::string, prompt_tokens, "32,256", "comma-separated prompt lengths");
ABSL_FLAG(int, max_new_tokens, 64, "longest completion");
ABSL_FLAG(int, repeats, 2, "timed samplings per setting (the best is kept)");
ABSL_FLAG(bool, no_stop, false, "no stop token: every row decodes max_new_tokens");
ABSL_FLAG(int, threads, 0, "intra-op threads; 0 = all cores");
ABSL_FLAG(std::string, matmul_dtype, "float32",
          "float32 or bfloat16: the sampler's matmuls (Transformer::SetInferenceMatmulDtype)");

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

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As the rollout worker does: bfloat16 matmuls run on the OpenMP threads (runtime.h).
  grpo::EnsureThreadEnvironment(argv, absl::GetFlag(FLAGS_matmul_dtype) == "bfloat16"
                                          ? grpo::MatmulThreads::kOpenMp
                                          : grpo::MatmulThreads::kOpenBlas);
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  auto config = grpo::ModelPreset(absl::GetFlag(FLAGS_model));
  if (!config.ok()) {
    std::fprintf(stderr, "rollout_bench: %s\n", config.status().ToString().c_str());
    return 2;
  }
  grpo::Transformer model(*config, 0);
  const std::string matmuls = absl::GetFlag(FLAGS_matmul_dtype);
  if (absl::Status s = model.SetInferenceMatmulDtype(matmuls == "bfloat16" ? at::kBFloat16
                                                  : matmuls == "float32" ? at::kFloat
                                                                         : at::kHalf);
      !s.ok()) {
    std::fprintf(stderr, "rollout_bench: --matmul_dtype %s: %s\n", matmuls.c_str(),
                 std::string(s.message()).c_str());
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
    o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    o.seed = 1;
    o.stop_token = -1;
    if (!absl::GetFlag(FLAGS_no_stop)) {
      at::NoGradGuard no_grad;
      auto batch = grpo::MakePromptBatch(distinct, 0);
      at::Tensor probs = at::softmax(
          model.Logits(model.Forward(batch->tokens, batch->is_pad).select(1, length - 1)), -1);
      o.stop_token = static_cast<int>(probs.mean(0).narrow(0, 3, config->vocab_size - 3)
                                          .argmax()
                                          .item<int64_t>()) + 3;
    }
    Best(model, rows, o, 1);  // warm-up
    const Timed engine = Best(model, rows, o, repeats);
    grpo::SamplingOptions plain_options = o;
    plain_options.share_prefixes = false;
    plain_options.compact_finished = false;
    const Timed plain = Best(model, rows, plain_options, repeats);
    auto lengths = [](const grpo::SampleResult& r) {
      at::Tensor per_row = r.completion_mask.sum(1);
      return std::pair<double, double>(per_row.mean().item<double>(),
                                       per_row.max().item<double>());
    };
    const auto [mean_len, max_len] = lengths(engine.result);
    const double engine_tps = engine.result.generated_tokens / engine.seconds;
    const double plain_tps = plain.result.generated_tokens / plain.seconds;
    std::printf(
        "{\"bench\":\"rollout\",\"model\":\"%s\",\"matmul_dtype\":\"%s\","
        "\"threads\":%d,\"prompts\":%d,\"group\":%d,"
        "\"prompt_tokens\":%d,\"max_new_tokens\":%d,\"stop_token\":%d,"
        "\"mean_completion\":%.1f,\"longest_completion\":%.0f,\"generated_tokens\":%lld,"
        "\"seconds\":%.3f,\"tokens_per_s\":%.1f,\"plain_seconds\":%.3f,"
        "\"plain_tokens_per_s\":%.1f,\"speedup\":%.2f}\n",
        absl::GetFlag(FLAGS_model).c_str(), matmuls.c_str(), at::get_num_threads(), p, g,
        length,
        o.max_new_tokens, o.stop_token, mean_len, max_len,
        static_cast<long long>(engine.result.generated_tokens), engine.seconds, engine_tps,
        plain.seconds, plain_tps, engine_tps / plain_tps);
    std::fflush(stdout);
  }
  return 0;
}
