#include "model/model.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "model/decode_attention.h"
#include "model/flat_weights.h"
#include "model/decode_kernels.h"
#include "model/matmul_copies.h"
#include "model/packed_matmul.h"
#include "model/torch_status.h"

#ifdef GRPO_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace grpo {
namespace {

struct Layer {
  at::Tensor attn_norm;  // [d]
  at::Tensor wqkv;       // [(H + 2K) * hd, d]
  at::Tensor bqkv;       // [(H + 2K) * hd]; undefined without config.qkv_bias
  at::Tensor q_norm;     // [hd]; undefined without config.qk_norm
  at::Tensor k_norm;     // [hd]
  at::Tensor wo;         // [d, H * hd]
  at::Tensor mlp_norm;   // [d]
  at::Tensor w_gate_up;  // [2F, d]
  at::Tensor w_down;     // [d, F]
};

bool IsHalfPrecision(const at::Tensor& x) {
  return x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
}

// A parameter in the compute dtype. Mixed precision casts at each use (as autocast does), so
// the float32 master weights receive the gradients through the cast; otherwise a no-op.
at::Tensor Cast(const at::Tensor& t, at::ScalarType compute) {
  return !t.defined() || t.scalar_type() == compute ? t : t.to(compute);
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor w = Cast(weight, x.scalar_type());
  if (!IsHalfPrecision(x)) {  // float32, or float64 in the gradient checks
    return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * w;
  }
  // Half-precision models normalise in float32, as their reference implementations do.
  const at::Tensor wide = x.to(at::kFloat);
  return (wide * at::rsqrt(wide.pow(2).mean(-1, /*keepdim=*/true) + eps)).to(x.scalar_type()) *
         w;
}

// x: [N, heads, T, hd]; cos/sin: [T, hd] with each frequency repeated in both halves.
at::Tensor Rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// The Qwen3 q/k norms: each head of q and of k RMS-normalised over its hd values.
// qkv: [..., (H + 2K) * hd]; returns the same layout, v untouched.
at::Tensor NormQueryKeyHeads(const at::Tensor& qkv, const Layer& l, const ModelConfig& c) {
  const int64_t hd = c.head_dim(), h = c.n_heads, k = c.n_kv_heads;
  auto heads = [&](int64_t start, int64_t count) {
    std::vector<int64_t> shape = qkv.sizes().vec();
    shape.back() = count;
    shape.push_back(hd);
    return qkv.narrow(-1, start * hd, count * hd).reshape(shape);
  };
  at::Tensor q = RmsNorm(heads(0, h), l.q_norm, c.norm_eps);
  at::Tensor key = RmsNorm(heads(h, k), l.k_norm, c.norm_eps);
  std::vector<int64_t> flat = qkv.sizes().vec();
  flat.back() = -1;
  return at::cat({q.reshape(flat), key.reshape(flat), qkv.narrow(-1, (h + k) * hd, k * hd)}, -1);
}

// Rotary inverse frequencies [hd / 2] in float64, with Llama 3's scaling when configured:
// low frequencies (wavelengths past the original context) divided by the factor, high
// ones kept, and a smooth blend between.
at::Tensor RotaryInverseFrequencies(const ModelConfig& c) {
  const int64_t hd = c.head_dim();
  at::Tensor inv_freq =
      1.0 / at::pow(c.rope_theta, at::arange(0, hd, 2, at::kDouble) / static_cast<double>(hd));
  if (c.rope_scaling_factor == 0) return inv_freq;
  const double factor = c.rope_scaling_factor, low = c.rope_low_freq_factor,
               high = c.rope_high_freq_factor, context = c.rope_original_max_position;
  at::Tensor wavelength = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelength > context / low, inv_freq / factor, inv_freq);
  at::Tensor smooth = (context / wavelength - low) / (high - low);
  at::Tensor blended = (1 - smooth) * scaled / factor + smooth * scaled;
  at::Tensor medium = (wavelength >= context / high) & (wavelength <= context / low);
  return at::where(medium, blended, scaled);
}

}  // namespace

KvCache::KvCache(const ModelConfig& c, int64_t batch, int64_t capacity,
                 const at::TensorOptions& options, bool zeroed)
    : capacity_(capacity) {
  const std::vector<int64_t> shape{batch, c.n_kv_heads, capacity, c.head_dim()};
  for (int i = 0; i < c.n_layers; ++i) {
    keys_.push_back(zeroed ? at::zeros(shape, options) : at::empty(shape, options));
    values_.push_back(zeroed ? at::zeros(shape, options) : at::empty(shape, options));
  }
  is_pad_ = at::zeros({batch, capacity}, options.dtype(at::kBool));
}

void KvCache::SelectRows(const at::Tensor& rows) {
  for (size_t i = 0; i < keys_.size(); ++i) {
    keys_[i] = keys_[i].index_select(0, rows);
    values_[i] = values_[i].index_select(0, rows);
  }
  is_pad_ = is_pad_.index_select(0, rows);
  // A row's source row names its group: the groups the kept rows carry over.
  if (prefix_rows_.defined()) FirstRowOfEachGroup(prefix_rows_.index_select(0, rows.to(at::kCPU)));
}

void KvCache::CompactRows(const at::Tensor& rows) {
  const int64_t n = rows.size(0);
  for (size_t i = 0; i < keys_.size(); ++i) {
    keys_[i].narrow(0, 0, n).copy_(keys_[i].index_select(0, rows));
    values_[i].narrow(0, 0, n).copy_(values_[i].index_select(0, rows));
  }
  is_pad_.narrow(0, 0, n).copy_(is_pad_.index_select(0, rows));
  if (prefix_rows_.defined()) {
    at::Tensor groups = prefix_rows_.clone();
    groups.narrow(0, 0, n).copy_(prefix_rows_.index_select(0, rows.to(at::kCPU)));
    FirstRowOfEachGroup(groups);
  }
}

