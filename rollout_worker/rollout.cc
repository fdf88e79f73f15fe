#include "rollout_worker/rollout.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/clock.h"

namespace grpo {

SamplingOptions SamplingOptionsFromSpec(const v1::JobSpec& spec, const TextTokenizer& tokenizer) {
  SamplingOptions sampling;
  sampling.temperature = spec.sampling().temperature();
  sampling.top_p = spec.sampling().top_p();
  sampling.top_k = spec.sampling().top_k();
  sampling.max_new_tokens = spec.sampling().max_new_tokens();
  sampling.stop_token = tokenizer.eos_id();
  sampling.pad_token = tokenizer.pad_id();
  // The character models keep sampling their whole (unused-id) vocabulary, as before.
  if (!tokenizer.character_level()) sampling.sample_vocab = tokenizer.vocab_size();
  return sampling;
}

absl::StatusOr<RolloutBatch> Rollout::Generate(const Transformer& policy,
                                               int64_t policy_version,
                                               const std::vector<Example>& examples,
                                               const std::vector<std::string>& prompt_ids,
                                               int group_size,
                                               const SamplingOptions& sampling) const {
  if (examples.size() != prompt_ids.size())
    return absl::InvalidArgumentError("prompt_ids: one id per example required");
  if (group_size < 1)
    return absl::InvalidArgumentError(absl::StrCat("group_size = ", group_size, ": must be >= 1"));

  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < examples.size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->EncodePrompt(examples[i].prompt);
    if (!ids.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("prompt ", prompt_ids[i], ": ", ids.status().message()));
    for (int g = 0; g < group_size; ++g) prompts.push_back(*ids);
  }

  RolloutBatch out;
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<SampleResult> sampled = Sample(policy, prompts, sampling);
  if (!sampled.ok()) return sampled.status();
  out.sample_seconds = SecondsSince(start);
  out.generated_tokens = sampled->generated_tokens;

  // Decode every completion first: RewardInput views these strings. token_ends[row]: where
  // each of the row's tokens ends in its text (step ends are found by them).
  std::vector<std::vector<int32_t>> token_ends;
  for (size_t i = 0; i < examples.size(); ++i) {
    ScoredGroup group;
    group.prompt_id = prompt_ids[i];
    group.prompt = prompts[i * group_size];
    group.sampling_precision = policy.sampling_precision();
    std::vector<std::string> texts;
    for (int g = 0; g < group_size; ++g) {
      const int64_t row = static_cast<int64_t>(i) * group_size + g;
      ScoredSample sample;
      sample.completion = sampled->Completion(row);
      sample.logprobs = sampled->CompletionLogprobs(row);
      sample.policy_version = policy_version;
      DecodedCompletion decoded = tokenizer_->DecodeWithEnds(sample.completion);
      texts.push_back(std::move(decoded.text));
      token_ends.push_back(std::move(decoded.token_ends));
      group.samples.push_back(std::move(sample));
    }
    out.groups.push_back(std::move(group));
    out.completions.push_back(std::move(texts));
  }

  start = std::chrono::steady_clock::now();
  std::vector<RewardInput> inputs;
  for (size_t i = 0; i < examples.size(); ++i)
    for (const std::string& text : out.completions[i])
      inputs.push_back(RewardInput{examples[i].prompt, text, examples[i].answer,
                                   HasTests(examples[i]) ? &examples[i].tests : nullptr});
  absl::StatusOr<std::vector<CompositeOutput>> scored = scorer_->ScoreBatch(inputs);
  if (!scored.ok())
    return absl::Status(scored.status().code(),
                        absl::StrCat("scoring: ", scored.status().message()));
  if (scored->size() != inputs.size())
    return absl::InternalError(absl::StrCat("scoring: ", scored->size(), " scores for ",
                                            inputs.size(), " completions"));
  for (size_t i = 0, row = 0; i < out.groups.size(); ++i)
    for (ScoredSample& sample : out.groups[i].samples) {
      CompositeOutput& score = (*scored)[row++];
      sample.reward = score.total;
      sample.reward_per_function = std::move(score.per_function);
      sample.steps = std::move(score.steps);
      // A step ends at a byte of the text; the learner's process advantages need the token
      // that holds it.
      const std::vector<int32_t>& ends = token_ends[row - 1];
      for (StepReward& step : sample.steps) {
        const int token = TokenCoveringByte(ends, step.end_offset);
        if (token < 0)
          return absl::InternalError(
              absl::StrCat("scoring: a step ends at byte ", step.end_offset, " of a ",
                           ends.empty() ? 0 : ends.back(), "-byte completion"));
        step.end_offset = token;
      }
    }
  out.score_seconds = SecondsSince(start);
  return out;
}

}  // namespace grpo
