#include "rewards/reward_model.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "model/sampler.h"
#include "model/torch_status.h"

namespace grpo {

RewardModel::RewardModel(const ModelConfig& config, uint64_t seed) : backbone_(config, seed) {
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

at::Tensor RewardModel::ScoreLast(const std::vector<std::vector<int32_t>>& sequences) const {
  // Left padding puts every sequence's last token in the last column.
  absl::StatusOr<PromptBatch> batch = MakePromptBatch(sequences, /*pad_token=*/0);
  TORCH_CHECK(batch.ok(), std::string(batch.status().message()));
  at::Tensor hidden = backbone_.Forward(batch->tokens, batch->is_pad);
  at::Tensor last = backbone_.FinalNorm(hidden.select(1, hidden.size(1) - 1));  // [N, d]
  return at::matmul(last, head_weight_) + head_bias_;
}

absl::StatusOr<std::vector<std::vector<double>>> RewardModel::ScoreAt(
    const std::vector<std::vector<int32_t>>& sequences,
    const std::vector<std::vector<int>>& positions) const {
  if (sequences.size() != positions.size())
    return absl::InvalidArgumentError("positions: one list per sequence required");
  for (size_t i = 0; i < sequences.size(); ++i) {
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
  absl::StatusOr<PromptBatch> batch = MakePromptBatch(sequences, /*pad_token=*/0);
  if (!batch.ok()) return batch.status();
  std::vector<std::vector<double>> scores(sequences.size());
  absl::Status status = CatchTorch("reward model forward", [&] {
    at::NoGradGuard no_grad;
    at::Tensor hidden = backbone_.Forward(batch->tokens, batch->is_pad);        // [N, T, d]
    at::Tensor all = at::matmul(backbone_.FinalNorm(hidden), head_weight_) + head_bias_;
    all = all.contiguous();                                                     // [N, T]
    const int64_t width = all.size(1);
    auto a = all.accessor<float, 2>();
    for (size_t i = 0; i < sequences.size(); ++i) {
      const int64_t offset = width - static_cast<int64_t>(sequences[i].size());
      for (int p : positions[i]) scores[i].push_back(a[i][offset + p]);
    }
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
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", dir, ": ", ec.message()));
  const ModelConfig& c = config();
  std::ofstream out(dir + "/config.txt");
  out << c.vocab_size << " " << c.d_model << " " << c.n_layers << " " << c.n_heads << " "
      << c.n_kv_heads << " " << c.ffn_hidden << " " << c.max_seq_len << " "
      << c.tie_embeddings << " " << c.rope_theta << "\n";
  if (!out) return absl::InternalError(absl::StrCat("writing ", dir, "/config.txt"));
  if (absl::Status s = backbone_.Save(dir + "/backbone.pt"); !s.ok()) return s;
  return CatchTorch("saving reward head", [&] {
    torch::serialize::OutputArchive archive;
    archive.write("head_weight", head_weight_.detach());
    archive.write("head_bias", head_bias_.detach());
    archive.save_to(dir + "/head.pt");
  });
}

absl::StatusOr<std::unique_ptr<RewardModel>> RewardModel::Load(const std::string& dir) {
  std::ifstream in(dir + "/config.txt");
  ModelConfig c;
  if (!(in >> c.vocab_size >> c.d_model >> c.n_layers >> c.n_heads >> c.n_kv_heads >>
        c.ffn_hidden >> c.max_seq_len >> c.tie_embeddings >> c.rope_theta))
    return absl::NotFoundError(absl::StrCat(dir, "/config.txt: missing or malformed"));
  if (absl::Status s = ValidateModelConfig(c); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(dir, "/config.txt: ", s.message()));
  auto model = std::make_unique<RewardModel>(c, 0);
  if (absl::Status s = model->backbone_.Load(dir + "/backbone.pt"); !s.ok()) return s;
  at::Tensor weight, bias;
  absl::Status s = CatchTorch("loading " + dir + "/head.pt", [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(dir + "/head.pt");
    archive.read("head_weight", weight);
    archive.read("head_bias", bias);
  });
  if (!s.ok()) return s;
  if (weight.numel() != c.d_model || bias.numel() != 1)
    return absl::InvalidArgumentError(absl::StrCat(dir, "/head.pt: wrong shape"));
  at::NoGradGuard no_grad;
  model->head_weight_.copy_(weight.view({c.d_model}));
  model->head_bias_.copy_(bias.view({1}));
  return model;
}

}  // namespace grpo
