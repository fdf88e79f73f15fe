// Hugging Face checkpoint directories <-> our Transformer.
//
// A directory holds config.json (hf/hf_config.h) and the weights, either model.safetensors
// or shards listed by model.safetensors.index.json ("weight_map": tensor -> file). Tensor
// names are the families' own (model.layers.N.self_attn.q_proj.weight, ...); q/k/v and
// gate/up are fused on load into our layout (model/model.h) and split again on save.
// F32, F16 and BF16 weights load as float32 (the CPU path computes in float32).
//
// Loading reads and checks every tensor before the model exists, so an error (missing or
// unexpected tensor, shape mismatch, unsupported dtype, truncated shard) names the tensor
// and file and leaves nothing half-built. Saving writes config.json, the weights and the
// index through temporary files, and copies the tokenizer files from `copy_from`, so that
// the directory loads again here or in any tool that reads this layout.
#ifndef GRPO_HF_HF_CHECKPOINT_H_
#define GRPO_HF_HF_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hf/hf_config.h"
#include "hf/safetensors.h"
#include "model/model.h"

namespace grpo::hf {

struct HfModel {
  HfModelConfig config;
  std::unique_ptr<Transformer> model;
};

// `max_seq_len_cap`: see ParseHfConfig.
absl::StatusOr<HfModel> LoadHfModel(const std::string& dir, int max_seq_len_cap = 4096);

// Loads the weights of `dir` into `model` (same configuration); `model` is unchanged on
// any error.
absl::Status LoadHfWeights(const std::string& dir, Transformer& model);

struct SaveOptions {
  Dtype dtype = Dtype::kF32;
  // Shards of at most this many bytes (a tensor is never split) with an index; 0: one file.
  int64_t max_shard_bytes = 0;
  // Tokenizer and generation files (tokenizer.json, tokenizer_config.json,
  // generation_config.json, special_tokens_map.json) copied from here when present.
  std::string copy_from;
};

absl::Status SaveHfModel(const Transformer& model, const HfModelConfig& config,
                         const std::string& dir, const SaveOptions& options = {});

}  // namespace grpo::hf

#endif  // GRPO_HF_HF_CHECKPOINT_H_
