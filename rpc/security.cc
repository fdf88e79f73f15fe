#include "rpc/security.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_interceptor.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/file.h"

namespace grpo {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

absl::StatusOr<std::string> ReadNonEmpty(const std::string& path, absl::string_view flag) {
  absl::StatusOr<std::string> read = ReadFileToString(path);
  if (!read.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::string text = *std::move(read);
  if (absl::StripAsciiWhitespace(text).empty())
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is empty"));
  return text;
}

// Same time whatever the position of the first difference, so the answer's timing tells
// a caller nothing about how much of a guessed token was right.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

// Adds the token to every call's initial metadata: call credentials would do the same
// but gRPC sends those only over TLS, and a token-only setup must work too.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA))
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class TokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat(kBearer, token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;  // the factory lives as long as the channel
};

}  // namespace

grpc::Status CallAuthorizer::Check(const grpc::ServerContextBase& context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end())
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this server requires a token: pass --auth_token_file");
  const absl::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, kBearer.size()) != kBearer)
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization header is not \"Bearer <token>\"");
  if (!ConstantTimeEquals(value.substr(kBearer.size()), token_))
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "wrong token");
  return grpc::Status::OK;
}

Security::Security() = default;

absl::StatusOr<Security> Security::Load(const SecurityOptions& options) {
  Security s;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty())
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadNonEmpty(options.tls_cert_file, "--tls_cert");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadNonEmpty(options.tls_key_file, "--tls_key");
    if (!key.ok()) return key.status();
    s.cert_pem_ = *std::move(cert);
    s.key_pem_ = *std::move(key);
  }
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadNonEmpty(options.tls_ca_file, "--tls_ca");
    if (!ca.ok()) return ca.status();
    s.ca_pem_ = *std::move(ca);
  }
  if (options.require_client_cert && s.ca_pem_.empty())
    return absl::InvalidArgumentError(
        "--tls_client_auth needs --tls_ca: the CA that signs the clients' certificates");
  s.require_client_cert_ = options.require_client_cert;
  s.server_name_ = options.tls_server_name;
  if (!options.auth_token_file.empty()) {
    absl::StatusOr<std::string> token =
        ReadNonEmpty(options.auth_token_file, "--auth_token_file");
    if (!token.ok()) return token.status();
    s.token_ = std::string(absl::StripAsciiWhitespace(*token));
    if (s.token_.find_first_of(" \t\r\n") != std::string::npos)
      return absl::InvalidArgumentError(absl::StrCat(
          "--auth_token_file: ", options.auth_token_file, " holds more than one word"));
    s.authorizer_ = CallAuthorizer(s.token_);
  }
  return s;
}

std::shared_ptr<grpc::ServerCredentials> Security::ServerCredentials() const {
  if (cert_pem_.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      require_client_cert_ ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_root_certs = ca_pem_;
  options.pem_key_cert_pairs.push_back({key_pem_, cert_pem_});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::Channel> Security::Channel(const std::string& address) const {
  return Channel(address, grpc::ChannelArguments());
}

std::shared_ptr<grpc::Channel> Security::Channel(const std::string& address,
                                                 grpc::ChannelArguments args) const {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (ca_pem_.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ca_pem_;
    options.pem_private_key = key_pem_;
    options.pem_cert_chain = cert_pem_;
    credentials = grpc::SslCredentials(options);
    if (!server_name_.empty()) args.SetSslTargetNameOverride(server_name_);
  }
  if (token_.empty()) return grpc::CreateCustomChannel(address, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(std::make_unique<TokenInterceptorFactory>(token_));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, credentials, args, std::move(interceptors));
}

std::string Security::Describe() const {
  std::string transport = "plaintext";
  if (!cert_pem_.empty()) transport = require_client_cert_ ? "mutual TLS" : "TLS";
  else if (!ca_pem_.empty()) transport = "TLS (client)";
  return token_.empty() ? transport : absl::StrCat(transport, ", token");
}

}  // namespace grpo
