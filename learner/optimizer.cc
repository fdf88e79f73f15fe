#include "learner/optimizer.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "model/torch_status.h"

namespace grpo {

OptimizerOptions OptimizerOptionsFromSpec(const v1::OptimizerSpec& s) {
  OptimizerOptions o;
  o.learning_rate = s.learning_rate();
  o.weight_decay = s.weight_decay();
  o.beta1 = s.beta1();
  o.beta2 = s.beta2();
  o.epsilon = s.epsilon();
  o.max_grad_norm = s.max_grad_norm();
  o.warmup_steps = s.warmup_steps();
  return o;
}

struct Optimizer::Impl {
  std::vector<at::Tensor> parameters;
  std::unique_ptr<torch::optim::AdamW> adamw;
};

Optimizer::Optimizer(std::vector<at::Tensor> parameters, const OptimizerOptions& o)
    : impl_(new Impl), options_(o) {
  impl_->parameters = std::move(parameters);
  impl_->adamw = std::make_unique<torch::optim::AdamW>(
      impl_->parameters, torch::optim::AdamWOptions(o.learning_rate)
                             .betas({o.beta1, o.beta2})
                             .eps(o.epsilon)
                             .weight_decay(o.weight_decay));
}

Optimizer::~Optimizer() = default;

void Optimizer::ZeroGrad() {
  for (at::Tensor& p : impl_->parameters) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

double Optimizer::learning_rate() const {
  if (options_.warmup_steps <= 0 || updates_ >= options_.warmup_steps)
    return options_.learning_rate;
  return options_.learning_rate * (updates_ + 1) / options_.warmup_steps;
}

absl::StatusOr<double> Optimizer::Step() {
  double norm = 0;
  absl::Status status = CatchTorch("optimizer step", [&] {
    const double max_norm = options_.max_grad_norm > 0
                                ? options_.max_grad_norm
                                : std::numeric_limits<double>::infinity();
    norm = torch::nn::utils::clip_grad_norm_(impl_->parameters, max_norm);
    if (!std::isfinite(norm)) return;
    const double lr = learning_rate();
    for (auto& group : impl_->adamw->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    impl_->adamw->step();
  });
  if (!status.ok()) return status;
  if (!std::isfinite(norm)) {
    ZeroGrad();
    return absl::FailedPreconditionError(
        absl::StrCat("gradient norm is ", norm, "; update skipped, weights unchanged"));
  }
  ++updates_;
  return norm;
}

absl::Status Optimizer::Save(const std::string& path) const {
  return CatchTorch("saving optimizer to " + path, [&] {
    torch::serialize::OutputArchive archive;
    impl_->adamw->save(archive);
    archive.write("updates", at::tensor(static_cast<int64_t>(updates_)));
    archive.save_to(path);
  });
}

absl::Status Optimizer::Load(const std::string& path) {
  return CatchTorch("loading optimizer from " + path, [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    at::Tensor updates;
    archive.read("updates", updates);
    impl_->adamw->load(archive);
    updates_ = updates.item<int64_t>();
  });
}

}  // namespace grpo
