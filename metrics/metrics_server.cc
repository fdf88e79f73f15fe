#include "metrics/metrics_server.h"

#include <civetweb.h>

#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"

namespace grpo::metrics {
namespace {

int ServeMetrics(mg_connection* conn, void* data) {
  const auto* registry = static_cast<const Registry*>(data);
  const mg_request_info* request = mg_get_request_info(conn);
  if (std::strcmp(request->request_method, "GET") != 0 &&
      std::strcmp(request->request_method, "HEAD") != 0) {
    mg_send_http_error(conn, 405, "%s", "only GET /metrics");
    return 405;
  }
  const std::string body = registry->Serialize();
  mg_send_http_ok(conn, "text/plain; version=0.0.4; charset=utf-8",
                  static_cast<long long>(body.size()));
  if (std::strcmp(request->request_method, "GET") == 0)
    mg_write(conn, body.data(), body.size());
  return 200;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                    const Registry* registry) {
  static std::once_flag init;
  std::call_once(init, [] { mg_init_library(0); });
  std::unique_ptr<MetricsServer> s(new MetricsServer);
  s->registry_ = registry;
  // Scrapes are rare and small: two threads; no files served, no directory listing.
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2",
                           "enable_directory_listing", "no", nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  // civetweb reports a failed start on stderr and returns null; the status says why.
  callbacks.log_message = [](const mg_connection*, const char*) { return 1; };
  s->context_ = mg_start(&callbacks, nullptr, options);
  if (s->context_ == nullptr)
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", listen));
  mg_set_request_handler(s->context_, "/metrics$", ServeMetrics,
                         const_cast<Registry*>(registry));
  mg_server_port ports[4];
  const int n = mg_get_server_ports(s->context_, 4, ports);
  if (n < 1) return absl::UnavailableError(absl::StrCat("metrics: no port for ", listen));
  s->port_ = ports[0].port;
  return s;
}

MetricsServer::~MetricsServer() {
  if (context_ != nullptr) mg_stop(context_);
}

}  // namespace grpo::metrics
