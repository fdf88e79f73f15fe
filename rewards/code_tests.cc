#include "rewards/code_tests.h"

#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace grpo {
namespace {

// This Abseil's string_view is its own type, not std's.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

// One test of one sample: what runs, and how it went.
struct CodeTestsReward::Run {
  size_t sample = 0;
  const CodeLanguage* language = nullptr;
  std::string program, stdin_text, expected, nonce;
  bool io = false;
  bool passed = false;
  absl::Status error;  // the sandbox itself failed
};

const std::vector<CodeLanguage>& CodeLanguages() {
  // Adding an interpreter is a row here (it must live under /usr, which the sandbox binds).
  static const auto* languages = new std::vector<CodeLanguage>{
      {"python", "main.py", {"/usr/bin/python3", "-I", "main.py"}},
  };
  return *languages;
}

std::string ExtractCode(std::string_view completion) {
  const size_t close = completion.rfind("```");
  if (close == std::string_view::npos || close == 0) return std::string(completion);
  const size_t open = completion.rfind("```", close - 1);
  if (open == std::string_view::npos) return std::string(completion);
  const size_t body = completion.find('\n', open);  // past the info string ("python")
  if (body == std::string_view::npos || body >= close) return std::string(completion);
  return std::string(completion.substr(body + 1, close - body - 1));
}

CodeTestsReward::CodeTestsReward(const CodeTestsOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<CodeTestsReward>> CodeTestsReward::Create(
    const CodeTestsOptions& options, metrics::Registry* registry) {
  if (options.max_concurrent < 1 || options.max_queued < 0 || options.all_passed_bonus < 0)
    return absl::InvalidArgumentError(
        "code_tests: max_concurrent >= 1, max_queued >= 0, all_passed_bonus >= 0");
  std::unique_ptr<CodeTestsReward> r(new CodeTestsReward(options));
  absl::StatusOr<std::unique_ptr<Sandbox>> sandbox = Sandbox::Create(options.limits);
  if (absl::IsInvalidArgument(sandbox.status())) return sandbox.status();
  if (sandbox.ok()) {
    r->sandbox_ = *std::move(sandbox);
  } else {
    r->unavailable_ = std::string(sandbox.status().message());
  }
  if (registry) {
    r->executions_ = &registry->AddCounter(
        "grpo_code_executions_total",
        "code_tests runs by outcome: passed, failed, timeout, memory, crash, output_limit, "
        "sandbox_error.");
    r->seconds_ = &registry
                       ->AddHistogram("grpo_code_execution_seconds",
                                      "Wall time of one code_tests run in the sandbox.",
                                      metrics::ExponentialBuckets(0.01, 2, 12))
                       .Add();
  }
  return r;
}

absl::Status CodeTestsReward::Plan(const RewardInput& input, size_t sample,
                                   std::vector<Run>* runs) const {
  const v1::CodeTests* tests = input.tests;
  if (tests == nullptr || (tests->asserts().empty() && tests->cases().empty()))
    return absl::InvalidArgumentError("code_tests: the sample has no tests (asserts or cases)");
  const std::string_view name =
      tests->language().empty() ? std::string_view("python") : std::string_view(tests->language());
  const CodeLanguage* language = nullptr;
  for (const CodeLanguage& l : CodeLanguages())
    if (l.name == name) language = &l;
  if (language == nullptr)
    return absl::InvalidArgumentError(
        absl::StrCat("code_tests: language \"", A(name), "\" is not one of this server's"));
  const std::string code = ExtractCode(input.completion);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  for (std::string_view test : tests->asserts()) {
    Run run;
    run.sample = sample;
    run.language = language;
    run.nonce = absl::StrFormat("tests-passed-%016x", rng());
    run.program = absl::StrCat(code, "\n\n", A(test), "\nprint(\"", run.nonce, "\")\n");
    runs->push_back(std::move(run));
  }
  for (const v1::CodeTestCase& c : tests->cases()) {
    Run run;
    run.sample = sample;
    run.language = language;
    run.io = true;
    run.program = code;
    run.stdin_text = c.input();
    run.expected = std::string(absl::StripAsciiWhitespace(A(c.output())));
    runs->push_back(std::move(run));
  }
  return absl::OkStatus();
}

void CodeTestsReward::Record(const char* outcome, double seconds) const {
  if (executions_ == nullptr) return;
  executions_->Add({{"outcome", outcome}}).Increment();
  seconds_->Observe(seconds);
}

void CodeTestsReward::Execute(Run* run, const SandboxLimits& limits) const {
  absl::StatusOr<SandboxResult> r = sandbox_->Run(
      run->language->argv, {{run->language->file, run->program}}, run->stdin_text, &limits);
  if (!r.ok()) {
    run->error = r.status();
    Record("sandbox_error", 0);
    return;
  }
  const absl::string_view out = absl::StripAsciiWhitespace(r->out);
  if (r->outcome == SandboxOutcome::kExited && r->exit_code == 0)
    run->passed = run->io ? out == run->expected : absl::EndsWith(out, run->nonce);
  const char* outcome = r->outcome == SandboxOutcome::kExited
                            ? (run->passed ? "passed" : "failed")
                            : SandboxOutcomeName(r->outcome);
  Record(outcome, r->seconds);
}

absl::StatusOr<RewardOutput> CodeTestsReward::Score(const RewardInput& input) const {
  absl::StatusOr<std::vector<RewardOutput>> out = ScoreBatch({input});
  if (!out.ok()) return out.status();
  return (*out)[0];
}

absl::StatusOr<std::vector<RewardOutput>> CodeTestsReward::ScoreBatch(
    const std::vector<RewardInput>& inputs) const {
  return ScoreBatchWith(inputs, {options_.limits, options_.all_passed_bonus});
}

absl::StatusOr<CodeTestsCall> CodeTestsReward::CallFromParams(const RewardParams& params) const {
  return CodeTestsCallFromParams(params, options_);
}

absl::StatusOr<CodeTestsCall> CodeTestsCallFromParams(const RewardParams& params,
                                                      const CodeTestsOptions& server) {
  CodeTestsCall call{server.limits, server.all_passed_bonus};
  const SandboxLimits& most = server.limits;
  for (const auto& [name, value] : params) {
    double limit = 0, *seconds = nullptr;
    int64_t* bytes = nullptr;
    int* count = nullptr;
    double scale = 1;
    if (name == "cpu_seconds") seconds = &call.limits.cpu_seconds, limit = most.cpu_seconds;
    else if (name == "wall_seconds") seconds = &call.limits.wall_seconds, limit = most.wall_seconds;
    else if (name == "memory_mb")
      bytes = &call.limits.memory_bytes, scale = 1 << 20, limit = most.memory_bytes / scale;
    else if (name == "file_bytes") bytes = &call.limits.file_bytes, limit = most.file_bytes;
    else if (name == "output_bytes") bytes = &call.limits.output_bytes, limit = most.output_bytes;
    else if (name == "processes") count = &call.limits.processes, limit = most.processes;
    else if (name == "all_passed_bonus") {
      if (!(value >= 0 && value <= 100))
        return absl::InvalidArgumentError("code_tests: all_passed_bonus must be in [0, 100]");
      call.all_passed_bonus = value;
      continue;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "code_tests: unknown parameter \"", name, "\" (known: cpu_seconds, wall_seconds, "
          "memory_mb, processes, file_bytes, output_bytes, all_passed_bonus)"));
    }
    if (!(value > 0 && value <= limit))
      return absl::InvalidArgumentError(absl::StrCat("code_tests: ", name, " = ", value,
                                                     " must be in (0, ", limit,
                                                     "], the reward server's limit"));
    if (seconds) *seconds = value;
    if (bytes) *bytes = static_cast<int64_t>(value * scale);
    if (count) *count = static_cast<int>(value);
  }
  if (call.limits.memory_bytes < (16 << 20))
    return absl::InvalidArgumentError("code_tests: memory_mb must be at least 16");
  return call;
}

