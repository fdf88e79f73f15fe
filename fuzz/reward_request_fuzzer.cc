// Fuzzes the reward server's request handling: RewardServiceImpl::Score
// (reward_server/reward_service.h) on a grpo.v1.ScoreRequest, i.e. the request validation
// and the rule-based reward functions of rewards/rewards.h reading hostile prompts,
// completions, reference answers and function parameters. The neural functions are
// stood in for by FakeModel (no LibTorch here), which may return NaN or infinity.
//
// The input is a ScoreRequest in text format (what the seeds are written in, and what
// keeps the mutated bytes inside strings meaningful), or else in the binary wire format
// (what gRPC hands the service).
//
// Checks, besides "no crash, no sanitizer report" (docs/design.md §7):
//   - a failed call answers INVALID_ARGUMENT, RESOURCE_EXHAUSTED or INTERNAL and leaves
//     the response empty;
//   - a successful one has one score per sample, in order, each with one finite reward
//     per function, a finite total, and finite step rewards at strictly increasing
//     offsets inside the completion.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/server_context.h"
#include "grpo/v1/reward.pb.h"
#include "reward_server/reward_service.h"
#include "rewards/rewards.h"

namespace {

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "reward_request_fuzzer: %s\n%s\n", what, detail.c_str());
  std::abort();
}

// Stands in for a loaded reward model: a reward from the completion's bytes, NaN or
// infinite for some, and (as process_reward_model) a step reward at each line's end.
class FakeModel : public grpo::RewardFunction {
 public:
  explicit FakeModel(bool steps) : steps_(steps) {}
  std::string_view name() const override {
    return steps_ ? "process_reward_model" : "reward_model";
  }
  bool gives_step_rewards() const override { return steps_; }
  absl::StatusOr<grpo::RewardOutput> Score(const grpo::RewardInput& input) const override {
    grpo::RewardOutput out;
    out.reward = Value(input.completion);
    if (steps_) {
      for (size_t i = 0; i < input.completion.size(); ++i) {
        if (input.completion[i] == '\n' || i + 1 == input.completion.size())
          out.steps.push_back({Value(input.completion.substr(0, i + 1)), static_cast<int>(i)});
      }
    }
    return out;
  }

 private:
  static double Value(std::string_view text) {
    if (text.empty()) return 0;
    switch (static_cast<unsigned char>(text.back()) % 16) {
      case 0: return std::nan("");
      case 1: return HUGE_VAL;
      case 2: return 1e308;  // finite, but weighted sums overflow
      default: return static_cast<double>(text.size() % 7) - 3;
    }
  }
  bool steps_;
};

grpo::RewardServiceImpl& Service() {
  static grpo::RewardServiceImpl* service = [] {
    // Small limits so that inputs of a few KiB reach the RESOURCE_EXHAUSTED paths too.
    grpo::RewardServiceLimits limits;
    limits.max_batch = 32;
    limits.max_text_bytes = 1024;
    return new grpo::RewardServiceImpl(
        limits, {{"reward_model", std::make_shared<FakeModel>(false)},
                 {"process_reward_model", std::make_shared<FakeModel>(true)}});
  }();
  return *service;
}

// Text-format errors are expected on most inputs: collected silently, not logged.
class IgnoreErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int, int, const std::string&) override {}
};

bool ParseRequest(const uint8_t* data, size_t size, grpo::v1::ScoreRequest* request) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  google::protobuf::TextFormat::Parser parser;
  IgnoreErrors errors;
  parser.RecordErrorsTo(&errors);
  if (parser.ParseFromString(text, request)) return true;
  request->Clear();
  return request->ParseFromString(text);
}

void CheckScores(const grpo::v1::ScoreRequest& request, const grpo::v1::ScoreResponse& response) {
  if (response.scores_size() != request.samples_size())
    Fail("one score per sample expected", response.DebugString());
  for (int i = 0; i < response.scores_size(); ++i) {
    const grpo::v1::SampleScore& score = response.scores(i);
    const grpo::v1::RewardSample& sample = request.samples(i);
    if (score.group_id() != sample.group_id() || score.sample_index() != sample.sample_index())
      Fail("scores out of order", score.DebugString());
    if (score.per_function_size() != request.reward_functions_size())
      Fail("one reward per function expected", score.DebugString());
    if (!std::isfinite(score.total())) Fail("non-finite total", score.DebugString());
    for (double r : score.per_function())
      if (!std::isfinite(r)) Fail("non-finite reward", score.DebugString());
    int previous = -1;
    for (const grpo::v1::StepReward& step : score.steps()) {
      if (!std::isfinite(step.reward())) Fail("non-finite step reward", score.DebugString());
      if (step.end_offset() <= previous ||
          static_cast<size_t>(step.end_offset()) >= sample.completion().size())
        Fail("step offsets not increasing inside the completion", score.DebugString());
      previous = step.end_offset();
    }
  }
}

}  // namespace

// protobuf logs every string that is not UTF-8 as it parses one: on most inputs, and at a
// cost that would dominate the run. What matters is what the code under test does.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  grpo::v1::ScoreRequest request;
  if (!ParseRequest(data, size, &request)) return 0;

  grpc::ServerContext context;  // not cancelled, no deadline, no metadata
  grpo::v1::ScoreResponse response;
  const grpc::Status status = Service().Score(&context, &request, &response);
  if (status.ok()) {
    CheckScores(request, response);
    return 0;
  }
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::INTERNAL:
      break;
    default:
      Fail("unexpected status code", status.error_message());
  }
  if (response.scores_size() != 0) Fail("a failed call left scores behind", "");
  return 0;
}
