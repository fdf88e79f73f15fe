// Durable small-file writes: what a crash may interrupt must leave the old file or the whole
// new one, never a torn one. The sequence is write to `path`.tmp, fsync it, rename over
// `path`, fsync the directory. Used for checkpoint metadata (learner/checkpoint.h) and the
// files of a saved Hugging Face directory (hf/hf_checkpoint.h).
#ifndef GRPO_BASE_DURABLE_FILE_H_
#define GRPO_BASE_DURABLE_FILE_H_

#include <string>

#include "absl/status/status.h"

namespace grpo {

// fsync of a file or (directory = true) a directory; INTERNAL naming the path on failure.
absl::Status FsyncPath(const std::string& path, bool directory);

// Writes `contents` to `path` by the sequence above.
absl::Status WriteFileDurably(const std::string& path, const std::string& contents);

}  // namespace grpo

#endif  // GRPO_BASE_DURABLE_FILE_H_
