#include "model/matmul_copies.h"

#include <ATen/ATen.h>

#include <utility>

#include "model/packed_matmul.h"

namespace grpo {

void MatmulCopies::Reset(std::vector<at::Tensor> sources, at::ScalarType dtype) {
  entries_.clear();
  dtype_ = dtype;
  if (!enabled()) return;
  for (at::Tensor& source : sources) entries_.push_back(Entry{std::move(source), {}, nullptr, -1});
}

void MatmulCopies::Refresh() {
  if (!enabled()) return;
  at::NoGradGuard no_grad;
  for (Entry& e : entries_) {
    const void* data = e.source.data_ptr();
    const int64_t version = static_cast<int64_t>(e.source._version());
    if (e.copy.defined() && data == e.data && version == e.version) continue;
    e.copy = dtype_ == at::kFloat ? PackForMatmul(e.source.detach())
                                  : e.source.detach().to(dtype_).contiguous();
    e.data = data;
    e.version = version;
    ++copies_made_;
  }
}

}  // namespace grpo
