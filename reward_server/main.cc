// grpo_reward_server: serves grpo.v1.RewardService (plus health and reflection) until
// SIGTERM or SIGINT, then drains calls in flight and exits 0.
#include <chrono>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "metrics/registry.h"
#include "model/runtime.h"
#include "reward_server/server.h"
#include "rpc/process.h"
#include "rpc/security.h"
#include "rpc/structured_log.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "address:port to serve on (port 0 = any)");
ABSL_FLAG(int, threads, 0, "gRPC handler threads at most; 0 = gRPC's default");
ABSL_FLAG(int, max_batch, 8192, "samples per Score request at most");
ABSL_FLAG(int64_t, max_text_bytes, 64 << 10, "bytes per prompt/completion/reference at most");
ABSL_FLAG(int, compute_threads, 0, "reward-model compute threads; 0 = all cores");
ABSL_FLAG(std::string, metrics_listen, "",
          "serve Prometheus metrics at http://ADDRESS/metrics: PORT or HOST:PORT (0 = any "
          "port; suggested: 9402); empty = none");
ABSL_FLAG(std::string, metrics_port_file, "", "write the metrics port to this file");
ABSL_FLAG(int, drain_seconds, 10, "on SIGTERM, how long calls in flight may finish");
ABSL_FLAG(std::string, port_file, "",
          "write the bound port here once listening (for launchers that pass port 0)");
ABSL_FLAG(bool, code_tests, true,
          "serve code_tests (completions run in a namespace sandbox against their tests)");
ABSL_FLAG(int, max_concurrent_executions, 8, "code_tests runs at once, across all calls");
ABSL_FLAG(int, max_queued_executions, 1024,
          "code_tests runs that may wait beyond those; a call past it: RESOURCE_EXHAUSTED");
ABSL_FLAG(double, code_cpu_seconds, 5, "code_tests: CPU seconds per run at most");
ABSL_FLAG(double, code_wall_seconds, 10, "code_tests: wall seconds per run at most");
ABSL_FLAG(int64_t, code_memory_mb, 512, "code_tests: address space per run at most, MiB");
ABSL_FLAG(int, code_max_processes, 32, "code_tests: processes per run at most");
ABSL_FLAG(int64_t, code_max_file_bytes, 1 << 20, "code_tests: bytes per written file at most");
ABSL_FLAG(int64_t, code_max_output_bytes, 64 << 10, "code_tests: stdout/stderr bytes at most");
ABSL_FLAG(std::string, reward_model, "",
          "directory written by grpo_train_rm; serves reward_model and process_reward_model");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("grpo_reward_server [--listen HOST:PORT]");
  grpo::EnsureThreadEnvironment(argv);
  absl::ParseCommandLine(argc, argv);
  if (absl::Status log = grpo::InstallStructuredLogFromFlags("grpo_reward_server"); !log.ok()) {
    std::cerr << "error: " << log.message() << "\n";
    return 2;
  }
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_compute_threads));
  grpo::CatchStopSignals();

  grpo::RewardServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.limits.max_batch = absl::GetFlag(FLAGS_max_batch);
  options.limits.max_text_bytes = absl::GetFlag(FLAGS_max_text_bytes);
  options.reward_model_dir = absl::GetFlag(FLAGS_reward_model);
  options.code_tests = absl::GetFlag(FLAGS_code_tests);
  options.code.max_concurrent = absl::GetFlag(FLAGS_max_concurrent_executions);
  options.code.max_queued = absl::GetFlag(FLAGS_max_queued_executions);
  options.code.limits.cpu_seconds = absl::GetFlag(FLAGS_code_cpu_seconds);
  options.code.limits.wall_seconds = absl::GetFlag(FLAGS_code_wall_seconds);
  options.code.limits.memory_bytes = absl::GetFlag(FLAGS_code_memory_mb) << 20;
  options.code.limits.processes = absl::GetFlag(FLAGS_code_max_processes);
  options.code.limits.file_bytes = absl::GetFlag(FLAGS_code_max_file_bytes);
  options.code.limits.output_bytes = absl::GetFlag(FLAGS_code_max_output_bytes);
  absl::StatusOr<grpo::Security> security = grpo::Security::Load(grpo::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::cerr << "error: " << security.status().message() << "\n";
    return 2;
  }
  options.security = *std::move(security);
  options.lame_duck = grpo::kLameDuck;
  grpo::metrics::Registry registry;
  options.registry = &registry;
  if (options.limits.max_batch < 1 || options.limits.max_text_bytes < 1) {
    std::cerr << "error: --max_batch and --max_text_bytes must be positive\n";
    return 2;
  }
  auto server = grpo::RewardServer::Start(options);
  if (!server.ok()) {
    std::cerr << "error: " << server.status().message() << "\n";
    return 1;
  }
  auto metrics = grpo::ServeMetrics(absl::GetFlag(FLAGS_metrics_listen),
                                    absl::GetFlag(FLAGS_metrics_port_file), &registry);
  if (!metrics.ok()) {
    std::cerr << "error: " << metrics.status().message() << "\n";
    return 1;
  }
  std::cout << "grpo_reward_server: serving on port " << (*server)->port() << " ("
            << options.security.Describe() << ")" << std::endl;
  if (!(*server)->code_tests_unavailable().empty())
    std::cout << "grpo_reward_server: code_tests unavailable, calls get FAILED_PRECONDITION: "
              << (*server)->code_tests_unavailable() << std::endl;
  if (absl::Status s = grpo::WritePortFile(absl::GetFlag(FLAGS_port_file), (*server)->port());
      !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  int signal = 0;
  while (signal == 0) signal = grpo::WaitForStopSignal(std::chrono::hours(1));
  std::cout << "grpo_reward_server: signal " << signal << ", draining" << std::endl;
  (*server)->Shutdown(std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)));
  return 0;
}
