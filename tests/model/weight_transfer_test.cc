// Weight transfer end to end inside one process: a model exported as flat weights, cut
// into chunks, assembled from any order (and from several threads at once), imported into
// another model; and every way a transfer or a payload can be bad leaves the receiving
// model as it was.
#include "model/weight_transfer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/flat_weights.h"
#include "model/model.h"
#include "tests/testing/small_model.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

ModelConfig Config() {
  return testing_util::SmallModel(
      {.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn_hidden = 48});
}

bool SameParameters(const Transformer& a, const Transformer& b) {
  for (size_t i = 0; i < a.parameters().size(); ++i)
    if (!at::equal(a.parameters()[i], b.parameters()[i])) return false;
  return true;
}

std::string Export(const Transformer& model, v1::WeightDtype dtype) {
  absl::StatusOr<std::string> flat = model.ExportFlat(dtype);
  EXPECT_TRUE(flat.ok()) << flat.status();
  return flat.ok() ? *flat : "";
}

TEST(WeightTransferTest, ChunkedWeightsArriveInAnyOrderAndLoad) {
  Transformer sender(Config(), 1), receiver(Config(), 2);
  const std::string payload = Export(sender, v1::WEIGHT_DTYPE_FLOAT32);
  std::vector<v1::WeightChunk> chunks = ChunkPayload(payload, 7, 4096);
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
  absl::StatusOr<std::string_view> assembled = assembler.Take();
  ASSERT_TRUE(assembled.ok()) << assembled.status();
  EXPECT_TRUE(*assembled == payload);
  ASSERT_FALSE(SameParameters(sender, receiver));
  ASSERT_TRUE(receiver.ImportFlat(*assembled).ok());
  EXPECT_TRUE(SameParameters(sender, receiver));
}

// Streams add their chunks from their own threads into one buffer.
TEST(WeightTransferTest, ChunksFromManyThreadsAssembleOnce) {
  Transformer sender(Config(), 1);
  const std::string payload = Export(sender, v1::WEIGHT_DTYPE_FLOAT32);
  const std::vector<v1::WeightChunk> chunks = ChunkPayload(payload, 2, 1000);
  WeightAssembler assembler;
  for (int round = 0; round < 2; ++round) {  // the second reuses the buffer
    std::vector<std::thread> streams;
    for (int k = 0; k < 4; ++k)
      streams.emplace_back([&, k] {
        for (size_t i = k; i < chunks.size(); i += 4) EXPECT_TRUE(assembler.Add(chunks[i]).ok());
      });
    for (std::thread& t : streams) t.join();
    absl::StatusOr<std::string_view> taken = assembler.Take();
    ASSERT_TRUE(taken.ok()) << taken.status();
    EXPECT_TRUE(*taken == payload);
  }
}

// A bfloat16 worker: the payload is half the size, and what it imports is the sender's
// weights rounded to bfloat16, whichever side converts.
TEST(WeightTransferTest, BfloatPayloadsAreHalfTheSizeAndRoundToNearest) {
  Transformer sender(Config(), 1), receiver(Config(), 2);
  const std::string f32 = Export(sender, v1::WEIGHT_DTYPE_FLOAT32);
  const std::string bf16 = Export(sender, v1::WEIGHT_DTYPE_BFLOAT16);
  EXPECT_LT(bf16.size(), f32.size() / 2 + 4096);
  absl::StatusOr<std::string> converted = ConvertFlatWeights(f32, v1::WEIGHT_DTYPE_BFLOAT16);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_TRUE(*converted == bf16);  // the torch-free rounding is LibTorch's
  ASSERT_TRUE(receiver.ImportFlat(bf16).ok());
  for (size_t i = 0; i < sender.parameters().size(); ++i) {
    const at::Tensor rounded = sender.parameters()[i].to(at::kBFloat16).to(at::kFloat);
    EXPECT_TRUE(at::equal(receiver.parameters()[i], rounded)) << i;
  }
  // Back to float32 is exact.
  absl::StatusOr<std::string> widened = ConvertFlatWeights(bf16, v1::WEIGHT_DTYPE_FLOAT32);
  ASSERT_TRUE(widened.ok());
  Transformer again(Config(), 3);
  ASSERT_TRUE(again.ImportFlat(*widened).ok());
  EXPECT_TRUE(SameParameters(receiver, again));
}

