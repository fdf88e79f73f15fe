#include "base/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace grpo {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

absl::Status FsyncPath(const std::string& path, bool directory) {
  int fd = open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return Errno("open " + path);
  const int rc = fsync(fd);
  close(fd);
  if (rc != 0) return Errno("fsync " + path);
  return absl::OkStatus();
}

absl::Status WriteFileDurably(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("writing ", tmp));
  }
  if (absl::Status s = FsyncPath(tmp, false); !s.ok()) return s;
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Errno("rename " + tmp);
  return FsyncPath(std::filesystem::path(path).parent_path().string(), true);
}

}  // namespace grpo
