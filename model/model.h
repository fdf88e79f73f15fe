// Transformer: the Llama-style decoder policy (docs/design.md §4): token embedding, RMSNorm,
// rotary position embeddings (rotate-half convention, as Llama/Qwen2 checkpoints), grouped-
// query attention with fused q/k/v, SwiGLU MLP with fused gate/up, optional tied embeddings.
//
// Parameters are plain tensors owned by the Transformer; autograd records through Forward
// unless the caller holds a NoGradGuard/InferenceMode. Not thread-safe: one owner at a time.
//
// Padding convention: prompts are left-padded and completions right-padded inside one
// [N, T] batch; positions are slot indices. Rotary attention only sees relative distances,
// so masking padded keys gives each row the same result as running it unpadded.
#ifndef GRPO_MODEL_MODEL_H_
#define GRPO_MODEL_MODEL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/weights.pb.h"
#include "model/model_config.h"

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}  // namespace torch::serialize

namespace grpo {

class Transformer;

// Where a model runs and in what dtype (Transformer::To).
struct Placement {
  c10::Device device;
  at::ScalarType dtype;
};
// Flag values: "cpu" or "cuda[:N]", and "float32", "bfloat16" or "float16". INVALID_ARGUMENT
// naming a bad value; FAILED_PRECONDITION for a CUDA device this process cannot use (none
// visible, or a CPU-only LibTorch).
absl::StatusOr<Placement> ParsePlacement(const std::string& device, const std::string& dtype);

// The flag value of Transformer::SetInferenceMatmulDtype: "float32" or "bfloat16".
// INVALID_ARGUMENT naming a bad value.
absl::StatusOr<at::ScalarType> ParseMatmulDtype(const std::string& name);

// A sampler's --matmul_dtype flag for a policy placed at `placement`: its dtype, or
// INVALID_ARGUMENT naming --matmul_dtype for a bad value, or for bfloat16 on a policy that
// is not float32 on the CPU (a GPU samples in its --dtype).
absl::StatusOr<at::ScalarType> CheckSamplerMatmuls(const std::string& matmul_dtype,
                                                   const Placement& placement);

// The --matmul_dtype and --packed_matmuls flags applied to a placed `model`
// (SetInferenceMatmulDtype), after CheckSamplerMatmuls. Packing is for a CPU float32 model
// and is ignored elsewhere.
absl::Status SetSamplerMatmuls(Transformer& model, const std::string& matmul_dtype,
                               bool packed_matmuls);

// Preallocated key/value cache for batched decoding: [N, n_kv_heads, capacity, head_dim]
// per layer, plus which slots hold padding. Forward appends to it. `options`: the
// model's device and dtype (Transformer::tensor_options()); float32 on the CPU by default.
// `zeroed`: every slot starts at 0 rather than unset, as DecodeAt needs (it reads the
// slots it masks, and 0 × garbage may be NaN).
class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t batch, int64_t capacity,
          const at::TensorOptions& options = at::TensorOptions(), bool zeroed = false);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // The cache's rows become rows[0], rows[1], ... of the current ones (int64 indices on the
  // cache's device; repeats allowed): a prompt prefilled once is copied to each of its
  // samples, and finished sequences leave the batch.
  void SelectRows(const at::Tensor& rows);
  // The same in place for distinct `rows` (int64 [R] on the cache's device): row rows[j]
  // becomes row j for j < R, rows past R are left as they were, and every tensor keeps its
  // storage (a captured CUDA graph reads these addresses).
  void CompactRows(const at::Tensor& rows);
  // Rows with equal `groups` (int64 [N], any device) hold the same keys, values and
  // padding in slots [0, length): a prompt prefilled once and copied to its samples by
  // SelectRows. The CPU decode step then reads those slots from one row of each group
  // (DecodeAttention's prefix_rows), so a long prompt is read once per step, not once per
  // sample. SelectRows and CompactRows carry the groups along; decoding writes only past
  // them. Throws c10::Error on a size mismatch or a length past the filled slots.
  void SharePrefix(const at::Tensor& groups, int64_t length);

 private:
  friend class Transformer;
  // prefix_rows_ = each row's first row among those with its group id (int64 [N], CPU).
  void FirstRowOfEachGroup(const at::Tensor& groups);

  std::vector<at::Tensor> keys_, values_;
  at::Tensor is_pad_;  // bool [N, capacity]
  // SharePrefix: the row each row reads its prefix from, int64 [N] on the CPU (undefined:
  // nothing shared); it also names the row's group.
  at::Tensor prefix_rows_;
  int64_t prefix_length_ = 0;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

