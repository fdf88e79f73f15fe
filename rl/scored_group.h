// ScoredGroup: what rollout hands the learner — one prompt, its G sampled completions, the
// sampler's log-probs and the rewards (docs/design.md §2). Torch-free: it is the in-process
// form of the wire message the gRPC services will carry.
#ifndef GRPO_RL_SCORED_GROUP_H_
#define GRPO_RL_SCORED_GROUP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "grpo/v1/weights.pb.h"
#include "rewards/rewards.h"

namespace grpo {

struct ScoredSample {
  std::vector<int32_t> completion;  // generated tokens, stop token included if emitted
  std::vector<float> logprobs;      // sampler log-prob of each completion token
  double reward = 0;                // weighted total over the reward functions
  std::vector<double> reward_per_function;
  // Process supervision: step rewards, end_offset indexing `completion` (the token that
  // holds the step's last byte: the rollout maps the reward's byte offsets, see
  // TokenCoveringByte in tokenizer/text_tokenizer.h). Two steps may share a token.
  std::vector<StepReward> steps;
  int64_t policy_version = 0;       // version of the weights that sampled it
};

struct ScoredGroup {
  std::string prompt_id;  // unique per prompt of a job; never shared by two groups
  std::vector<int32_t> prompt;
  std::vector<ScoredSample> samples;
  // What the sampler computed the log-probs in (Transformer::sampling_precision);
  // UNSPECIFIED when not reported.
  v1::ComputePrecision sampling_precision = v1::COMPUTE_PRECISION_UNSPECIFIED;
};

}  // namespace grpo

#endif  // GRPO_RL_SCORED_GROUP_H_
