// Fault injection for the crash tests (docs/design.md §7). With
//   GRPO_FAILPOINTS="name:N[,name:N...]"
// in the environment, the N-th time the process reaches Failpoint("name") ends it at once
// with _exit(kFailpointExitCode), as a SIGKILL or a power cut would: nothing flushed, no
// destructors, no cleanup. Without the variable a Failpoint costs one atomic load.
// Thread-safe.
//
// Points in the code: "checkpoint_before_rename" (a checkpoint's files written and
// synced, its directory not yet renamed into place) and "checkpoint_before_latest" (the
// directory in place, the `latest` pointer not yet written).
#ifndef GRPO_BASE_FAILPOINT_H_
#define GRPO_BASE_FAILPOINT_H_

namespace grpo {

inline constexpr int kFailpointExitCode = 77;

void Failpoint(const char* name);

}  // namespace grpo

#endif  // GRPO_BASE_FAILPOINT_H_
