// MetricsServer: serves a Registry's exposition at GET /metrics over plain HTTP
// (civetweb), as Prometheus scrapes it; anything else is 404. Borrows the registry: it
// must outlive the server. Stop (or destroy) the server before the components whose
// values the registry's collect hooks read.
#ifndef GRPO_METRICS_METRICS_SERVER_H_
#define GRPO_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "metrics/registry.h"

struct mg_context;

namespace grpo::metrics {

class MetricsServer {
 public:
  // `listen`: "HOST:PORT" or "PORT"; port 0 picks a free one (see port()).
  // UNAVAILABLE naming the address when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              const Registry* registry);
  ~MetricsServer();

  int port() const { return port_; }

 private:
  MetricsServer() = default;
  mg_context* context_ = nullptr;
  const Registry* registry_ = nullptr;
  int port_ = 0;
};

}  // namespace grpo::metrics

#endif  // GRPO_METRICS_METRICS_SERVER_H_
