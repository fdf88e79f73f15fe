#include "hf/hf_config.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace grpo::hf {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

class Fields {
 public:
  Fields(const Struct& s, const std::string& file) : s_(s), file_(file) {}

  absl::Status Error(absl::string_view field, absl::string_view why) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", field, " ", why));
  }
  const Value* Find(absl::string_view field) const {
    const auto it = s_.fields().find(std::string(field));
    if (it == s_.fields().end() || it->second.kind_case() == Value::kNullValue) return nullptr;
    return &it->second;
  }
  // An integer field; `fallback` when absent, or an error when there is none.
  absl::StatusOr<int> Int(absl::string_view field, std::optional<int> fallback = {}) const {
    const Value* v = Find(field);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return Error(field, "is missing");
    }
    if (v->kind_case() != Value::kNumberValue || std::floor(v->number_value()) != v->number_value() ||
        std::abs(v->number_value()) > 1e9) {
      return Error(field, absl::StrCat("is not an integer: ", v->ShortDebugString()));
    }
    return static_cast<int>(v->number_value());
  }
  absl::StatusOr<double> Number(absl::string_view field, double fallback) const {
    const Value* v = Find(field);
    if (v == nullptr) return fallback;
    if (v->kind_case() != Value::kNumberValue)
      return Error(field, absl::StrCat("is not a number: ", v->ShortDebugString()));
    return v->number_value();
  }
  absl::StatusOr<bool> Bool(absl::string_view field, bool fallback) const {
    const Value* v = Find(field);
    if (v == nullptr) return fallback;
    if (v->kind_case() != Value::kBoolValue)
      return Error(field, absl::StrCat("is not true or false: ", v->ShortDebugString()));
    return v->bool_value();
  }
  std::string String(absl::string_view field) const {
    const Value* v = Find(field);
    return v != nullptr && v->kind_case() == Value::kStringValue ? v->string_value() : "";
  }

 private:
  const Struct& s_;
  const std::string& file_;
};

#define ASSIGN_OR_RETURN(lhs, expr) \
  do {                              \
    auto value_ = (expr);           \
    if (!value_.ok()) return value_.status(); \
    lhs = *value_;                  \
  } while (0)

}  // namespace

absl::string_view ModelTypeName(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama: return "llama";
    case ModelFamily::kQwen2: return "qwen2";
    case ModelFamily::kQwen3: return "qwen3";
  }
  return "?";
}

namespace {

// model_type, and the features of the architecture we do not have (UNIMPLEMENTED).
absl::Status ParseFamily(const Fields& f, const std::string& file, HfModelConfig* out) {
  const std::string model_type = f.String("model_type");
  if (model_type == "llama") {
    out->family = ModelFamily::kLlama;
  } else if (model_type == "qwen2") {
    out->family = ModelFamily::kQwen2;
  } else if (model_type == "qwen3") {
    out->family = ModelFamily::kQwen3;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        file, ": model_type \"", model_type,
        "\" is not supported (llama, qwen2 and qwen3 are: Llama-style decoders)"));
  }
  const std::string act = f.String("hidden_act");
  if (!act.empty() && act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat(file, ": hidden_act \"", act, "\" is not supported (silu is)"));
  }
  bool sliding = false;
  ASSIGN_OR_RETURN(sliding, f.Bool("use_sliding_window", false));
  if (sliding) {
    return absl::UnimplementedError(
        absl::StrCat(file, ": use_sliding_window true is not supported"));
  }
  return absl::OkStatus();
}

// rope_scaling: none, "default", or Llama 3's frequency bands.
absl::Status ParseRopeScaling(const Fields& f, const std::string& file, ModelConfig* m) {
  const Value* scaling = f.Find("rope_scaling");
  if (scaling == nullptr) return absl::OkStatus();
  if (scaling->kind_case() != Value::kStructValue) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": rope_scaling is not an object"));
  }
  const Fields s(scaling->struct_value(), file);
  std::string type = s.String("rope_type");
  if (type.empty()) type = s.String("type");
  if (type != "llama3" && type != "default") {
    return absl::UnimplementedError(absl::StrCat(
        file, ": rope_scaling type \"", type, "\" is not supported (llama3 and default are)"));
  }
  if (type != "llama3") return absl::OkStatus();
  // No default: without a factor Hugging Face refuses the file, and 0 would mean "none".
  if (s.Find("factor") == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(file, ": rope_scaling.factor is missing"));
  double factor = 0, low = 0, high = 0;
  ASSIGN_OR_RETURN(factor, s.Number("factor", 0));
  if (!(factor >= 1))
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": rope_scaling.factor ", factor, " must be >= 1"));
  ASSIGN_OR_RETURN(low, s.Number("low_freq_factor", 1));
  ASSIGN_OR_RETURN(high, s.Number("high_freq_factor", 4));
  m->rope_scaling_factor = static_cast<float>(factor);
  m->rope_low_freq_factor = static_cast<float>(low);
  m->rope_high_freq_factor = static_cast<float>(high);
  ASSIGN_OR_RETURN(m->rope_original_max_position, s.Int("original_max_position_embeddings", 8192));
  return absl::OkStatus();
}

