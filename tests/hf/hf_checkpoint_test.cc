// Hugging Face checkpoints against an independent writer and reference forward pass
// (tests/hf/tiny_checkpoint.py, PyTorch from Debian's python3-torch): our loader's logits
// equal its logits for each family, our saved checkpoints load back here and there, and
// broken checkpoints are refused by name with the model unchanged.
#include "hf/hf_checkpoint.h"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/command.h"

namespace grpo::hf {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kScript = std::string(GRPO_SOURCE_DIR) + "/tests/hf/tiny_checkpoint.py";

fs::path FreshDir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) /
                       absl::StrCat("hf_checkpoint_test_", name, "_", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The independent script's checkpoint of `family` in a fresh directory.
fs::path MakeCheckpoint(const std::string& family, const std::string& name) {
  const fs::path dir = FreshDir(name);
  const auto made = testing_util::RunCommand(
      absl::StrCat("/usr/bin/python3 ", kScript, " make ", family, " ", dir.string()));
  EXPECT_EQ(made.exit_code, 0) << made.output;
  return dir;
}

at::Tensor ReadReference(const fs::path& dir, const std::string& name) {
  auto file = SafetensorsFile::Open((dir / "reference.safetensors").string());
  EXPECT_TRUE(file.ok()) << file.status();
  const TensorView& view = (*file)->tensors().at(name);
  return at::from_blob(const_cast<char*>(view.bytes.data()), view.shape, at::kFloat).clone();
}

at::Tensor Logits(const Transformer& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  return model.Logits(model.Forward(ids, at::Tensor()));
}

double MaxDifference(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

class HfFamilyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFamilyTest, LogitsEqualTheIndependentForwardAndSurviveASaveAndReload) {
  const fs::path dir = MakeCheckpoint(GetParam(), GetParam());
  absl::StatusOr<HfModel> loaded = LoadHfModel(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const at::Tensor ids = ReadReference(dir, "input_ids").to(at::kLong);
  const at::Tensor expected = ReadReference(dir, "logits");
  const at::Tensor logits = Logits(*loaded->model, ids);
  ASSERT_TRUE(logits.sizes().equals(expected.sizes()));
  EXPECT_LT(MaxDifference(logits, expected), 2e-4) << GetParam();
  EXPECT_GT(expected.abs().max().item<double>(), 1.0) << "logits too small to tell apart";

  // Written back (sharded for one family) and read by both loaders.
  const fs::path saved = FreshDir(GetParam() + "_saved");
  SaveOptions options;
  options.max_shard_bytes = GetParam() == "llama" ? 64 << 10 : 0;
  ASSERT_TRUE(SaveHfModel(*loaded->model, loaded->config, saved.string(), options).ok());
  EXPECT_EQ(fs::exists(saved / "model.safetensors.index.json"), GetParam() == "llama");
  absl::StatusOr<HfModel> again = LoadHfModel(saved.string());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(at::equal(Logits(*again->model, ids), logits));
  const auto checked = testing_util::RunCommand(absl::StrCat(
      "/usr/bin/python3 ", kScript, " check ", saved.string(), " ",
      (dir / "reference.safetensors").string(), " --atol 2e-4"));
  EXPECT_EQ(checked.exit_code, 0) << checked.output;

  // BF16 on save rounds every weight, so the logits move, but only a little; weights that
  // came as BF16 (qwen2) go back bit for bit.
  const fs::path bf16 = FreshDir(GetParam() + "_bf16");
  options.dtype = Dtype::kBF16;
  ASSERT_TRUE(SaveHfModel(*loaded->model, loaded->config, bf16.string(), options).ok());
  absl::StatusOr<HfModel> rounded = LoadHfModel(bf16.string());
  ASSERT_TRUE(rounded.ok()) << rounded.status();
  const double moved = MaxDifference(Logits(*rounded->model, ids), logits);
  if (loaded->config.torch_dtype == "bfloat16") {
    EXPECT_EQ(moved, 0.0);
  } else {
    EXPECT_GT(moved, 0.0);
    EXPECT_LT(moved, 0.1);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, HfFamilyTest, ::testing::Values("llama", "qwen2", "qwen3"));

TEST(HfConfigTest, FamiliesMapToTheirFeatures) {
  const fs::path dir = MakeCheckpoint("qwen3", "config_qwen3");
  absl::StatusOr<HfModel> qwen3 = LoadHfModel(dir.string(), /*max_seq_len_cap=*/100);
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  const ModelConfig& c = qwen3->config.model;
  EXPECT_EQ(qwen3->config.family, ModelFamily::kQwen3);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.head_dim(), 32);
  EXPECT_EQ(c.max_seq_len, 100) << "capped below max_position_embeddings";
  EXPECT_EQ(qwen3->config.max_position_embeddings, 256);
  EXPECT_EQ(qwen3->config.eos_token_ids, std::vector<int>{2});
}

// --- broken checkpoints -------------------------------------------------------------------

class BrokenCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per test: ctest runs them in parallel.
    dir_ = MakeCheckpoint(
        "llama", std::string("broken_") +
                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    absl::StatusOr<HfModel> loaded = LoadHfModel(dir_.string());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    model_ = std::move(loaded->model);
    before_ = Snapshot();
  }
  std::vector<at::Tensor> Snapshot() const {
    std::vector<at::Tensor> out;
    for (const auto& [name, p] : model_->named_parameters()) out.push_back(p.detach().clone());
    return out;
  }
  // Refused with `expected` in the message, the model as it was.
  void ExpectRefused(const std::string& expected) {
    const absl::Status status = LoadHfWeights(dir_.string(), *model_);
    EXPECT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()), HasSubstr(expected));
    const std::vector<at::Tensor> after = Snapshot();
    for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(at::equal(after[i], before_[i]));
  }
  // Rewrites model.safetensors with `edit` applied to its tensors.
  void Rewrite(const std::function<void(std::vector<TensorToWrite>&)>& edit) {
    std::vector<TensorToWrite> tensors;
    {
      auto file = SafetensorsFile::Open((dir_ / "model.safetensors").string());
      ASSERT_TRUE(file.ok());
      for (const auto& [name, view] : (*file)->tensors()) {
        tensors.push_back({name, view.dtype, view.shape, std::string(view.bytes)});
      }
    }
    edit(tensors);
    ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(), tensors, {}).ok());
  }

  fs::path dir_;
  std::unique_ptr<Transformer> model_;
  std::vector<at::Tensor> before_;
};