void KvCache::SharePrefix(const at::Tensor& groups, int64_t length) {
  TORCH_CHECK(groups.dim() == 1 && groups.size(0) == is_pad_.size(0),
              "KvCache::SharePrefix: groups must be [", is_pad_.size(0), "], got ",
              groups.sizes());
  // Only filled slots: decoding writes each row's own slot at length_ and later.
  TORCH_CHECK(length >= 0 && length <= length_, "KvCache::SharePrefix: length ", length,
              " outside the filled slots [0, ", length_, "]");
  prefix_length_ = length;
  FirstRowOfEachGroup(groups.to(at::kCPU, at::kLong).contiguous());
}

void KvCache::FirstRowOfEachGroup(const at::Tensor& groups) {
  const int64_t n = groups.size(0);
  const int64_t* group = groups.data_ptr<int64_t>();
  at::Tensor rows = at::empty({n}, at::kLong);
  int64_t* first = rows.data_ptr<int64_t>();
  std::map<int64_t, int64_t> first_of;
  for (int64_t i = 0; i < n; ++i) first[i] = first_of.emplace(group[i], i).first->second;
  prefix_rows_ = rows;
}

struct Transformer::Impl {
  ModelConfig config;
  at::Tensor embedding;   // [V, d]
  at::Tensor final_norm;  // [d]
  at::Tensor lm_head;     // [V, d]; undefined when tied to the embedding
  std::vector<Layer> layers;
  std::vector<std::pair<std::string, at::Tensor>> named;
  // Beside `named`: the standard deviation each is drawn with; 0 for those set once, to
  // one (norms) or zero (biases).
  std::vector<double> init_std;
  at::Tensor cos, sin;  // [max_seq_len, hd]
  at::ScalarType compute_dtype = at::ScalarType::Undefined;  // = the parameters'
  bool checkpoint_layers = false;
  bool fused_attention = Transformer::FusedAttentionByDefault();
  // SetInferenceMatmulDtype: per layer wqkv, wo, w_gate_up, w_down, then the LM head.
  MatmulCopies matmul_copies;

  // Every matrix drawn from `generator`, in the order of `named`, in place.
  void Draw(at::Generator generator) {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < named.size(); ++i)
      if (init_std[i] > 0) named[i].second.normal_(0.0, init_std[i], generator);
  }
};

namespace {

constexpr size_t kCopiesPerLayer = 4;

// One layer's low-precision weight copies (SetInferenceMatmulDtype); undefined when off.
struct LayerCopies {
  at::Tensor wqkv, wo, w_gate_up, w_down;
};

LayerCopies CopiesOf(const MatmulCopies& low, size_t layer) {
  if (!low.enabled()) return {};
  const size_t i = layer * kCopiesPerLayer;
  return {low.Get(i), low.Get(i + 1), low.Get(i + 2), low.Get(i + 3)};
}

// y = x·Wᵀ (+ bias) for float32 rows x. With a low-precision copy of W the product runs in
// its dtype (float32 accumulation inside oneDNN) and comes back to float32; with a float32
// copy it is W prepacked (packed_matmul.h). The bias is added in float32.
at::Tensor LinearVia(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& copy,
                     const at::Tensor& bias) {
  if (!copy.defined()) return at::linear(x, weight, bias);
  at::Tensor y = copy.scalar_type() == at::kFloat
                     ? PackedLinear(x, copy, weight.size(0))
                     : at::linear(x.to(copy.scalar_type()), copy).to(at::kFloat);
  return bias.defined() ? y.add_(bias) : y;
}

// residual + x·Wᵀ (a skip connection), the sum made as the packed product stores its
// results where there is one.
at::Tensor AddLinear(const at::Tensor& residual, const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& copy) {
  if (copy.defined() && copy.scalar_type() == at::kFloat)
    return PackedLinear(x, copy, weight.size(0), residual);
  return residual + LinearVia(x, weight, copy, at::Tensor());
}

}  // namespace

Transformer::Transformer(const ModelConfig& c, Uninitialized) : Transformer(c, 0, false) {}

Transformer::Transformer(const ModelConfig& c, uint64_t seed) : Transformer(c, seed, true) {}

Transformer::Transformer(const ModelConfig& c, uint64_t seed, bool random) : impl_(new Impl) {
  impl_->config = c;
  const int64_t d = c.d_model, hd = c.head_dim(), f = c.ffn_hidden;
  const double residual_std = 0.02 / std::sqrt(2.0 * c.n_layers);
  auto& named = impl_->named;
  auto add = [&](const std::string& name, at::Tensor& slot, at::Tensor value, double std) {
    slot = value.requires_grad_(true);
    named.emplace_back(name, slot);
    impl_->init_std.push_back(std);
  };
  auto matrix = [](std::vector<int64_t> shape) { return at::empty(shape); };

  add("embedding", impl_->embedding, matrix({c.vocab_size, d}), 0.02);
  for (int i = 0; i < c.n_layers; ++i) {
    Layer& l = impl_->layers.emplace_back();
    const std::string p = absl::StrCat("layers.", i, ".");
    add(p + "attn_norm", l.attn_norm, at::ones({d}), 0);
    add(p + "wqkv", l.wqkv, matrix({(c.n_heads + 2 * c.n_kv_heads) * hd, d}), 0.02);
    if (c.qkv_bias)
      add(p + "bqkv", l.bqkv, at::zeros({(c.n_heads + 2 * c.n_kv_heads) * hd}), 0);
    if (c.qk_norm) {
      add(p + "q_norm", l.q_norm, at::ones({hd}), 0);
      add(p + "k_norm", l.k_norm, at::ones({hd}), 0);
    }
    add(p + "wo", l.wo, matrix({d, c.n_heads * hd}), residual_std);
    add(p + "mlp_norm", l.mlp_norm, at::ones({d}), 0);
    add(p + "w_gate_up", l.w_gate_up, matrix({2 * f, d}), 0.02);
    add(p + "w_down", l.w_down, matrix({d, f}), residual_std);
  }
  add("final_norm", impl_->final_norm, at::ones({d}), 0);
  if (!c.tie_embeddings) add("lm_head", impl_->lm_head, matrix({c.vocab_size, d}), 0.02);
  if (random) impl_->Draw(at::make_generator<at::CPUGeneratorImpl>(seed));

  // Rotary tables in float64 then cast, so long positions keep their precision.
  at::Tensor angles = at::outer(at::arange(c.max_seq_len, at::kDouble),
                                RotaryInverseFrequencies(c));  // [S, hd/2]
  angles = at::cat({angles, angles}, -1);
  impl_->cos = angles.cos().to(at::kFloat);
  impl_->sin = angles.sin().to(at::kFloat);
}

