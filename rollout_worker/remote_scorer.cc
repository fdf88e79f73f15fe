#include "rollout_worker/remote_scorer.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "rpc/backoff.h"
#include "rpc/status.h"

namespace grpo {

absl::StatusOr<std::vector<CompositeOutput>> RemoteScorer::ScoreBatch(
    const std::vector<RewardInput>& inputs) const {
  v1::ScoreRequest request;
  for (const v1::RewardFunctionSpec& f : functions_) *request.add_reward_functions() = f;
  for (size_t i = 0; i < inputs.size(); ++i) {
    v1::RewardSample* sample = request.add_samples();
    sample->set_prompt(std::string(inputs[i].prompt));
    sample->set_completion(std::string(inputs[i].completion));
    sample->set_reference_answer(std::string(inputs[i].reference_answer));
    if (inputs[i].tests != nullptr) *sample->mutable_tests() = *inputs[i].tests;
    sample->set_sample_index(static_cast<int>(i));
  }
  const auto give_up = std::chrono::steady_clock::now() + options_.total_deadline;
  Backoff backoff(std::chrono::milliseconds(50), std::chrono::seconds(2));
  v1::ScoreResponse response;
  for (;;) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.call_deadline);
    response.Clear();
    absl::Status status =
        FromGrpcStatus(stub_->Score(&context, request, &response), "reward server Score");
    if (status.ok()) break;
    const auto wait = backoff.Next();
    if (!RetryableCode(status.code()) || std::chrono::steady_clock::now() + wait > give_up)
      return status;
    ++retries_;
    std::this_thread::sleep_for(wait);  // backoff between attempts, not synchronisation
  }
  if (response.scores_size() != static_cast<int>(inputs.size()))
    return absl::DataLossError(absl::StrCat("reward server returned ", response.scores_size(),
                                            " scores for ", inputs.size(), " samples"));
  std::vector<CompositeOutput> out(inputs.size());
  for (const v1::SampleScore& score : response.scores()) {
    const int i = score.sample_index();
    if (i < 0 || i >= static_cast<int>(out.size()) || !std::isfinite(score.total()))
      return absl::DataLossError(absl::StrCat("reward server: bad score for sample ", i));
    out[i].total = score.total();
    out[i].per_function.assign(score.per_function().begin(), score.per_function().end());
    for (const v1::StepReward& step : score.steps())
      out[i].steps.push_back(StepReward{step.reward(), step.end_offset()});
  }
  return out;
}

}  // namespace grpo
