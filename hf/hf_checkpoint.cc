#include "hf/hf_checkpoint.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/durable_file.h"
#include "base/file.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "model/torch_status.h"

namespace grpo::hf {
namespace {

namespace fs = std::filesystem;

at::ScalarType TorchType(Dtype dtype) {
  switch (dtype) {
    case Dtype::kF32: return at::kFloat;
    case Dtype::kF16: return at::kHalf;
    case Dtype::kBF16: return at::kBFloat16;
  }
  return at::kFloat;
}

// One HF tensor name per piece of one of our parameters, concatenated along dim 0
// (q, k, v into wqkv; gate, up into w_gate_up). `optional`: lm_head of a tied model.
struct Piece {
  std::string hf_name;
  int64_t rows;  // along dim 0
};
struct Mapping {
  std::string ours;
  std::vector<Piece> pieces;
};

std::vector<Mapping> Mappings(const ModelConfig& c) {
  const int64_t hd = c.head_dim(), h = c.n_heads, k = c.n_kv_heads, f = c.ffn_hidden;
  std::vector<Mapping> out;
  out.push_back({"embedding", {{"model.embed_tokens.weight", c.vocab_size}}});
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string ours = absl::StrCat("layers.", i, ".");
    const std::string hf = absl::StrCat("model.layers.", i, ".");
    out.push_back({ours + "attn_norm", {{hf + "input_layernorm.weight", c.d_model}}});
    out.push_back({ours + "wqkv",
                   {{hf + "self_attn.q_proj.weight", h * hd},
                    {hf + "self_attn.k_proj.weight", k * hd},
                    {hf + "self_attn.v_proj.weight", k * hd}}});
    if (c.qkv_bias) {
      out.push_back({ours + "bqkv",
                     {{hf + "self_attn.q_proj.bias", h * hd},
                      {hf + "self_attn.k_proj.bias", k * hd},
                      {hf + "self_attn.v_proj.bias", k * hd}}});
    }
    if (c.qk_norm) {
      out.push_back({ours + "q_norm", {{hf + "self_attn.q_norm.weight", hd}}});
      out.push_back({ours + "k_norm", {{hf + "self_attn.k_norm.weight", hd}}});
    }
    out.push_back({ours + "wo", {{hf + "self_attn.o_proj.weight", c.d_model}}});
    out.push_back({ours + "mlp_norm", {{hf + "post_attention_layernorm.weight", c.d_model}}});
    out.push_back({ours + "w_gate_up",
                   {{hf + "mlp.gate_proj.weight", f}, {hf + "mlp.up_proj.weight", f}}});
    out.push_back({ours + "w_down", {{hf + "mlp.down_proj.weight", c.d_model}}});
  }
  out.push_back({"final_norm", {{"model.norm.weight", c.d_model}}});
  if (!c.tie_embeddings) out.push_back({"lm_head", {{"lm_head.weight", c.vocab_size}}});
  return out;
}

// Which file holds each tensor: the index's weight_map, or the single model.safetensors.
absl::StatusOr<std::map<std::string, std::string>> WeightFiles(const fs::path& dir) {
  const fs::path index = dir / "model.safetensors.index.json";
  if (!fs::exists(index)) {
    if (!fs::exists(dir / "model.safetensors")) {
      return absl::NotFoundError(absl::StrCat(
          dir.string(), ": neither model.safetensors nor model.safetensors.index.json"));
    }
    return std::map<std::string, std::string>{};  // empty: everything in model.safetensors
  }
  absl::StatusOr<std::string> text = ReadFileToString(index.string());
  if (!text.ok()) return text.status();
  google::protobuf::Struct root;
  if (!google::protobuf::util::JsonStringToMessage(*text, &root).ok() ||
      root.fields().count("weight_map") == 0 ||
      root.fields().at("weight_map").kind_case() != google::protobuf::Value::kStructValue) {
    return absl::InvalidArgumentError(
        absl::StrCat(index.string(), ": not JSON with a weight_map object"));
  }
  std::map<std::string, std::string> files;
  for (const auto& [tensor, file] : root.fields().at("weight_map").struct_value().fields()) {
    // A shard is a plain file name beside the index, never a path out of the directory.
    if (file.kind_case() != google::protobuf::Value::kStringValue ||
        file.string_value().empty() || absl::StrContains(file.string_value(), "/") ||
        file.string_value() == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(index.string(), ": weight_map[", tensor, "] is not a file name"));
    }
    files[tensor] = file.string_value();
  }
  return files;
}

}  // namespace

