// grpo_coordinator: serves grpo.v1.CoordinatorService (plus health and reflection) until
// SIGTERM or SIGINT, then ends watch streams, drains calls in flight, saves its state
// (with --state_dir) and exits 0. With --state_dir a restart resumes the jobs; a state
// file it cannot read is an error (exit 1), never replaced by an empty state.
#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "coordinator/coordinator_service.h"
#include "metrics/registry.h"
#include "rpc/grpc_server.h"
#include "rpc/process.h"
#include "rpc/security.h"
#include "rpc/structured_log.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50050", "address:port to serve on (port 0 = any)");
ABSL_FLAG(std::string, port_file, "",
          "write the port listened on to this file (for launchers that pass port 0)");
ABSL_FLAG(int, heartbeat_interval_ms, 1000, "how often workers are told to heartbeat");
ABSL_FLAG(int, heartbeat_timeout_ms, 5000,
          "a worker silent this long is dropped and its leases are handed out again");
ABSL_FLAG(int, lease_seconds, 120, "how long a worker has to finish a prompt lease");
ABSL_FLAG(int, max_prompts_per_lease, 64, "prompts per LeasePrompts answer at most");
ABSL_FLAG(int, max_queued_jobs, 256, "jobs waiting at once; more are refused (RESOURCE_EXHAUSTED)");
ABSL_FLAG(int, max_workers, 4096,
          "processes registered at once; more are refused (RESOURCE_EXHAUSTED)");
ABSL_FLAG(std::string, metrics_listen, "",
          "serve Prometheus metrics at http://ADDRESS/metrics: PORT or HOST:PORT (0 = any "
          "port; suggested: 9401); empty = none");
ABSL_FLAG(std::string, metrics_port_file, "", "write the metrics port to this file");
ABSL_FLAG(int, drain_seconds, 10, "on SIGTERM, how long calls in flight may finish");
ABSL_FLAG(std::string, state_dir, "",
          "keep the job queue and the running job's data cursor, waiting prompts and acked "
          "prompts in DIR/state.pb (created if missing) and resume from it on start; "
          "submit, cancel, acquire, request, ack and finish answer only once saved. "
          "Empty: in memory only, a restart forgets every job");

int main(int argc, char** argv) {
  // First: from here on SIGTERM and SIGINT only ask for a drain (rpc/process.h).
  grpo::CatchStopSignals();
  absl::SetProgramUsageMessage(
      "grpo_coordinator [--listen HOST:PORT] [--port_file PATH] [--state_dir DIR]");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status log = grpo::InstallStructuredLogFromFlags("grpo_coordinator"); !log.ok()) {
    std::cerr << "error: " << log.message() << "\n";
    return 2;
  }

  grpo::CoordinatorOptions options;
  options.heartbeat_interval_ms = absl::GetFlag(FLAGS_heartbeat_interval_ms);
  options.heartbeat_timeout_ms = absl::GetFlag(FLAGS_heartbeat_timeout_ms);
  options.lease_seconds = absl::GetFlag(FLAGS_lease_seconds);
  options.max_prompts_per_lease = absl::GetFlag(FLAGS_max_prompts_per_lease);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  options.max_workers = absl::GetFlag(FLAGS_max_workers);
  absl::StatusOr<grpo::Security> security = grpo::Security::Load(grpo::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::cerr << "error: " << security.status().message() << "\n";
    return 2;
  }
  options.authorizer = security->authorizer();
  if (options.heartbeat_interval_ms < 1 || options.heartbeat_timeout_ms < 1 ||
      options.lease_seconds < 1 || options.max_prompts_per_lease < 1 ||
      options.max_queued_jobs < 1 || options.max_workers < 1) {
    std::cerr << "error: --heartbeat_interval_ms, --heartbeat_timeout_ms, --lease_seconds, "
                 "--max_prompts_per_lease, --max_queued_jobs and --max_workers must be "
                 "positive\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<grpo::CoordinatorServiceImpl>> created =
      grpo::CoordinatorServiceImpl::Create(options);
  if (!created.ok()) {
    std::cerr << "error: " << created.status().message() << "\n";
    return 1;
  }
  // `created` outlives the server declared below: the service's destructor saves what
  // the calls drained at shutdown changed, and must run after they are done.
  grpo::CoordinatorServiceImpl& service = **created;
  grpo::metrics::Registry registry;
  service.ExportMetrics(&registry);
  grpo::GrpcServerOptions server_options;
  server_options.registry = &registry;
  server_options.role = "coordinator";
  server_options.listen_address = absl::GetFlag(FLAGS_listen);
  server_options.credentials = security->ServerCredentials();
  server_options.lame_duck = grpo::kLameDuck;
  auto server = grpo::GrpcServer::Start(server_options, {&service});
  if (!server.ok()) {
    std::cerr << "error: " << server.status().message() << "\n";
    return 1;
  }
  if (absl::Status s = grpo::WritePortFile(absl::GetFlag(FLAGS_port_file), (*server)->port());
      !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  // Declared after the service and the server: stopped first, so no scrape reads them
  // while they go away.
  auto metrics = grpo::ServeMetrics(absl::GetFlag(FLAGS_metrics_listen),
                                    absl::GetFlag(FLAGS_metrics_port_file), &registry);
  if (!metrics.ok()) {
    std::cerr << "error: " << metrics.status().message() << "\n";
    return 1;
  }
  std::cout << "grpo_coordinator: serving on port " << (*server)->port() << " ("
            << security->Describe() << ")"
            << (*metrics ? absl::StrCat(", metrics on port ", (*metrics)->port()) : "")
            << std::endl;
  if (!service.state_path().empty())
    std::cout << "grpo_coordinator: state in " << service.state_path() << std::endl;
  int signal = 0;
  while (signal == 0) signal = grpo::WaitForStopSignal(std::chrono::hours(1));
  std::cout << "grpo_coordinator: signal " << signal << ", draining" << std::endl;
  service.Shutdown();
  (*server)->Shutdown(std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)));
  return 0;
}
