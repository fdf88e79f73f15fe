#include "base/file.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace grpo {

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("reading ", path));
  return contents.str();
}

std::string ReadFileOrEmpty(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFileToString(path);
  return contents.ok() ? *std::move(contents) : std::string();
}

}  // namespace grpo
