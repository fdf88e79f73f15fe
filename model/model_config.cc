#include "model/model_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace grpo {

int64_t ModelConfig::NumParameters() const {
  const int64_t d = d_model, hd = head_dim();
  const int64_t qkv = (n_heads + 2 * n_kv_heads) * hd;
  const int64_t per_layer = 2 * d                                  // two RMSNorms
                            + d * qkv + (qkv_bias ? qkv : 0)       // fused q, k, v
                            + (qk_norm ? 2 * hd : 0)               // q and k norms
                            + d * n_heads * hd                     // attention output
                            + d * 2 * ffn_hidden                   // fused gate, up
                            + ffn_hidden * d;                      // down
  const int64_t embeddings = int64_t{vocab_size} * d * (tie_embeddings ? 1 : 2);
  return embeddings + n_layers * per_layer + d;
}

absl::StatusOr<ModelConfig> ModelPreset(absl::string_view name) {
  ModelConfig c;
  if (name == "tiny") {
    return c;  // The defaults above: ~0.8M parameters, trains in minutes on 2 cores.
  }
  if (name == "bench-26m") {
    c.vocab_size = 512;
    c.d_model = 512;
    c.n_layers = 8;
    c.n_heads = 8;
    c.n_kv_heads = 8;
    c.ffn_hidden = 1408;
    c.max_seq_len = 512;
    c.tie_embeddings = true;
    return c;
  }
  return absl::NotFoundError(absl::StrCat("unknown model preset \"", name,
                                          "\"; known: ",
                                          absl::StrJoin(ModelPresetNames(), ", ")));
}

std::vector<std::string> ModelPresetNames() { return {"tiny", "bench-26m"}; }

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto bad = [](absl::string_view field, auto value, absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.", field, " = ", value, ": ", why));
  };
  if (c.vocab_size < 4 || c.vocab_size > (1 << 20))
    return bad("vocab_size", c.vocab_size, "must be in [4, 1048576]");
  if (c.d_model < 2 || c.d_model > 16384) return bad("d_model", c.d_model, "must be in [2, 16384]");
  if (c.n_layers < 1 || c.n_layers > 256) return bad("n_layers", c.n_layers, "must be in [1, 256]");
  if (c.explicit_head_dim < 0 || c.explicit_head_dim > 1024 || c.explicit_head_dim % 2 != 0)
    return bad("head_dim", c.explicit_head_dim, "must be even and in [0, 1024] (0: d_model / n_heads)");
  if (c.n_heads < 1 || (c.explicit_head_dim == 0 && c.d_model % c.n_heads != 0))
    return bad("n_heads", c.n_heads, "must be positive and divide d_model");
  if (c.head_dim() % 2 != 0) return bad("n_heads", c.n_heads, "head dimension must be even (rotary)");
  if (c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0)
    return bad("n_kv_heads", c.n_kv_heads, "must be positive and divide n_heads");
  if (c.ffn_hidden < 1 || c.ffn_hidden > 65536)
    return bad("ffn_hidden", c.ffn_hidden, "must be in [1, 65536]");
  if (c.max_seq_len < 2 || c.max_seq_len > 131072)
    return bad("max_seq_len", c.max_seq_len, "must be in [2, 131072]");
  if (!(c.rope_theta > 0)) return bad("rope_theta", c.rope_theta, "must be positive");
  if (!(c.norm_eps > 0)) return bad("norm_eps", c.norm_eps, "must be positive");
  if (c.rope_scaling_factor != 0) {
    if (!(c.rope_scaling_factor >= 1))
      return bad("rope_scaling.factor", c.rope_scaling_factor, "must be >= 1");
    if (!(c.rope_high_freq_factor > c.rope_low_freq_factor && c.rope_low_freq_factor > 0))
      return bad("rope_scaling.high_freq_factor", c.rope_high_freq_factor,
                 "must exceed low_freq_factor, itself positive");
    if (c.rope_original_max_position < 1)
      return bad("rope_scaling.original_max_position_embeddings",
                 c.rope_original_max_position, "must be positive");
  }
  return absl::OkStatus();
}

}  // namespace grpo