class Transformer {
 public:
  // Parameters initialised from `seed` (normal, std 0.02; residual outputs scaled down).
  Transformer(const ModelConfig& config, uint64_t seed);
  // Parameters allocated but not initialised (norms excepted), for a caller that loads
  // every one of them next: drawing 0.5B random numbers costs seconds.
  struct Uninitialized {};
  Transformer(const ModelConfig& config, Uninitialized);
  ~Transformer();
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const;

  // Draws every matrix again as Transformer(config, seed) does (normal, std 0.02, residual
  // outputs scaled down), in place, on the parameters' device and in their dtype; norms
  // and biases stay as they are. On the CPU in float32 the weights are the constructor's
  // for that seed; elsewhere the device's generator gives others. For benches of large
  // shapes: build Uninitialized, move, then draw on the GPU, where the constructor would
  // draw on one CPU core (a minute or more for billions of parameters).
  absl::Status Randomize(uint64_t seed);

  // The same from flag values (ParsePlacement).
  absl::Status To(const std::string& device, const std::string& dtype);
  // Moves every parameter and table to `device` in `dtype` (float32, bfloat16 or float16;
  // float64 for gradient checks and tests whose comparisons must be well-conditioned) in
  // place: handles from named_parameters() stay valid. For inference there (decoding on a
  // GPU in the checkpoint's dtype), and for training on a device. The fused CPU
  // decode kernels are used for CPU float32 only; elsewhere the general path runs.
  absl::Status To(c10::Device device, at::ScalarType dtype);
  // The device and dtype of the parameters, for inputs.
  at::TensorOptions tensor_options() const;
  // The same for a KvCache: bfloat16 on a CPU float32 model with bfloat16 inference
  // matmuls (SetInferenceMatmulDtype: half the bytes each decode step reads), else
  // tensor_options().
  at::TensorOptions cache_options() const;

  // Mixed precision: Forward computes in `dtype` (bfloat16 on a float32 model: the usual
  // recipe, docs/design.md §9) while the parameters, their gradients and the optimizer
  // state stay in the parameters' dtype. Each weight is cast where it is used, so autograd
  // carries the gradients back to the master weights. Undefined = the parameters' dtype.
  absl::Status SetComputeDtype(at::ScalarType dtype);
  at::ScalarType compute_dtype() const;
  // Sampling on the CPU with bfloat16 matmuls: without autograd, a CPU float32 model's
  // forward (prefill and the fused decode step) multiplies by bfloat16 copies of its four
  // weights per layer, and Logits by one of the LM head; each product is accumulated in
  // float32 and returned in float32, and a KvCache made with cache_options() holds
  // bfloat16 keys and values; norms, rotary, attention arithmetic and the residual stream
  // stay float32. On a CPU with AVX-512 BF16 the products run about twice as fast and the
  // cache reads take half the bytes (README, Benchmark); the copies cost 2 bytes a
  // parameter. The sampler's log-probs are then those of this mixed computation, not of
  // the float32 model (what the learner's recomputed old log-probs and mismatch metrics
  // are for). With autograd on (a learner) the float32 weights are used. The copies are
  // remade whenever the weights change (matmul_copies.h). float32 (the default) turns them
  // off and frees them, or with `packed` keeps float32 copies prepacked for the CPU's
  // products instead (packed_matmul.h: the same precision, ~1.25x faster products at
  // decode shapes, one more float32 copy of the matmul weights; only where
  // PackedMatmulSupported(), else off). Other dtypes are INVALID_ARGUMENT.
  absl::Status SetInferenceMatmulDtype(at::ScalarType dtype, bool packed = false);
  at::ScalarType inference_matmul_dtype() const;
  bool packed_matmuls() const;  // float32 products with prepacked copies
  int64_t matmul_copies_made() const;  // how many weight copies were (re)made so far

