// What every long-running grpo_* binary does around its server: stop signals taken
// synchronously (never by a handler in the middle of an RPC), and the port it listens on
// published in a file so a launcher that asked for port 0 can find it.
#ifndef GRPO_RPC_PROCESS_H_
#define GRPO_RPC_PROCESS_H_

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpo {

// Blocks SIGTERM and SIGINT in this thread and every thread started after it. Call first
// thing in main, before gRPC or LibTorch start threads.
void BlockStopSignals();
// Waits until SIGTERM or SIGINT arrives, or `timeout` passes; returns the signal or 0.
int WaitForStopSignal(std::chrono::milliseconds timeout);
// Returns the signal if one is pending, 0 otherwise, without waiting.
int PollStopSignal();

// Writes "<port>\n" to `path` atomically (a temp file renamed), so a reader never sees a
// partial number. No-op for an empty path.
absl::Status WritePortFile(const std::string& path, int port);
// Reads a port written by WritePortFile; NOT_FOUND while the file does not exist yet.
absl::StatusOr<int> ReadPortFile(const std::string& path);

}  // namespace grpo

#endif  // GRPO_RPC_PROCESS_H_