// Big enough that conversion and checksums split over threads (where there are two
// cores), the conversion's splits falling inside tensors (1M elements a thread; the
// embedding alone is 1M): the same bytes as LibTorch's rounding, and the same checksums as
// one pass chunk by chunk (8 MB a thread: a 24 MB payload).
TEST(WeightTransferTest, ConversionAndChecksumsSplitOverThreadsGiveTheSerialBytes) {
  const ModelConfig c = testing_util::SmallModel({.d_model = 256, .n_layers = 2, .n_heads = 4,
                                                  .n_kv_heads = 2, .ffn_hidden = 512,
                                                  .vocab_size = 4096, .tie_embeddings = false});
  Transformer sender(c, 4);
  const std::string f32 = Export(sender, v1::WEIGHT_DTYPE_FLOAT32);
  ASSERT_GT(f32.size(), size_t{4} * (size_t{5} << 20) / 2) << "more than 2.5M elements";
  absl::StatusOr<std::string> converted = ConvertFlatWeights(f32, v1::WEIGHT_DTYPE_BFLOAT16);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_TRUE(*converted == Export(sender, v1::WEIGHT_DTYPE_BFLOAT16));
  absl::StatusOr<std::string> widened = ConvertFlatWeights(*converted, v1::WEIGHT_DTYPE_FLOAT32);
  ASSERT_TRUE(widened.ok());
  Transformer rounded(c, 5);
  ASSERT_TRUE(rounded.ImportFlat(*widened).ok());
  for (size_t i = 0; i < sender.parameters().size(); ++i)
    EXPECT_TRUE(at::equal(rounded.parameters()[i],
                          sender.parameters()[i].to(at::kBFloat16).to(at::kFloat))) << i;
  std::string big;
  while (big.size() < (size_t{24} << 20)) big += f32;
  big.resize((size_t{24} << 20) + 12345);  // a short last chunk
  for (size_t chunk : {size_t{4096}, size_t{1} << 20}) {
    const std::vector<uint64_t> sums = ChunkChecksums(big, chunk);
    ASSERT_EQ(sums.size(), (big.size() + chunk - 1) / chunk);
    for (size_t i = 0; i < sums.size(); ++i)
      ASSERT_EQ(sums[i], Checksum64(std::string_view(big).substr(i * chunk, chunk))) << i;
  }
}

TEST(WeightTransferTest, CorruptOrIncompleteTransfersLeaveTheWeightsAlone) {
  Transformer sender(Config(), 1), receiver(Config(), 2), untouched(Config(), 2);
  const std::string payload = Export(sender, v1::WEIGHT_DTYPE_FLOAT32);
  std::vector<v1::WeightChunk> chunks = ChunkPayload(payload, 3, 4096);

  // A flipped byte: refused as it arrives, and the good copy is taken after it.
  WeightAssembler corrupt;
  v1::WeightChunk flipped = chunks[2];
  (*flipped.mutable_data())[100] ^= 0x40;
  EXPECT_EQ(corrupt.Add(flipped).code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(corrupt.Add(chunks[2]).ok());
  // A chunk whose data and checksum were both changed: only the whole fails.
  WeightAssembler forged;
  for (auto c : chunks) {
    if (c.index() == 1) {
      (*c.mutable_data())[7] ^= 0x01;
      c.set_data_checksum(Checksum64(c.data()));
    }
    ASSERT_TRUE(forged.Add(c).ok());
  }
  EXPECT_EQ(forged.Take().status().code(), absl::StatusCode::kDataLoss);

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
  EXPECT_THAT(std::string(mixed.Add(other).message()), HasSubstr("version 4"));
  v1::WeightChunk out_of_range = chunks[1];
  out_of_range.set_index(out_of_range.total_chunks());
  EXPECT_FALSE(mixed.Add(out_of_range).ok());

  // Payloads that are not the model's flat weights: the model keeps its weights.
  EXPECT_FALSE(receiver.ImportFlat(std::string(payload.size(), 'x')).ok());
  EXPECT_FALSE(receiver.ImportFlat(payload.substr(0, payload.size() / 2)).ok());
  Transformer wider(testing_util::SmallModel({.d_model = 64, .n_layers = 2, .n_heads = 4,
                                              .n_kv_heads = 2, .ffn_hidden = 48}),
                    4);
  absl::Status shape = receiver.ImportFlat(Export(wider, v1::WEIGHT_DTYPE_FLOAT32));
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(shape.message()), HasSubstr("the model expects"));
  EXPECT_TRUE(SameParameters(receiver, untouched));
}

