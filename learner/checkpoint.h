// Atomic checkpoints (docs/design.md §5): a checkpoint is a directory run_dir/step-N written
// under a temporary name, every file fsynced, renamed into place, and only then named by
// run_dir/latest (itself replaced by rename). A crash at any point leaves either the old
// or the new checkpoint, never a half-written one.
#ifndef GRPO_LEARNER_CHECKPOINT_H_
#define GRPO_LEARNER_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/durable_file.h"  // WriteFileDurably, for run-directory metadata

namespace grpo {

// `write` fills the directory it is given. An existing step-N is replaced.
absl::Status WriteCheckpoint(const std::string& run_dir, int64_t step,
                             const std::function<absl::Status(const std::string&)>& write);

// Removes all but the newest `keep` step-N directories (never the one `latest` names) and
// leftover temporary directories of interrupted writes. keep < 1 keeps everything.
absl::Status PruneCheckpoints(const std::string& run_dir, int keep);

// The directory `latest` names; NOT_FOUND when there is none.
absl::StatusOr<std::string> LatestCheckpoint(const std::string& run_dir);

}  // namespace grpo

#endif  // GRPO_LEARNER_CHECKPOINT_H_
