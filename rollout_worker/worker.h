// RolloutWorker: the grpo_rollout_worker process minus main() (docs/design.md §2). It
// registers with the coordinator and heartbeats, leases prompts, pulls the job's weights
// from learner rank 0 whenever a lease asks for a newer version than it holds, samples G
// completions per prompt, has a reward server score them, and streams the scored groups to
// the learner (backing off while its buffer is full). Stateless: kill it at any time and
// its leases are handed to another worker; start more at any time and they get work.
//
// Run blocks until `stop` is notified. Not thread-safe (one Run at a time).
#ifndef GRPO_ROLLOUT_WORKER_WORKER_H_
#define GRPO_ROLLOUT_WORKER_WORKER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "metrics/registry.h"
#include "model/sampler.h"
#include "rpc/security.h"

namespace grpo {

struct RolloutWorkerOptions {
  std::string coordinator_address = "localhost:50050";
  std::string reward_server_address = "localhost:50051";
  int max_prompts_per_lease = 4;
  std::string name;  // for the registry; default host:pid
  std::chrono::milliseconds weights_deadline{std::chrono::minutes(2)};
  // Parallel StreamWeights streams per pull (1 to 64). One stream is bound by one core's
  // copies, and on a 2-core machine it is the fastest (README); more are for hosts with
  // cores to spare.
  int weight_streams = 1;
  // How long the learner may stay UNAVAILABLE before a batch is dropped (its leases are
  // then reissued, and the next lease names the learner's new address).
  std::chrono::milliseconds learner_unreachable_grace{std::chrono::seconds(10)};
  std::ostream* log = nullptr;  // one line per batch; null = silent
  Security security;  // TLS and the token for every channel the worker opens
  // Where the worker's grpo_worker_* metrics go (borrowed); null = kept to itself.
  metrics::Registry* registry = nullptr;
  // Where the policy samples (Transformer::To): "cpu" or "cuda[:N]", in "float32",
  // "bfloat16" or "float16". Weights arrive in bfloat16 for a bfloat16 policy, else in
  // float32, and are converted on load.
  std::string device = "cpu";
  std::string dtype = "float32";
  // The sampler's products (SetSamplerMatmuls, after CheckSamplerMatmuls): "bfloat16" on a
  // CPU float32 policy gives about twice the tokens/s on CPUs with AVX-512 BF16, at
  // bfloat16's precision; "float32" with packed_matmuls multiplies a CPU float32 policy by
  // prepacked weight copies (same precision, ~1.15x).
  std::string matmul_dtype = "float32";
  bool packed_matmuls = true;
  // How tokens are decoded (SamplingOptions::decode, cuda_graphs): by default CUDA-graph
  // replays of the static decode step on a GPU, the eager fused kernels on a CPU.
  SamplingOptions::Decode decode = SamplingOptions::Decode::kAuto;
  bool cuda_graphs = true;
};

struct RolloutWorkerCounters {
  int64_t groups_submitted = 0;
  int64_t groups_duplicate = 0;
  int64_t batches_failed = 0;
  int64_t weight_pulls = 0;
  int64_t bad_weight_transfers = 0;  // rejected (cut off, corrupted) and asked for again
  int64_t prompts_skipped = 0;       // could not be scored; replaced (reward_failure SKIP)
  double last_weight_pull_seconds = 0;
  int64_t full_backoffs = 0;
};

class RolloutWorker {
 public:
  explicit RolloutWorker(RolloutWorkerOptions options);
  ~RolloutWorker();

  // Until `stop` is notified: OK. Errors only for what retrying cannot fix (for example
  // the coordinator rejecting the registration).
  absl::Status Run(absl::Notification* stop);
  RolloutWorkerCounters counters() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace grpo

#endif  // GRPO_ROLLOUT_WORKER_WORKER_H_
