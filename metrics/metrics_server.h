// MetricsServer: serves a Registry's exposition at GET /metrics over plain HTTP/1.1, as
// Prometheus scrapes it; other paths are 404, other methods 405. One thread answers one
// connection at a time: scrapes are seconds apart and small.
//
// Ours rather than civetweb's (docs/design.md §6 named civetweb): Debian's libcivetweb starts
// its threads with a fixed small stack, too small for the static TLS that LibTorch and
// OpenBLAS bring, so in our LibTorch processes it cannot start at all (pthread_create
// fails).
//
// Borrows the registry: it must outlive the server. Stop (destroy) the server before the
// components whose values the registry's collect hooks read.
#ifndef GRPO_METRICS_METRICS_SERVER_H_
#define GRPO_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "metrics/registry.h"

namespace grpo::metrics {

class MetricsServer {
 public:
  // `listen`: "PORT", ":PORT" or "HOST:PORT" (IPv4 address or a name); port 0 picks a
  // free one (see port()). INVALID_ARGUMENT for a malformed address, UNAVAILABLE naming
  // it when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              const Registry* registry);
  ~MetricsServer();

  int port() const { return port_; }

 private:
  MetricsServer() = default;
  void Serve();
  void Answer(int connection);

  const Registry* registry_ = nullptr;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // written by the destructor to end Serve
  int port_ = 0;
  std::thread thread_;
};

}  // namespace grpo::metrics

#endif  // GRPO_METRICS_METRICS_SERVER_H_