  // What the log-probs are computed in: sampling (no autograd) takes the bfloat16 copies
  // above on a CPU float32 model (FLOAT32_BF16_MATMULS), else the compute dtype; training
  // always the compute dtype. A worker stamps its groups with the first, and the learner
  // recomputes π_old for groups whose stamp is not its second (job.proto, OLD_LOGPROBS_AUTO).
  v1::ComputePrecision sampling_precision() const;
  v1::ComputePrecision training_precision() const;

  // Activation checkpointing: with autograd on and no cache, each decoder layer keeps only
  // its input and is run again in the backward pass (the gradients are the same).
  void SetActivationCheckpointing(bool enabled);

  // Attention through LibTorch's fused scaled_dot_product_attention (flash or memory-
  // efficient kernels on a GPU: no [N, heads, T, S] scores tensor is held) instead of the
  // explicit scores, softmax and product. The same function of the inputs, up to rounding.
  // On by default where LibTorch has the public operator (2.0 and later); LibTorch 1.13's
  // private one (a composite of the same explicit ops) serves the CPU tests. The CPU's
  // eager decode step keeps its own kernel (decode_attention.h) either way.
  void SetFusedAttention(bool enabled);
  bool fused_attention() const;
  static bool FusedAttentionByDefault();

  // ids: int64 [N, T]; is_pad: bool [N, T] or undefined (no padding). With a cache the
  // tokens go at slots cache->length() .. +T and the cache grows by T. Returns the final
  // hidden states [N, T, d_model] (before the final norm); see Logits.
  at::Tensor Forward(const at::Tensor& ids, const at::Tensor& is_pad,
                     KvCache* cache = nullptr) const;
  // One decode step with fixed shapes and no read back to the host (static_decode.h): ids
  // and is_pad [N, 1] go to slot `slot` (int64 [1] on the model's device) of the first N
  // rows of `cache`, and each row attends over every slot up to it that is not padding.
  // The cache's length() is not used or changed. Returns [N, 1, d_model] as Forward.
  at::Tensor DecodeAt(const at::Tensor& ids, const at::Tensor& is_pad, const at::Tensor& slot,
                      KvCache* cache) const;
  // Final RMSNorm and LM head: [..., d_model] -> [..., vocab_size].
  at::Tensor Logits(const at::Tensor& hidden) const;
  // The final RMSNorm alone (what a scalar head reads, see reward_model.h).
  at::Tensor FinalNorm(const at::Tensor& hidden) const;
  // The LM head's weight [vocab_size, d_model]: the embedding when they are tied.
  const at::Tensor& LmHeadWeight() const;

  // Every trainable tensor, in a fixed order, with stable names.
  const std::vector<std::pair<std::string, at::Tensor>>& named_parameters() const;
  std::vector<at::Tensor> parameters() const;

  // Copies another model's parameters (same config) without recording autograd.
  absl::Status CopyFrom(const Transformer& other);

  // A single-file archive of all parameters, by name. Load checks names and shapes and
  // leaves the model unchanged on any error.
  absl::Status Save(const std::string& path) const;
  absl::Status Load(const std::string& path);
  // Flat weights (model/flat_weights.h), what the learner streams to rollout workers: the
  // parameters in `dtype` on the host, one copy each. ImportFlat copies every tensor of
  // the payload straight into its parameter (converting dtype and device on the way); it
  // checks names, shapes and finiteness first, so a bad payload changes nothing.
  // ExportFlat builds the payload in `reuse`'s memory (LayOutFlatWeights).
  absl::StatusOr<std::string> ExportFlat(v1::WeightDtype dtype, std::string reuse = {}) const;
  absl::Status ImportFlat(std::string_view payload);
  // The dtype a worker asks weights in: bfloat16 for a bfloat16 model, else float32.
  v1::WeightDtype transfer_dtype() const;

 private:
  Transformer(const ModelConfig& config, uint64_t seed, bool random);
  // Whether a product on these activations takes the SetInferenceMatmulDtype copies.
  bool UsesMatmulCopies(const at::Tensor& activations) const;
  torch::serialize::OutputArchive Archive() const;
  absl::Status LoadArchive(const std::string& what,
                           const std::function<void(torch::serialize::InputArchive&)>& open);
  at::Tensor DecodeStep(const at::Tensor& ids, const at::Tensor& is_pad, KvCache* cache) const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace grpo

#endif  // GRPO_MODEL_MODEL_H_