// Sizes, head_dim, rotary base, norm epsilon, tied embeddings.
absl::Status ParseShape(const Fields& f, int max_seq_len_cap, HfModelConfig* out) {
  ModelConfig& m = out->model;
  ASSIGN_OR_RETURN(m.vocab_size, f.Int("vocab_size"));
  ASSIGN_OR_RETURN(m.d_model, f.Int("hidden_size"));
  ASSIGN_OR_RETURN(m.n_layers, f.Int("num_hidden_layers"));
  ASSIGN_OR_RETURN(m.n_heads, f.Int("num_attention_heads"));
  ASSIGN_OR_RETURN(m.n_kv_heads, f.Int("num_key_value_heads", m.n_heads));
  ASSIGN_OR_RETURN(m.ffn_hidden, f.Int("intermediate_size"));
  ASSIGN_OR_RETURN(out->max_position_embeddings, f.Int("max_position_embeddings", 2048));
  // Qwen3's own default is 128; the others derive it unless the file names one.
  const int derived = m.n_heads > 0 ? m.d_model / m.n_heads : 0;
  int head_dim = 0;
  ASSIGN_OR_RETURN(head_dim,
                   f.Int("head_dim", out->family == ModelFamily::kQwen3 ? 128 : derived));
  m.explicit_head_dim = head_dim == derived && m.d_model % std::max(m.n_heads, 1) == 0 ? 0 : head_dim;
  double theta = 0, eps = 0;
  ASSIGN_OR_RETURN(theta, f.Number("rope_theta", 10000.0));
  ASSIGN_OR_RETURN(eps, f.Number("rms_norm_eps", 1e-6));
  m.rope_theta = static_cast<float>(theta);
  m.norm_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(m.tie_embeddings, f.Bool("tie_word_embeddings", false));
  m.max_seq_len = std::min(out->max_position_embeddings, max_seq_len_cap);
  return absl::OkStatus();
}

// Qwen2 always has q/k/v biases (and no o_proj bias). Elsewhere attention_bias also puts
// one on o_proj, and mlp_bias on the MLP: neither has a place in our model.
absl::Status ParseBiasesAndNorms(const Fields& f, const std::string& file, HfModelConfig* out) {
  bool attention_bias = false, mlp_bias = false;
  ASSIGN_OR_RETURN(attention_bias, f.Bool("attention_bias", false));
  ASSIGN_OR_RETURN(mlp_bias, f.Bool("mlp_bias", false));
  if (out->family != ModelFamily::kQwen2 && attention_bias)
    return absl::UnimplementedError(
        absl::StrCat(file, ": attention_bias true is not supported for ",
                     ModelTypeName(out->family), " (o_proj bias)"));
  if (mlp_bias)
    return absl::UnimplementedError(absl::StrCat(file, ": mlp_bias true is not supported"));
  out->model.qkv_bias = out->family == ModelFamily::kQwen2;
  out->model.qk_norm = out->family == ModelFamily::kQwen3;
  return absl::OkStatus();
}

