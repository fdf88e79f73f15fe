#include "model/model.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/decode_attention.h"
#include "model/decode_kernels.h"
#include "model/packed_matmul.h"
#include "model/sampler.h"
#include "model/torch_status.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

ModelConfig SmallConfig() {
  return testing_util::SmallModel({.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                                   .ffn_hidden = 48, .vocab_size = 40, .max_seq_len = 64,
                                   .tie_embeddings = false});
}

// The logits of `ids` decoded through a KV cache: `prefill` tokens in one forward, then
// one token at a time (the decode path), as sampling does.
at::Tensor CachedLogits(const Transformer& model, const at::Tensor& ids, int64_t prefill) {
  KvCache cache(model.config(), ids.size(0), ids.size(1), model.cache_options());
  std::vector<at::Tensor> pieces;
  pieces.push_back(model.Logits(model.Forward(ids.narrow(1, 0, prefill), at::Tensor(), &cache)));
  for (int64_t i = prefill; i < ids.size(1); ++i) {
    pieces.push_back(model.Logits(model.Forward(ids.narrow(1, i, 1), at::Tensor(), &cache)));
  }
  EXPECT_EQ(cache.length(), ids.size(1));
  return at::cat(pieces, 1);
}

TEST(ModelTest, ParameterCountMatchesConfig) {
  for (const char* name : {"tiny", "bench-26m"}) {
    ModelConfig c = *ModelPreset(name);
    Transformer model(c, 1);
    int64_t n = 0;
    for (const at::Tensor& p : model.parameters()) n += p.numel();
    EXPECT_EQ(n, c.NumParameters()) << name;
  }
  // bench-26m is the shared eager baseline's model: ~26M parameters.
  EXPECT_NEAR(ModelPreset("bench-26m")->NumParameters() / 1e6, 25.9, 0.5);
}

TEST(ModelTest, UnknownPresetAndBadShapesAreRejected) {
  EXPECT_EQ(ModelPreset("huge").status().code(), absl::StatusCode::kNotFound);
  ModelConfig c = SmallConfig();
  c.n_kv_heads = 3;
  EXPECT_THAT(std::string(ValidateModelConfig(c).message()), testing::HasSubstr("n_kv_heads"));
}

TEST(ModelTest, CachedDecodingMatchesFullForward) {
  at::NoGradGuard no_grad;
  Transformer model(SmallConfig(), 3);
  const int64_t n = 3, t = 12;
  at::Tensor ids = at::randint(4, 40, {n, t}, at::kLong);
  at::Tensor full = model.Logits(model.Forward(ids, at::Tensor()));

  at::Tensor cached = CachedLogits(model, ids, 5);
  EXPECT_TRUE(at::allclose(cached, full, 1e-4, 1e-5))
      << (cached - full).abs().max().item<double>();
}

// Qwen2's q/k/v biases, Qwen3's q/k norms and wider heads, Llama 3's rotary scaling: the
// decode kernels must compute what the full forward does with each of them.
TEST(ModelTest, CheckpointFamilyFeaturesKeepDecodingEqualToTheFullForward) {
  at::NoGradGuard no_grad;
  ModelConfig c = SmallConfig();
  c.explicit_head_dim = 16;  // 4 heads x 16 = 64 wide in a 32-wide model
  c.qkv_bias = true;
  c.qk_norm = true;
  c.rope_scaling_factor = 8;
  // With head_dim 16 and theta 1e4 the wavelengths are 6.3, 20, 63, 199, ...: one kept
  // (< 64/4), two blended, the rest divided by the factor; every band of Llama 3's rule.
  c.rope_original_max_position = 64;
  ASSERT_TRUE(ValidateModelConfig(c).ok());
  Transformer model(c, 5);
  int64_t count = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    count += p.numel();
    // Biases start at zero and norms at one; random values make them matter here.
    if (absl::StrContains(name, "bqkv") || absl::StrContains(name, "_norm")) p.uniform_(0.5, 1.5);
  }
  EXPECT_EQ(count, c.NumParameters());
  EXPECT_EQ(model.named_parameters()[3].first, "layers.0.bqkv");
  const int64_t n = 2, t = 60;
  at::Tensor ids = at::randint(4, 40, {n, t}, at::kLong);
  at::Tensor full = model.Logits(model.Forward(ids, at::Tensor()));
  at::Tensor cached = CachedLogits(model, ids, 7);
  EXPECT_TRUE(at::allclose(cached, full, 1e-4, 1e-5))
      << (cached - full).abs().max().item<double>();

  ModelConfig odd = c;
  odd.explicit_head_dim = 7;
  EXPECT_THAT(std::string(ValidateModelConfig(odd).message()), testing::HasSubstr("head_dim"));
  odd = c;
  odd.rope_scaling_factor = 0.5;
  EXPECT_THAT(std::string(ValidateModelConfig(odd).message()), testing::HasSubstr("factor"));
}

