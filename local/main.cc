// grpo_local: runs a whole GRPO job on this machine (SFT warm-up, GRPO, held-out eval).
// With no --spec it runs the built-in arithmetic job.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "jobspec/job_spec.h"
#include "learner/learner_device.h"
#include "local/local_job.h"
#include "model/runtime.h"

ABSL_FLAG(std::string, spec, "", "job spec file (JSON or text proto); empty = built-in job");
ABSL_FLAG(std::string, run_dir, "runs/local", "run directory (spec, metrics, checkpoints)");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads; 0 = all cores");
ABSL_FLAG(int64_t, seed, -1, "overrides the spec's seed when >= 0");
ABSL_FLAG(int, steps, -1, "overrides the spec's GRPO steps when >= 0");
ABSL_FLAG(bool, print_spec, false, "print the resolved spec and exit");
ABSL_FLAG(std::string, device, "cpu", "where the learner trains: cpu, cuda or cuda:N");

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  absl::SetProgramUsageMessage("grpo_local [--spec job.json] [--run_dir DIR]");
  absl::ParseCommandLine(argc, argv);
  const int threads = grpo::ConfigureRuntime(absl::GetFlag(FLAGS_threads));

  grpo::v1::JobSpec user;
  if (!absl::GetFlag(FLAGS_spec).empty()) {
    auto loaded = grpo::LoadJobSpecFile(absl::GetFlag(FLAGS_spec));
    if (!loaded.ok()) {
      std::cerr << "error: " << loaded.status().message() << "\n";
      return 2;
    }
    user = *loaded;
  }
  if (absl::GetFlag(FLAGS_seed) >= 0) user.set_seed(absl::GetFlag(FLAGS_seed));
  if (absl::GetFlag(FLAGS_steps) >= 0) user.set_steps(absl::GetFlag(FLAGS_steps));
  auto spec = grpo::ResolveJobSpec(user);
  if (!spec.ok()) {
    std::cerr << "error: " << spec.status().message() << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_print_spec)) {
    std::cout << grpo::JobSpecToJson(*spec);
    return 0;
  }
  std::cout << "grpo_local: job \"" << spec->name() << "\", seed " << spec->seed() << ", "
            << threads << " threads, run directory " << absl::GetFlag(FLAGS_run_dir) << "\n";
  absl::StatusOr<c10::Device> device = grpo::ResolveLearnerDevice(absl::GetFlag(FLAGS_device), 0);
  if (!device.ok()) {
    std::cerr << "error: " << device.status().message() << "\n";
    return 2;
  }
  grpo::LocalJobOptions options;
  options.run_dir = absl::GetFlag(FLAGS_run_dir);
  options.device = *device;
  options.progress = &std::cout;
  auto result = grpo::RunLocalJob(*spec, options);
  if (!result.ok()) {
    std::cerr << "error: " << result.status() << "\n";
    return 1;
  }
  return 0;
}
