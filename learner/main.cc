// grpo_learner: one rank of the learner group. Rank 0 serves LearnerService (groups in,
// weights out), registers with the coordinator and runs its jobs one after another; the
// other ranks follow rank 0. Rendezvous by the torchrun / PyTorchJob conventions:
// MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK (the flags below override them).
#include <unistd.h>

#include <iostream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "coordinator/registration.h"
#include "learner/distributed_learner.h"
#include "learner/ingest_buffer.h"
#include "learner/job_source.h"
#include "learner/learner_device.h"
#include "learner/learner_group.h"
#include "learner/learner_service.h"
#include "learner/weight_publisher.h"
#include "metrics/registry.h"
#include "model/runtime.h"
#include "rpc/grpc_server.h"
#include "rpc/process.h"
#include "rpc/security.h"
#include "rpc/structured_log.h"

ABSL_FLAG(std::string, coordinator, "localhost:50050", "coordinator address (rank 0)");
ABSL_FLAG(std::string, listen, "0.0.0.0:50052", "rank 0's LearnerService address (port 0 = any)");
ABSL_FLAG(std::string, advertise, "",
          "address workers dial for LearnerService; default localhost:<bound port>");
ABSL_FLAG(std::string, port_file, "", "rank 0 writes its bound LearnerService port here");
ABSL_FLAG(std::string, metrics_listen, "",
          "serve Prometheus metrics at http://ADDRESS/metrics: PORT or HOST:PORT (0 = any "
          "port; suggested: 9403); empty = none");
ABSL_FLAG(std::string, metrics_port_file, "", "write the metrics port to this file");
ABSL_FLAG(std::string, run_root, "runs", "job run directories go under this");
ABSL_FLAG(int, buffer_groups, 256, "ingest buffer capacity in groups");
ABSL_FLAG(int, keep_checkpoints, 3, "step-N checkpoints kept per job (the newest)");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores");
ABSL_FLAG(int, rank, -1, "overrides RANK");
ABSL_FLAG(int, world_size, -1, "overrides WORLD_SIZE");
ABSL_FLAG(std::string, master_addr, "", "overrides MASTER_ADDR");
ABSL_FLAG(int, master_port, -1, "overrides MASTER_PORT");
ABSL_FLAG(std::string, master_port_file, "",
          "rank 0 with --master_port 0 writes the store's port here; other ranks read it");
ABSL_FLAG(int, collective_timeout_s, 1800, "c10d collective timeout in seconds");
ABSL_FLAG(std::string, device, "cpu",
          "where this rank trains: cpu, cuda (the rank's own GPU: LOCAL_RANK, else rank mod "
          "the device count) or cuda:N");