// The inference placement a GPU uses (parameters in bfloat16, the general decode path
// rather than the CPU float32 kernels), run here on the CPU: the same logits up to
// bfloat16 rounding, cached decoding included, and sampling still works.
TEST(ModelTest, ABfloat16ModelDecodesLikeTheFloat32One) {
  at::NoGradGuard no_grad;
  Transformer model(SmallConfig(), 6);
  const int64_t n = 2, t = 10;
  at::Tensor ids = at::randint(4, 40, {n, t}, at::kLong);
  at::Tensor reference = model.Logits(model.Forward(ids, at::Tensor()));
  const at::Tensor embedding = model.named_parameters()[0].second;
  ASSERT_TRUE(model.To(at::kCPU, at::kBFloat16).ok());
  EXPECT_EQ(model.named_parameters()[0].second.scalar_type(), at::kBFloat16);
  EXPECT_EQ(embedding.scalar_type(), at::kBFloat16) << "handles see the move";
  const at::Tensor cached = CachedLogits(model, ids, 4).to(at::kFloat);
  const double scale = reference.abs().max().item<double>();
  EXPECT_LT((cached - reference).abs().max().item<double>(), 0.05 * scale);
  SamplingOptions sampling;
  sampling.max_new_tokens = 5;
  sampling.stop_token = -1;
  sampling.sample_vocab = 30;  // ids 30..39 never drawn
  absl::StatusOr<SampleResult> sampled = Sample(model, {{5, 6, 7}, {8, 9}}, sampling);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  EXPECT_EQ(sampled->generated_tokens, 10);
  for (int64_t row = 0; row < 2; ++row)
    for (int32_t id : sampled->Completion(row)) EXPECT_LT(id, 30);
  EXPECT_FALSE(model.To(at::kCPU, at::kLong).ok());

  // A bfloat16 model takes float32 flat weights, rounding.
  Transformer source(SmallConfig(), 7);
  absl::StatusOr<std::string> flat = source.ExportFlat(v1::WEIGHT_DTYPE_FLOAT32);
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(model.transfer_dtype(), v1::WEIGHT_DTYPE_BFLOAT16);
  ASSERT_TRUE(model.ImportFlat(*flat).ok());
  EXPECT_EQ(model.named_parameters()[0].second.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(model.named_parameters()[0].second,
                        source.named_parameters()[0].second.to(at::kBFloat16)));
  // And its own float32 export loads into a float32 model.
  absl::StatusOr<std::string> back = model.ExportFlat(v1::WEIGHT_DTYPE_FLOAT32);
  ASSERT_TRUE(back.ok());
  Transformer float_model(SmallConfig(), 8);
  EXPECT_TRUE(float_model.ImportFlat(*back).ok());

  // Flag values: checked before anything moves.
  EXPECT_THAT(std::string(model.To("tpu", "float32").message()), testing::HasSubstr("device \"tpu\""));
  EXPECT_THAT(std::string(model.To("cpu", "int8").message()), testing::HasSubstr("dtype \"int8\""));
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(model.To("cuda", "bfloat16").code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_TRUE(model.To("cpu", "float32").ok());
  EXPECT_EQ(model.named_parameters()[0].second.scalar_type(), at::kFloat);
}

// Out of memory (the CUDA allocator throws c10::OutOfMemoryError) is RESOURCE_EXHAUSTED,
// a condition of the moment; every other LibTorch or std error INTERNAL; each names `what`.
TEST(ModelTest, CatchTorchTellsOutOfMemoryFromOtherErrors) {
  EXPECT_TRUE(CatchTorch("nothing", [] {}).ok());
  const absl::Status oom = CatchTorch("moving the model", [] {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
  });
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted) << oom;
  EXPECT_THAT(std::string(oom.message()), testing::HasSubstr("moving the model: CUDA out of"));
  const absl::Status host = CatchTorch("packing", [] { throw std::bad_alloc(); });
  EXPECT_EQ(host.code(), absl::StatusCode::kResourceExhausted) << host;
  const absl::Status shape = CatchTorch("a product", [] {
    (void)at::matmul(at::ones({2, 3}), at::ones({2, 3}));
  });
  EXPECT_EQ(shape.code(), absl::StatusCode::kInternal) << shape;
  EXPECT_THAT(std::string(shape.message()), testing::HasSubstr("a product: "));
}

// A gradient moves with its parameter, as nn.Module.to moves it: a model that trained
// (SFT) and then moves (to the learner's device or dtype) accumulates its next backward
// into gradients beside the new weights, not into the old ones (on a GPU, a device error).
TEST(ModelTest, GradientsMoveWithTheParameters) {
  Transformer model(SmallConfig(), 9);
  const at::Tensor ids = at::randint(4, 40, {2, 6}, at::kLong);
  auto loss = [&] { return model.Logits(model.Forward(ids, at::Tensor())).square().mean(); };
  loss().backward();
  std::vector<at::Tensor> first;
  for (const auto& [name, p] : model.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    first.push_back(p.grad().to(at::kDouble));
  }
  ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  size_t i = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_EQ(p.grad().scalar_type(), at::kDouble) << name;
    EXPECT_TRUE(at::equal(p.grad(), first[i++])) << name << ": the values move unchanged";
  }
  loss().backward();
  for (const auto& [name, p] : model.named_parameters())
    EXPECT_EQ(p.grad().scalar_type(), at::kDouble) << name << ": accumulated in float64";
}

