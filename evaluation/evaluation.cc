#include "evaluation/evaluation.h"

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "model/sampler.h"

namespace grpo {
namespace {

// The answer's canonical text ("" when the completion has none), so votes compare values.
std::string CanonicalAnswer(const std::string& completion) {
  absl::StatusOr<std::string> answer = ExtractFinalAnswer(completion);
  if (!answer.ok()) return "";
  absl::StatusOr<std::string> normal = NormalizeNumber(*answer);
  return normal.ok() ? *normal : *answer;
}

}  // namespace

absl::StatusOr<EvalResult> Evaluate(const Transformer& policy, const TextTokenizer& tokenizer,
                                    const std::vector<Example>& examples,
                                    const EvalOptions& o) {
  if (o.k < 1) return absl::InvalidArgumentError(absl::StrCat("eval.k = ", o.k, ": must be >= 1"));
  if (o.prompts_per_batch < 1)
    return absl::InvalidArgumentError("eval prompts_per_batch must be >= 1");
  EvalResult r;
  r.k = o.k;
  r.num_prompts = static_cast<int>(examples.size());
  if (examples.empty()) return r;

  double completion_tokens = 0;
  int64_t completions = 0;
  for (size_t begin = 0; begin < examples.size(); begin += o.prompts_per_batch) {
    const size_t end = std::min(examples.size(), begin + o.prompts_per_batch);
    std::vector<std::vector<int32_t>> sampled_prompts, greedy_prompts;
    for (size_t i = begin; i < end; ++i) {
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer.EncodePrompt(examples[i].prompt);
      if (!ids.ok()) return ids.status();
      for (int j = 0; j < o.k; ++j) sampled_prompts.push_back(*ids);
      greedy_prompts.push_back(*ids);
    }
    SamplingOptions sampling;
    sampling.max_new_tokens = o.max_new_tokens;
    sampling.temperature = o.temperature;
    sampling.seed = o.seed + begin;
    sampling.stop_token = tokenizer.eos_id();
    sampling.pad_token = tokenizer.pad_id();
    if (!tokenizer.character_level()) sampling.sample_vocab = tokenizer.vocab_size();
    absl::StatusOr<SampleResult> sampled = Sample(policy, sampled_prompts, sampling);
    if (!sampled.ok()) return sampled.status();
    sampling.temperature = 0;
    absl::StatusOr<SampleResult> greedy = Sample(policy, greedy_prompts, sampling);
    if (!greedy.ok()) return greedy.status();

    for (size_t i = begin; i < end; ++i) {
      const std::string& reference = examples[i].answer;
      int correct = 0;
      std::map<std::string, int> votes;
      std::string voted;
      for (int j = 0; j < o.k; ++j) {
        std::vector<int32_t> ids = sampled->Completion((i - begin) * o.k + j);
        completion_tokens += ids.size();
        ++completions;
        std::string answer = CanonicalAnswer(tokenizer.Decode(ids));
        if (!answer.empty() && NumbersEqual(answer, reference)) ++correct;
        // Ties go to the answer that reached the count first.
        if (!answer.empty() && ++votes[answer] > (voted.empty() ? 0 : votes[voted]))
          voted = answer;
      }
      r.pass_at_1 += static_cast<double>(correct) / o.k;
      r.pass_at_k += correct > 0 ? 1 : 0;
      r.maj_at_k += !voted.empty() && NumbersEqual(voted, reference) ? 1 : 0;
      std::string greedy_answer =
          CanonicalAnswer(tokenizer.Decode(greedy->Completion(i - begin)));
      r.greedy_accuracy +=
          !greedy_answer.empty() && NumbersEqual(greedy_answer, reference) ? 1 : 0;
    }
  }
  const double n = examples.size();
  r.pass_at_1 /= n;
  r.pass_at_k /= n;
  r.maj_at_k /= n;
  r.greedy_accuracy /= n;
  r.mean_completion_tokens = completion_tokens / std::max<int64_t>(1, completions);
  return r;
}

}  // namespace grpo