namespace {

int Fail(const absl::Status& status) {
  std::cerr << "error: " << status << "\n";
  return 1;
}

// Other ranks started by a launcher that gave rank 0 port 0 wait for its port file.
absl::StatusOr<int> AwaitPortFile(const std::string& path, std::chrono::seconds timeout) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    absl::StatusOr<int> port = grpo::ReadPortFile(path);
    if (port.ok() || port.status().code() != absl::StatusCode::kNotFound) return port;
    if (std::chrono::steady_clock::now() > give_up)
      return absl::DeadlineExceededError(absl::StrCat("no port in ", path));
    if (grpo::WaitForStopSignal(std::chrono::milliseconds(50)) != 0)
      return absl::CancelledError("stopped");
  }
}

}  // namespace

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  grpo::CatchStopSignals();
  absl::SetProgramUsageMessage("grpo_learner --coordinator HOST:PORT (rank 0 of WORLD_SIZE)");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status log = grpo::InstallStructuredLogFromFlags("grpo_learner"); !log.ok()) {
    std::cerr << "error: " << log.message() << "\n";
    return 2;
  }
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  absl::StatusOr<grpo::Security> security = grpo::Security::Load(grpo::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::cerr << "error: " << security.status().message() << "\n";
    return 2;
  }

  absl::StatusOr<grpo::LearnerGroupOptions> group_options =
      grpo::LearnerGroupOptionsFromEnvironment();
  if (!group_options.ok()) return Fail(group_options.status());
  if (absl::GetFlag(FLAGS_rank) >= 0) group_options->rank = absl::GetFlag(FLAGS_rank);
  if (absl::GetFlag(FLAGS_world_size) >= 0) group_options->world_size = absl::GetFlag(FLAGS_world_size);
  if (!absl::GetFlag(FLAGS_master_addr).empty())
    group_options->master_addr = absl::GetFlag(FLAGS_master_addr);
  if (absl::GetFlag(FLAGS_master_port) >= 0)
    group_options->master_port = absl::GetFlag(FLAGS_master_port);
  group_options->timeout = std::chrono::seconds(absl::GetFlag(FLAGS_collective_timeout_s));
  if (group_options->world_size < 1 || group_options->rank < 0 ||
      group_options->rank >= group_options->world_size) {
    std::cerr << "error: rank " << group_options->rank << " out of range for world size "
              << group_options->world_size << "\n";
    return 2;
  }
  const std::string master_port_file = absl::GetFlag(FLAGS_master_port_file);
  if (group_options->rank == 0) {
    group_options->on_listening = [&](int port) {
      if (absl::Status s = grpo::WritePortFile(master_port_file, port); !s.ok())
        std::cerr << "warning: " << s << "\n";
    };
  } else if (!master_port_file.empty()) {
    absl::StatusOr<int> port = AwaitPortFile(master_port_file, std::chrono::seconds(600));
    if (!port.ok()) return Fail(port.status());
    group_options->master_port = *port;
  }

  absl::StatusOr<c10::Device> device =
      grpo::ResolveLearnerDevice(absl::GetFlag(FLAGS_device), group_options->rank);
  if (!device.ok()) {
    std::cerr << "error: " << device.status().message() << "\n";
    return 2;
  }
  std::cout << "grpo_learner: rank " << group_options->rank << " trains on " << device->str()
            << std::endl;
  if (device->is_cuda()) group_options->cuda_device = device->index();

  std::unique_ptr<grpo::LearnerGroup> group;
  if (group_options->world_size > 1) {
    std::cout << "grpo_learner: rank " << group_options->rank << " of "
              << group_options->world_size << ", rendezvous at " << group_options->master_addr
              << ":" << group_options->master_port << std::endl;
    absl::StatusOr<std::unique_ptr<grpo::LearnerGroup>> joined =
        grpo::LearnerGroup::Join(*group_options);
    if (!joined.ok()) return Fail(joined.status());
    group = std::move(*joined);
  }

  grpo::metrics::Registry registry;
  grpo::DistributedLearnerOptions options;
  options.device = *device;
  options.run_root = absl::GetFlag(FLAGS_run_root);
  options.keep_checkpoints = absl::GetFlag(FLAGS_keep_checkpoints);
  options.log = &std::cout;
  options.registry = &registry;
  if (group_options->rank != 0) {
    auto metrics = grpo::ServeMetrics(absl::GetFlag(FLAGS_metrics_listen),
                                      absl::GetFlag(FLAGS_metrics_port_file), &registry);
    if (!metrics.ok()) return Fail(metrics.status());
    absl::Status s = grpo::RunLearnerFollower(group.get(), options);
    if (!s.ok()) return Fail(s);
    std::cout << "grpo_learner: rank " << group_options->rank << " stopped" << std::endl;
    return 0;
  }

  if (absl::GetFlag(FLAGS_buffer_groups) < 1) {
    std::cerr << "error: --buffer_groups must be >= 1\n";
    return 2;
  }
  grpo::IngestBuffer buffer(absl::GetFlag(FLAGS_buffer_groups));
  grpo::WeightPublisher weights;
  grpo::LearnerServiceImpl service(&buffer, &weights, security->authorizer());
  grpo::GrpcServerOptions server_options;
  server_options.credentials = security->ServerCredentials();
  server_options.listen_address = absl::GetFlag(FLAGS_listen);
  server_options.lame_duck = grpo::kLameDuck;
  server_options.registry = &registry;
  server_options.role = "learner";
  server_options.max_receive_message_bytes = 64 << 20;  // a stream's groups, one at a time
  absl::StatusOr<std::unique_ptr<grpo::GrpcServer>> server =
      grpo::GrpcServer::Start(server_options, {&service});
  if (!server.ok()) return Fail(server.status());
  const int port = (*server)->port();
  std::string advertise = absl::GetFlag(FLAGS_advertise);
  if (advertise.empty()) advertise = absl::StrCat("localhost:", port);
  std::cout << "grpo_learner: rank 0 serving LearnerService on port " << port << " ("
            << security->Describe() << ")" << std::endl;
  if (absl::Status s = grpo::WritePortFile(absl::GetFlag(FLAGS_port_file), port); !s.ok())
    return Fail(s);
  // After the buffer and the service, so it stops before them: scrapes read the buffer.
  auto metrics = grpo::ServeMetrics(absl::GetFlag(FLAGS_metrics_listen),
                                    absl::GetFlag(FLAGS_metrics_port_file), &registry);
  if (!metrics.ok()) return Fail(metrics.status());

  auto coordinator =
      grpo::v1::CoordinatorService::NewStub(security->Channel(absl::GetFlag(FLAGS_coordinator)));
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  grpo::Registration registration(coordinator.get(), grpo::v1::WORKER_ROLE_LEARNER, advertise,
                                  absl::StrCat(host, ":", getpid()));
  if (absl::Status s = registration.Start(std::chrono::steady_clock::now() + std::chrono::minutes(5));
      !s.ok())
    return Fail(s);
  std::unique_ptr<grpo::JobSource> jobs =
      grpo::NewCoordinatorJobSource(coordinator.get(), registration.worker_id(), advertise);

  absl::Notification stop;
  std::thread signals([&] {
    while (!stop.HasBeenNotified())
      if (grpo::WaitForStopSignal(std::chrono::milliseconds(200)) != 0) stop.Notify();
  });
  absl::Status status =
      grpo::RunLearnerLeader(group.get(), jobs.get(), &buffer, &weights, options, &stop);
  if (!stop.HasBeenNotified()) stop.Notify();
  signals.join();
  (*server)->Shutdown(std::chrono::seconds(2));
  if (!status.ok()) return Fail(status);
  std::cout << "grpo_learner: rank 0 stopped" << std::endl;
  return 0;
}