// A CPU sampler's bfloat16 matmuls (prefill and decode): logits within bfloat16's rounding
// of the float32 ones, every copy remade when the weights change (a new version imported,
// an in-place update), autograd's path untouched, and float32 back to the exact path.
TEST(ModelTest, Bfloat16InferenceMatmulsFollowTheWeights) {
  ModelConfig c = SmallConfig();
  c.qkv_bias = true;
  Transformer model(c, 9);
  for (const auto& [name, p] : model.named_parameters()) {
    at::NoGradGuard no_grad;
    if (absl::StrContains(name, "bqkv")) p.uniform_(-0.5, 0.5);
  }
  const int64_t n = 3, t = 12, copies = 4 * c.n_layers + 1;
  at::Tensor ids = at::randint(4, 40, {n, t}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor reference = CachedLogits(model, ids, 5);
  const double scale = reference.abs().max().item<double>();

  EXPECT_THAT(std::string(model.SetInferenceMatmulDtype(at::kHalf).message()),
              testing::HasSubstr("float32 or bfloat16"));
  EXPECT_EQ(*ParseMatmulDtype("bfloat16"), at::kBFloat16);
  EXPECT_EQ(*ParseMatmulDtype("float32"), at::kFloat);
  EXPECT_THAT(std::string(ParseMatmulDtype("half").status().message()),
              testing::HasSubstr("\"half\""));
  EXPECT_EQ(model.inference_matmul_dtype(), at::kFloat);
  ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kBFloat16).ok());
  EXPECT_EQ(model.inference_matmul_dtype(), at::kBFloat16);
  const at::Tensor low = CachedLogits(model, ids, 5);
  EXPECT_EQ(model.matmul_copies_made(), copies);
  const double error = (low - reference).abs().max().item<double>();
  EXPECT_GT(error, 0) << "the bfloat16 products ran";
  EXPECT_LT(error, 0.03 * scale) << error / scale;
  EXPECT_TRUE(at::equal(CachedLogits(model, ids, 5), low));
  // The prefill's products (the general forward) take the copies too.
  const at::Tensor prefilled = model.Logits(model.Forward(ids, at::Tensor()));
  const double prefill_error = (prefilled - reference).abs().max().item<double>();
  EXPECT_GT(prefill_error, 0);
  EXPECT_LT(prefill_error, 0.03 * scale) << prefill_error / scale;
  EXPECT_EQ(model.matmul_copies_made(), copies) << "unchanged weights, no new copies";

  // With autograd on (a learner's forward) the float32 weights are used.
  {
    at::AutoGradMode grad(true);
    ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kFloat).ok());
    const at::Tensor exact = model.Logits(model.Forward(ids, at::Tensor())).detach();
    ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kBFloat16).ok());
    EXPECT_TRUE(at::equal(model.Logits(model.Forward(ids, at::Tensor())).detach(), exact));
  }

  // A new weights version (as a worker imports one): every copy is remade from it.
  Transformer other(c, 10);
  const at::Tensor other_reference = CachedLogits(other, ids, 5);
  ASSERT_GT((other_reference - reference).abs().max().item<double>(), 0.2 * scale);
  absl::StatusOr<std::string> flat = other.ExportFlat(v1::WEIGHT_DTYPE_FLOAT32);
  ASSERT_TRUE(flat.ok());
  ASSERT_TRUE(model.ImportFlat(*flat).ok());
  const at::Tensor imported = CachedLogits(model, ids, 5);
  EXPECT_EQ(model.matmul_copies_made(), 2 * copies);
  EXPECT_LT((imported - other_reference).abs().max().item<double>(),
            0.03 * other_reference.abs().max().item<double>());

  // An in-place update of one weight (as an optimizer step makes): that copy alone.
  model.named_parameters()[2].second.mul_(0.5);  // layers.0.wqkv
  ASSERT_EQ(model.named_parameters()[2].first, "layers.0.wqkv");
  const at::Tensor halved = CachedLogits(model, ids, 5);
  EXPECT_EQ(model.matmul_copies_made(), 2 * copies + 1);
  EXPECT_GT((halved - imported).abs().max().item<double>(), 0);

  // float32 again: the exact decode path.
  ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kFloat).ok());
  other.named_parameters()[2].second.mul_(0.5);
  EXPECT_TRUE(at::allclose(CachedLogits(model, ids, 5), CachedLogits(other, ids, 5), 1e-5, 1e-6));
}