namespace {

class BoundCodeTests : public RewardFunction {
 public:
  BoundCodeTests(std::shared_ptr<const CodeTestsReward> reward, const CodeTestsCall& call)
      : reward_(std::move(reward)), call_(call) {}
  std::string_view name() const override { return reward_->name(); }
  bool gives_step_rewards() const override { return false; }
  absl::StatusOr<RewardOutput> Score(const RewardInput& input) const override {
    absl::StatusOr<std::vector<RewardOutput>> out = ScoreBatch({input});
    if (!out.ok()) return out.status();
    return (*out)[0];
  }
  absl::StatusOr<std::vector<RewardOutput>> ScoreBatch(
      const std::vector<RewardInput>& inputs) const override {
    return reward_->ScoreBatchWith(inputs, call_);
  }

 private:
  std::shared_ptr<const CodeTestsReward> reward_;
  CodeTestsCall call_;
};

}  // namespace

std::unique_ptr<RewardFunction> CodeTestsReward::Bind(std::shared_ptr<const CodeTestsReward> reward,
                                                      const CodeTestsCall& call) {
  return std::make_unique<BoundCodeTests>(std::move(reward), call);
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeCodeTestsFunction(const RewardParams& params) {
  absl::StatusOr<std::unique_ptr<CodeTestsReward>> reward = CodeTestsReward::Create(CodeTestsOptions());
  if (!reward.ok()) return reward.status();
  absl::StatusOr<CodeTestsCall> call = (*reward)->CallFromParams(params);
  if (!call.ok()) return call.status();
  return CodeTestsReward::Bind(std::move(*reward), *call);
}

absl::StatusOr<std::vector<RewardOutput>> CodeTestsReward::ScoreBatchWith(
    const std::vector<RewardInput>& inputs, const CodeTestsCall& call) const {
  if (!sandbox_) return absl::FailedPreconditionError(unavailable_);
  std::vector<Run> runs;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (absl::Status s = Plan(inputs[i], i, &runs); !s.ok())
      return absl::Status(s.code(), absl::StrCat("sample ", i, ": ", s.message()));
  {
    absl::MutexLock lock(&mu_);
    const int free_slots = options_.max_concurrent - running_;
    if (queued_ + static_cast<int64_t>(runs.size()) - free_slots > options_.max_queued)
      return absl::ResourceExhaustedError(absl::StrCat(
          "code_tests: ", runs.size(), " runs would wait behind ", queued_, " queued; at most ",
          options_.max_queued, " wait beyond the ", options_.max_concurrent,
          " running (--max_concurrent_executions)"));
    queued_ += static_cast<int>(runs.size());
  }
  // This batch's workers; the shared slots bound how many runs go at once overall.
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < runs.size();) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](const CodeTestsReward* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
              return self->running_ < self->options_.max_concurrent;
            },
            this));
        ++running_;
        --queued_;
      }
      Execute(&runs[i], call.limits);
      absl::MutexLock lock(&mu_);
      --running_;
    }
  };
  const size_t workers = std::min<size_t>(runs.size(), options_.max_concurrent);
  std::vector<std::thread> threads;
  for (size_t w = 1; w < workers; ++w) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();

  std::vector<RewardOutput> out(inputs.size());
  std::vector<int> passed(inputs.size(), 0), total(inputs.size(), 0);
  for (const Run& run : runs) {
    if (!run.error.ok())
      return absl::InternalError(
          absl::StrCat("sample ", run.sample, ": code sandbox: ", run.error.message()));
    ++total[run.sample];
    passed[run.sample] += run.passed;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    out[i].reward = static_cast<double>(passed[i]) / total[i];
    if (passed[i] == total[i]) out[i].reward += call.all_passed_bonus;
  }
  return out;
}

}  // namespace grpo
