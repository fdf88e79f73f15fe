// TLS, mutual TLS and token authentication on a real coordinator service, with
// certificates made by openssl at test time (tests/testing/test_pki.h).
#include "rpc/security.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "coordinator/coordinator_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/grpc_server.h"
#include "rpc/process.h"
#include "tests/testing/command.h"
#include "tests/testing/health_check.h"
#include "tests/testing/test_pki.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "s3cret-token-4f1d9";

// One directory per test process (ctest runs this file's tests in parallel processes),
// named once: a forked child must still find its parent's files.
const std::string& Dir() {
  static const std::string dir = absl::StrCat(::testing::TempDir(), "/security_test.", getpid());
  return dir;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

std::string P(const std::string& file) { return Dir() + "/" + file; }

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::system(absl::StrCat("rm -rf ", Dir(), " && mkdir -p ", Dir()).c_str());
    ready_ = testing_util::MakeTestPki(Dir());
    WriteText(P("token"), absl::StrCat(kToken, "\n"));
    WriteText(P("wrong_token"), "not-the-token\n");
    WriteText(P("empty"), "\n");
  }

  void SetUp() override { ASSERT_TRUE(ready_) << "openssl could not make the certificates"; }

  // A coordinator serving with `server`'s credentials and token check.
  void Serve(const SecurityOptions& options) {
    absl::StatusOr<Security> security = Security::Load(options);
    ASSERT_TRUE(security.ok()) << security.status();
    CoordinatorOptions coordinator_options;
    coordinator_options.authorizer = security->authorizer();
    auto service = CoordinatorServiceImpl::Create(coordinator_options);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = std::move(*service);
    GrpcServerOptions server_options;
    server_options.listen_address = "127.0.0.1:0";
    server_options.credentials = security->ServerCredentials();
    auto server = GrpcServer::Start(server_options, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  std::string Address() const { return absl::StrCat("127.0.0.1:", server_->port()); }

  // ListJobs through a client with `options`; the call's status.
  grpc::Status List(const SecurityOptions& options) {
    absl::StatusOr<Security> security = Security::Load(options);
    EXPECT_TRUE(security.ok()) << security.status();
    if (!security.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "load");
    auto stub = v1::CoordinatorService::NewStub(security->Channel(Address()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListJobsResponse response;
    return stub->ListJobs(&context, v1::ListJobsRequest(), &response);
  }

  static bool ready_;
  std::unique_ptr<CoordinatorServiceImpl> service_;
  std::unique_ptr<GrpcServer> server_;
};

bool SecurityTest::ready_ = false;

SecurityOptions ServerTls() {
  SecurityOptions o;
  o.tls_cert_file = P("server.pem");
  o.tls_key_file = P("server.key");
  return o;
}

SecurityOptions ClientTrusting(const std::string& ca) {
  SecurityOptions o;
  o.tls_ca_file = P(ca + ".pem");
  return o;
}

TEST_F(SecurityTest, TlsServesOnlyClientsThatTrustItsCa) {
  Serve(ServerTls());
  EXPECT_TRUE(List(ClientTrusting("ca")).ok());
  EXPECT_EQ(List(SecurityOptions()).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a plaintext client must not reach a TLS server";
  EXPECT_EQ(List(ClientTrusting("rogue")).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a client must refuse a server its CA did not sign";
}

TEST_F(SecurityTest, MutualTlsRefusesClientsWithoutAValidCertificate) {
  SecurityOptions server = ServerTls();
  server.tls_ca_file = P("ca.pem");
  server.require_client_cert = true;
  Serve(server);

  EXPECT_EQ(List(ClientTrusting("ca")).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "no client certificate";
  SecurityOptions impostor = ClientTrusting("ca");
  impostor.tls_cert_file = P("impostor.pem");
  impostor.tls_key_file = P("impostor.key");
  EXPECT_EQ(List(impostor).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a certificate from another CA";
  SecurityOptions client = ClientTrusting("ca");
  client.tls_cert_file = P("client.pem");
  client.tls_key_file = P("client.key");
  grpc::Status status = List(client);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(SecurityTest, TokenMissingIsUnauthenticatedAndWrongIsPermissionDenied) {
  SecurityOptions server;
  server.auth_token_file = P("token");
  Serve(server);

  // The job API, and the calls workers and learners make.
  auto call_all = [&](const SecurityOptions& client) {
    absl::StatusOr<Security> security = Security::Load(client);
    EXPECT_TRUE(security.ok()) << security.status();
    auto stub = v1::CoordinatorService::NewStub(security->Channel(Address()));
    std::vector<grpc::StatusCode> codes;
    {
      grpc::ClientContext context;
      v1::SubmitJobRequest request;
      request.mutable_spec()->mutable_grpo()->set_group_size(-1);  // refused past the check
      v1::Job job;
      codes.push_back(stub->SubmitJob(&context, request, &job).error_code());
    }
    {
      grpc::ClientContext context;
      v1::CancelJobRequest request;
      request.set_job_id("job-404");
      v1::Job job;
      codes.push_back(stub->CancelJob(&context, request, &job).error_code());
    }
    {
      grpc::ClientContext context;
      v1::RegisterRequest request;
      request.set_role(v1::WORKER_ROLE_ROLLOUT);
      request.set_name("w");
      v1::RegisterResponse response;
      codes.push_back(stub->Register(&context, request, &response).error_code());
    }
    {
      grpc::ClientContext context;
      v1::AckPromptsRequest request;
      request.set_job_id("job-404");
      v1::AckPromptsResponse response;
      codes.push_back(stub->AckPrompts(&context, request, &response).error_code());
    }
    return codes;
  };

  using ::testing::Each;
  EXPECT_THAT(call_all(SecurityOptions()), Each(grpc::StatusCode::UNAUTHENTICATED));
  SecurityOptions wrong;
  wrong.auth_token_file = P("wrong_token");
  EXPECT_THAT(call_all(wrong), Each(grpc::StatusCode::PERMISSION_DENIED));
  SecurityOptions right;
  right.auth_token_file = P("token");
  std::vector<grpc::StatusCode> codes = call_all(right);
  EXPECT_THAT(codes, Each(Not(grpc::StatusCode::UNAUTHENTICATED)));
  EXPECT_THAT(codes, Each(Not(grpc::StatusCode::PERMISSION_DENIED)));
  EXPECT_EQ(codes[0], grpc::StatusCode::INVALID_ARGUMENT);  // the request itself is checked
  EXPECT_EQ(codes[1], grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(codes[2], grpc::StatusCode::OK);

  // Health needs no token: probes (Kubernetes, load balancers) carry none.
  EXPECT_EQ(testing_util::HealthStatus(
                grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials())),
            1);
}

TEST_F(SecurityTest, TokenAndMutualTlsTogether) {
  SecurityOptions server = ServerTls();
  server.tls_ca_file = P("ca.pem");
  server.require_client_cert = true;
  server.auth_token_file = P("token");
  Serve(server);
  SecurityOptions client = ClientTrusting("ca");
  client.tls_cert_file = P("client.pem");
  client.tls_key_file = P("client.key");
  EXPECT_EQ(List(client).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  client.auth_token_file = P("token");
  grpc::Status status = List(client);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(SecurityTest, BadOptionsAreRefusedNamingTheFlagAndFile) {
  SecurityOptions o;
  o.tls_cert_file = P("server.pem");
  EXPECT_THAT(Security::Load(o).status().message(), HasSubstr("--tls_key"));
  o.tls_key_file = P("missing.key");
  EXPECT_THAT(Security::Load(o).status().message(),
              HasSubstr("--tls_key: cannot read " + P("missing.key")));
  o = SecurityOptions();
  o.tls_ca_file = P("empty");
  EXPECT_THAT(Security::Load(o).status().message(), HasSubstr("--tls_ca: " + P("empty")));
  o = ServerTls();
  o.require_client_cert = true;
  EXPECT_THAT(Security::Load(o).status().message(), HasSubstr("--tls_ca"));
  o = SecurityOptions();
  o.auth_token_file = P("empty");
  EXPECT_THAT(Security::Load(o).status().message(), HasSubstr("--auth_token_file"));
  WriteText(P("two_words"), "a b\n");
  o.auth_token_file = P("two_words");
  absl::Status status = Security::Load(o).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("a b")));  // never the token
  o.auth_token_file = P("token");
  absl::StatusOr<Security> loaded = Security::Load(o);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->Describe(), "plaintext, token");
}

using testing_util::CommandResult;
using testing_util::RunCommand;

// The binaries as users run them: grpo_coordinator with mutual TLS and a token, grpoctl
// with and without the right credentials; neither ever prints the token.
TEST_F(SecurityTest, BinariesServeAndCallWithTlsAndToken) {
  const std::string port_file = P("coordinator.port");
  unlink(port_file.c_str());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    const std::string command = absl::StrCat(
        "exec ", GRPO_COORDINATOR_BINARY, " --listen=127.0.0.1:0 --port_file=", port_file,
        " --tls_cert=", P("server.pem"), " --tls_key=", P("server.key"), " --tls_ca=",
        P("ca.pem"), " --tls_client_auth --auth_token_file=", P("token"));
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  FILE* out = fdopen(fds[0], "r");
  ASSERT_NE(out, nullptr);
  std::string coordinator_log;
  char line[512] = {0};
  // The first line is printed once it serves (after the port file is written).
  ASSERT_NE(fgets(line, sizeof(line), out), nullptr);
  coordinator_log += line;
  absl::StatusOr<int> port = ReadPortFile(port_file);
  ASSERT_TRUE(port.ok()) << port.status() << " " << coordinator_log;
  const std::string client =
      absl::StrCat(GRPOCTL_BINARY, " --coordinator=127.0.0.1:", *port, " --tls_ca=",
                   P("ca.pem"), " --tls_cert=", P("client.pem"), " --tls_key=", P("client.key"));

  CommandResult ok = RunCommand(absl::StrCat(client, " --auth_token_file=", P("token"), " list"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  CommandResult not_found =
      RunCommand(absl::StrCat(client, " --auth_token_file=", P("token"), " cancel job-404"));
  EXPECT_EQ(not_found.exit_code, 1) << not_found.output;
  EXPECT_THAT(not_found.output, HasSubstr("NOT_FOUND"));
  CommandResult wrong =
      RunCommand(absl::StrCat(client, " --auth_token_file=", P("wrong_token"), " cancel job-404"));
  EXPECT_EQ(wrong.exit_code, 1) << wrong.output;
  EXPECT_THAT(wrong.output, HasSubstr("PERMISSION_DENIED"));
  CommandResult missing = RunCommand(absl::StrCat(client, " list"));
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr("UNAUTHENTICATED"));
  CommandResult no_cert = RunCommand(absl::StrCat(GRPOCTL_BINARY, " --coordinator=127.0.0.1:", *port,
                                           " --tls_ca=", P("ca.pem"), " --auth_token_file=",
                                           P("token"), " --timeout_seconds=3 list"));
  EXPECT_NE(no_cert.exit_code, 0) << no_cert.output;
  CommandResult bad_flag = RunCommand(absl::StrCat(client, " --auth_token_file=", P("nope"), " list"));
  EXPECT_EQ(bad_flag.exit_code, 2) << bad_flag.output;
  EXPECT_THAT(bad_flag.output, HasSubstr("--auth_token_file: cannot read " + P("nope")));

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  while (fgets(line, sizeof(line), out) != nullptr) coordinator_log += line;
  fclose(out);
  EXPECT_THAT(coordinator_log, HasSubstr("mutual TLS, token"));
  for (const std::string& output :
       {ok.output, not_found.output, wrong.output, missing.output, coordinator_log})
    EXPECT_THAT(output, Not(HasSubstr(kToken)));
}

}  // namespace
}  // namespace grpo