absl::Status LoadHfWeights(const std::string& dir_name, Transformer& model) {
  const fs::path dir(dir_name);
  const ModelConfig& c = model.config();
  absl::StatusOr<std::map<std::string, std::string>> files = WeightFiles(dir);
  if (!files.ok()) return files.status();

  std::map<std::string, std::unique_ptr<SafetensorsFile>> open;
  auto file_of = [&](const std::string& name) -> absl::StatusOr<const SafetensorsFile*> {
    std::string file = "model.safetensors";
    if (!files->empty()) {
      const auto it = files->find(name);
      if (it == files->end()) {
        return absl::NotFoundError(absl::StrCat(
            dir_name, ": missing tensor ", name, " (not in model.safetensors.index.json)"));
      }
      file = it->second;
    }
    auto& slot = open[file];
    if (slot == nullptr) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened =
          SafetensorsFile::Open((dir / file).string());
      if (!opened.ok()) return opened.status();
      slot = std::move(*opened);
    }
    return slot.get();
  };

  // Every tensor read and checked first; the model is touched only after all are good.
  std::map<std::string, at::IntArrayRef> shapes;
  for (const auto& [name, parameter] : model.named_parameters()) shapes[name] = parameter.sizes();
  std::map<std::string, at::Tensor> loaded;
  std::map<std::string, int> used;  // hf name -> 1, to find tensors no parameter takes
  for (const Mapping& mapping : Mappings(c)) {
    if (shapes.count(mapping.ours) == 0) {
      return absl::InternalError(absl::StrCat("no parameter ", mapping.ours));
    }
    std::vector<at::Tensor> parts;
    for (const Piece& piece : mapping.pieces) {
      absl::StatusOr<const SafetensorsFile*> file = file_of(piece.hf_name);
      if (!file.ok()) return file.status();
      const auto it = (*file)->tensors().find(piece.hf_name);
      if (it == (*file)->tensors().end()) {
        return absl::NotFoundError(
            absl::StrCat((*file)->name(), ": missing tensor ", piece.hf_name));
      }
      used[piece.hf_name] = 1;
      const TensorView& view = it->second;
      std::vector<int64_t> expected = shapes[mapping.ours].vec();
      expected[0] = piece.rows;
      if (view.shape != expected) {
        return absl::InvalidArgumentError(absl::StrCat(
            (*file)->name(), ": shape mismatch: ", piece.hf_name, " is ",
            c10::str(at::IntArrayRef(view.shape)), ", config.json implies ",
            c10::str(at::IntArrayRef(expected))));
      }
      at::Tensor tensor;
      absl::Status converted = CatchTorch("reading " + piece.hf_name, [&] {
        tensor = at::from_blob(const_cast<char*>(view.bytes.data()), view.shape,
                               at::TensorOptions().dtype(TorchType(view.dtype)))
                     .to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
      });
      if (!converted.ok()) return converted;
      parts.push_back(std::move(tensor));
    }
    at::Tensor joined = parts.size() == 1 ? parts[0] : at::cat(parts, 0);
    loaded[mapping.ours] = std::move(joined);
  }
  // Leftovers mean the config and the weights disagree (a Qwen2 bias in a "llama" file):
  // refused rather than silently dropped. Rotary caches some exporters add are not weights.
  for (const auto& [name, file] : *files) {  // also tensors in shards nothing else opened
    if (used.count(name) > 0 || absl::EndsWith(name, "rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && c.tie_embeddings) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        dir_name, "/model.safetensors.index.json: unexpected tensor ", name, " (in ", file, ")"));
  }
  for (const auto& [file_name, file] : open) {
    for (const auto& [name, view] : file->tensors()) {
      if (used.count(name) > 0 || absl::EndsWith(name, "rotary_emb.inv_freq")) continue;
      if (name == "lm_head.weight" && c.tie_embeddings) continue;  // a tied copy
      return absl::InvalidArgumentError(absl::StrCat(
          file->name(), ": unexpected tensor ", name, " for a ", c.n_layers, "-layer ",
          c.qkv_bias ? "biased " : "", c.qk_norm ? "q/k-normed " : "", "model"));
    }
  }
  for (const auto& [name, parameter] : model.named_parameters()) {
    const auto it = loaded.find(name);
    if (it == loaded.end()) {
      return absl::InternalError(absl::StrCat("no checkpoint tensor maps to parameter ", name));
    }
    if (!it->second.isfinite().all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir_name, ": ", name, " holds NaN or infinite values"));
    }
  }
  at::NoGradGuard no_grad;
  for (const auto& [name, parameter] : model.named_parameters()) {
    parameter.copy_(loaded.at(name));
  }
  return absl::OkStatus();
}

