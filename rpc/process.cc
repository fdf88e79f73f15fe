#include "rpc/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/file.h"

namespace grpo {
namespace {

std::atomic<int> g_stop_signal{0};
std::atomic<int> g_stop_signals{0};
int g_wake_pipe[2] = {-1, -1};

void OnStopSignal(int signal) {
  const int saved_errno = errno;  // the interrupted code may be about to read it
  g_stop_signal.store(signal);
  g_stop_signals.fetch_add(1);
  const char byte = 1;
  // Only async-signal-safe calls here; a full pipe already holds a wake-up.
  if (g_wake_pipe[1] >= 0) (void)!write(g_wake_pipe[1], &byte, 1);
  errno = saved_errno;
}

}  // namespace

void CatchStopSignals() {
  if (g_wake_pipe[0] < 0 && pipe2(g_wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    g_wake_pipe[0] = g_wake_pipe[1] = -1;
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int WaitForStopSignal(std::chrono::milliseconds timeout) {
  if (const int signal = g_stop_signal.load(); signal != 0) return signal;
  if (g_wake_pipe[0] < 0) {  // handlers not installed: nothing can arrive, just wait
    std::this_thread::sleep_for(timeout);
    return 0;
  }
  pollfd fd = {g_wake_pipe[0], POLLIN, 0};
  (void)poll(&fd, 1, static_cast<int>(timeout.count()));
  return g_stop_signal.load();
}

int PollStopSignal() { return g_stop_signal.load(); }

int StopSignalCount() { return g_stop_signals.load(); }

int WaitForAnotherStopSignal(int seen, std::chrono::milliseconds timeout) {
  if (g_stop_signals.load() > seen) return g_stop_signal.load();
  if (g_wake_pipe[0] < 0) {
    std::this_thread::sleep_for(timeout);
    return 0;
  }
  char drain[64];
  while (read(g_wake_pipe[0], drain, sizeof(drain)) > 0) {
  }
  if (g_stop_signals.load() > seen) return g_stop_signal.load();
  pollfd fd = {g_wake_pipe[0], POLLIN, 0};
  (void)poll(&fd, 1, static_cast<int>(timeout.count()));
  return g_stop_signals.load() > seen ? g_stop_signal.load() : 0;
}

absl::Status WritePortFile(const std::string& path, int port) {
  if (path.empty()) return absl::OkStatus();
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.flush())
      return absl::InternalError(absl::StrCat("writing port file ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return absl::InternalError(absl::StrCat("renaming ", tmp, " to ", path, ": errno ", errno));
  return absl::OkStatus();
}

absl::StatusOr<int> ReadPortFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("no port file ", path, " yet"));
  int port = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port) || port <= 0 ||
      port > 65535)
    return absl::DataLossError(absl::StrCat("port file ", path, " holds no port"));
  return port;
}

absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> ServeMetrics(
    const std::string& listen, const std::string& port_file, const metrics::Registry* registry) {
  if (listen.empty()) return std::unique_ptr<metrics::MetricsServer>();
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> server =
      metrics::MetricsServer::Start(listen, registry);
  if (!server.ok())
    return absl::UnavailableError(
        absl::StrCat("--metrics_listen: ", server.status().message(),
                     " (pass another port, 0 for any, or an empty value for none)"));
  if (absl::Status s = WritePortFile(port_file, (*server)->port()); !s.ok()) return s;
  return server;
}

}  // namespace grpo