TEST_F(BrokenCheckpointTest, MissingTensor) {
  Rewrite([](std::vector<TensorToWrite>& t) {
    t.erase(std::remove_if(t.begin(), t.end(),
                           [](const TensorToWrite& x) {
                             return x.name == "model.layers.1.mlp.up_proj.weight";
                           }),
            t.end());
  });
  ExpectRefused("missing tensor model.layers.1.mlp.up_proj.weight");
}

TEST_F(BrokenCheckpointTest, ShapeMismatch) {
  Rewrite([](std::vector<TensorToWrite>& t) {
    for (TensorToWrite& x : t) {
      if (x.name != "model.layers.0.self_attn.k_proj.weight") continue;
      x.shape = {x.shape[0] / 2, x.shape[1] * 2};  // same bytes, wrong shape
    }
  });
  ExpectRefused("shape mismatch: model.layers.0.self_attn.k_proj.weight is [16, 128], "
                "config.json implies [32, 64]");
}

TEST_F(BrokenCheckpointTest, UnexpectedTensorFromAnotherFamily) {
  Rewrite([](std::vector<TensorToWrite>& t) {
    t.push_back({"model.layers.0.self_attn.q_proj.bias", Dtype::kF32, {64}, std::string(256, '\0')});
  });
  ExpectRefused("unexpected tensor model.layers.0.self_attn.q_proj.bias");
}

TEST_F(BrokenCheckpointTest, TruncatedFile) {
  const fs::path file = dir_ / "model.safetensors";
  fs::resize_file(file, fs::file_size(file) - 100);
  ExpectRefused("truncated file");
}

