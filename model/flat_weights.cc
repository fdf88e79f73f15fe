#include "model/flat_weights.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/parallel.h"

namespace grpo {
namespace {

constexpr std::string_view kMagic = "GRPOFW01";
constexpr size_t kAlign = 64;

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

uint16_t ToBfloat16(uint32_t bits) {
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0)
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN stays a (quiet) NaN
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace

absl::StatusOr<v1::WeightDtype> ParseWeightDtype(std::string_view name) {
  if (name == "float32") return v1::WEIGHT_DTYPE_FLOAT32;
  if (name == "bfloat16") return v1::WEIGHT_DTYPE_BFLOAT16;
  return absl::InvalidArgumentError(
      absl::StrCat("weight dtype '", absl::string_view(name.data(), name.size()),
                   "': expected float32 or bfloat16"));
}

std::string_view WeightDtypeName(v1::WeightDtype dtype) {
  return dtype == v1::WEIGHT_DTYPE_BFLOAT16 ? "bfloat16" : "float32";
}

size_t WeightDtypeBytes(v1::WeightDtype dtype) {
  return dtype == v1::WEIGHT_DTYPE_BFLOAT16 ? 2 : 4;
}

std::string LayOutFlatWeights(
    v1::WeightDtype dtype,
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
    std::vector<size_t>* offsets, std::string reuse) {
  v1::FlatWeightsHeader header;
  header.set_dtype(dtype);
  std::vector<size_t> sizes;
  for (const auto& [name, shape] : tensors) {
    v1::FlatTensor* t = header.add_tensors();
    t->set_name(name);
    size_t elements = 1;
    for (int64_t d : shape) {
      t->add_shape(d);
      elements *= static_cast<size_t>(d);
    }
    sizes.push_back(elements * WeightDtypeBytes(dtype));
  }
  // The offsets are part of the header, whose size depends on them: move the data start
  // up until the header fits before it (offsets only grow, so this ends).
  size_t start = 0, end = 0;
  offsets->assign(sizes.size(), 0);
  for (;;) {
    end = start;
    for (int i = 0; i < header.tensors_size(); ++i) {
      header.mutable_tensors(i)->set_offset(end);
      (*offsets)[i] = end;
      end = AlignUp(end + sizes[i]);
    }
    const size_t needed = AlignUp(kMagic.size() + 8 + header.ByteSizeLong());
    if (needed <= start) break;
    start = needed;
  }
  const std::string head = header.SerializeAsString();
  std::string payload = std::move(reuse);
  payload.resize(std::max(end, start));
  std::memset(payload.data(), 0, start);
  for (size_t i = 0; i < sizes.size(); ++i) {  // padding, so equal tensors make equal bytes
    const size_t from = (*offsets)[i] + sizes[i];
    std::memset(payload.data() + from, 0, AlignUp(from) - from);
  }
  std::memcpy(payload.data(), kMagic.data(), kMagic.size());
  const uint64_t head_size = head.size();
  for (int b = 0; b < 8; ++b) payload[kMagic.size() + b] = static_cast<char>(head_size >> (8 * b));
  std::memcpy(payload.data() + kMagic.size() + 8, head.data(), head.size());
  return payload;
}

absl::StatusOr<FlatWeights> ParseFlatWeights(std::string_view payload) {
  auto bad = [](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat("flat weights: ", what...));
  };
  if (payload.size() < kMagic.size() + 8 || payload.substr(0, kMagic.size()) != kMagic)
    return bad("no GRPOFW01 header (", payload.size(), " bytes)");
  uint64_t head_size = 0;
  for (int b = 0; b < 8; ++b)
    head_size |= uint64_t{static_cast<unsigned char>(payload[kMagic.size() + b])} << (8 * b);
  if (head_size > payload.size() - kMagic.size() - 8)
    return bad("header of ", head_size, " bytes in a payload of ", payload.size());
  v1::FlatWeightsHeader header;
  if (!header.ParseFromArray(payload.data() + kMagic.size() + 8, static_cast<int>(head_size)))
    return bad("the header does not parse");
  if (header.dtype() != v1::WEIGHT_DTYPE_FLOAT32 && header.dtype() != v1::WEIGHT_DTYPE_BFLOAT16)
    return bad("unknown dtype ", static_cast<int>(header.dtype()));
  FlatWeights out;
  out.dtype = header.dtype();
  const size_t element = WeightDtypeBytes(out.dtype);
  const uint64_t data_start = kMagic.size() + 8 + head_size;
  std::set<std::string> names;
  for (const v1::FlatTensor& t : header.tensors()) {
    if (!names.insert(t.name()).second) return bad("tensor ", t.name(), " repeated");
    FlatTensorView view;
    view.name = t.name();
    uint64_t elements = 1;
    for (int64_t d : t.shape()) {
      if (d < 0 || (d > 0 && elements > payload.size() / static_cast<uint64_t>(d)))
        return bad("tensor ", t.name(), " has a dimension ", d, " out of range");
      elements *= static_cast<uint64_t>(d);
      view.shape.push_back(d);
    }
    const uint64_t bytes = elements * element;
    if (t.offset() % kAlign != 0 || t.offset() < data_start || t.offset() > payload.size() ||
        bytes > payload.size() - t.offset())
      return bad("tensor ", t.name(), " at offset ", t.offset(), " (", bytes,
                 " bytes) is not inside the ", payload.size(), "-byte payload");
    view.elements = static_cast<int64_t>(elements);
    view.bytes = payload.substr(t.offset(), bytes);
    out.tensors.push_back(std::move(view));
  }
  return out;
}

absl::StatusOr<std::string> ConvertFlatWeights(std::string_view payload, v1::WeightDtype to,
                                               std::string reuse) {
  absl::StatusOr<FlatWeights> from = ParseFlatWeights(payload);
  if (!from.ok()) return from.status();
  if (to != v1::WEIGHT_DTYPE_FLOAT32 && to != v1::WEIGHT_DTYPE_BFLOAT16)
    return absl::InvalidArgumentError(
        absl::StrCat("flat weights: cannot convert to dtype ", static_cast<int>(to)));
  std::vector<std::pair<std::string, std::vector<int64_t>>> specs;
  for (const FlatTensorView& t : from->tensors) specs.emplace_back(t.name, t.shape);
  std::vector<size_t> offsets;
  std::string out = LayOutFlatWeights(to, specs, &offsets, std::move(reuse));
  // Elements [b, e) of tensor i, converted into their place in `out`.
  const size_t in_bytes = WeightDtypeBytes(from->dtype), out_bytes = WeightDtypeBytes(to);
  char* const base = out.data();  // taken once, before any thread writes
  auto convert = [&](size_t i, size_t b, size_t e) {
    const char* src = from->tensors[i].bytes.data();
    char* dst = base + offsets[i];
    if (from->dtype == to) {
      std::memcpy(dst + b * out_bytes, src + b * in_bytes, (e - b) * in_bytes);
    } else if (to == v1::WEIGHT_DTYPE_BFLOAT16) {
      for (size_t k = b; k < e; ++k) {
        uint32_t bits;
        std::memcpy(&bits, src + 4 * k, 4);
        const uint16_t half = ToBfloat16(bits);
        std::memcpy(dst + 2 * k, &half, 2);
      }
    } else {
      for (size_t k = b; k < e; ++k) {
        uint16_t half;
        std::memcpy(&half, src + 2 * k, 2);
        const uint32_t bits = uint32_t{half} << 16;
        std::memcpy(dst + 4 * k, &bits, 4);
      }
    }
  };
  // One loop over every element of every tensor, split over the cores (a 0.5B model is
  // ~0.5 s on one): start[i] is tensor i's first element in that loop.
  std::vector<size_t> start(offsets.size() + 1, 0);
  for (size_t i = 0; i < offsets.size(); ++i)
    start[i + 1] = start[i] + static_cast<size_t>(from->tensors[i].elements);
  ParallelFor(start.back(), size_t{1} << 20, [&](size_t begin, size_t end) {
    size_t i = std::upper_bound(start.begin(), start.end(), begin) - start.begin() - 1;
    for (; i < offsets.size() && start[i] < end; ++i)
      convert(i, std::max(begin, start[i]) - start[i], std::min(end, start[i + 1]) - start[i]);
  });
  return out;
}

bool AllFinite(v1::WeightDtype dtype, std::string_view bytes) {
  // An exponent of all ones is infinity or NaN; OR-ing a flag keeps the loop branch-free.
  uint32_t bad = 0;
  if (dtype == v1::WEIGHT_DTYPE_BFLOAT16) {
    for (size_t e = 0; e + 2 <= bytes.size(); e += 2) {
      uint16_t h;
      std::memcpy(&h, bytes.data() + e, 2);
      bad |= static_cast<uint32_t>((h & 0x7F80u) == 0x7F80u);
    }
  } else {
    for (size_t e = 0; e + 4 <= bytes.size(); e += 4) {
      uint32_t f;
      std::memcpy(&f, bytes.data() + e, 4);
      bad |= static_cast<uint32_t>((f & 0x7F800000u) == 0x7F800000u);
    }
  }
  return bad == 0;
}

}  // namespace grpo
