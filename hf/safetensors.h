// Safetensors: the Hugging Face weight file. Layout: an 8-byte little-endian header
// length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]},
// optional "__metadata__": {string: string}}), then the tensor bytes, offsets relative to
// the end of the header.
//
// Reading maps the file (read-only, private) and checks everything before handing out a
// view: the header fits the file, every tensor's byte range lies inside the data and
// matches its dtype and shape. Errors name the file and the tensor. Torch-free: tensors
// come out as raw little-endian bytes, and hf/hf_checkpoint.h turns them into tensors.
//
// A SafetensorsFile is immutable after Open and may be read from many threads; the views
// it hands out live as long as it does.
#ifndef GRPO_HF_SAFETENSORS_H_
#define GRPO_HF_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpo::hf {

// Element types we read and write; others (integers, F64, F8) are refused by name.
enum class Dtype { kF32, kF16, kBF16 };
absl::string_view DtypeName(Dtype dtype);  // "F32", "F16", "BF16"
int DtypeSize(Dtype dtype);

struct TensorView {
  Dtype dtype;
  std::vector<int64_t> shape;
  absl::string_view bytes;  // numel * DtypeSize(dtype) bytes, little-endian
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // INVALID_ARGUMENT for a truncated file, a header larger than the file, malformed JSON,
  // unsupported dtypes, or byte ranges that overlap the end or disagree with the shape.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // The same checks on bytes in memory (the fuzzer's entry); `bytes` must outlive it.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(absl::string_view bytes,
                                                                const std::string& name);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& name() const { return name_; }

 private:
  SafetensorsFile() = default;
  std::string name_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes `tensors` (in name order, 8-byte aligned data) and `metadata` to `path` through a
// temporary file, fsynced and renamed: a reader sees the old file or the whole new one.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace grpo::hf

#endif  // GRPO_HF_SAFETENSORS_H_
