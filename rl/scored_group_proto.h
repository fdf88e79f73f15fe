// ScoredGroup <-> grpo.v1.ScoredGroupProto, the form groups take on the wire from rollout
// workers to learner rank 0 and between learner ranks. FromProto checks what a learner
// must never train on: lengths that disagree, non-finite rewards or log-probs, step
// offsets outside the completion. Errors name the prompt and the sample. Torch-free.
#ifndef GRPO_RL_SCORED_GROUP_PROTO_H_
#define GRPO_RL_SCORED_GROUP_PROTO_H_

#include <string>

#include "absl/status/statusor.h"
#include "grpo/v1/learner.pb.h"
#include "rl/scored_group.h"

namespace grpo {

v1::ScoredGroupProto ToProto(const ScoredGroup& group, const std::string& job_id);
absl::StatusOr<ScoredGroup> FromProto(const v1::ScoredGroupProto& proto);

}  // namespace grpo

#endif  // GRPO_RL_SCORED_GROUP_PROTO_H_
