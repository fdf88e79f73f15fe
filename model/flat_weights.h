// Flat weights: the payload a learner streams to rollout workers (docs/design.md §7),
// laid out so a worker copies each tensor from the receive buffer straight into its
// parameter, in whichever dtype either side holds:
//
//   "GRPOFW01" | header size (u64, little-endian) | FlatWeightsHeader | tensors
//
// Each tensor's raw little-endian elements start at its header offset, a multiple of 64.
// Torch-free: parsing, the float32 <-> bfloat16 conversion and the finiteness check are
// byte work; Transformer::ExportFlat / ImportFlat fill and read the tensors.
#ifndef GRPO_MODEL_FLAT_WEIGHTS_H_
#define GRPO_MODEL_FLAT_WEIGHTS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "grpo/v1/weights.pb.h"

namespace grpo {

// "float32" or "bfloat16"; INVALID_ARGUMENT names anything else.
absl::StatusOr<v1::WeightDtype> ParseWeightDtype(std::string_view name);
std::string_view WeightDtypeName(v1::WeightDtype dtype);
// Bytes per element: 4 for float32 (and unspecified), 2 for bfloat16.
size_t WeightDtypeBytes(v1::WeightDtype dtype);

struct FlatTensorView {
  std::string name;
  std::vector<int64_t> shape;
  int64_t elements = 0;
  std::string_view bytes;  // into the payload
};

struct FlatWeights {
  v1::WeightDtype dtype = v1::WEIGHT_DTYPE_FLOAT32;
  std::vector<FlatTensorView> tensors;
};

// A payload for tensors of these names and shapes, the header and padding written;
// (*offsets)[i] is where tensor i's bytes go. The payload is built in `reuse`'s memory:
// a buffer of the same size is not touched beyond the header (fresh memory costs a page
// fault per 4 KiB on first touch, seconds per GB on some VMs), and tensor bytes are
// whatever it held (zero for a fresh one).
std::string LayOutFlatWeights(
    v1::WeightDtype dtype,
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
    std::vector<size_t>* offsets, std::string reuse = {});

// INVALID_ARGUMENT for a payload that is not flat weights: bad magic or header, an unknown
// dtype, a negative dimension, a tensor outside the payload or misaligned, a repeated
// name. The views borrow `payload`.
absl::StatusOr<FlatWeights> ParseFlatWeights(std::string_view payload);

// The same tensors in another dtype (bfloat16 rounded to nearest even), built in
// `reuse`'s memory.
absl::StatusOr<std::string> ConvertFlatWeights(std::string_view payload, v1::WeightDtype to,
                                               std::string reuse = {});

// No NaN or infinity among the elements.
bool AllFinite(v1::WeightDtype dtype, std::string_view bytes);

}  // namespace grpo

#endif  // GRPO_MODEL_FLAT_WEIGHTS_H_
