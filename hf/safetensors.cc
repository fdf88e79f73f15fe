#include "hf/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/durable_file.h"
#include "base/json.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace grpo::hf {
namespace {

// The format's own bound: a larger header is refused before it is parsed.
constexpr uint64_t kMaxHeaderBytes = 100 << 20;

absl::Status Bad(const std::string& file, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

absl::StatusOr<Dtype> ParseDtype(absl::string_view name) {
  if (name == "F32") return Dtype::kF32;
  if (name == "F16") return Dtype::kF16;
  if (name == "BF16") return Dtype::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", name, " is not supported (F32, F16, BF16 are)"));
}

// A JSON number that is a non-negative integer a double holds exactly.
bool AsCount(const google::protobuf::Value& value, uint64_t& out) {
  if (value.kind_case() != google::protobuf::Value::kNumberValue) return false;
  const double d = value.number_value();
  if (!(d >= 0) || d > 9007199254740992.0 || std::floor(d) != d) return false;
  out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace

absl::string_view DtypeName(Dtype dtype) {
  switch (dtype) {
    case Dtype::kF32: return "F32";
    case Dtype::kF16: return "F16";
    case Dtype::kBF16: return "BF16";
  }
  return "?";
}

int DtypeSize(Dtype dtype) { return dtype == Dtype::kF32 ? 4 : 2; }

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    absl::string_view bytes, const std::string& name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile);
  file->name_ = name;
  if (bytes.size() < 8) {
    return Bad(name, absl::StrCat("truncated: ", bytes.size(),
                                  " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<uint8_t>(bytes[i]);
  if (header_size > bytes.size() - 8) {
    return Bad(name, absl::StrCat("header of ", header_size, " bytes is larger than the file (",
                                  bytes.size(), " bytes)"));
  }
  if (header_size > kMaxHeaderBytes) {
    return Bad(name, absl::StrCat("header of ", header_size, " bytes exceeds the 100 MiB limit"));
  }
  google::protobuf::Struct header;
  const absl::string_view json = bytes.substr(8, header_size);
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &header);
  if (!parsed.ok()) {
    return Bad(name, absl::StrCat("header is not a JSON object: ", parsed.message().as_string()));
  }
  const absl::string_view data = bytes.substr(8 + header_size);
  for (const auto& [tensor_name, value] : header.fields()) {
    if (tensor_name == "__metadata__") {
      if (value.kind_case() != google::protobuf::Value::kStructValue) {
        return Bad(name, "__metadata__ is not an object");
      }
      for (const auto& [key, entry] : value.struct_value().fields()) {
        if (entry.kind_case() != google::protobuf::Value::kStringValue) {
          return Bad(name, absl::StrCat("__metadata__.", key, " is not a string"));
        }
        file->metadata_[key] = entry.string_value();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor ", tensor_name);
    if (value.kind_case() != google::protobuf::Value::kStructValue) {
      return Bad(name, absl::StrCat(where, " is not an object"));
    }
    const auto& fields = value.struct_value().fields();
    const auto dtype_it = fields.find("dtype");
    const auto shape_it = fields.find("shape");
    const auto offsets_it = fields.find("data_offsets");
    if (dtype_it == fields.end() || shape_it == fields.end() || offsets_it == fields.end()) {
      return Bad(name, absl::StrCat(where, " lacks dtype, shape or data_offsets"));
    }
    if (dtype_it->second.kind_case() != google::protobuf::Value::kStringValue) {
      return Bad(name, absl::StrCat(where, ": dtype is not a string"));
    }
    absl::StatusOr<Dtype> dtype = ParseDtype(dtype_it->second.string_value());
    if (!dtype.ok()) return Bad(name, absl::StrCat(where, ": ", dtype.status().message()));
    TensorView view;
    view.dtype = *dtype;
    if (shape_it->second.kind_case() != google::protobuf::Value::kListValue) {
      return Bad(name, absl::StrCat(where, ": shape is not a list"));
    }
    // Counted in bytes with an overflow guard: a shape can claim more than memory holds.
    uint64_t expected = DtypeSize(view.dtype);
    for (const auto& dim : shape_it->second.list_value().values()) {
      uint64_t d = 0;
      if (!AsCount(dim, d)) return Bad(name, absl::StrCat(where, ": shape holds a non-count"));
      if (d != 0 && expected > (uint64_t{1} << 62) / d) {
        return Bad(name, absl::StrCat(where, ": shape is too large"));
      }
      expected *= d;
      view.shape.push_back(static_cast<int64_t>(d));
    }
    const auto& offsets = offsets_it->second;
    uint64_t begin = 0, end = 0;
    if (offsets.kind_case() != google::protobuf::Value::kListValue ||
        offsets.list_value().values_size() != 2 ||
        !AsCount(offsets.list_value().values(0), begin) ||
        !AsCount(offsets.list_value().values(1), end) || begin > end) {
      return Bad(name, absl::StrCat(where, ": data_offsets is not [begin, end]"));
    }
    if (end > data.size()) {
      return Bad(name, absl::StrCat(where, ": bytes ", begin, "..", end,
                                    " run past the end of the data (", data.size(),
                                    " bytes; truncated file?)"));
    }
    if (end - begin != expected) {
      return Bad(name, absl::StrCat(where, ": ", end - begin, " bytes for shape and dtype ",
                                    DtypeName(view.dtype), " needing ", expected));
    }
    view.bytes = data.substr(begin, end - begin);
    file->tensors_.emplace(tensor_name, std::move(view));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": stat: ", std::strerror(err)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* mapping = nullptr;
  if (size > 0) {
    mapping = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap: ", std::strerror(err)));
    }
  }
  ::close(fd);
  auto file = Parse(absl::string_view(static_cast<const char*>(mapping), size), path);
  if (!file.ok()) {
    if (mapping != nullptr) munmap(mapping, size);
    return file.status();
  }
  (*file)->mapping_ = mapping;
  (*file)->mapping_size_ = size;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::map<std::string, const TensorToWrite*> by_name;
  for (const TensorToWrite& t : tensors) {
    uint64_t expected = DtypeSize(t.dtype);
    for (const int64_t d : t.shape) expected *= static_cast<uint64_t>(d);
    if (expected != t.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", t.name, " has ",
                                                     t.bytes.size(), " bytes, its shape needs ",
                                                     expected));
    }
    if (!by_name.emplace(t.name, &t).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", t.name, " twice"));
    }
  }
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) header += ',';
      first = false;
      AppendJsonString(key, header);
      header += ':';
      AppendJsonString(value, header);
    }
    header += '}';
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : by_name) {
    if (header.size() > 1) header += ',';
    AppendJsonString(name, header);
    absl::StrAppend(&header, ":{\"dtype\":\"", DtypeName(t->dtype), "\",\"shape\":[");
    for (size_t i = 0; i < t->shape.size(); ++i) {
      absl::StrAppend(&header, i ? "," : "", t->shape[i]);
    }
    absl::StrAppend(&header, "],\"data_offsets\":[", offset, ",", offset + t->bytes.size(), "]}");
    offset += t->bytes.size();
  }
  header += '}';
  // Spaces pad the header so the data starts 8-byte aligned, as the format recommends.
  header.append((8 - header.size() % 8) % 8, ' ');

  const std::string temp = path + ".tmp";
  FILE* out = std::fopen(temp.c_str(), "wb");
  if (out == nullptr) {
    return absl::InternalError(absl::StrCat(temp, ": cannot create: ", std::strerror(errno)));
  }
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  bool ok = std::fwrite(length, 1, 8, out) == 8 &&
            std::fwrite(header.data(), 1, header.size(), out) == header.size();
  for (const auto& [name, t] : by_name) {
    ok = ok && std::fwrite(t->bytes.data(), 1, t->bytes.size(), out) == t->bytes.size();
  }
  ok = std::fflush(out) == 0 && ok;
  ok = fsync(fileno(out)) == 0 && ok;
  ok = std::fclose(out) == 0 && ok;
  if (!ok || std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return FsyncPath(parent.empty() ? "." : parent, /*directory=*/true);
}

}  // namespace grpo::hf
