#include "learner/value_model.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "model/torch_status.h"
#include "rewards/reward_model.h"

namespace grpo {

ValueModel::ValueModel(const Transformer& policy)
    : backbone_(std::make_unique<Transformer>(policy.config(), Transformer::Uninitialized{})) {}

ValueModel::~ValueModel() = default;

// The policy's shape, placement and compute dtype, a zero head, and no weights yet.
absl::StatusOr<std::unique_ptr<ValueModel>> ValueModel::Placed(const Transformer& policy) {
  std::unique_ptr<ValueModel> v(new ValueModel(policy));
  const at::TensorOptions placement = policy.tensor_options();
  if (absl::Status s = v->backbone_->To(placement.device(), placement.dtype().toScalarType());
      !s.ok())
    return s;
  const at::ScalarType compute = policy.compute_dtype();
  if (absl::Status s = v->backbone_->SetComputeDtype(
          compute == placement.dtype().toScalarType() ? at::ScalarType::Undefined : compute);
      !s.ok())
    return s;
  v->backbone_->SetFusedAttention(policy.fused_attention());
  absl::Status s = CatchTorch("the critic's head", [&] {
    v->head_weight_ = at::zeros({policy.config().d_model}, placement).requires_grad_(true);
    v->head_bias_ = at::zeros({1}, placement).requires_grad_(true);
  });
  if (!s.ok()) return s;
  return v;
}

absl::StatusOr<std::unique_ptr<ValueModel>> ValueModel::FromPolicy(const Transformer& policy) {
  absl::StatusOr<std::unique_ptr<ValueModel>> v = Placed(policy);
  if (!v.ok()) return v.status();
  if (absl::Status s = (*v)->backbone_->CopyFrom(policy); !s.ok()) return s;
  return v;
}

absl::StatusOr<std::unique_ptr<ValueModel>> ValueModel::FromRewardModel(
    const std::string& dir, const Transformer& policy) {
  absl::StatusOr<std::unique_ptr<RewardModel>> rm = RewardModel::Load(dir);
  if (!rm.ok())
    return absl::Status(rm.status().code(),
                        absl::StrCat("ppo.critic_init ", dir, ": ", rm.status().message()));
  absl::StatusOr<std::unique_ptr<ValueModel>> v = Placed(policy);  // its weights: the RM's
  if (!v.ok()) return v.status();
  if (absl::Status s = (*v)->backbone_->CopyFrom((*rm)->backbone()); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(
        "ppo.critic_init ", dir, ": not of the policy's shape (", s.message(), ")"));
  absl::Status s = CatchTorch("the critic's head from " + dir, [&] {
    at::NoGradGuard no_grad;
    (*v)->head_weight_.copy_((*rm)->head_weight());
    (*v)->head_bias_.copy_((*rm)->head_bias());
  });
  if (!s.ok()) return s;
  return v;
}

at::Tensor ValueModel::Values(const TokenBatch& b) const {
  const int64_t p = b.prompt_length, m = b.completion_length;
  at::Tensor hidden =
      backbone_->Forward(b.tokens.narrow(1, 0, p + m - 1), b.is_pad.narrow(1, 0, p + m - 1));
  at::Tensor normed = backbone_->FinalNorm(hidden.narrow(1, p - 1, m));  // [N, M, d]
  at::Tensor values =
      at::matmul(normed.to(head_weight_.scalar_type()), head_weight_) + head_bias_;
  return values * b.mask.to(values.scalar_type());
}

std::vector<at::Tensor> ValueModel::parameters() const {
  // V reads the final norm, never the LM head: an untied one is held (the backbone's
  // layout) but gets no gradient, so it is no parameter of the critic's.
  std::vector<at::Tensor> params;
  for (const auto& [name, p] : backbone_->named_parameters())
    if (name != "lm_head") params.push_back(p);
  params.push_back(head_weight_);
  params.push_back(head_bias_);
  return params;
}

absl::Status ValueModel::Save(const std::string& dir) const {
  if (absl::Status s = backbone_->Save(dir + "/critic.pt"); !s.ok()) return s;
  return CatchTorch("saving " + dir + "/critic_head.pt", [&] {
    torch::serialize::OutputArchive archive;
    archive.write("head_weight", head_weight_.detach().cpu());
    archive.write("head_bias", head_bias_.detach().cpu());
    archive.save_to(dir + "/critic_head.pt");
  });
}

absl::Status ValueModel::Load(const std::string& dir) {
  at::Tensor weight, bias;
  absl::Status s = CatchTorch("loading " + dir + "/critic_head.pt", [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(dir + "/critic_head.pt");
    archive.read("head_weight", weight);
    archive.read("head_bias", bias);
  });
  if (!s.ok()) return s;
  if (weight.numel() != head_weight_.numel() || bias.numel() != 1)
    return absl::DataLossError(absl::StrCat(dir, "/critic_head.pt: wrong shape"));
  if (absl::Status b = backbone_->Load(dir + "/critic.pt"); !b.ok()) return b;
  return CatchTorch("placing the critic's head", [&] {
    at::NoGradGuard no_grad;
    head_weight_.copy_(weight.view_as(head_weight_));
    head_bias_.copy_(bias.view_as(head_bias_));
  });
}

}  // namespace grpo
