// MatmulCopies: copies of the weights a CPU sampler multiplies by, in the form its products
// run fastest in (Transformer::SetInferenceMatmulDtype). At sampling shapes a float32
// matmul on the CPU is compute-bound: with a bfloat16 copy (where the CPU has AVX-512 BF16)
// LibTorch's bfloat16 matmul (oneDNN) does about twice the arithmetic per cycle; a float32
// copy is kept prepacked (packed_matmul.h) so that no product repacks its weight. Either
// way every prefill and decode step uses the copies without converting the weights again.
//
// A copy is made on first use and made again whenever its source changed since: its data
// moved (Transformer::To) or an in-place write bumped its version counter (ImportFlat,
// CopyFrom, Load, an optimizer step). So a copy is never stale, whoever changed the
// weights. The sources are handles to the owner's parameters; the owner keeps them alive.
// Not thread-safe, like the Transformer that owns it.
#ifndef GRPO_MODEL_MATMUL_COPIES_H_
#define GRPO_MODEL_MATMUL_COPIES_H_

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

namespace grpo {

class MatmulCopies {
 public:
  // Copies of `sources` in `dtype` from now on (float32: packed by PackForMatmul);
  // Undefined turns them off (and frees them).
  void Reset(std::vector<at::Tensor> sources, at::ScalarType dtype);
  bool enabled() const { return dtype_ != at::ScalarType::Undefined; }
  at::ScalarType dtype() const { return dtype_; }

  // Remakes the copies whose source changed; then Get(i) is the i-th source in dtype()
  // (packed, for float32).
  void Refresh();
  const at::Tensor& Get(size_t i) const { return entries_[i].copy; }

  // How many copies were (re)made so far: each costs a pass over its source.
  int64_t copies_made() const { return copies_made_; }

 private:
  struct Entry {
    at::Tensor source, copy;
    const void* data = nullptr;  // the source's storage when copied
    int64_t version = -1;        // and its version counter then
  };
  std::vector<Entry> entries_;
  at::ScalarType dtype_ = at::ScalarType::Undefined;
  int64_t copies_made_ = 0;
};

}  // namespace grpo

#endif  // GRPO_MODEL_MATMUL_COPIES_H_
