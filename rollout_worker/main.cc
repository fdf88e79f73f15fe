// grpo_rollout_worker: leases prompts from the coordinator, samples and scores them, and
// streams the scored groups to learner rank 0, until SIGTERM or SIGINT.
#include <iostream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "metrics/registry.h"
#include "model/model.h"
#include "model/packed_matmul.h"
#include "model/runtime.h"
#include "model/static_decode.h"
#include "rollout_worker/worker.h"
#include "rpc/process.h"
#include "rpc/security.h"
#include "rpc/structured_log.h"

ABSL_FLAG(std::string, coordinator, "localhost:50050", "coordinator address");
ABSL_FLAG(std::string, reward_server, "localhost:50051", "reward server address");
ABSL_FLAG(int, max_prompts, 4, "prompts per lease (each sampled G times in one batch)");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores");
ABSL_FLAG(std::string, name, "", "name in the coordinator's registry; default host:pid");
ABSL_FLAG(std::string, metrics_listen, "",
          "serve Prometheus metrics at http://ADDRESS/metrics: PORT or HOST:PORT (0 = any "
          "port; suggested: 9404); empty = none");
ABSL_FLAG(std::string, metrics_port_file, "", "write the metrics port to this file");
ABSL_FLAG(std::string, device, "cpu", "where the policy samples: cpu or cuda[:N]");
ABSL_FLAG(std::string, dtype, "",
          "the policy's dtype there: float32, bfloat16 or float16; default float32 on the "
          "CPU, bfloat16 on a GPU");
ABSL_FLAG(std::string, matmul_dtype, "float32",
          "float32, or bfloat16: a CPU float32 policy samples with bfloat16 matmuls and KV "
          "cache (faster on CPUs with AVX-512 BF16; log-probs at bfloat16's precision: "
          "the groups say so, and a float32 learner recomputes their pi_old under the "
          "default training.old_logprobs, AUTO)");
ABSL_FLAG(bool, packed_matmuls, true,
          "a CPU float32 policy multiplies by prepacked copies of its weights "
          "(model/packed_matmul.h: the same float32 precision, ~1.15x the decode tokens/s "
          "with the AVX2 kernel, ~1.7x with the AVX-512 one on a Zen 5, one more float32 "
          "copy of the matmul weights in memory; only on CPUs with AVX2/FMA); false = "
          "LibTorch's linear");
ABSL_FLAG(std::string, decode, "auto",
          "auto (on a GPU the static decode step replayed as CUDA graphs, on a CPU the "
          "eager fused kernels), eager, or static");
ABSL_FLAG(bool, cuda_graphs, true,
          "static decode on a GPU: capture each batch size's step once and replay it");
ABSL_FLAG(int, weight_streams, 1,
          "parallel streams per weight pull (1 to 64): more for hosts with cores to spare");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "grpo_rollout_worker --coordinator HOST:PORT --reward_server HOST:PORT");
  absl::ParseCommandLine(argc, argv);
  // May re-execute this binary (model/runtime.h); bfloat16 matmuls run on OpenMP threads.
  grpo::EnsureThreadEnvironment(
      argv, grpo::MatmulThreadsFor(absl::GetFlag(FLAGS_matmul_dtype),
                                   absl::GetFlag(FLAGS_packed_matmuls), absl::GetFlag(FLAGS_device),
                                   absl::GetFlag(FLAGS_dtype)));
  grpo::CatchStopSignals();
  if (absl::Status log = grpo::InstallStructuredLogFromFlags("grpo_rollout_worker"); !log.ok()) {
    std::cerr << "error: " << log.message() << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_prompts) < 1) {
    std::cerr << "error: --max_prompts must be >= 1\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_weight_streams) < 1 || absl::GetFlag(FLAGS_weight_streams) > 64) {
    std::cerr << "error: --weight_streams must be in [1, 64]\n";
    return 2;
  }
  grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  grpo::RolloutWorkerOptions options;
  options.weight_streams = absl::GetFlag(FLAGS_weight_streams);
  options.coordinator_address = absl::GetFlag(FLAGS_coordinator);
  options.reward_server_address = absl::GetFlag(FLAGS_reward_server);
  options.max_prompts_per_lease = absl::GetFlag(FLAGS_max_prompts);
  options.name = absl::GetFlag(FLAGS_name);
  options.log = &std::cout;
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  if (options.dtype.empty()) options.dtype = options.device == "cpu" ? "float32" : "bfloat16";
  // Checked now rather than at the first job.
  absl::StatusOr<grpo::Placement> placement = grpo::ParsePlacement(options.device, options.dtype);
  if (!placement.ok()) {
    std::cerr << "error: --device/--dtype: " << placement.status().message() << "\n";
    return 2;
  }
  options.matmul_dtype = absl::GetFlag(FLAGS_matmul_dtype);
  options.packed_matmuls = absl::GetFlag(FLAGS_packed_matmuls);
  if (auto matmuls = grpo::CheckSamplerMatmuls(options.matmul_dtype, *placement);
      !matmuls.ok()) {
    std::cerr << "error: " << matmuls.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<grpo::SamplingOptions::Decode> decode =
      grpo::ParseDecode(absl::GetFlag(FLAGS_decode));
  if (!decode.ok()) {
    std::cerr << "error: --decode: " << decode.status().message() << "\n";
    return 2;
  }
  options.decode = *decode;
  std::cout << "grpo_rollout_worker: sampling on " << options.device << " in " << options.dtype;
  if (placement->device.is_cpu()) {
    const bool packed = options.packed_matmuls && options.matmul_dtype == "float32" &&
                        grpo::PackedMatmulSupported();
    std::cout << ", " << options.matmul_dtype
              << (packed ? absl::StrCat(" packed (",
                                        grpo::PackedKernelName(grpo::PackedKernel::kWidest), ")")
                         : "")
              << " matmuls";
  }
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  if (placement->device.is_cuda()) {
    // Said here because a build without them still samples, only slower.
    std::cout << ", CUDA graphs "
              << (!options.cuda_graphs                   ? "off"
                  : grpo::CudaGraphsCompiledIn()         ? "on"
                                                          : "off (not in this build)");
  }
  std::cout << std::endl;
  absl::StatusOr<grpo::Security> security = grpo::Security::Load(grpo::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::cerr << "error: " << security.status().message() << "\n";
    return 2;
  }
  options.security = *std::move(security);
  grpo::metrics::Registry registry;
  options.registry = &registry;
  absl::Notification stop;
  std::thread signals([&] {
    while (!stop.HasBeenNotified())
      if (grpo::WaitForStopSignal(std::chrono::milliseconds(200)) != 0) stop.Notify();
  });
  grpo::RolloutWorker worker(options);
  auto metrics = grpo::ServeMetrics(absl::GetFlag(FLAGS_metrics_listen),
                                    absl::GetFlag(FLAGS_metrics_port_file), &registry);
  if (!metrics.ok()) {
    std::cerr << "error: " << metrics.status().message() << "\n";
    stop.Notify();
    signals.join();
    return 1;
  }
  absl::Status status = worker.Run(&stop);
  if (!stop.HasBeenNotified()) stop.Notify();
  signals.join();
  if (!status.ok()) {
    std::cerr << "error: " << status << "\n";
    return 1;
  }
  std::cout << "grpo_rollout_worker: stopped" << std::endl;
  return 0;
}
