#include "coordinator/state_store.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "model/weight_transfer.h"

namespace grpo {
namespace {

constexpr absl::string_view kMagic = "GRPOCST1";
constexpr size_t kHeaderBytes = 8 + 8 + 8;

void PutU64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(absl::string_view bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}

absl::Status Errno(absl::string_view what, const std::string& path, int error) {
  return absl::ErrnoToStatus(error, absl::StrCat(what, " ", path));
}

// Writes all of `bytes`, retrying short writes and EINTR.
absl::Status WriteAll(int fd, absl::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path, errno);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::Status SaveCoordinatorState(const std::string& path, const v1::CoordinatorState& state) {
  std::string payload;
  if (!state.SerializeToString(&payload))
    return absl::InternalError(absl::StrCat("serialize coordinator state for ", path));
  std::string bytes(kMagic);
  bytes.reserve(kHeaderBytes + payload.size());
  PutU64(payload.size(), &bytes);
  PutU64(Fnv1a64(payload), &bytes);
  bytes += payload;

  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("open", tmp, errno);
  absl::Status status = WriteAll(fd, bytes, tmp);
  // Without this fsync the rename could reach the disk before the data, and a power loss
  // would leave an empty or partial state.pb where the previous good one used to be.
  if (status.ok() && fsync(fd) != 0) status = Errno("fsync", tmp, errno);
  if (close(fd) != 0 && status.ok()) status = Errno("close", tmp, errno);
  if (!status.ok()) {
    unlink(tmp.c_str());
    return status;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    status = Errno("rename to " + path + ":", tmp, errno);
    unlink(tmp.c_str());
    return status;
  }
  // The rename itself is durable only once the directory entry is.
  const std::string dir = DirectoryOf(path);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Errno("open directory", dir, errno);
  if (fsync(dir_fd) != 0) status = Errno("fsync directory", dir, errno);
  close(dir_fd);
  return status;
}

absl::StatusOr<std::optional<v1::CoordinatorState>> LoadCoordinatorState(
    const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    return Errno("open", path, errno);
  }
  std::string bytes;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      close(fd);
      return Errno("read", path, error);
    }
    if (n == 0) break;
    bytes.append(buffer, static_cast<size_t>(n));
  }
  close(fd);

  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(
        path, ": not a valid coordinator state file (", why,
        "); refusing to start over it. Move it away to start with no jobs."));
  };
  if (bytes.size() < kHeaderBytes || absl::string_view(bytes).substr(0, 8) != kMagic)
    return corrupt("no GRPOCST1 header");
  const uint64_t size = GetU64(absl::string_view(bytes).substr(8, 8));
  const uint64_t checksum = GetU64(absl::string_view(bytes).substr(16, 8));
  if (size != bytes.size() - kHeaderBytes)
    return corrupt(absl::StrCat("header says ", size, " payload bytes, file has ",
                                bytes.size() - kHeaderBytes));
  const std::string payload = bytes.substr(kHeaderBytes);
  if (Fnv1a64(payload) != checksum) return corrupt("checksum mismatch");
  v1::CoordinatorState state;
  if (!state.ParseFromString(payload)) return corrupt("payload does not parse");
  if (state.format() != kCoordinatorStateFormat) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": coordinator state format ", state.format(),
                     " is not the one this build reads (", kCoordinatorStateFormat, ")"));
  }
  return std::optional<v1::CoordinatorState>(std::move(state));
}

}  // namespace grpo
