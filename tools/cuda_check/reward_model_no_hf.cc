// The trainer-only GPU build (torch_env.sh) links this instead of
// rewards/reward_model_hf.cc, which needs the Hugging Face and tokenizer libraries (ICU,
// the job spec): reward models on a Hugging Face backbone are refused there.
#include "rewards/reward_model.h"

#include "absl/strings/str_cat.h"

namespace grpo {

absl::StatusOr<std::unique_ptr<RewardModel>> RewardModel::FromHuggingFace(const std::string& hf_dir,
                                                                          int) {
  return absl::UnimplementedError(absl::StrCat(
      hf_dir, ": this build has no Hugging Face reward models (tools/cuda_check)"));
}

absl::Status RewardModel::SaveHfBackbone(const std::string& dir) const {
  return absl::UnimplementedError(absl::StrCat(dir, ": no Hugging Face reward models here"));
}

}  // namespace grpo