// A CPU sampler's packed float32 matmuls (prefill, decode and the LM head): the float32
// logits up to summation order, the same float32 cache and precision stamp, the copies
// remade when the weights change, and off again with plain float32.
TEST(ModelTest, PackedInferenceMatmulsFollowTheWeights) {
  if (!PackedMatmulSupported()) GTEST_SKIP() << "this CPU lacks AVX2/FMA";
  ModelConfig c = SmallConfig();  // vocabulary 40: the LM head's last panel is padded
  c.qkv_bias = true;
  Transformer model(c, 9), other(c, 10);
  for (Transformer* m : {&model, &other}) {
    for (const auto& [name, p] : m->named_parameters()) {
      at::NoGradGuard no_grad;
      if (absl::StrContains(name, "bqkv")) p.uniform_(-0.5, 0.5);
    }
  }
  const int64_t copies = 4 * c.n_layers + 1;
  at::Tensor ids = at::randint(4, 40, {3, 12}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor reference = CachedLogits(model, ids, 5);
  const at::Tensor other_reference = CachedLogits(other, ids, 5);
  const at::Tensor full = model.Logits(model.Forward(ids, at::Tensor()));

  ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kFloat, /*packed=*/true).ok());
  EXPECT_TRUE(model.packed_matmuls());
  EXPECT_EQ(model.inference_matmul_dtype(), at::kFloat);
  EXPECT_EQ(model.cache_options().dtype(), at::kFloat);
  EXPECT_EQ(model.sampling_precision(), v1::COMPUTE_PRECISION_FLOAT32);
  EXPECT_TRUE(at::allclose(CachedLogits(model, ids, 5), reference, 1e-4, 1e-5));
  EXPECT_EQ(model.matmul_copies_made(), copies) << "every product took its packed copy";
  EXPECT_TRUE(at::allclose(model.Logits(model.Forward(ids, at::Tensor())), full, 1e-4, 1e-5));
  EXPECT_EQ(model.matmul_copies_made(), copies) << "unchanged weights, no new copies";
  absl::StatusOr<std::string> flat = other.ExportFlat(v1::WEIGHT_DTYPE_FLOAT32);
  ASSERT_TRUE(flat.ok());
  ASSERT_TRUE(model.ImportFlat(*flat).ok());
  EXPECT_TRUE(at::allclose(CachedLogits(model, ids, 5), other_reference, 1e-4, 1e-5));
  EXPECT_EQ(model.matmul_copies_made(), 2 * copies);

  ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kFloat).ok());
  EXPECT_FALSE(model.packed_matmuls());
  EXPECT_TRUE(at::equal(CachedLogits(model, ids, 5), other_reference)) << "the plain path";
  EXPECT_EQ(model.matmul_copies_made(), 2 * copies);
}

// The sampler flags: bad values and bfloat16 off a CPU float32 policy are refused naming
// the flag; packing is ignored where it does not apply.
TEST(ModelTest, SamplerMatmulFlagsAreChecked) {
  Transformer model(SmallConfig(), 3);
  EXPECT_THAT(std::string(SetSamplerMatmuls(model, "half", true).message()),
              testing::AllOf(testing::HasSubstr("--matmul_dtype"), testing::HasSubstr("half")));
  EXPECT_THAT(std::string(CheckSamplerMatmuls("bfloat16", {at::kCPU, at::kBFloat16}).status().message()),
              testing::HasSubstr("float32 policy on the CPU"));
  EXPECT_TRUE(CheckSamplerMatmuls("bfloat16", {at::kCPU, at::kFloat}).ok());
  ASSERT_TRUE(SetSamplerMatmuls(model, "float32", true).ok());
  EXPECT_EQ(model.packed_matmuls(), PackedMatmulSupported());
  ASSERT_TRUE(SetSamplerMatmuls(model, "bfloat16", true).ok());
  EXPECT_FALSE(model.packed_matmuls());
  EXPECT_EQ(model.inference_matmul_dtype(), at::kBFloat16);
  ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
  ASSERT_TRUE(SetSamplerMatmuls(model, "float32", true).ok());
  EXPECT_FALSE(model.packed_matmuls()) << "a float64 model multiplies as it is";
}