absl::StatusOr<HfModel> LoadHfModel(const std::string& dir, int max_seq_len_cap) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  absl::StatusOr<std::string> text = ReadFileToString(config_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<HfModelConfig> config = ParseHfConfig(*text, config_path, max_seq_len_cap);
  if (!config.ok()) return config.status();
  HfModel out;
  out.config = *config;
  absl::Status built = CatchTorch("building the model", [&] {
    out.model = std::make_unique<Transformer>(out.config.model, Transformer::Uninitialized{});
  });
  if (!built.ok()) return built;
  if (absl::Status s = LoadHfWeights(dir, *out.model); !s.ok()) return s;
  return out;
}

absl::Status SaveHfModel(const Transformer& model, const HfModelConfig& config,
                         const std::string& dir_name, const SaveOptions& options) {
  const fs::path dir(dir_name);
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat(dir_name, ": ", error.message()));

  std::map<std::string, at::Tensor> params;
  for (const auto& [name, tensor] : model.named_parameters()) params[name] = tensor;
  std::vector<TensorToWrite> tensors;
  absl::Status split = CatchTorch("converting the weights", [&] {
    for (const Mapping& mapping : Mappings(model.config())) {
      at::Tensor whole = params.at(mapping.ours).detach();
      int64_t row = 0;
      for (const Piece& piece : mapping.pieces) {
        // On the CPU first: the bytes are read through data_ptr below.
        at::Tensor part = whole.narrow(0, row, piece.rows)
                              .to(at::kCPU, TorchType(options.dtype))
                              .contiguous();
        row += piece.rows;
        TensorToWrite t{piece.hf_name, options.dtype, part.sizes().vec(),
                        std::string(static_cast<const char*>(part.data_ptr()),
                                    part.numel() * part.element_size())};
        tensors.push_back(std::move(t));
      }
    }
  });
  if (!split.ok()) return split;

  // Shards in name order; the index maps every tensor to its shard.
  std::vector<std::vector<TensorToWrite>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; });
  for (TensorToWrite& t : tensors) {
    const int64_t bytes = static_cast<int64_t>(t.bytes.size());
    if (options.max_shard_bytes > 0 && shard_bytes > 0 &&
        shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += bytes;
    total_bytes += bytes;
    shards.back().push_back(std::move(t));
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) {
    if (absl::Status s = WriteSafetensors((dir / "model.safetensors").string(), shards[0], metadata);
        !s.ok()) {
      return s;
    }
    fs::remove(dir / "model.safetensors.index.json", error);
  } else {
    std::string weight_map;
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
      if (absl::Status s = WriteSafetensors((dir / file).string(), shards[i], metadata); !s.ok()) {
        return s;
      }
      for (const TensorToWrite& t : shards[i]) {
        absl::StrAppend(&weight_map, weight_map.empty() ? "" : ",\n", "    \"", t.name, "\": \"",
                        file, "\"");
      }
    }
    const std::string index = absl::StrCat("{\n  \"metadata\": {\"total_size\": ", total_bytes,
                                           "},\n  \"weight_map\": {\n", weight_map, "\n  }\n}\n");
    if (absl::Status s = WriteFileDurably((dir / "model.safetensors.index.json").string(), index); !s.ok()) {
      return s;
    }
    fs::remove(dir / "model.safetensors", error);
  }
  HfModelConfig written = config;
  written.model = model.config();
  written.torch_dtype = options.dtype == Dtype::kF32    ? "float32"
                        : options.dtype == Dtype::kBF16 ? "bfloat16"
                                                        : "float16";
  if (absl::Status s = WriteFileDurably((dir / "config.json").string(), HfConfigJson(written)); !s.ok()) {
    return s;
  }
  if (!options.copy_from.empty() && fs::path(options.copy_from) != dir) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                             "special_tokens_map.json"}) {
      const fs::path source = fs::path(options.copy_from) / name;
      if (!fs::exists(source)) continue;
      fs::copy_file(source, dir / name, fs::copy_options::overwrite_existing, error);
      if (error) return absl::InternalError(absl::StrCat(source.string(), ": ", error.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace grpo::hf
