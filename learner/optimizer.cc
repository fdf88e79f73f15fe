#include "learner/optimizer.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "learner/learner_group.h"
#include "model/torch_status.h"

namespace grpo {
namespace {

// The key LibTorch's optimizers file a parameter's state under: the TensorImpl address,
// as a string in LibTorch 1.x and as the pointer itself in 2.x.
template <typename Key>
Key StateKey(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << static_cast<const void*>(p.unsafeGetTensorImpl());
    return s.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

using StateMap = std::decay_t<decltype(std::declval<torch::optim::AdamW&>().state())>;
using Key = StateMap::key_type;

torch::optim::AdamWParamState* StateOf(torch::optim::AdamW& adamw, const at::Tensor& p) {
  auto it = adamw.state().find(StateKey<Key>(p));
  return it == adamw.state().end()
             ? nullptr
             : static_cast<torch::optim::AdamWParamState*>(it->second.get());
}

// Largest parameters first, each to the rank holding the fewest elements so far (the
// lowest such rank on ties): the same table on every rank, balanced to within one tensor.
std::vector<int> AssignOwners(const std::vector<at::Tensor>& parameters, int world) {
  std::vector<size_t> order(parameters.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return parameters[a].numel() > parameters[b].numel();
  });
  std::vector<int64_t> load(world, 0);
  std::vector<int> owner(parameters.size(), 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[r] += parameters[i].numel();
  }
  return owner;
}

}  // namespace

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
  std::vector<at::Tensor> parameters;  // all of them, for clipping and zeroing
  LearnerGroup* shard = nullptr;       // set only with two or more ranks
  std::vector<int> owner;              // per parameter; all 0 unsharded
  std::vector<at::Tensor> owned;       // this rank's, in parameter order
  std::unique_ptr<torch::optim::AdamW> adamw;  // over `owned`
  torch::optim::AdamWOptions adamw_options{1e-3};
  std::unique_ptr<torch::optim::AdamW> gathered;  // rank 0, between GatherForSave and Save

  std::vector<at::Tensor> OwnedBy(int rank) const {
    std::vector<at::Tensor> out;
    for (size_t i = 0; i < parameters.size(); ++i)
      if (owner[i] == rank) out.push_back(parameters[i]);
    return out;
  }