Transformer::~Transformer() = default;

const ModelConfig& Transformer::config() const { return impl_->config; }

absl::Status Transformer::To(c10::Device device, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf &&
      dtype != at::kDouble)
    return absl::InvalidArgumentError(absl::StrCat(
        "model dtype ", c10::toString(dtype), ": float32, bfloat16, float16 or float64 only"));
  return CatchTorch(absl::StrCat("moving the model to ", device.str()), [&] {
    at::NoGradGuard no_grad;
    // Every copy first, so that running out of device memory leaves the model as it was;
    // then set_data swaps the storage under every handle, as nn.Module.to does. A gradient
    // moves with its parameter (as nn.Module.to moves it): left behind, the next backward
    // would accumulate into a tensor on the old device or in the old dtype.
    std::vector<at::Tensor> moved, moved_grads;
    for (const auto& [name, tensor] : impl_->named) {
      moved.push_back(tensor.to(device, dtype));
      const at::Tensor& grad = tensor.grad();
      moved_grads.push_back(grad.defined() ? grad.to(device, dtype) : at::Tensor());
    }
    at::Tensor cos = impl_->cos.to(device, dtype), sin = impl_->sin.to(device, dtype);
    for (size_t i = 0; i < moved.size(); ++i) {
      at::Tensor& parameter = impl_->named[i].second;
      parameter.set_data(moved[i]);
      if (moved_grads[i].defined()) parameter.mutable_grad() = moved_grads[i];
    }
    impl_->cos = cos;
    impl_->sin = sin;
  });
}

absl::Status Transformer::Randomize(uint64_t seed) {
  const c10::Device device = impl_->embedding.device();
  at::Generator generator;
  if (device.is_cpu()) generator = at::make_generator<at::CPUGeneratorImpl>(seed);
#ifdef GRPO_WITH_CUDA
  if (device.is_cuda()) {
    generator = at::make_generator<at::CUDAGeneratorImpl>(device.index());
    generator.set_current_seed(seed);
  }
#endif
  if (!generator.defined())
    return absl::UnimplementedError(
        absl::StrCat("random weights on ", device.str(), ": no generator in this build"));
  return CatchTorch(absl::StrCat("drawing random weights on ", device.str()),
                    [&] { impl_->Draw(generator); });
}

absl::StatusOr<Placement> ParsePlacement(const std::string& device_name,
                                          const std::string& dtype_name) {
  at::ScalarType dtype;
  if (dtype_name == "float32") {
    dtype = at::kFloat;
  } else if (dtype_name == "bfloat16") {
    dtype = at::kBFloat16;
  } else if (dtype_name == "float16") {
    dtype = at::kHalf;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype \"", dtype_name, "\": float32, bfloat16 or float16"));
  }
  std::optional<c10::Device> device;
  absl::Status parsed = CatchTorch("device", [&] { device.emplace(device_name); });
  if (!parsed.ok() || !(device->is_cpu() || device->is_cuda()))
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", device_name, "\": cpu or cuda[:N]"));
  if (device->is_cuda() && !torch::cuda::is_available())
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device_name, ": no CUDA device visible, or this LibTorch is CPU-only"));
  // Here rather than at the first tensor moved there, which may be a job or a step later.
  if (device->is_cuda() && device->has_index() &&
      device->index() >= static_cast<int>(torch::cuda::device_count()))
    return absl::FailedPreconditionError(absl::StrCat("device ", device_name, ": only ",
                                                      torch::cuda::device_count(),
                                                      " CUDA device(s) visible"));
  return Placement{*device, dtype};
}

absl::StatusOr<at::ScalarType> ParseMatmulDtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("matmul dtype \"", name, "\": float32 or bfloat16"));
}

absl::StatusOr<at::ScalarType> CheckSamplerMatmuls(const std::string& matmul_dtype,
                                                   const Placement& placement) {
  absl::StatusOr<at::ScalarType> dtype = ParseMatmulDtype(matmul_dtype);
  if (!dtype.ok())
    return absl::InvalidArgumentError(absl::StrCat("--matmul_dtype: ", dtype.status().message()));
  if (*dtype == at::kBFloat16 && !(placement.device.is_cpu() && placement.dtype == at::kFloat))
    return absl::InvalidArgumentError(
        "--matmul_dtype bfloat16 is for a float32 policy on the CPU (on a GPU use --dtype "
        "bfloat16)");
  return *dtype;
}

absl::Status SetSamplerMatmuls(Transformer& model, const std::string& matmul_dtype,
                               bool packed_matmuls) {
  const at::TensorOptions placed = model.tensor_options();
  const Placement placement{placed.device(), c10::typeMetaToScalarType(placed.dtype())};
  absl::StatusOr<at::ScalarType> dtype = CheckSamplerMatmuls(matmul_dtype, placement);
  if (!dtype.ok()) return dtype.status();
  const bool cpu_float32 = placement.device.is_cpu() && placement.dtype == at::kFloat;
  return model.SetInferenceMatmulDtype(*dtype, packed_matmuls && cpu_float32);
}

absl::Status Transformer::To(const std::string& device, const std::string& dtype) {
  absl::StatusOr<Placement> placement = ParsePlacement(device, dtype);
  if (!placement.ok()) return placement.status();
  return To(placement->device, placement->dtype);
}

