#include "metrics/metrics_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace grpo::metrics {
namespace {

// A client must send its whole request within this, or it is dropped: the one serving
// thread is never held longer by a slow (or hostile) client.
constexpr std::chrono::milliseconds kRequestTimeout{2000};
constexpr size_t kMaxRequestBytes = 8192;

bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string Response(absl::string_view status, absl::string_view type, absl::string_view body,
                     bool with_body) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n",
                      with_body ? body : "");
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                    const Registry* registry) {
  std::string host = "0.0.0.0";
  absl::string_view port_text = listen;
  if (const size_t colon = listen.rfind(':'); colon != std::string::npos) {
    if (colon > 0) host = listen.substr(0, colon);
    port_text = absl::string_view(listen).substr(colon + 1);
  }
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535)
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: \"", listen, "\" is not PORT or HOST:PORT"));
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("metrics: unknown host \"", host, "\""));
  sockaddr_in address = *reinterpret_cast<sockaddr_in*>(found->ai_addr);
  freeaddrinfo(found);
  address.sin_port = htons(static_cast<uint16_t>(port));

  std::unique_ptr<MetricsServer> s(new MetricsServer);
  s->registry_ = registry;
  s->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(s->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t length = sizeof(address);
  if (s->listen_fd_ < 0 ||
      bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(s->listen_fd_, 16) != 0 ||
      getsockname(s->listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", listen, ": ", std::strerror(errno)));
  if (pipe2(s->wake_, O_CLOEXEC) != 0)
    return absl::InternalError(absl::StrCat("metrics: pipe: ", std::strerror(errno)));
  s->port_ = ntohs(address.sin_port);
  s->thread_ = std::thread([server = s.get()] { server->Serve(); });
  return s;
}

MetricsServer::~MetricsServer() {
  if (thread_.joinable()) {
    const char stop = 1;
    (void)!write(wake_[1], &stop, 1);
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_[0], wake_[1]})
    if (fd >= 0) close(fd);
}

void MetricsServer::Serve() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    const int connection = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    Answer(connection);
    close(connection);
  }
}

void MetricsServer::Answer(int connection) {
  std::string request;
  char buffer[1024];
  const auto deadline = std::chrono::steady_clock::now() + kRequestTimeout;
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequestBytes) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd fd = {connection, POLLIN, 0};
    if (left.count() <= 0 || poll(&fd, 1, static_cast<int>(left.count())) <= 0) return;
    const ssize_t n = recv(connection, buffer, sizeof(buffer), 0);
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
  }
  // "GET /metrics?x HTTP/1.1": method, then the path without its query.
  const std::vector<absl::string_view> words =
      absl::StrSplit(absl::string_view(request).substr(0, request.find("\r\n")), ' ');
  const absl::string_view method = words.empty() ? "" : words[0];
  absl::string_view path = words.size() > 1 ? words[1] : "";
  path = path.substr(0, path.find('?'));
  const char* kText = "text/plain; charset=utf-8";
  if (path != "/metrics") {
    WriteAll(connection, Response("404 Not Found", kText, "only /metrics is here\n", true));
  } else if (method != "GET" && method != "HEAD") {
    WriteAll(connection, Response("405 Method Not Allowed", kText, "GET /metrics\n", true));
  } else {
    WriteAll(connection, Response("200 OK", "text/plain; version=0.0.4; charset=utf-8",
                                  registry_->Serialize(), method == "GET"));
  }
}

}  // namespace grpo::metrics