// bos_token_id and eos_token_id (one id or a list), inside the vocabulary: one is used as
// the end (and pad) token.
absl::Status ParseTokenIds(const Fields& f, const std::string& file, HfModelConfig* out) {
  const int vocab = out->model.vocab_size;
  ASSIGN_OR_RETURN(out->bos_token_id, f.Int("bos_token_id", -1));
  const Value* eos = f.Find("eos_token_id");
  if (eos == nullptr) return absl::OkStatus();
  std::vector<const Value*> ids;
  if (eos->kind_case() == Value::kListValue) {
    for (const Value& id : eos->list_value().values()) ids.push_back(&id);
  } else {
    ids.push_back(eos);
  }
  for (const Value* id : ids) {
    if (id->kind_case() != Value::kNumberValue ||
        std::floor(id->number_value()) != id->number_value() || id->number_value() < 0 ||
        id->number_value() >= vocab)
      return absl::InvalidArgumentError(absl::StrCat(file, ": eos_token_id holds ",
                                                     id->ShortDebugString(),
                                                     ", not a token id below vocab_size ", vocab));
    out->eos_token_ids.push_back(static_cast<int>(id->number_value()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HfModelConfig> ParseHfConfig(absl::string_view json, const std::string& file,
                                            int max_seq_len_cap) {
  Struct root;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &root);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": not a JSON object: ", parsed.message().as_string()));
  }
  const Fields f(root, file);
  HfModelConfig out;
  // Unsupported features first: they are the answer even when other fields are off.
  if (absl::Status s = ParseFamily(f, file, &out); !s.ok()) return s;
  if (absl::Status s = ParseRopeScaling(f, file, &out.model); !s.ok()) return s;
  if (absl::Status s = ParseShape(f, max_seq_len_cap, &out); !s.ok()) return s;
  if (absl::Status s = ParseBiasesAndNorms(f, file, &out); !s.ok()) return s;
  out.torch_dtype = f.String("torch_dtype");
  if (absl::Status s = ParseTokenIds(f, file, &out); !s.ok()) return s;
  if (absl::Status valid = ValidateModelConfig(out.model); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", valid.message()));
  }
  // Trained in float32 with AdamW on the CPU: ~16 bytes a parameter. A config asking for
  // more than this is refused here rather than by the allocator in the middle of a job.
  if (out.model.NumParameters() > kMaxHfParameters) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", out.model.NumParameters(),
                                                   " parameters; at most ", kMaxHfParameters,
                                                   " are supported"));
  }
  return out;
}

std::string HfConfigJson(const HfModelConfig& config) {
  const ModelConfig& m = config.model;
  const bool llama = config.family == ModelFamily::kLlama;
  std::vector<std::string> lines = {
      absl::StrCat("\"architectures\": [\"",
                   llama ? "LlamaForCausalLM"
                         : config.family == ModelFamily::kQwen2 ? "Qwen2ForCausalLM"
                                                                : "Qwen3ForCausalLM",
                   "\"]"),
      absl::StrCat("\"model_type\": \"", ModelTypeName(config.family), "\""),
      "\"hidden_act\": \"silu\"",
      absl::StrCat("\"vocab_size\": ", m.vocab_size),
      absl::StrCat("\"hidden_size\": ", m.d_model),
      absl::StrCat("\"num_hidden_layers\": ", m.n_layers),
      absl::StrCat("\"num_attention_heads\": ", m.n_heads),
      absl::StrCat("\"num_key_value_heads\": ", m.n_kv_heads),
      absl::StrCat("\"head_dim\": ", m.head_dim()),
      absl::StrCat("\"intermediate_size\": ", m.ffn_hidden),
      absl::StrCat("\"max_position_embeddings\": ",
                   std::max(config.max_position_embeddings, m.max_seq_len)),
      // %.9g: a float's every digit, so the file reads back to the same value.
      absl::StrFormat("\"rope_theta\": %.9g", m.rope_theta),
      absl::StrFormat("\"rms_norm_eps\": %.9g", m.norm_eps),
      absl::StrCat("\"tie_word_embeddings\": ", m.tie_embeddings ? "true" : "false"),
      absl::StrCat("\"attention_bias\": ", config.family == ModelFamily::kQwen2 ? "true" : "false"),
      absl::StrCat("\"torch_dtype\": \"",
                   config.torch_dtype.empty() ? "float32" : config.torch_dtype, "\""),
  };
  if (m.rope_scaling_factor != 0) {
    lines.push_back(absl::StrCat(
        "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": ",
        absl::StrFormat("%.9g", m.rope_scaling_factor),
        ", \"low_freq_factor\": ", absl::StrFormat("%.9g", m.rope_low_freq_factor),
        ", \"high_freq_factor\": ", absl::StrFormat("%.9g", m.rope_high_freq_factor),
        ", \"original_max_position_embeddings\": ", m.rope_original_max_position, "}"));
  }
  if (config.bos_token_id >= 0) {
    lines.push_back(absl::StrCat("\"bos_token_id\": ", config.bos_token_id));
  }
  if (!config.eos_token_ids.empty()) {
    lines.push_back(absl::StrCat("\"eos_token_id\": ",
                                 config.eos_token_ids.size() == 1
                                     ? absl::StrCat(config.eos_token_ids[0])
                                     : absl::StrCat("[", absl::StrJoin(config.eos_token_ids, ", "), "]")));
  }
  return absl::StrCat("{\n  ", absl::StrJoin(lines, ",\n  "), "\n}\n");
}

}  // namespace grpo::hf