at::TensorOptions Transformer::tensor_options() const {
  return at::TensorOptions().device(impl_->embedding.device()).dtype(impl_->embedding.scalar_type());
}

absl::Status Transformer::SetComputeDtype(at::ScalarType dtype) {
  if (dtype != at::ScalarType::Undefined && dtype != at::kFloat && dtype != at::kBFloat16 &&
      dtype != at::kHalf && dtype != at::kDouble)
    return absl::InvalidArgumentError(absl::StrCat(
        "compute dtype ", c10::toString(dtype), ": float32, bfloat16, float16 or float64 only"));
  impl_->compute_dtype = dtype;
  return absl::OkStatus();
}

at::ScalarType Transformer::compute_dtype() const {
  return impl_->compute_dtype == at::ScalarType::Undefined ? impl_->embedding.scalar_type()
                                                           : impl_->compute_dtype;
}

bool Transformer::UsesMatmulCopies(const at::Tensor& activations) const {
  return impl_->matmul_copies.enabled() && !at::GradMode::is_enabled() &&
         activations.scalar_type() == at::kFloat && activations.device().is_cpu() &&
         impl_->embedding.scalar_type() == at::kFloat;
}

absl::Status Transformer::SetInferenceMatmulDtype(at::ScalarType dtype, bool packed) {
  if (dtype != at::kFloat && dtype != at::kBFloat16)
    return absl::InvalidArgumentError(absl::StrCat(
        "inference matmul dtype ", c10::toString(dtype), ": float32 or bfloat16 only"));
  const bool copies = dtype != at::kFloat || (packed && PackedMatmulSupported());
  std::vector<at::Tensor> sources;
  if (copies) {
    for (const Layer& l : impl_->layers)
      for (const at::Tensor* w : {&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down}) sources.push_back(*w);
    sources.push_back(LmHeadWeight());
  }
  impl_->matmul_copies.Reset(std::move(sources), copies ? dtype : at::ScalarType::Undefined);
  return absl::OkStatus();
}

bool Transformer::packed_matmuls() const {
  return impl_->matmul_copies.enabled() && impl_->matmul_copies.dtype() == at::kFloat;
}

at::TensorOptions Transformer::cache_options() const {
  const at::TensorOptions options = tensor_options();
  return impl_->matmul_copies.enabled() && options.device().is_cpu() &&
                 impl_->embedding.scalar_type() == at::kFloat
             ? options.dtype(impl_->matmul_copies.dtype())
             : options;
}

at::ScalarType Transformer::inference_matmul_dtype() const {
  return impl_->matmul_copies.enabled() ? impl_->matmul_copies.dtype() : at::kFloat;
}

namespace {

v1::ComputePrecision PrecisionOf(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return v1::COMPUTE_PRECISION_FLOAT32;
    case at::kBFloat16:
      return v1::COMPUTE_PRECISION_BFLOAT16;
    case at::kHalf:
      return v1::COMPUTE_PRECISION_FLOAT16;
    case at::kDouble:
      return v1::COMPUTE_PRECISION_FLOAT64;
    default:
      return v1::COMPUTE_PRECISION_UNSPECIFIED;
  }
}

}  // namespace

v1::ComputePrecision Transformer::sampling_precision() const {
  // The condition of cache_options and UsesMatmulCopies: the decode path's own.
  if (cache_options().dtype() != tensor_options().dtype())
    return v1::COMPUTE_PRECISION_FLOAT32_BF16_MATMULS;
  return PrecisionOf(compute_dtype());
}

v1::ComputePrecision Transformer::training_precision() const {
  return PrecisionOf(compute_dtype());
}

int64_t Transformer::matmul_copies_made() const { return impl_->matmul_copies.copies_made(); }

bool Transformer::FusedAttentionByDefault() { return TORCH_VERSION_MAJOR >= 2; }

void Transformer::SetFusedAttention(bool enabled) { impl_->fused_attention = enabled; }

bool Transformer::fused_attention() const { return impl_->fused_attention; }

void Transformer::SetActivationCheckpointing(bool enabled) {
  impl_->checkpoint_layers = enabled;
}

// One token per row against the cache, no autograd: the same computation as the general
// path below with the small-op chains fused (decode_kernels.h) and the attention done
// directly over the cache (decode_attention.h).
at::Tensor Transformer::DecodeStep(const at::Tensor& ids, const at::Tensor& is_pad,
                                   KvCache* cache) const {
  const ModelConfig& c = impl_->config;
  const int64_t n = ids.size(0), pos = cache->length_;
  TORCH_CHECK(pos < c.max_seq_len && pos < cache->capacity_, "decode position ", pos,
              " exceeds max_seq_len ", c.max_seq_len, " or the cache capacity");
  cache->is_pad_.select(1, pos).copy_(is_pad.defined() ? is_pad.view({n})
                                                      : at::zeros({n}, at::kBool));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim()));
  const float eps = c.norm_eps;
  at::Tensor cos = impl_->cos.select(0, pos), sin = impl_->sin.select(0, pos);
  impl_->matmul_copies.Refresh();
  at::Tensor x = at::embedding(impl_->embedding, ids.view({n}));  // [N, d]
  for (size_t i = 0; i < impl_->layers.size(); ++i) {
    const Layer& l = impl_->layers[i];
    const LayerCopies low = CopiesOf(impl_->matmul_copies, i);
    at::Tensor qkv = LinearVia(RmsNormRows(x, l.attn_norm, eps), l.wqkv, low.wqkv, l.bqkv);
    if (c.qk_norm) qkv = NormQueryKeyHeads(qkv, l, c);
    at::Tensor q = RotateAndCache(qkv, cos, sin, scale, pos, c.n_heads, cache->keys_[i],
                                  cache->values_[i]);
    at::Tensor attended =
        DecodeAttention(q, cache->keys_[i], cache->values_[i], cache->is_pad_, pos + 1,
                        cache->prefix_rows_, cache->prefix_length_);
    x = AddLinear(x, attended.view({n, -1}), l.wo, low.wo);
    at::Tensor gate_up =
        LinearVia(RmsNormRows(x, l.mlp_norm, eps), l.w_gate_up, low.w_gate_up, at::Tensor());
    x = AddLinear(x, SwiGluRows(gate_up.contiguous()), l.w_down, low.w_down);
  }
  cache->length_ = pos + 1;
  return x.view({n, 1, -1});
}

