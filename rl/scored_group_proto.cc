#include "rl/scored_group_proto.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace grpo {

v1::ScoredGroupProto ToProto(const ScoredGroup& group, const std::string& job_id) {
  v1::ScoredGroupProto out;
  out.set_job_id(job_id);
  out.set_prompt_id(group.prompt_id);
  out.mutable_prompt()->Add(group.prompt.begin(), group.prompt.end());
  out.set_sampling_precision(group.sampling_precision);
  for (const ScoredSample& s : group.samples) {
    v1::ScoredSampleProto* p = out.add_samples();
    p->mutable_completion()->Add(s.completion.begin(), s.completion.end());
    p->mutable_logprobs()->Add(s.logprobs.begin(), s.logprobs.end());
    p->set_reward(s.reward);
    p->mutable_reward_per_function()->Add(s.reward_per_function.begin(),
                                          s.reward_per_function.end());
    for (const StepReward& step : s.steps) {
      v1::StepReward* q = p->add_steps();
      q->set_reward(step.reward);
      q->set_end_offset(step.end_offset);
    }
    p->set_policy_version(s.policy_version);
  }
  return out;
}

absl::StatusOr<ScoredGroup> FromProto(const v1::ScoredGroupProto& proto) {
  if (proto.prompt_id().empty()) return absl::InvalidArgumentError("prompt_id: empty");
  const std::string where = absl::StrCat("prompt ", proto.prompt_id());
  if (proto.prompt().empty())
    return absl::InvalidArgumentError(absl::StrCat(where, ": prompt has no tokens"));
  if (proto.samples().empty())
    return absl::InvalidArgumentError(absl::StrCat(where, ": no samples"));
  if (!v1::ComputePrecision_IsValid(proto.sampling_precision()))
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": sampling_precision ", proto.sampling_precision(), " is not a known precision"));
  ScoredGroup group;
  group.prompt_id = proto.prompt_id();
  group.sampling_precision = proto.sampling_precision();
  group.prompt.assign(proto.prompt().begin(), proto.prompt().end());
  for (int i = 0; i < proto.samples_size(); ++i) {
    const v1::ScoredSampleProto& p = proto.samples(i);
    const std::string sample = absl::StrCat(where, " sample ", i);
    if (p.logprobs_size() != p.completion_size())
      return absl::InvalidArgumentError(
          absl::StrCat(sample, ": ", p.logprobs_size(), " logprobs for ", p.completion_size(),
                       " completion tokens"));
    if (!std::isfinite(p.reward()))
      return absl::InvalidArgumentError(absl::StrCat(sample, ": reward is not finite"));
    for (double r : p.reward_per_function())
      if (!std::isfinite(r))
        return absl::InvalidArgumentError(absl::StrCat(sample, ": reward_per_function not finite"));
    for (float l : p.logprobs())
      if (!std::isfinite(l) || l > 1e-3f)
        return absl::InvalidArgumentError(absl::StrCat(sample, ": logprob ", l, " out of range"));
    if (p.policy_version() < 0)
      return absl::InvalidArgumentError(absl::StrCat(sample, ": negative policy_version"));
    ScoredSample s;
    s.completion.assign(p.completion().begin(), p.completion().end());
    s.logprobs.assign(p.logprobs().begin(), p.logprobs().end());
    s.reward = p.reward();
    s.reward_per_function.assign(p.reward_per_function().begin(), p.reward_per_function().end());
    for (const v1::StepReward& q : p.steps()) {
      if (!std::isfinite(q.reward()))
        return absl::InvalidArgumentError(absl::StrCat(sample, ": step reward not finite"));
      if (q.end_offset() < 0 || q.end_offset() >= p.completion_size())
        return absl::InvalidArgumentError(
            absl::StrCat(sample, ": step end_offset ", q.end_offset(), " outside the completion"));
      s.steps.push_back(StepReward{q.reward(), q.end_offset()});
    }
    s.policy_version = p.policy_version();
    group.samples.push_back(std::move(s));
  }
  return group;
}

}  // namespace grpo