  // Rank `root`'s tensors (the same shapes on every rank) copied into every rank's, through
  // one flat buffer.
  absl::Status BroadcastFlat(std::vector<at::Tensor> tensors, int root) {
    if (tensors.empty()) return absl::OkStatus();
    std::vector<at::Tensor> flat;
    absl::Status packed = CatchTorch("packing a broadcast", [&] {
      std::vector<at::Tensor> views;
      for (const at::Tensor& t : tensors) views.push_back(t.detach().reshape({-1}));
      flat.push_back(at::cat(views));
    });
    if (!packed.ok()) return packed;
    if (absl::Status s = shard->Broadcast(flat, root); !s.ok()) return s;
    return CatchTorch("unpacking a broadcast", [&] {
      at::NoGradGuard no_grad;
      int64_t offset = 0;
      for (at::Tensor& t : tensors) {
        t.detach().copy_(flat[0].narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    });
  }
};

Optimizer::Optimizer(std::vector<at::Tensor> parameters, const OptimizerOptions& o,
                     LearnerGroup* shard)
    : impl_(new Impl), options_(o) {
  impl_->parameters = std::move(parameters);
  impl_->adamw_options = torch::optim::AdamWOptions(o.learning_rate)
                             .betas({o.beta1, o.beta2})
                             .eps(o.epsilon)
                             .weight_decay(o.weight_decay);
  const int world = shard ? shard->world_size() : 1;
  if (world > 1) impl_->shard = shard;
  impl_->owner = world > 1 ? AssignOwners(impl_->parameters, world)
                           : std::vector<int>(impl_->parameters.size(), 0);
  impl_->owned = impl_->OwnedBy(shard && world > 1 ? shard->rank() : 0);
  impl_->adamw = std::make_unique<torch::optim::AdamW>(impl_->owned, impl_->adamw_options);
}

Optimizer::~Optimizer() = default;

bool Optimizer::sharded() const { return impl_->shard != nullptr; }

int64_t Optimizer::owned_parameter_elements() const {
  int64_t n = 0;
  for (const at::Tensor& p : impl_->owned) n += p.numel();
  return n;
}

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
    // Every rank holds the summed gradients, so the norm (and the decision to skip) is the
    // same everywhere, sharded or not.
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
  if (impl_->shard) {
    for (int r = 0; r < impl_->shard->world_size(); ++r)
      if (absl::Status s = impl_->BroadcastFlat(impl_->OwnedBy(r), r); !s.ok()) return s;
  }
  ++updates_;
  return norm;
}

absl::Status Optimizer::GatherForSave() {
  if (!impl_->shard) return absl::OkStatus();
  // Each owner's moments (and its step count, 0 before the first update) travel to every
  // rank in turn; rank 0 files them in a whole-model AdamW, which Save writes: the same
  // file an unsharded run writes.
  LearnerGroup& group = *impl_->shard;
  std::unique_ptr<torch::optim::AdamW> whole;
  if (group.rank() == 0) {
    whole = std::make_unique<torch::optim::AdamW>(impl_->parameters, impl_->adamw_options);
  }
  for (int r = 0; r < group.world_size(); ++r) {
    const std::vector<at::Tensor> params = impl_->OwnedBy(r);
    std::vector<at::Tensor> step{at::zeros({1}, at::kLong)};
    absl::Status counted = CatchTorch("gathering optimizer state", [&] {
      if (group.rank() == r && !params.empty())
        if (const auto* st = StateOf(*impl_->adamw, params[0])) step[0].fill_(st->step());
    });
    if (!counted.ok()) return counted;
    if (absl::Status s = group.Broadcast(step, r); !s.ok()) return s;
    const int64_t steps = step[0].item<int64_t>();
    if (steps == 0) continue;  // no update yet: AdamW keeps no state
    std::vector<at::Tensor> moments;
    for (const at::Tensor& p : params) {
      const auto* st = group.rank() == r ? StateOf(*impl_->adamw, p) : nullptr;
      moments.push_back(st ? st->exp_avg() : at::zeros_like(p.detach()));
      moments.push_back(st ? st->exp_avg_sq() : at::zeros_like(p.detach()));
    }
    if (absl::Status s = impl_->BroadcastFlat(moments, r); !s.ok()) return s;
    if (whole) {
      for (size_t i = 0; i < params.size(); ++i) {
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(steps);
        st->exp_avg(moments[2 * i]);
        st->exp_avg_sq(moments[2 * i + 1]);
        whole->state()[StateKey<Key>(params[i])] = std::move(st);
      }
    }
  }
  impl_->gathered = std::move(whole);
  return absl::OkStatus();
}

absl::Status Optimizer::Save(const std::string& path) {
  torch::optim::AdamW* state = impl_->adamw.get();
  if (impl_->shard) {
    if (impl_->shard->rank() != 0) return absl::OkStatus();
    if (!impl_->gathered)
      return absl::FailedPreconditionError("sharded optimizer: Save without GatherForSave");
    state = impl_->gathered.get();
  }
  absl::Status saved = CatchTorch("saving optimizer to " + path, [&] {
    torch::serialize::OutputArchive archive;
    state->save(archive);
    archive.write("updates", at::tensor(static_cast<int64_t>(updates_)));
    archive.save_to(path);
  });
  impl_->gathered.reset();
  return saved;
}

absl::Status Optimizer::Load(const std::string& path) {
  return CatchTorch("loading optimizer from " + path, [&] {
    torch::serialize::InputArchive archive;
    // Onto the CPU whatever device wrote it: a GPU's file resumes on a CPU host, and the
    // ranks of a sharded optimizer do not all put the whole file on the first GPU.
    archive.load_from(path, at::Device(at::kCPU));
    at::Tensor updates;
    archive.read("updates", updates);
    if (!impl_->shard) {
      impl_->adamw->load(archive);
    } else {
      // The whole file into a whole-model AdamW, then this rank's share moved over.
      torch::optim::AdamW whole(impl_->parameters, impl_->adamw_options);
      whole.load(archive);
      auto loaded = std::make_unique<torch::optim::AdamW>(impl_->owned, impl_->adamw_options);
      for (const at::Tensor& p : impl_->owned) {
        auto it = whole.state().find(StateKey<Key>(p));
        if (it != whole.state().end()) loaded->state()[it->first] = std::move(it->second);
      }
      impl_->adamw = std::move(loaded);
    }
    // The moments belong beside their parameters.
    for (const at::Tensor& p : impl_->owned) {
      if (auto* st = StateOf(*impl_->adamw, p); st && st->exp_avg().device() != p.device()) {
        st->exp_avg(st->exp_avg().to(p.device()));
        st->exp_avg_sq(st->exp_avg_sq().to(p.device()));
      }
    }
    updates_ = updates.item<int64_t>();
  });
}

}  // namespace grpo
