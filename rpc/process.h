// What every long-running grpo_* binary does around its server: stop signals turned into
// an event the main loop waits for (the handler only records the signal and wakes the
// waiter through a pipe, so nothing stops in the middle of an RPC), and the port it
// listens on published in a file so a launcher that asked for port 0 can find it.
#ifndef GRPO_RPC_PROCESS_H_
#define GRPO_RPC_PROCESS_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "metrics/metrics_server.h"

namespace grpo {

// Installs handlers for SIGTERM and SIGINT. A handler rather than a blocked mask because
// libraries may start threads before main, and a signal reaching one of those with the
// default action would kill the process without a drain or a checkpoint.
void CatchStopSignals();
// Waits until SIGTERM or SIGINT has arrived (now or earlier), or `timeout` passes; returns
// the signal or 0. The signal stays recorded: later calls return it at once.
int WaitForStopSignal(std::chrono::milliseconds timeout);
// The recorded signal, or 0, without waiting.
int PollStopSignal();
// How many stop signals have arrived so far (a second Ctrl-C means "now").
int StopSignalCount();
// Waits until more than `seen` stop signals have arrived, or `timeout` passes; returns the
// latest signal or 0. Unlike WaitForStopSignal it does not return at once for the
// signals already counted in `seen`.
int WaitForAnotherStopSignal(int seen, std::chrono::milliseconds timeout);

// Writes "<port>\n" to `path` atomically (a temp file renamed), so a reader never sees a
// partial number. No-op for an empty path.
absl::Status WritePortFile(const std::string& path, int port);
// Reads a port written by WritePortFile; NOT_FOUND while the file does not exist yet.
absl::StatusOr<int> ReadPortFile(const std::string& path);

// Serves `registry` at http://LISTEN/metrics (HOST:PORT or PORT; port 0 picks one, then
// written to `port_file` when one is named). Null for an empty `listen` (no metrics);
// UNAVAILABLE naming the flag when it cannot listen.
absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> ServeMetrics(
    const std::string& listen, const std::string& port_file, const metrics::Registry* registry);

}  // namespace grpo

#endif  // GRPO_RPC_PROCESS_H_