namespace {

// What every decoder layer of one Forward call shares.
struct LayerInputs {
  const ModelConfig* config;
  at::ScalarType compute;
  at::Tensor cos, sin;  // [T, hd] in the compute dtype
  at::Tensor bias;      // [N or 1, 1, T, S] (AttentionBias), or undefined
  int64_t start = 0;    // cache slots filled before this call
  // DecodeAt: int64 [1] on the device, the slot the one new token goes to (T = 1); the
  // attention then spans the cache's whole capacity, `bias` masking the slots past it.
  at::Tensor slot;
  bool fused = false;  // Transformer::SetFusedAttention
};

// softmax(q·kᵀ / √hd + bias)·v for q [N, H, T, hd] and keys and values [N, K, S, hd]; query
// head j reads kv head j / (H / K). Returns [N, H, T, hd].
at::Tensor ExplicitAttention(const at::Tensor& query, const at::Tensor& key,
                             const at::Tensor& value, const at::Tensor& bias) {
  const int64_t n = query.size(0), h = query.size(1), t = query.size(2), hd = query.size(3);
  const int64_t k = key.size(1), s = key.size(2), rep = h / k;
  const at::Tensor q = query * (1.0 / std::sqrt(static_cast<double>(hd)));
  // Grouped-query attention without repeating keys: the `rep` query heads sharing a kv
  // head become rows of one [rep * T, hd] matrix against that head's [S, hd] keys.
  at::Tensor scores =
      at::bmm(q.reshape({n * k, rep * t, hd}), key.reshape({n * k, s, hd}).transpose(1, 2));
  if (bias.defined()) {
    scores = (scores.view({n, k, rep, t, s}) + bias.view({bias.size(0), 1, 1, t, s}))
                 .view({n * k, rep * t, s});
  }
  // Half-precision models take the softmax in float32 (as their reference code does):
  // -1e9 does not fit float16, and the sums lose too much in bfloat16.
  at::Tensor probs = at::softmax(IsHalfPrecision(scores) ? scores.to(at::kFloat) : scores, -1);
  if (probs.scalar_type() != value.scalar_type()) probs = probs.to(value.scalar_type());
  return at::bmm(probs, value.reshape({n * k, s, hd})).view({n, h, t, hd});
}

// The same through the fused operator, whose kernels (2.0-2.4 have no enable_gqa) want a
// kv head per query head. Two ways to give it that, whichever copies less: the `rep` query
// heads sharing a kv head as rows of one [rep * T, hd] query against that head (the mask
// repeated rep times along the rows; free when there is none, a view when T = 1, as in
// decode), or the kv heads repeated (2 copies of [N, H, S, hd]; less for long queries, as in
// training). `mask` is AttentionBias's, in the query's dtype.
at::Tensor FusedAttention(const at::Tensor& query, const at::Tensor& key,
                          const at::Tensor& value, const at::Tensor& mask) {
  const int64_t n = query.size(0), h = query.size(1), t = query.size(2), hd = query.size(3);
  const int64_t k = key.size(1), s = key.size(2), rep = h / k;
  auto sdpa = [](const at::Tensor& q, const at::Tensor& kk, const at::Tensor& v,
                 const at::Tensor& m) {
    const c10::optional<at::Tensor> opt = m.defined() ? c10::optional<at::Tensor>(m)
                                                      : c10::nullopt;
#if TORCH_VERSION_MAJOR >= 2
    return at::scaled_dot_product_attention(q, kk, v, opt);
#else
    return std::get<0>(at::_scaled_dot_product_attention(q, kk, v, opt));
#endif
  };
  const int64_t mask_rows = mask.defined() ? mask.size(0) : 0;
  if (rep == 1) return sdpa(query, key, value, mask);
  if (!mask.defined() || t == 1 || mask_rows * rep * t <= 2 * n * h * hd) {
    at::Tensor grouped_mask;
    if (mask.defined())
      grouped_mask = mask.view({mask_rows, 1, 1, t, s})
                         .expand({mask_rows, 1, rep, t, s})
                         .reshape({mask_rows, 1, rep * t, s});
    return sdpa(query.reshape({n, k, rep * t, hd}), key, value, grouped_mask)
        .view({n, h, t, hd});
  }
  auto widen = [&](const at::Tensor& kv) {
    return kv.unsqueeze(2).expand({n, k, rep, s, hd}).reshape({n, h, s, hd});
  };
  return sdpa(query, widen(key), widen(value), mask);
}

// The additive bias every layer's attention adds, made once a forward from `masked` [N or 1,
// 1, T, S] (true: a future or padded key): -1e9, finite so that a padded query row (all
// keys masked) stays finite; its output never reaches a loss. Float32 for the explicit
// attention (its scores are added and softmaxed in float32), the compute dtype for the
// fused one, where float16 takes -3e4 (finite after adding any score).
at::Tensor AttentionBias(const at::Tensor& masked, bool fused, at::ScalarType compute) {
  const at::ScalarType dt = fused ? compute : at::kFloat;
  const double masked_value = dt == at::kHalf ? -3e4 : -1e9;
  return at::zeros(masked.sizes(), masked.options().dtype(dt)).masked_fill_(masked, masked_value);
}

// One pre-norm decoder layer: x + attention, then + MLP. With `keys`/`values` (the
// layer's cache) the new keys go at slots start .. start + T and attention sees them all.
at::Tensor DecoderLayer(const Layer& l, const LayerInputs& in, const at::Tensor& input,
                        at::Tensor* keys, at::Tensor* values, const LayerCopies& low = {}) {
  const ModelConfig& c = *in.config;
  const int64_t n = input.size(0), t = input.size(1);
  const int64_t h = c.n_heads, k = c.n_kv_heads, hd = c.head_dim(), f = c.ffn_hidden;
  const int64_t s = in.slot.defined() ? keys->size(2) : in.start + t;
  const at::ScalarType dt = in.compute;
  at::Tensor x = input;
  at::Tensor qkv =
      LinearVia(RmsNorm(x, l.attn_norm, c.norm_eps), Cast(l.wqkv, dt), low.wqkv, Cast(l.bqkv, dt));
  if (c.qk_norm) qkv = NormQueryKeyHeads(qkv, l, c);
  at::Tensor q = qkv.narrow(-1, 0, h * hd).view({n, t, h, hd}).transpose(1, 2);
  at::Tensor key = qkv.narrow(-1, h * hd, k * hd).view({n, t, k, hd}).transpose(1, 2);
  at::Tensor value = qkv.narrow(-1, (h + k) * hd, k * hd).view({n, t, k, hd}).transpose(1, 2);
  q = Rope(q, in.cos, in.sin);
  key = Rope(key, in.cos, in.sin);
  if (keys) {
    if (in.slot.defined()) {
      // index_copy_ does not convert: a bfloat16 cache under float32 compute (matmul
      // copies), a float32 one under bfloat16 compute (a mixed-precision learner sampling).
      keys->index_copy_(2, in.slot, key.to(keys->scalar_type()));
      values->index_copy_(2, in.slot, value.to(values->scalar_type()));
    } else {
      keys->narrow(2, in.start, t).copy_(key);
      values->narrow(2, in.start, t).copy_(value);
    }
    key = Cast(keys->narrow(2, 0, s), dt);  // a bfloat16 cache (cache_options) is widened
    value = Cast(values->narrow(2, 0, s), dt);
  }
  const at::Tensor attended = in.fused ? FusedAttention(q, key, value, in.bias)
                                       : ExplicitAttention(q, key, value, in.bias);
  x = AddLinear(x, attended.transpose(1, 2).reshape({n, t, h * hd}), Cast(l.wo, dt), low.wo);

  at::Tensor gate_up =
      LinearVia(RmsNorm(x, l.mlp_norm, c.norm_eps), Cast(l.w_gate_up, dt), low.w_gate_up,
                at::Tensor());
  return AddLinear(x, at::silu(gate_up.narrow(-1, 0, f)) * gate_up.narrow(-1, f, f),
                   Cast(l.w_down, dt), low.w_down);
}

// Activation checkpointing (LibTorch C++ has no torch.utils.checkpoint): forward runs the
// layer without recording autograd and keeps only its input; backward runs it again with
// autograd on and differentiates that graph. One layer's activations exist at a time, for
// a second forward pass of compute.
struct LayerRecompute : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> layer;
  std::vector<at::Tensor> parameters;  // the layer's, defined ones only
};

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
 public:
  // `parameters` are inputs so that autograd routes their gradients; the layer reads them
  // through `recompute`.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               at::TensorList parameters,
                               c10::intrusive_ptr<LayerRecompute> recompute) {
    (void)parameters;
    ctx->save_for_backward({x});
    at::Tensor y = recompute->layer(x);
    ctx->saved_data["layer"] = c10::IValue::make_capsule(std::move(recompute));
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const c10::intrusive_ptr<torch::CustomClassHolder> held =
        ctx->saved_data["layer"].toCapsule();
    const auto* recompute = static_cast<const LayerRecompute*>(held.get());
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode enabled(true);
      y = recompute->layer(x);
    }
    std::vector<at::Tensor> inputs{x};
    inputs.insert(inputs.end(), recompute->parameters.begin(), recompute->parameters.end());
    variable_list out = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false,
                                              /*create_graph=*/false, /*allow_unused=*/true);
    out.emplace_back();  // the recompute argument
    return out;
  }
};

