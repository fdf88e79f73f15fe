// The security flags, in one place so every binary spells them the same.
#include <string>

#include "absl/flags/flag.h"
#include "rpc/security.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of this process: served with TLS, and shown to servers "
          "that ask for a client certificate");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate: connect with TLS and accept only servers it signed; with "
          "--tls_client_auth, accept only clients it signed");
ABSL_FLAG(bool, tls_client_auth, false,
          "mutual TLS: refuse clients without a certificate signed by --tls_ca");
ABSL_FLAG(std::string, tls_server_name, "",
          "the name to expect in servers' certificates instead of the address's host");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding the shared token: servers refuse calls without it, clients send it");

namespace grpo {

SecurityOptions SecurityOptionsFromFlags() {
  SecurityOptions options;
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.require_client_cert = absl::GetFlag(FLAGS_tls_client_auth);
  options.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  options.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  return options;
}

}  // namespace grpo
