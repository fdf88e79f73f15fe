// CodeTestsReward ("code_tests"): code generation with execution feedback. The
// completion's code (its last fenced code block, else the whole completion) runs in the
// sandbox (sandbox/sandbox.h) against the sample's tests, one run per test:
//   - an assert test: the program, then the assert statement, then a line printing a
//     random nonce; it passes iff the run exits 0 and its output ends with the nonce (a
//     program that exits early, or prints "ok" itself, passes nothing);
//   - a stdin/stdout case: the program with the case's input on stdin; it passes iff it
//     exits 0 and its stdout equals the expected output, both trimmed of surrounding
//     whitespace.
// The reward is the fraction of tests passed, plus `all_passed_bonus` when every one did.
// A sample without tests is INVALID_ARGUMENT (a misconfigured job, not the model's fault);
// a language outside the table is too. Runs go in parallel up to max_concurrent, across
// every caller; a batch whose runs would push more than max_queued past that waits for
// none and gets RESOURCE_EXHAUSTED. Where the sandbox cannot start on the machine, every
// call gets FAILED_PRECONDITION with the reason (Create never fails for that: the server
// serves its other functions). Thread-safe.
//
// Metrics (when given a registry): grpo_code_executions_total{outcome=passed|failed|
// timeout|memory|crash|output_limit|sandbox_error} and grpo_code_execution_seconds.
#ifndef GRPO_REWARDS_CODE_TESTS_H_
#define GRPO_REWARDS_CODE_TESTS_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "metrics/registry.h"
#include "rewards/rewards.h"
#include "sandbox/sandbox.h"

namespace grpo {

struct CodeTestsOptions {
  SandboxLimits limits;
  int max_concurrent = 8;   // runs at once, across every request
  int max_queued = 1024;    // runs waiting beyond those
  double all_passed_bonus = 0;
};

// One request's settings: the job spec's params for code_tests, each at most the server's
// (cpu_seconds, wall_seconds, memory_mb, processes, file_bytes, output_bytes) and
// all_passed_bonus.
struct CodeTestsCall {
  SandboxLimits limits;
  double all_passed_bonus = 0;
};

// `server`'s settings with the job spec's `params` applied; INVALID_ARGUMENT naming an
// unknown parameter or one past the server's limit. Job validation calls it with the
// default options (the reward server's default flags).
absl::StatusOr<CodeTestsCall> CodeTestsCallFromParams(const RewardParams& params,
                                                      const CodeTestsOptions& server);

// The interpreters, by language name: how to run a program file.
struct CodeLanguage {
  std::string name;
  std::string file;               // the program's file name in the sandbox's /tmp
  std::vector<std::string> argv;  // argv[0] absolute
};
const std::vector<CodeLanguage>& CodeLanguages();

// The last ``` fenced block's body (any info string after the fence), else `completion`.
std::string ExtractCode(std::string_view completion);

class CodeTestsReward : public RewardFunction {
 public:
  // INVALID_ARGUMENT for bad options only.
  static absl::StatusOr<std::unique_ptr<CodeTestsReward>> Create(
      const CodeTestsOptions& options, metrics::Registry* registry = nullptr);

  std::string_view name() const override { return "code_tests"; }
  bool gives_step_rewards() const override { return false; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override;
  absl::StatusOr<std::vector<RewardOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override;

  // Why the sandbox is unavailable here (empty when it works).
  const std::string& unavailable() const { return unavailable_; }

  // CodeTestsCallFromParams with this reward's options.
  absl::StatusOr<CodeTestsCall> CallFromParams(const RewardParams& params) const;
  absl::StatusOr<std::vector<RewardOutput>> ScoreBatchWith(const std::vector<RewardInput>& inputs,
                                                           const CodeTestsCall& call) const;
  // A RewardFunction scoring with `call` through `reward` (shared with other callers).
  static std::unique_ptr<RewardFunction> Bind(std::shared_ptr<const CodeTestsReward> reward,
                                              const CodeTestsCall& call);

 private:
  struct Run;
  explicit CodeTestsReward(const CodeTestsOptions& options);
  absl::Status Plan(const RewardInput& input, size_t sample, std::vector<Run>* runs) const;
  void Execute(Run* run, const SandboxLimits& limits) const;
  void Record(const char* outcome, double seconds) const;

  const CodeTestsOptions options_;
  std::unique_ptr<Sandbox> sandbox_;
  std::string unavailable_;
  metrics::Family<metrics::Counter>* executions_ = nullptr;
  metrics::Histogram* seconds_ = nullptr;

  mutable absl::Mutex mu_;
  mutable int running_ ABSL_GUARDED_BY(mu_) = 0;
  mutable int queued_ ABSL_GUARDED_BY(mu_) = 0;
};

// A code_tests function of its own (default options, `params` applied as a job spec's),
// for processes that score in-process: grpo_local's rollouts and held-out evaluation.
// Where the sandbox cannot start, it is still made and every call gets
// FAILED_PRECONDITION with the reason.
absl::StatusOr<std::unique_ptr<RewardFunction>> MakeCodeTestsFunction(const RewardParams& params);

}  // namespace grpo

#endif  // GRPO_REWARDS_CODE_TESTS_H_