at::Tensor CheckpointDecoderLayer(const Layer& l, const LayerInputs& in, const at::Tensor& x) {
  auto recompute = c10::make_intrusive<LayerRecompute>();
  recompute->layer = [&l, in](const at::Tensor& input) {
    return DecoderLayer(l, in, input, nullptr, nullptr);
  };
  for (const at::Tensor* p : {&l.attn_norm, &l.wqkv, &l.bqkv, &l.q_norm, &l.k_norm, &l.wo,
                              &l.mlp_norm, &l.w_gate_up, &l.w_down})
    if (p->defined()) recompute->parameters.push_back(*p);
  const std::vector<at::Tensor> parameters = recompute->parameters;
  return CheckpointedLayer::apply(x, at::TensorList(parameters), std::move(recompute))[0];
}

}  // namespace

at::Tensor Transformer::Forward(const at::Tensor& ids, const at::Tensor& is_pad,
                                KvCache* cache) const {
  const at::ScalarType compute = compute_dtype();
  if (cache && ids.size(1) == 1 && !at::GradMode::is_enabled() &&
      impl_->embedding.device().is_cpu() && impl_->embedding.scalar_type() == at::kFloat &&
      compute == at::kFloat) {
    return DecodeStep(ids, is_pad, cache);
  }
  const ModelConfig& c = impl_->config;
  const int64_t n = ids.size(0), t = ids.size(1);
  const int64_t start = cache ? cache->length_ : 0;
  const int64_t s = start + t;  // keys visible to the last query
  TORCH_CHECK(s <= c.max_seq_len, "sequence of ", s, " tokens exceeds max_seq_len ",
              c.max_seq_len);
  TORCH_CHECK(!cache || s <= cache->capacity_, "KV cache capacity ", cache->capacity_,
              " exceeded");

  LayerInputs in{&c, compute, Cast(impl_->cos.narrow(0, start, t), compute),
                 Cast(impl_->sin.narrow(0, start, t), compute), at::Tensor(), start, at::Tensor(),
                 impl_->fused_attention};

  // Which keys each query may not see, future or padded: the attention bias (AttentionBias).
  at::Tensor key_is_pad;
  if (cache) {
    if (is_pad.defined()) cache->is_pad_.narrow(1, start, t).copy_(is_pad);
    key_is_pad = cache->is_pad_.narrow(1, 0, s);
  } else {
    key_is_pad = is_pad;
  }
  if (t > 1 || (key_is_pad.defined() && key_is_pad.any().item<bool>())) {
    const at::TensorOptions flags = at::TensorOptions().dtype(at::kBool).device(ids.device());
    at::Tensor masked = at::zeros({1, 1, t, s}, flags);
    if (t > 1) {
      masked = at::ones({t, s}, flags).triu(start + 1).view({1, 1, t, s});
    }
    if (key_is_pad.defined()) masked = masked | key_is_pad.view({n, 1, 1, s});
    in.bias = AttentionBias(masked, in.fused, compute);
  }

  // The embedding rows gathered, then cast: the table itself stays in the master dtype.
  at::Tensor x = Cast(at::embedding(impl_->embedding, ids), compute);  // [N, T, d]
  const bool checkpoint = impl_->checkpoint_layers && !cache && at::GradMode::is_enabled();
  const bool use_copies = UsesMatmulCopies(x);
  if (use_copies) impl_->matmul_copies.Refresh();
  for (size_t i = 0; i < impl_->layers.size(); ++i) {
    const Layer& l = impl_->layers[i];
    if (checkpoint) {
      x = CheckpointDecoderLayer(l, in, x);
    } else {
      x = DecoderLayer(l, in, x, cache ? &cache->keys_[i] : nullptr,
                       cache ? &cache->values_[i] : nullptr,
                       use_copies ? CopiesOf(impl_->matmul_copies, i) : LayerCopies{});
    }
  }
  if (cache) cache->length_ = s;
  return x;
}