// A bfloat16 KV cache (cache_options with bfloat16 matmuls): the fused decode kernels store
// each key and value rounded to nearest even and attend over exactly those values, on the
// AVX2 path (head_dim 16, 64, 128) and the portable one (12).
TEST(ModelTest, ABfloat16CacheHoldsTheRoundedKeysAndValues) {
  at::NoGradGuard no_grad;
  for (int64_t hd : {16, 64, 128, 12}) {
    const int64_t n = 3, kv = 2, rep = 2, heads = kv * rep, capacity = 9, length = 7;
    at::Tensor qkv = at::randn({n, (heads + 2 * kv) * hd});
    at::Tensor angles = at::rand({hd});
    at::Tensor cos = angles.cos(), sin = angles.sin();
    at::Tensor keys = at::randn({n, kv, capacity, hd}), values = at::randn_like(keys);
    at::Tensor low_keys = keys.to(at::kBFloat16), low_values = values.to(at::kBFloat16);
    at::Tensor q = RotateAndCache(qkv, cos, sin, 0.5f, 4, heads, keys, values);
    at::Tensor low_q = RotateAndCache(qkv, cos, sin, 0.5f, 4, heads, low_keys, low_values);
    EXPECT_TRUE(at::equal(low_q, q));
    EXPECT_TRUE(at::equal(low_keys, keys.to(at::kBFloat16))) << hd;
    EXPECT_TRUE(at::equal(low_values, values.to(at::kBFloat16))) << hd;

    at::Tensor is_pad = at::zeros({n, capacity}, at::kBool);
    is_pad[1][0] = true;
    is_pad[2][3] = true;
    const at::Tensor attended = DecodeAttention(q, low_keys, low_values, is_pad, length);
    const at::Tensor widened = DecodeAttention(q, low_keys.to(at::kFloat).contiguous(),
                                               low_values.to(at::kFloat).contiguous(), is_pad,
                                               length);
    EXPECT_TRUE(at::equal(attended, widened)) << hd;
    // And the kernel is attention: softmax(q·Kᵀ)·V over the unpadded keys, in float64.
    at::Tensor k64 = keys.to(at::kDouble).view({n * kv, capacity, hd}).narrow(1, 0, length);
    at::Tensor v64 = values.to(at::kDouble).view({n * kv, capacity, hd}).narrow(1, 0, length);
    at::Tensor scores = at::bmm(q.to(at::kDouble), k64.transpose(1, 2));  // [n*kv, rep, len]
    at::Tensor masked = is_pad.narrow(1, 0, length).repeat_interleave(kv, 0).view(
        {n * kv, 1, length});
    at::Tensor expected = at::bmm(at::softmax(scores.masked_fill(masked, -1e300), -1), v64);
    const at::Tensor exact = DecodeAttention(q, keys, values, is_pad, length);
    EXPECT_TRUE(at::allclose(exact.to(at::kDouble), expected, 1e-4, 1e-5))
        << hd << ": " << (exact.to(at::kDouble) - expected).abs().max().item<double>();
    EXPECT_GT((attended - exact).abs().max().item<double>(), 0) << "the cache is rounded";
  }
  Transformer model(SmallConfig(), 2);
  EXPECT_EQ(model.cache_options().dtype(), at::kFloat);
  ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kBFloat16).ok());
  EXPECT_EQ(model.cache_options().dtype(), at::kBFloat16);
}

// What one attention implementation makes of a batch: the logits of a padded forward, the
// parameters' gradients of a fixed weighting of them, and the hidden states of the same
// ids run through a cache (prefill, then one token at a time) and through the static step.
struct AttentionRun {
  at::Tensor logits, cached, static_step;
  std::vector<at::Tensor> grads;
};

AttentionRun RunAttention(Transformer& model, bool fused, const at::Tensor& ids,
                          const at::Tensor& is_pad) {
  model.SetFusedAttention(fused);
  EXPECT_EQ(model.fused_attention(), fused);
  AttentionRun run;
  for (const at::Tensor& p : model.parameters()) p.mutable_grad() = at::Tensor();
  run.logits = model.Logits(model.Forward(ids, is_pad));
  const at::Tensor weight = at::sin(at::arange(run.logits.numel(), run.logits.options()))
                                .view(run.logits.sizes());
  (run.logits * weight).masked_fill(is_pad.unsqueeze(-1), 0).sum().backward();
  for (const at::Tensor& p : model.parameters()) run.grads.push_back(p.grad().clone());
  at::NoGradGuard no_grad;
  run.logits = run.logits.detach();
  const int64_t n = ids.size(0), t = ids.size(1), prefill = 5;
  KvCache cache(model.config(), n, t, model.cache_options());
  std::vector<at::Tensor> pieces{
      model.Forward(ids.narrow(1, 0, prefill), is_pad.narrow(1, 0, prefill), &cache)};
  for (int64_t i = prefill; i < t; ++i)
    pieces.push_back(model.Forward(ids.narrow(1, i, 1), is_pad.narrow(1, i, 1), &cache));
  run.cached = at::cat(pieces, 1);
  KvCache zeroed(model.config(), n, t, model.cache_options(), /*zeroed=*/true);
  model.Forward(ids.narrow(1, 0, prefill), is_pad.narrow(1, 0, prefill), &zeroed);
  run.static_step = model.DecodeAt(ids.narrow(1, prefill, 1), is_pad.narrow(1, prefill, 1),
                                   at::full({1}, prefill, at::kLong), &zeroed);
  return run;
}

double MaxRelative(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() /
          b.to(at::kDouble).abs().max().clamp_min(1e-30))
      .item<double>();
}

