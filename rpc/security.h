// Transport security and call authentication, the same for every grpo_* process
// (docs/design.md §7): TLS on the listening port and on the channels a process opens, mutual
// TLS as an option, and a shared bearer token checked on every service call.
//
// Files (PEM certificates, keys, the token) are read once by Security::Load, so a bad
// path is an error at start naming the flag and the file, never a failure at the first
// call. The token itself is never put in a status message or a log line.
//
// Without options everything is plaintext and unauthenticated (local mode, tests): the
// same binaries, nothing to configure on one machine.
#ifndef GRPO_RPC_SECURITY_H_
#define GRPO_RPC_SECURITY_H_

#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace grpc {
class Channel;
class ChannelArguments;
class ChannelCredentials;
class ServerContextBase;
class ServerCredentials;
class Status;
}  // namespace grpc

namespace grpo {

struct SecurityOptions {
  // This process's certificate chain and private key. A server with them serves TLS; a
  // client with them presents them when the server asks (mutual TLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  // The CA that signs the peers. A client with it speaks TLS and checks the server's
  // certificate; a server with it and require_client_cert checks clients' certificates.
  std::string tls_ca_file;
  bool require_client_cert = false;  // mutual TLS: a client without a valid one is refused
  // The name checked in servers' certificates instead of the address's host (a certificate
  // issued for a Kubernetes Service name, reached through a port-forward).
  std::string tls_server_name;
  // A file holding the shared token (surrounding whitespace ignored). Servers refuse calls
  // without it (UNAUTHENTICATED) or with another (PERMISSION_DENIED); clients send it.
  std::string auth_token_file;
};

// Checks the bearer token of incoming calls. Default-constructed: every call passes.
// Cheap to copy; thread-safe.
class CallAuthorizer {
 public:
  CallAuthorizer() = default;
  explicit CallAuthorizer(std::string token) : token_(std::move(token)) {}

  // OK; UNAUTHENTICATED without an "authorization: Bearer ..." header; PERMISSION_DENIED
  // with another token (compared in constant time).
  grpc::Status Check(const grpc::ServerContextBase& context) const;
  bool enabled() const { return !token_.empty(); }

 private:
  std::string token_;
};

class Security {
 public:
  // Plaintext, no token.
  Security();
  // Reads the files. INVALID_ARGUMENT naming the flag (--tls_cert, --tls_key, --tls_ca,
  // --auth_token_file) for a file that is missing, unreadable or empty, for a key without
  // its certificate (or the reverse), and for require_client_cert without a CA.
  static absl::StatusOr<Security> Load(const SecurityOptions& options);

  // TLS when a certificate was given (requesting and verifying client certificates under
  // require_client_cert), else plaintext.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  // A channel to `address`: TLS when a CA was given, sending the token on every call
  // when one was given.
  std::shared_ptr<grpc::Channel> Channel(const std::string& address) const;
  std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                         grpc::ChannelArguments args) const;
  const CallAuthorizer& authorizer() const { return authorizer_; }

  // For logs: "plaintext" / "TLS" / "mutual TLS", plus ", token" (never the token).
  std::string Describe() const;

 private:
  std::string cert_pem_, key_pem_, ca_pem_;
  bool require_client_cert_ = false;
  std::string server_name_;
  std::string token_;
  CallAuthorizer authorizer_;
};

// The flags above as options: --tls_cert, --tls_key, --tls_ca, --tls_client_auth,
// --tls_server_name, --auth_token_file. Defined in the binaries that call it.
SecurityOptions SecurityOptionsFromFlags();

}  // namespace grpo

#endif  // GRPO_RPC_SECURITY_H_
