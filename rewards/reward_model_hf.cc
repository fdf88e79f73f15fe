// The Hugging Face half of RewardModel (rewards/reward_model.h): a checkpoint directory as
// the backbone, with its tokenizer. Its own file so that a build of the trainer alone
// (tools/cuda_check) can leave the HF libraries out.
#include "rewards/reward_model.h"

#include <filesystem>

#include "hf/hf_checkpoint.h"
#include "hf/job_model.h"

namespace grpo {

absl::StatusOr<std::unique_ptr<RewardModel>> RewardModel::FromHuggingFace(const std::string& hf_dir,
                                                                          int max_seq_len) {
  v1::JobSpec spec;
  spec.mutable_model()->set_hf_dir(hf_dir);
  spec.mutable_model()->set_max_seq_len(max_seq_len);
  absl::StatusOr<hf::JobModel> job_model = hf::LoadJobModel(spec);
  if (!job_model.ok()) return job_model.status();
  std::unique_ptr<RewardModel> model(
      new RewardModel(job_model->config, Transformer::Uninitialized{}));
  if (absl::Status s = hf::LoadHfWeights(hf_dir, model->backbone_); !s.ok()) return s;
  model->tokenizer_ = std::move(job_model->tokenizer);
  model->hf_config_ = job_model->hf;
  model->hf_files_ = hf_dir;
  return model;
}

absl::Status RewardModel::SaveHfBackbone(const std::string& dir) const {
  hf::SaveOptions options;
  // Loaded from this very directory: its tokenizer files are already there.
  std::error_code ec;
  if (!std::filesystem::equivalent(hf_files_, dir, ec)) options.copy_from = hf_files_;
  return hf::SaveHfModel(backbone_, *hf_config_, dir, options);
}

}  // namespace grpo
