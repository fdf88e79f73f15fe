#include "rewards/reward_model.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "model/sampler.h"
#include "model/torch_status.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

const char* ObjectiveName(RewardObjective o) {
  return o == RewardObjective::kStepCrossEntropy ? "step_cross_entropy" : "bradley_terry";
}

// info.txt: "objective NAME", "step_rule NAME", "max_seq_len N", one per line.
struct Info {
  RewardObjective objective = RewardObjective::kBradleyTerry;
  StepRule step_rule;
  int max_seq_len = 1024;
};

absl::StatusOr<Info> ReadInfo(const std::string& dir) {
  Info info;
  const std::string path = dir + "/info.txt";
  std::ifstream in(path);
  if (!in) return info;  // written before info.txt existed
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    const size_t space = line.find(' ');
    const std::string key = line.substr(0, space);
    const std::string value = space == std::string::npos ? "" : line.substr(space + 1);
    if (key.empty()) continue;
    if (key == "objective" && (value == "bradley_terry" || value == "step_cross_entropy")) {
      info.objective = value == "bradley_terry" ? RewardObjective::kBradleyTerry
                                                : RewardObjective::kStepCrossEntropy;
    } else if (key == "step_rule") {
      absl::StatusOr<StepRule> rule = ParseStepRule(value);
      if (!rule.ok())
        return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": ", rule.status().message()));
      info.step_rule = *rule;
    } else if (key == "max_seq_len" && !value.empty() &&
               value.find_first_not_of("0123456789") == std::string::npos && value.size() < 7) {
      info.max_seq_len = std::stoi(value);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": unknown line \"", line, "\""));
    }
  }
  return info;
}

}  // namespace

RewardModel::RewardModel(const ModelConfig& config, uint64_t seed)
    : backbone_(config, seed), tokenizer_(std::make_unique<CharTextTokenizer>()) {
  head_weight_ = at::zeros({config.d_model}).requires_grad_(true);
  head_bias_ = at::zeros({1}).requires_grad_(true);
}

RewardModel::RewardModel(const ModelConfig& config, Transformer::Uninitialized u)
    : backbone_(config, u) {
  head_weight_ = at::zeros({config.d_model}).requires_grad_(true);
  head_bias_ = at::zeros({1}).requires_grad_(true);
}

RewardModel::~RewardModel() = default;

std::vector<at::Tensor> RewardModel::parameters() const {
  std::vector<at::Tensor> params = backbone_.parameters();
  params.push_back(head_weight_);
  params.push_back(head_bias_);
  return params;
}

absl::StatusOr<EncodedSample> RewardModel::Encode(std::string_view prompt,
                                                  std::string_view completion) const {
  EncodedSample sample;
  absl::StatusOr<std::vector<int32_t>> prompt_ids = tokenizer_->EncodePrompt(prompt);
  if (!prompt_ids.ok()) return prompt_ids.status();
  absl::StatusOr<std::vector<int32_t>> completion_ids = tokenizer_->EncodeText(completion);
  if (!completion_ids.ok()) return completion_ids.status();
  sample.completion_ends = tokenizer_->DecodeWithEnds(*completion_ids).token_ends;
  sample.prompt_tokens = static_cast<int>(prompt_ids->size());
  sample.ids = *std::move(prompt_ids);
  sample.ids.insert(sample.ids.end(), completion_ids->begin(), completion_ids->end());
  if (sample.ids.empty()) return absl::InvalidArgumentError("prompt and completion are both empty");
  if (static_cast<int>(sample.ids.size()) > config().max_seq_len)
    return absl::InvalidArgumentError(absl::StrCat(sample.ids.size(), " tokens exceed max_seq_len ",
                                                   config().max_seq_len));
  return sample;
}

int RewardModel::PositionOfByte(const EncodedSample& sample, int byte_end) {
  const int token = TokenCoveringByte(sample.completion_ends, byte_end);
  return token < 0 ? -1 : sample.prompt_tokens + token;
}

at::Tensor RewardModel::ScoreLast(const std::vector<std::vector<int32_t>>& sequences) const {
  std::vector<std::vector<int>> last;
  for (const auto& s : sequences) last.push_back({static_cast<int>(s.size()) - 1});
  return ScorePositions(sequences, last);
}

at::Tensor RewardModel::ScorePositions(const std::vector<std::vector<int32_t>>& sequences,
                                       const std::vector<std::vector<int>>& positions) const {
  // Left padding: sequence i's token p sits in column width - size_i + p.
  absl::StatusOr<PromptBatch> batch = MakePromptBatch(sequences, /*pad_token=*/0);
  TORCH_CHECK(batch.ok(), std::string(batch.status().message()));
  at::Tensor hidden = backbone_.Forward(batch->tokens, batch->is_pad);          // [N, T, d]
  at::Tensor all = at::matmul(backbone_.FinalNorm(hidden), head_weight_) + head_bias_;  // [N, T]
  const int64_t width = all.size(1);
  std::vector<int64_t> flat;
  for (size_t i = 0; i < sequences.size(); ++i)
    for (int p : positions[i])
      flat.push_back(static_cast<int64_t>(i) * width + width -
                     static_cast<int64_t>(sequences[i].size()) + p);
  at::Tensor index = at::tensor(flat, at::TensorOptions().dtype(at::kLong)).to(all.device());
  return all.reshape({-1}).index_select(0, index);
}

