// config.json of a Hugging Face checkpoint, for the decoder families our Transformer
// runs: Llama (Llama 3.x included: rotary scaling "llama3"), Qwen2 (q/k/v biases) and
// Qwen3 (q/k norms, explicit head_dim). Torch-free.
//
// Parse refuses what the model cannot reproduce rather than loading something else: an
// unknown model_type, an activation other than SiLU, sliding-window attention, other
// rotary scalings. Each error names the field and the value.
#ifndef GRPO_HF_HF_CONFIG_H_
#define GRPO_HF_HF_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/model_config.h"

namespace grpo::hf {

enum class ModelFamily { kLlama, kQwen2, kQwen3 };

// The largest model ParseHfConfig accepts: 8B parameters (~128 GB to train in float32
// with AdamW on the CPU; more is refused before anything is allocated).
inline constexpr int64_t kMaxHfParameters = int64_t{8} << 30;
absl::string_view ModelTypeName(ModelFamily family);  // config.json's "model_type"

struct HfModelConfig {
  ModelFamily family = ModelFamily::kLlama;
  ModelConfig model;
  // The checkpoint's full context; model.max_seq_len may be capped below it.
  int max_position_embeddings = 0;
  std::string torch_dtype;  // as written ("bfloat16", "float32", ...); may be empty
  std::vector<int> eos_token_ids;
  int bos_token_id = -1;
};

// `max_seq_len_cap` bounds model.max_seq_len (the rotary tables and KV caches are sized by
// it; real checkpoints declare 32k-128k positions). INVALID_ARGUMENT or UNIMPLEMENTED
// naming `file` and the field otherwise.
absl::StatusOr<HfModelConfig> ParseHfConfig(absl::string_view json, const std::string& file,
                                            int max_seq_len_cap);

// config.json for `config`: what ParseHfConfig reads back, in the field names the
// families' own loaders use.
std::string HfConfigJson(const HfModelConfig& config);

}  // namespace grpo::hf

#endif  // GRPO_HF_HF_CONFIG_H_
