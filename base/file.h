// Whole-file reads, the one way every folder reads a small file (specs, certificates,
// tokenizer.json, checkpoint metadata).
#ifndef GRPO_BASE_FILE_H_
#define GRPO_BASE_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace grpo {

// The file's bytes; NOT_FOUND naming the path when it cannot be opened, INTERNAL when a
// read fails part way.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// The file's bytes, or "" when it is missing or unreadable (optional metadata).
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace grpo

#endif  // GRPO_BASE_FILE_H_