TEST_F(BrokenCheckpointTest, HeaderLargerThanTheFile) {
  std::ofstream((dir_ / "model.safetensors").string(), std::ios::binary)
      << std::string("\xff\xff\x00\x00\x00\x00\x00\x00{}", 10);
  ExpectRefused("header of 65535 bytes is larger than the file (10 bytes)");
}

TEST_F(BrokenCheckpointTest, NonFiniteWeights) {
  Rewrite([](std::vector<TensorToWrite>& t) {
    for (TensorToWrite& x : t) {
      if (x.name != "model.norm.weight") continue;
      const float inf = std::numeric_limits<float>::infinity();
      std::memcpy(x.bytes.data(), &inf, sizeof(inf));
    }
  });
  ExpectRefused("final_norm holds NaN or infinite values");
}

TEST(HfConfigTest, UnsupportedArchitectureAndBadFieldsAreNamed) {
  EXPECT_THAT(std::string(ParseHfConfig(R"({"model_type": "gpt2"})", "c.json", 512).status().message()),
              HasSubstr("model_type \"gpt2\" is not supported"));
  EXPECT_EQ(ParseHfConfig(R"({"model_type": "gpt2"})", "c.json", 512).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(ParseHfConfig(R"({"model_type": "llama", "hidden_size": 64})", "c.json", 512)
                              .status().message()),
              HasSubstr("c.json: vocab_size is missing"));
  EXPECT_THAT(std::string(ParseHfConfig(R"({"model_type": "llama", "vocab_size": "many"})", "c.json", 512)
                              .status().message()),
              HasSubstr("vocab_size is not an integer"));
  EXPECT_THAT(std::string(ParseHfConfig(R"({"model_type": "qwen2", "use_sliding_window": true})",
                                        "c.json", 512).status().message()),
              HasSubstr("use_sliding_window"));
  EXPECT_THAT(std::string(ParseHfConfig(R"({"model_type": "llama", "rope_scaling": {"type": "yarn"}})",
                                        "c.json", 512).status().message()),
              HasSubstr("rope_scaling type \"yarn\""));
  EXPECT_THAT(std::string(ParseHfConfig("{\"model_type\": ", "c.json", 512).status().message()),
              HasSubstr("c.json: not a JSON object"));
}

TEST(SafetensorsTest, RoundTripAndRangeChecks) {
  const fs::path dir = FreshDir("safetensors");
  const std::string path = (dir / "x.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, {{"b", Dtype::kF16, {3}, std::string(6, 'x')},
                                      {"a", Dtype::kF32, {2, 2}, std::string(16, 'y')}},
                               {{"k", "v\"q"}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().at("a").bytes, std::string(16, 'y'));
  EXPECT_EQ((*file)->tensors().at("b").shape, (std::vector<int64_t>{3}));
  EXPECT_EQ((*file)->metadata().at("k"), "v\"q");
  EXPECT_FALSE(WriteSafetensors(path, {{"a", Dtype::kF32, {3}, "short"}}, {}).ok());

  auto parse = [](const std::string& header, size_t data_bytes) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    bytes += header + std::string(data_bytes, '\0');
    return SafetensorsFile::Parse(bytes, "t").status();
  };
  EXPECT_TRUE(parse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8).ok());
  EXPECT_THAT(std::string(parse(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8).message()),
              HasSubstr("dtype I64 is not supported"));
  EXPECT_THAT(std::string(parse(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8).message()),
              HasSubstr("8 bytes for shape and dtype F32 needing 12"));
  EXPECT_THAT(std::string(parse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 8).message()),
              HasSubstr("run past the end"));
  EXPECT_THAT(std::string(parse(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8).message()),
              HasSubstr("non-count"));
  EXPECT_THAT(std::string(parse(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", 8).message()),
              HasSubstr("too large"));
  EXPECT_THAT(std::string(SafetensorsFile::Parse("abc", "t").status().message()), HasSubstr("truncated"));
}

}  // namespace
}  // namespace grpo::hf
