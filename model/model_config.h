// ModelConfig: the shape of a Llama-style decoder (docs/design.md §4), with the named presets
// every binary accepts. Torch-free so job specs and tools can use it cheaply.
#ifndef GRPO_MODEL_MODEL_CONFIG_H_
#define GRPO_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpo {

struct ModelConfig {
  int vocab_size = 128;
  int d_model = 128;
  int n_layers = 4;
  int n_heads = 4;
  // Grouped-query attention: n_heads must be a multiple of n_kv_heads.
  int n_kv_heads = 4;
  // SwiGLU hidden width.
  int ffn_hidden = 352;
  // Positions the rotary table covers; prompt + completion must fit.
  int max_seq_len = 256;
  bool tie_embeddings = true;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-6f;

  // Checkpoint families (hf/): what Qwen2, Qwen3 and Llama 3 add to the plain decoder.
  // Per-head width when it is not d_model / n_heads (Qwen3: 128 heads of a 1024 model).
  int explicit_head_dim = 0;
  // Biases on the q, k and v projections (Qwen2).
  bool qkv_bias = false;
  // RMSNorm over each head of q and k before the rotation (Qwen3).
  bool qk_norm = false;
  // Llama 3's rotary frequency scaling ("rope_type": "llama3"); factor 0 = none.
  float rope_scaling_factor = 0.0f;
  float rope_low_freq_factor = 1.0f;
  float rope_high_freq_factor = 4.0f;
  int rope_original_max_position = 8192;

  int head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : d_model / n_heads; }
  // Parameters of the model (embedding counted once when tied).
  int64_t NumParameters() const;
};

// "tiny" (the demo policy) and "bench-26m" (the model of
// shared/bench/pytorch_eager_baseline.py). NOT_FOUND names the preset otherwise.
absl::StatusOr<ModelConfig> ModelPreset(absl::string_view name);
std::vector<std::string> ModelPresetNames();

// INVALID_ARGUMENT naming the first field out of range.
absl::Status ValidateModelConfig(const ModelConfig& config);

}  // namespace grpo

#endif  // GRPO_MODEL_MODEL_CONFIG_H_