// silu(gate) * up within float32 rounding of the float64 value, over the range a
// pre-activation takes and past it (exp's clamp), on the vectorised lanes and the tail.
TEST(ModelTest, SwiGluRowsIsSiluTimesUp) {
  at::NoGradGuard no_grad;
  for (int64_t f : {48, 13}) {
    at::Tensor gate_up = at::randn({5, 2 * f}) * 4;
    gate_up[0].narrow(0, 0, 6).copy_(at::tensor({0.0f, -90.0f, 95.0f, 1e-30f, -1e-3f, 30.0f}));
    const at::Tensor out = SwiGluRows(gate_up);
    const at::Tensor g = gate_up.narrow(1, 0, f).to(at::kDouble);
    const at::Tensor u = gate_up.narrow(1, f, f).to(at::kDouble);
    const at::Tensor exact = g * at::sigmoid(g) * u;
    const at::Tensor error = (out.to(at::kDouble) - exact).abs();
    // Past the clamp (gate -90: e^90 taken as e^88) only the absolute floor holds.
    const at::Tensor bound = exact.abs() * 4e-7 + 1e-30;
    EXPECT_LE((error - bound).max().item<double>(), 0)
        << f << ": " << (error / (exact.abs() + 1e-30)).max().item<double>();
  }
  EXPECT_THROW(SwiGluRows(at::randn({3, 7})), c10::Error);
}

// Samples of one prompt read its cached prefix from one row (prefix_rows): the same result
// bit for bit when the rows hold the same prefix, and provably read from that row (changing
// another row's prefix changes nothing). Groups interleaved, so the work order regroups
// them; head_dim 64 (AVX2) and 12 (portable); padding inside the prefix.
TEST(ModelTest, DecodeAttentionReadsASharedPrefixOnce) {
  at::NoGradGuard no_grad;
  for (int64_t hd : {64, 12}) {
    const int64_t n = 6, kv = 2, rep = 2, capacity = 20, length = 17, prefix = 9;
    at::Tensor q = at::randn({n * kv, rep, hd});
    at::Tensor keys = at::randn({n, kv, capacity, hd}), values = at::randn_like(keys);
    at::Tensor is_pad = at::zeros({n, capacity}, at::kBool);
    is_pad.narrow(1, 0, 2).fill_(true);  // left padding of the prompt
    is_pad[4][12] = true;
    const at::Tensor source = at::tensor({0, 1, 0, 1, 0, 1}, at::kLong);
    for (int64_t row = 0; row < n; ++row) {
      const int64_t from = source[row].item<int64_t>();
      keys[row].narrow(1, 0, prefix).copy_(keys[from].narrow(1, 0, prefix));
      values[row].narrow(1, 0, prefix).copy_(values[from].narrow(1, 0, prefix));
    }
    const at::Tensor own = DecodeAttention(q, keys, values, is_pad, length);
    const at::Tensor shared = DecodeAttention(q, keys, values, is_pad, length, source, prefix);
    EXPECT_TRUE(at::equal(shared, own)) << hd;

    // Another row's prefix is not read: only the rows it belongs to see a change.
    keys[2].narrow(1, 3, 4).mul_(3);
    values[5].narrow(1, 0, prefix).add_(1);
    EXPECT_TRUE(at::equal(DecodeAttention(q, keys, values, is_pad, length, source, prefix),
                          shared)) << hd;
    const at::Tensor moved = DecodeAttention(q, keys, values, is_pad, length);
    EXPECT_FALSE(at::equal(moved[2 * kv], own[2 * kv])) << hd;
    EXPECT_FALSE(at::equal(moved[5 * kv + 1], own[5 * kv + 1])) << hd;
    // The rows' own positions are still their own.
    keys[2].narrow(1, prefix, 3).mul_(3);
    EXPECT_FALSE(at::equal(DecodeAttention(q, keys, values, is_pad, length, source, prefix),
                           shared)) << hd;

    // Nothing shared, or every position: the same again.
    EXPECT_TRUE(at::equal(DecodeAttention(q, keys, values, is_pad, length, source, 0),
                          DecodeAttention(q, keys, values, is_pad, length))) << hd;
    at::Tensor all_keys = keys.clone(), all_values = values.clone();
    for (int64_t row = 0; row < n; ++row) {
      all_keys[row].copy_(keys[source[row].item<int64_t>()]);
      all_values[row].copy_(values[source[row].item<int64_t>()]);
    }
    const at::Tensor all_pad = is_pad.index_select(0, source);
    EXPECT_TRUE(at::equal(
        DecodeAttention(q, all_keys, all_values, all_pad, length, source, length),
        DecodeAttention(q, all_keys, all_values, all_pad, length))) << hd;
    // A bfloat16 cache reads its shared prefix the same way.
    const at::Tensor low_keys = all_keys.to(at::kBFloat16);
    const at::Tensor low_values = all_values.to(at::kBFloat16);
    EXPECT_TRUE(at::equal(
        DecodeAttention(q, low_keys, low_values, is_pad, length, source, prefix),
        DecodeAttention(q, low_keys, low_values, is_pad, length))) << hd;

    // Bad sharing is refused, naming what is wrong.
    EXPECT_THROW(DecodeAttention(q, keys, values, is_pad, length, source.to(at::kInt), prefix),
                 c10::Error);
    EXPECT_THROW(DecodeAttention(q, keys, values, is_pad, length,
                                 at::tensor({0, 1, 0, 1, 0, 6}, at::kLong), prefix),
                 c10::Error);
    EXPECT_THROW(DecodeAttention(q, keys, values, is_pad, length, source, length + 1),
                 c10::Error);
    EXPECT_THROW(DecodeAttention(q, keys, values, is_pad, length, source.narrow(0, 0, 5),
                                 prefix),
                 c10::Error);
  }
}