absl::StatusOr<std::vector<std::vector<double>>> RewardModel::ScoreAt(
    const std::vector<std::vector<int32_t>>& sequences,
    const std::vector<std::vector<int>>& positions) const {
  if (sequences.size() != positions.size())
    return absl::InvalidArgumentError("positions: one list per sequence required");
  for (size_t i = 0; i < sequences.size(); ++i) {
    if (sequences[i].empty())
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": empty"));
    for (int32_t id : sequences[i]) {
      if (id < 0 || id >= config().vocab_size)
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", i, ": token id ", id, " outside the vocabulary"));
    }
    for (int p : positions[i]) {
      if (p < 0 || p >= static_cast<int>(sequences[i].size()))
        return absl::InvalidArgumentError(absl::StrCat(
            "sequence ", i, ": position ", p, " outside its ", sequences[i].size(), " tokens"));
    }
    if (static_cast<int>(sequences[i].size()) > config().max_seq_len)
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": ", sequences[i].size(),
                                                     " tokens exceed max_seq_len ",
                                                     config().max_seq_len));
  }
  std::vector<std::vector<double>> scores(sequences.size());
  absl::Status status = CatchTorch("reward model forward", [&] {
    at::NoGradGuard no_grad;
    at::Tensor flat = ScorePositions(sequences, positions).to(at::kDouble).cpu().contiguous();
    const double* values = flat.data_ptr<double>();
    for (size_t i = 0; i < sequences.size(); ++i)
      for (size_t j = 0; j < positions[i].size(); ++j) scores[i].push_back(*values++);
  });
  if (!status.ok()) return status;
  for (size_t i = 0; i < scores.size(); ++i) {
    for (double s : scores[i]) {
      if (!std::isfinite(s))
        return absl::InternalError(
            absl::StrCat("reward model produced ", s, " for sequence ", i));
    }
  }
  return scores;
}

absl::Status RewardModel::Save(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", dir, ": ", ec.message()));
  const ModelConfig& c = config();
  if (hf_config_) {
    if (absl::Status s = SaveHfBackbone(dir + "/hf"); !s.ok()) return s;
  } else {
    std::ofstream out(dir + "/config.txt");
    out << c.vocab_size << " " << c.d_model << " " << c.n_layers << " " << c.n_heads << " "
        << c.n_kv_heads << " " << c.ffn_hidden << " " << c.max_seq_len << " "
        << c.tie_embeddings << " " << c.rope_theta << "\n";
    if (!out) return absl::InternalError(absl::StrCat("writing ", dir, "/config.txt"));
    if (absl::Status s = backbone_.Save(dir + "/backbone.pt"); !s.ok()) return s;
  }
  std::ofstream info(dir + "/info.txt");
  info << "objective " << ObjectiveName(objective_) << "\nstep_rule " << StepRuleName(step_rule_)
       << "\nmax_seq_len " << c.max_seq_len << "\n";
  if (!info) return absl::InternalError(absl::StrCat("writing ", dir, "/info.txt"));
  return CatchTorch("saving reward head", [&] {
    torch::serialize::OutputArchive archive;
    archive.write("head_weight", head_weight_.detach());
    archive.write("head_bias", head_bias_.detach());
    archive.save_to(dir + "/head.pt");
  });
}

absl::StatusOr<std::unique_ptr<RewardModel>> RewardModel::Load(const std::string& dir) {
  absl::StatusOr<Info> info = ReadInfo(dir);
  if (!info.ok()) return info.status();
  std::unique_ptr<RewardModel> model;
  if (fs::exists(dir + "/hf/config.json")) {
    absl::StatusOr<std::unique_ptr<RewardModel>> hf_model =
        FromHuggingFace(dir + "/hf", info->max_seq_len);
    if (!hf_model.ok()) return hf_model.status();
    model = *std::move(hf_model);
  } else {
    std::ifstream in(dir + "/config.txt");
    ModelConfig c;
    if (!(in >> c.vocab_size >> c.d_model >> c.n_layers >> c.n_heads >> c.n_kv_heads >>
          c.ffn_hidden >> c.max_seq_len >> c.tie_embeddings >> c.rope_theta))
      return absl::NotFoundError(absl::StrCat(dir, "/config.txt: missing or malformed"));
    if (absl::Status s = ValidateModelConfig(c); !s.ok())
      return absl::InvalidArgumentError(absl::StrCat(dir, "/config.txt: ", s.message()));
    model = std::make_unique<RewardModel>(c, 0);
    if (absl::Status s = model->backbone_.Load(dir + "/backbone.pt"); !s.ok()) return s;
  }
  model->objective_ = info->objective;
  model->step_rule_ = info->step_rule;
  const int64_t d = model->config().d_model;
  at::Tensor weight, bias;
  absl::Status s = CatchTorch("loading " + dir + "/head.pt", [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(dir + "/head.pt");
    archive.read("head_weight", weight);
    archive.read("head_bias", bias);
  });
  if (!s.ok()) return s;
  if (weight.numel() != d || bias.numel() != 1)
    return absl::InvalidArgumentError(absl::StrCat(dir, "/head.pt: wrong shape"));
  at::NoGradGuard no_grad;
  model->head_weight_.copy_(weight.view({d}));
  model->head_bias_.copy_(bias.view({1}));
  return model;
}

}  // namespace grpo