// A hostile or broken peer cannot make the worker buffer more than it allows, nor send a
// chunk that does not fit the place its index names.
TEST(WeightTransferTest, SizesAndVersionsOutOfBoundsAreRefused) {
  std::vector<v1::WeightChunk> chunks = ChunkPayload(std::string(100, 'w'), 3, 40);
  ASSERT_EQ(chunks.size(), 3u);
  WeightAssembler assembler(/*max_bytes=*/1000);
  v1::WeightChunk negative = chunks[0];
  negative.set_version(-1);
  EXPECT_EQ(assembler.Add(negative).code(), absl::StatusCode::kInvalidArgument);
  v1::WeightChunk huge = chunks[0];
  huge.set_total_bytes(1001);
  huge.set_total_chunks(ChunkCount(1001, 40));
  EXPECT_THAT(std::string(assembler.Add(huge).message()), HasSubstr("over the 1000"));
  v1::WeightChunk miscounted = chunks[0];
  miscounted.set_total_chunks(4);
  EXPECT_EQ(assembler.Add(miscounted).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(assembler.Add(chunks[0]).ok());
  v1::WeightChunk stuffed = chunks[2];
  stuffed.set_data(std::string(30, 'w'));  // the last chunk holds 20 of the 100
  stuffed.set_data_checksum(Checksum64(stuffed.data()));
  EXPECT_THAT(std::string(assembler.Add(stuffed).message()), HasSubstr("holds 20"));
  ASSERT_TRUE(assembler.Add(chunks[1]).ok());  // nothing of the refused chunk was kept
  ASSERT_TRUE(assembler.Add(chunks[2]).ok());
  absl::StatusOr<std::string_view> payload = assembler.Take();
  ASSERT_TRUE(payload.ok()) << payload.status();
  EXPECT_EQ(*payload, std::string(100, 'w'));
}

// Weights that arrive whole and verified but hold a NaN or an infinity are still refused,
// naming the parameter, and the model keeps its weights.
TEST(WeightTransferTest, NonFiniteWeightsAreRefused) {
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    for (v1::WeightDtype dtype : {v1::WEIGHT_DTYPE_FLOAT32, v1::WEIGHT_DTYPE_BFLOAT16}) {
      Transformer source(Config(), 1), target(Config(), 2);
      {
        at::NoGradGuard no_grad;
        source.parameters()[1].view({-1})[3] = bad;
      }
      const at::Tensor before = target.parameters()[0].clone();
      absl::Status s = target.ImportFlat(Export(source, dtype));
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(s.message()), HasSubstr("NaN or infinite"));
      EXPECT_THAT(std::string(s.message()), HasSubstr(source.named_parameters()[1].first));
      EXPECT_TRUE(at::equal(target.parameters()[0], before));
    }
  }
}

TEST(WeightTransferTest, FlatHeadersOutOfBoundsAreRefused) {
  std::vector<size_t> offsets;
  std::string payload = LayOutFlatWeights(v1::WEIGHT_DTYPE_FLOAT32, {{"w", {4, 4}}}, &offsets);
  ASSERT_TRUE(ParseFlatWeights(payload).ok());
  const absl::Status truncated = ParseFlatWeights(payload.substr(0, payload.size() - 1)).status();
  EXPECT_THAT(std::string(truncated.message()), HasSubstr("not inside"));
  std::string bad_magic = payload;
  bad_magic[0] = 'X';
  EXPECT_FALSE(ParseFlatWeights(bad_magic).ok());
  std::string long_header = payload;
  long_header[8] = '\xff';
  EXPECT_FALSE(ParseFlatWeights(long_header).ok());
  v1::FlatWeightsHeader header;
  header.set_dtype(v1::WEIGHT_DTYPE_FLOAT32);
  for (int i = 0; i < 2; ++i) {
    v1::FlatTensor* t = header.add_tensors();
    t->set_name("x");
    t->add_shape(0);
    t->set_offset(64);
  }
  std::string twice = std::string("GRPOFW01") + std::string(8, '\0');
  const std::string head = header.SerializeAsString();
  twice[8] = static_cast<char>(head.size());
  twice += head;
  twice.resize(128, '\0');
  EXPECT_THAT(std::string(ParseFlatWeights(twice).status().message()), HasSubstr("repeated"));
  EXPECT_EQ(ParseWeightDtype("float16").status().code(), absl::StatusCode::kInvalidArgument);
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