// A prompt prefilled once, copied to its samples and marked shared (KvCache::SharePrefix):
// the CPU decode step gives what the unshared cache gives, bit for bit, through decoding,
// finished rows leaving (SelectRows, each group's first row among them) and an in-place
// compaction (CompactRows). On the portable attention kernel (head_dim 8) and on the AVX2
// one with packed products (head_dim 16).
TEST(ModelTest, ASharedPrefixDecodesLikeCopiedOnes) {
  at::NoGradGuard no_grad;
  ModelConfig wide = SmallConfig();
  wide.d_model = 64;  // 4 heads of 16
  for (const ModelConfig& config : {SmallConfig(), wide}) {
    SCOPED_TRACE(config.head_dim());
    Transformer model(config, 5);
    if (config.head_dim() == 16 && PackedMatmulSupported()) {
      ASSERT_TRUE(model.SetInferenceMatmulDtype(at::kFloat, /*packed=*/true).ok());
      ASSERT_TRUE(model.packed_matmuls());
    }
    const int64_t prompt = 7, steps = 7;
    const at::Tensor prompts = at::randint(4, 40, {2, prompt}, at::kLong);
    const at::Tensor expand = at::tensor({0, 0, 0, 1, 1, 1}, at::kLong);
    KvCache plain(model.config(), 2, prompt + steps, model.cache_options());
    KvCache shared(model.config(), 2, prompt + steps, model.cache_options());
    model.Forward(prompts, at::Tensor(), &plain);
    model.Forward(prompts, at::Tensor(), &shared);
    plain.SelectRows(expand);
    shared.SelectRows(expand);
    EXPECT_THROW(shared.SharePrefix(at::tensor({0, 0, 1}, at::kLong), prompt), c10::Error);
    EXPECT_THROW(shared.SharePrefix(expand, prompt + 1), c10::Error) << "past the filled slots";
    shared.SharePrefix(expand, prompt);
    at::Tensor ids = at::randint(4, 40, {6, 1}, at::kLong);
    for (int64_t step = 0; step < steps; ++step) {
      if (step == 3) {  // rows 0 and 3 finish: each group's first row leaves
        const at::Tensor keep = at::tensor({1, 2, 4, 5}, at::kLong);
        plain.SelectRows(keep);
        shared.SelectRows(keep);
        ids = ids.index_select(0, keep);
      }
      if (step == 5) {  // in place: rows 3 and 1 move to the front, rows 2 and 3 stay
        const at::Tensor front = at::tensor({3, 1}, at::kLong);
        plain.CompactRows(front);
        shared.CompactRows(front);
        ids.narrow(0, 0, 2).copy_(ids.index_select(0, front));
      }
      const at::Tensor a = model.Forward(ids, at::Tensor(), &plain);
      const at::Tensor b = model.Forward(ids, at::Tensor(), &shared);
      ASSERT_TRUE(at::equal(a, b)) << "step " << step;
      ids = model.Logits(a.select(1, 0)).argmax(-1, true);
    }
  }
}

// The fused scaled_dot_product_attention against the explicit scores-softmax-product, with
// grouped-query heads (4 over 2), left padding down to a row of one real token, and both
// ways the fused path groups heads (9 positions: query heads as rows; 40: kv heads
// repeated): in float64 the same logits, gradients, cached decode and static step to
// 1e-10; in bfloat16 (the GPU sampler's dtype, whose mask the fused path converts) within
// its rounding.
TEST(ModelTest, FusedAttentionComputesTheExplicitOne) {
  for (const int64_t t : {9, 40}) {
    SCOPED_TRACE(t);
    Transformer model(SmallConfig(), 8);
    const int64_t n = 3;
    const at::Tensor ids = at::randint(4, 40, {n, t}, at::kLong);
    at::Tensor is_pad = at::zeros({n, t}, at::kBool);
    is_pad[1].narrow(0, 0, 4).fill_(true);
    is_pad[2].narrow(0, 0, t - 1).fill_(true);
    ASSERT_TRUE(model.To(at::kCPU, at::kDouble).ok());
    const AttentionRun exp64 = RunAttention(model, false, ids, is_pad);
    const AttentionRun fused64 = RunAttention(model, true, ids, is_pad);
    EXPECT_LT(MaxRelative(fused64.logits, exp64.logits), 1e-10);
    EXPECT_LT(MaxRelative(fused64.cached, exp64.cached), 1e-10);
    EXPECT_LT(MaxRelative(fused64.static_step, exp64.static_step), 1e-10);
    // The cache serves the same function: its last position is the full forward's.
    EXPECT_LT(MaxRelative(model.Logits(fused64.cached).narrow(1, t - 1, 1),
                          exp64.logits.narrow(1, t - 1, 1)), 1e-10);
    ASSERT_EQ(fused64.grads.size(), exp64.grads.size());
    for (size_t i = 0; i < exp64.grads.size(); ++i)
      EXPECT_LT(MaxRelative(fused64.grads[i], exp64.grads[i]), 1e-9) << "parameter " << i;

    ASSERT_TRUE(model.To(at::kCPU, at::kBFloat16).ok());
    const AttentionRun exp16 = RunAttention(model, false, ids, is_pad);
    const AttentionRun fused16 = RunAttention(model, true, ids, is_pad);
    for (const auto* run : {&exp16, &fused16}) {
      EXPECT_TRUE(at::isfinite(run->logits).all().item<bool>());
      EXPECT_LT(MaxRelative(run->logits, exp64.logits), 0.1);
    }
    EXPECT_LT(MaxRelative(fused16.logits, exp16.logits), 0.05);
    EXPECT_LT(MaxRelative(fused16.cached, exp16.cached), 0.05);
    EXPECT_LT(MaxRelative(fused16.static_step, exp16.static_step), 0.05);
  }
  // A fresh model takes the fused path where LibTorch has the public operator.
  EXPECT_EQ(Transformer(SmallConfig(), 1).fused_attention(),
            Transformer::FusedAttentionByDefault());
}