// The decode step of model/static_decode.h: the general layers above, with the slot a
// device tensor, so that no value is read back to the host and every shape is fixed by
// the batch rows and the cache's capacity (what a CUDA graph needs). It attends over all
// `capacity` slots, masking the unwritten ones: more reads than Forward's prefix, the
// price of a fixed shape.
at::Tensor Transformer::DecodeAt(const at::Tensor& ids, const at::Tensor& is_pad,
                                 const at::Tensor& slot, KvCache* cache) const {
  const ModelConfig& c = impl_->config;
  const at::ScalarType compute = compute_dtype();
  const int64_t n = ids.size(0), capacity = cache->capacity_;
  TORCH_CHECK(ids.dim() == 2 && ids.size(1) == 1, "DecodeAt: ids must be [N, 1]");
  TORCH_CHECK(n <= cache->is_pad_.size(0), "DecodeAt: ", n, " rows, the cache holds ",
              cache->is_pad_.size(0));
  TORCH_CHECK(capacity <= c.max_seq_len, "DecodeAt: cache capacity ", capacity,
              " exceeds max_seq_len ", c.max_seq_len);
  at::Tensor key_is_pad = cache->is_pad_.narrow(0, 0, n);
  key_is_pad.index_copy_(1, slot, is_pad.view({n, 1}));
  // -1e9 on padded slots and on every slot past the new token's.
  const at::Tensor later =
      at::arange(capacity, slot.options()).view({1, capacity}) > slot.view({1, 1});
  LayerInputs in{&c, compute, Cast(impl_->cos.index_select(0, slot), compute),
                 Cast(impl_->sin.index_select(0, slot), compute),
                 AttentionBias((key_is_pad | later).view({n, 1, 1, capacity}),
                               impl_->fused_attention, compute),
                 0, slot, impl_->fused_attention};
  at::Tensor x = Cast(at::embedding(impl_->embedding, ids), compute);  // [N, 1, d]
  const bool use_copies = UsesMatmulCopies(x);
  if (use_copies) impl_->matmul_copies.Refresh();
  for (size_t i = 0; i < impl_->layers.size(); ++i) {
    at::Tensor keys = cache->keys_[i].narrow(0, 0, n), values = cache->values_[i].narrow(0, 0, n);
    x = DecoderLayer(impl_->layers[i], in, x, &keys, &values,
                     use_copies ? CopiesOf(impl_->matmul_copies, i) : LayerCopies{});
  }
  return x;
}

const at::Tensor& Transformer::LmHeadWeight() const {
  return impl_->lm_head.defined() ? impl_->lm_head : impl_->embedding;
}

at::Tensor Transformer::Logits(const at::Tensor& hidden) const {
  at::Tensor normed = FinalNorm(hidden);
  if (UsesMatmulCopies(normed)) {
    MatmulCopies& low = impl_->matmul_copies;
    low.Refresh();
    return LinearVia(normed, LmHeadWeight(), low.Get(impl_->layers.size() * kCopiesPerLayer),
                     at::Tensor());
  }
  return at::linear(normed, Cast(LmHeadWeight(), normed.scalar_type()));
}

at::Tensor Transformer::FinalNorm(const at::Tensor& hidden) const {
  return RmsNorm(hidden, impl_->final_norm, impl_->config.norm_eps);
}

const std::vector<std::pair<std::string, at::Tensor>>& Transformer::named_parameters()
    const {
  return impl_->named;
}

std::vector<at::Tensor> Transformer::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& [name, tensor] : impl_->named) out.push_back(tensor);
  return out;
}

