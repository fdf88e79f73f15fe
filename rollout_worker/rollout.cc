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

  // Decode every completion first: RewardInput views these strings.
  for (size_t i = 0; i < examples.size(); ++i) {
    ScoredGroup group;
    group.prompt_id = prompt_ids[i];
    group.prompt = prompts[i * group_size];
    std::vector<std::string> texts;
    for (int g = 0; g < group_size; ++g) {
      const int64_t row = static_cast<int64_t>(i) * group_size + g;
      ScoredSample sample;
      sample.completion = sampled->Completion(row);
      sample.logprobs = sampled->CompletionLogprobs(row);
      sample.policy_version = policy_version;
      texts.push_back(tokenizer_->Decode(sample.completion));
      group.samples.push_back(std::move(sample));
    }
    out.groups.push_back(std::move(group));
    out.completions.push_back(std::move(texts));
  }

  start = std::chrono::steady_clock::now();
  std::vector<RewardInput> inputs;
  for (size_t i = 0; i < examples.size(); ++i)
    for (const std::string& text : out.completions[i])
      // With a character-level tokenizer the reward's character offsets index `completion`.
      inputs.push_back(RewardInput{examples[i].prompt, text, examples[i].answer});
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
      // Step ends are character offsets; only one-token-per-character maps them to tokens
      // (job validation refuses process rewards for other tokenizers).
      if (!sample.steps.empty() && !tokenizer_->character_level()) {
        return absl::FailedPreconditionError(
            "step rewards need a character-level tokenizer; this model's is not");
      }
    }
  out.score_seconds = SecondsSince(start);
  return out;
}

}  // namespace grpo
