#include "model/weight_transfer.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/model.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

ModelConfig Config() {
  return testing_util::SmallModel(
      {.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48});
}

bool SameParameters(const Transformer& a, const Transformer& b) {
  for (size_t i = 0; i < a.parameters().size(); ++i)
    if (!at::equal(a.parameters()[i], b.parameters()[i])) return false;
  return true;
}

TEST(WeightTransferTest, ChunkedWeightsArriveInAnyOrderAndLoad) {
  Transformer sender(Config(), 1), receiver(Config(), 2);
  auto payload = sender.SaveToString();
  ASSERT_TRUE(payload.ok()) << payload.status();
  std::vector<v1::WeightChunk> chunks = ChunkPayload(*payload, 7, 4096);
  ASSERT_GT(chunks.size(), 10u);
  for (const auto& c : chunks) EXPECT_LE(c.ByteSizeLong(), 4096u + 64u);
  std::shuffle(chunks.begin(), chunks.end(), std::mt19937(3));
  WeightAssembler assembler;
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_FALSE(assembler.complete());
    ASSERT_TRUE(assembler.Add(chunks[i]).ok());
  }
  EXPECT_TRUE(assembler.complete());
  EXPECT_EQ(assembler.version(), 7);
  auto assembled = assembler.Take();
  ASSERT_TRUE(assembled.ok()) << assembled.status();
  ASSERT_FALSE(SameParameters(sender, receiver));
  ASSERT_TRUE(receiver.LoadFromString(*assembled).ok());
  EXPECT_TRUE(SameParameters(sender, receiver));
}

TEST(WeightTransferTest, CorruptOrIncompleteTransfersLeaveTheWeightsAlone) {
  Transformer sender(Config(), 1), receiver(Config(), 2), untouched(Config(), 2);
  auto payload = sender.SaveToString();
  ASSERT_TRUE(payload.ok());
  std::vector<v1::WeightChunk> chunks = ChunkPayload(*payload, 3, 4096);

  // A flipped byte: complete, but the checksum says no.
  WeightAssembler corrupt;
  for (auto c : chunks) {
    if (c.index() == 2) (*c.mutable_data())[100] ^= 0x40;
    ASSERT_TRUE(corrupt.Add(c).ok());
  }
  EXPECT_EQ(corrupt.Take().status().code(), absl::StatusCode::kDataLoss);

  // A missing chunk.
  WeightAssembler missing;
  for (size_t i = 1; i < chunks.size(); ++i) ASSERT_TRUE(missing.Add(chunks[i]).ok());
  EXPECT_FALSE(missing.complete());
  EXPECT_EQ(missing.Take().status().code(), absl::StatusCode::kFailedPrecondition);

  // Chunks of another version, repeats and bad indices are refused as they come.
  WeightAssembler mixed;
  ASSERT_TRUE(mixed.Add(chunks[0]).ok());
  EXPECT_FALSE(mixed.Add(chunks[0]).ok());
  v1::WeightChunk other = chunks[1];
  other.set_version(4);
  EXPECT_THAT(std::string(mixed.Add(other).message()), testing::HasSubstr("version 4"));
  v1::WeightChunk out_of_range = chunks[1];
  out_of_range.set_index(out_of_range.total_chunks());
  EXPECT_FALSE(mixed.Add(out_of_range).ok());

  // Garbage that passes no archive check: the model keeps its weights.
  EXPECT_FALSE(receiver.LoadFromString(std::string(payload->size(), 'x')).ok());
  EXPECT_FALSE(receiver.LoadFromString(payload->substr(0, payload->size() / 2)).ok());
  EXPECT_TRUE(SameParameters(receiver, untouched));
}

// A hostile or broken peer cannot make the worker buffer more than it announced, nor
// announce more than its chunks could carry.
TEST(WeightTransferTest, SizesAndVersionsOutOfBoundsAreRefused) {
  std::vector<v1::WeightChunk> chunks = ChunkPayload(std::string(100, 'w'), 3, 40);
  ASSERT_EQ(chunks.size(), 3u);
  WeightAssembler assembler;
  v1::WeightChunk negative = chunks[0];
  negative.set_version(-1);
  EXPECT_EQ(assembler.Add(negative).code(), absl::StatusCode::kInvalidArgument);
  v1::WeightChunk huge = chunks[0];
  huge.set_total_bytes(uint64_t{3} * kMaxWeightChunkMessage + 1);
  EXPECT_EQ(assembler.Add(huge).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(assembler.Add(chunks[0]).ok());
  v1::WeightChunk stuffed = chunks[1];
  stuffed.set_data(std::string(70, 'x'));  // 40 + 70 > the 100 bytes announced
  EXPECT_THAT(std::string(assembler.Add(stuffed).message()), testing::HasSubstr("past the 100"));
  ASSERT_TRUE(assembler.Add(chunks[1]).ok());  // nothing of the refused chunk was kept
  ASSERT_TRUE(assembler.Add(chunks[2]).ok());
  absl::StatusOr<std::string> payload = assembler.Take();
  ASSERT_TRUE(payload.ok()) << payload.status();
  EXPECT_EQ(*payload, std::string(100, 'w'));
}

// Weights that arrive whole and verified but hold a NaN are still refused, naming the
// parameter, and the model keeps its weights.
TEST(WeightTransferTest, NonFiniteWeightsAreRefused) {
  Transformer source(Config(), 1), target(Config(), 2);
  {
    at::NoGradGuard no_grad;
    source.parameters()[0].view({-1})[3] = std::numeric_limits<float>::quiet_NaN();
  }
  absl::StatusOr<std::string> bytes = source.SaveToString();
  ASSERT_TRUE(bytes.ok());
  const at::Tensor before = target.parameters()[0].clone();
  absl::Status s = target.LoadFromString(*bytes);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), testing::HasSubstr("NaN or infinite"));
  EXPECT_TRUE(at::equal(target.parameters()[0], before));
}

TEST(WeightTransferTest, EmptyPayloadIsOneChunk) {
  auto chunks = ChunkPayload("", 1, 16);
  ASSERT_EQ(chunks.size(), 1u);
  WeightAssembler a;
  ASSERT_TRUE(a.Add(chunks[0]).ok());
  auto payload = a.Take();
  ASSERT_TRUE(payload.ok());
  EXPECT_TRUE(payload->empty());
}

}  // namespace
}  // namespace grpo