absl::Status Transformer::CopyFrom(const Transformer& other) {
  const auto& src = other.named_parameters();
  auto& dst = impl_->named;
  if (src.size() != dst.size()) {
    return absl::InvalidArgumentError("CopyFrom: models have different layouts");
  }
  for (size_t i = 0; i < dst.size(); ++i) {
    if (src[i].first != dst[i].first || !src[i].second.sizes().equals(dst[i].second.sizes())) {
      return absl::InvalidArgumentError(
          absl::StrCat("CopyFrom: parameter ", dst[i].first, " differs"));
    }
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
  return absl::OkStatus();
}

absl::Status Transformer::Save(const std::string& path) const {
  return CatchTorch("saving model to " + path, [&] { Archive().save_to(path); });
}

torch::serialize::OutputArchive Transformer::Archive() const {
  torch::serialize::OutputArchive archive;
  // float32 on the CPU whatever the model's placement: one archive format everywhere.
  for (const auto& [name, tensor] : impl_->named)
    archive.write(name, tensor.detach().to(at::kCPU, at::kFloat));
  return archive;
}

absl::Status Transformer::Load(const std::string& path) {
  return LoadArchive("loading model from " + path,
                     [&](torch::serialize::InputArchive& a) { a.load_from(path); });
}

absl::Status Transformer::LoadArchive(
    const std::string& what,
    const std::function<void(torch::serialize::InputArchive&)>& open) {
  // Read everything into fresh tensors first, so a bad archive changes nothing.
  std::vector<at::Tensor> loaded(impl_->named.size());
  absl::Status read = CatchTorch(what, [&] {
    torch::serialize::InputArchive archive;
    open(archive);
    for (size_t i = 0; i < impl_->named.size(); ++i) {
      archive.read(impl_->named[i].first, loaded[i]);
    }
  });
  if (!read.ok()) return read;
  for (size_t i = 0; i < loaded.size(); ++i) {
    const auto& [name, tensor] = impl_->named[i];
    // Archives hold float32; the copy below converts to the model's dtype (Transformer::To).
    if (!loaded[i].sizes().equals(tensor.sizes()) || loaded[i].scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": parameter ", name, " has shape ", c10::str(loaded[i].sizes()),
          ", the model expects ", c10::str(tensor.sizes())));
    }
    // Weights with NaN or inf would sample garbage (a worker) or train on it (a resumed
    // learner): refused at the boundary, the model as it was.
    if (!loaded[i].isfinite().all().item<bool>())
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": parameter ", name, " holds NaN or infinite values"));
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < loaded.size(); ++i) impl_->named[i].second.copy_(loaded[i]);
  return absl::OkStatus();
}

namespace {

// AllFinite over the intra-op threads: a read of the whole payload, on the worker's
// critical path between the last chunk and sampling.
bool AllFiniteInParallel(v1::WeightDtype dtype, std::string_view bytes) {
  const int64_t element = static_cast<int64_t>(WeightDtypeBytes(dtype));
  const int64_t n = static_cast<int64_t>(bytes.size()) / element;
  std::atomic<bool> finite{true};
  at::parallel_for(0, n, int64_t{1} << 20, [&](int64_t begin, int64_t end) {
    if (!AllFinite(dtype, bytes.substr(begin * element, (end - begin) * element)))
      finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

}  // namespace

absl::StatusOr<std::string> Transformer::ExportFlat(v1::WeightDtype dtype,
                                                    std::string reuse) const {
  if (dtype != v1::WEIGHT_DTYPE_FLOAT32 && dtype != v1::WEIGHT_DTYPE_BFLOAT16)
    return absl::InvalidArgumentError(
        absl::StrCat("ExportFlat: unknown dtype ", static_cast<int>(dtype)));
  const at::ScalarType type = dtype == v1::WEIGHT_DTYPE_BFLOAT16 ? at::kBFloat16 : at::kFloat;
  std::vector<std::pair<std::string, std::vector<int64_t>>> specs;
  for (const auto& [name, tensor] : impl_->named)
    specs.emplace_back(name, std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end()));
  std::vector<size_t> offsets;
  std::string payload = LayOutFlatWeights(dtype, specs, &offsets, std::move(reuse));
  absl::Status s = CatchTorch("exporting flat weights", [&] {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < impl_->named.size(); ++i) {
      const at::Tensor& tensor = impl_->named[i].second;
      // A view of the payload's bytes: copy_ converts dtype and device in one pass.
      at::from_blob(payload.data() + offsets[i], tensor.sizes(), at::TensorOptions(type))
          .copy_(tensor.detach());
    }
  });
  if (!s.ok()) return s;
  return payload;
}

absl::Status Transformer::ImportFlat(std::string_view payload) {
  absl::StatusOr<FlatWeights> flat = ParseFlatWeights(payload);
  if (!flat.ok()) return flat.status();
  if (flat->tensors.size() != impl_->named.size())
    return absl::InvalidArgumentError(absl::StrCat("flat weights: ", flat->tensors.size(),
                                                   " tensors, the model has ",
                                                   impl_->named.size()));
  // Everything checked before anything is copied: a bad payload changes nothing.
  for (size_t i = 0; i < impl_->named.size(); ++i) {
    const auto& [name, tensor] = impl_->named[i];
    const FlatTensorView& t = flat->tensors[i];
    if (t.name != name || !tensor.sizes().equals(t.shape))
      return absl::InvalidArgumentError(absl::StrCat(
          "flat weights: tensor ", i, " is ", t.name, " ", c10::str(at::IntArrayRef(t.shape)),
          ", the model expects ", name, " ", c10::str(tensor.sizes())));
    if (!AllFiniteInParallel(flat->dtype, t.bytes))
      return absl::InvalidArgumentError(
          absl::StrCat("flat weights: parameter ", name, " holds NaN or infinite values"));
  }
  const at::ScalarType type =
      flat->dtype == v1::WEIGHT_DTYPE_BFLOAT16 ? at::kBFloat16 : at::kFloat;
  return CatchTorch("importing flat weights", [&] {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < impl_->named.size(); ++i) {
      const FlatTensorView& t = flat->tensors[i];
      // The receive buffer is only read: from_blob needs a non-const pointer.
      impl_->named[i].second.copy_(at::from_blob(const_cast<char*>(t.bytes.data()), t.shape,
                                                 at::TensorOptions(type)));
    }
  });
}

v1::WeightDtype Transformer::transfer_dtype() const {
  return c10::typeMetaToScalarType(tensor_options().dtype()) == at::kBFloat16
             ? v1::WEIGHT_DTYPE_BFLOAT16
             : v1::WEIGHT_DTYPE_FLOAT32;
}

}  // namespace grpo
