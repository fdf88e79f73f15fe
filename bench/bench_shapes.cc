#include "bench/bench_shapes.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace grpo {
namespace {

struct Shape {
  int d, layers, heads, kv_heads, ffn, vocab;
  bool tied, qkv_bias;
};

const std::map<std::string, Shape>& Shapes() {
  static const auto* shapes = new std::map<std::string, Shape>{
      {"bench-26m", {512, 8, 8, 8, 1408, 512, true, false}},
      {"qwen2.5-0.5b", {896, 24, 14, 2, 4864, 151936, true, true}},
      {"qwen2.5-1.5b", {1536, 28, 12, 2, 8960, 151936, true, true}},
      {"qwen2.5-7b", {3584, 28, 28, 4, 18944, 152064, false, true}},
  };
  return *shapes;
}

}  // namespace

absl::StatusOr<ModelConfig> BenchShape(const std::string& name, int max_seq_len) {
  auto it = Shapes().find(name);
  if (it == Shapes().end())
    return absl::InvalidArgumentError(absl::StrCat(
        "shape ", name, ": expected bench-26m, qwen2.5-0.5b, qwen2.5-1.5b or qwen2.5-7b"));
  const Shape& s = it->second;
  ModelConfig config;
  config.d_model = s.d;
  config.n_layers = s.layers;
  config.n_heads = s.heads;
  config.n_kv_heads = s.kv_heads;
  config.ffn_hidden = s.ffn;
  config.vocab_size = s.vocab;
  config.tie_embeddings = s.tied;
  config.qkv_bias = s.qkv_bias;
  config.rope_theta = 1e6;
  config.max_seq_len = max_seq_len;
  return config;
}

}  // namespace grpo