TEST(ModelTest, LeftPaddingDoesNotChangeTheRow) {
  at::NoGradGuard no_grad;
  Transformer model(SmallConfig(), 4);
  at::Tensor row = at::randint(4, 40, {1, 6}, at::kLong);
  at::Tensor alone = model.Logits(model.Forward(row, at::Tensor()));
  // Same row behind 3 padding slots: rotary attention only sees relative positions.
  at::Tensor padded = at::cat({at::zeros({1, 3}, at::kLong), row}, 1);
  at::Tensor is_pad = at::zeros({1, 9}, at::kBool);
  is_pad.narrow(1, 0, 3).fill_(true);
  at::Tensor shifted = model.Logits(model.Forward(padded, is_pad)).narrow(1, 3, 6);
  EXPECT_TRUE(at::allclose(shifted, alone, 1e-4, 1e-5));
}

TEST(ModelTest, SaveLoadRoundTripAndBadFileLeavesModelUnchanged) {
  const std::string path = testing::TempDir() + "/model_test.pt";
  Transformer a(SmallConfig(), 5), b(SmallConfig(), 6);
  ASSERT_TRUE(a.Save(path).ok());
  ASSERT_TRUE(b.Load(path).ok());
  for (size_t i = 0; i < a.parameters().size(); ++i)
    EXPECT_TRUE(at::equal(a.parameters()[i], b.parameters()[i]));

  ModelConfig other = SmallConfig();
  other.d_model = 64;
  Transformer c(other, 7);
  at::Tensor before = c.parameters()[0].clone();
  absl::Status s = c.Load(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), testing::HasSubstr("embedding"));
  EXPECT_TRUE(at::equal(before, c.parameters()[0]));
  EXPECT_FALSE(c.Load(testing::TempDir() + "/does-not-exist.pt").ok());
}

TEST(ModelTest, CopyFromMakesIdenticalModels) {
  Transformer a(SmallConfig(), 8), b(SmallConfig(), 9);
  ASSERT_TRUE(b.CopyFrom(a).ok());
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(4, 40, {2, 5}, at::kLong);
  EXPECT_TRUE(at::equal(a.Forward(ids, at::Tensor()), b.Forward(ids, at::Tensor())));
}

TEST(ModelTest, RandomizeDrawsTheSeedsWeightsInPlace) {
  ModelConfig c = testing_util::SmallModel({.d_model = 32, .n_layers = 2, .n_heads = 4,
                                            .n_kv_heads = 2, .ffn_hidden = 48});
  c.tie_embeddings = false;
  c.qkv_bias = true;
  c.qk_norm = true;
  Transformer seeded(c, 7), drawn(c, Transformer::Uninitialized{});
  std::vector<const void*> storage;
  for (const auto& [name, p] : drawn.named_parameters()) storage.push_back(p.data_ptr());
  ASSERT_TRUE(drawn.Randomize(7).ok());
  const auto& want = seeded.named_parameters();
  const auto& got = drawn.named_parameters();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(at::equal(got[i].second, want[i].second)) << got[i].first;
    EXPECT_EQ(got[i].second.data_ptr(), storage[i]) << got[i].first << " moved";
  }
  // Another seed: other matrices, the norms and biases as they were.
  ASSERT_TRUE(drawn.Randomize(8).ok());
  int redrawn = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool same = at::equal(got[i].second, want[i].second);
    const bool fixed = absl::StrContains(got[i].first, "norm") ||
                       absl::StrContains(got[i].first, "bqkv");
    EXPECT_EQ(same, fixed) << got[i].first;
    redrawn += !same;
  }
  EXPECT_EQ(redrawn, 2 + 4 * c.n_layers);  // embedding, LM head, four matrices a layer
}

}  // namespace
}  // namespace grpo
