#include "evaluation/evaluation.h"

#include <map>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "model/sampler.h"
#include "rewards/code_tests.h"

namespace grpo {
namespace {

// The answer's canonical text ("" when the completion has none), so votes compare values.
std::string CanonicalAnswer(const std::string& completion) {
  absl::StatusOr<std::string> answer = ExtractFinalAnswer(completion);
  if (!answer.ok()) return "";
  absl::StatusOr<std::string> normal = NormalizeNumber(*answer);
  return normal.ok() ? *normal : *answer;
}

// One completion judged: what majority voting compares ("" casts no vote) and whether it
// is correct.
struct Verdict {
  std::string key;
  bool correct = false;
};

// Every completion of `texts` (of `example`), judged by answer or by tests.
absl::StatusOr<std::vector<Verdict>> Judge(const Example& example,
                                           const std::vector<std::string>& texts,
                                           const RewardFunction* tests_judge) {
  std::vector<Verdict> verdicts(texts.size());
  if (!HasTests(example)) {
    for (size_t i = 0; i < texts.size(); ++i) {
      verdicts[i].key = CanonicalAnswer(texts[i]);
      verdicts[i].correct =
          !verdicts[i].key.empty() && NumbersEqual(verdicts[i].key, example.answer);
    }
    return verdicts;
  }
  if (tests_judge == nullptr)
    return absl::InvalidArgumentError(
        "evaluation: an example has tests but no judge runs them (add a code_tests reward)");
  std::vector<RewardInput> inputs;
  for (const std::string& text : texts)
    inputs.push_back(RewardInput{example.prompt, text, example.answer, &example.tests});
  absl::StatusOr<std::vector<RewardOutput>> scored = tests_judge->ScoreBatch(inputs);
  if (!scored.ok()) return scored.status();
  for (size_t i = 0; i < texts.size(); ++i) {
    verdicts[i].key = std::string(absl::StripAsciiWhitespace(ExtractCode(texts[i])));
    verdicts[i].correct = (*scored)[i].reward >= 1.0;
  }
  return verdicts;
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
      std::vector<std::string> texts;
      for (int j = 0; j < o.k; ++j) {
        std::vector<int32_t> ids = sampled->Completion((i - begin) * o.k + j);
        completion_tokens += ids.size();
        ++completions;
        texts.push_back(tokenizer.Decode(ids));
      }
      texts.push_back(tokenizer.Decode(greedy->Completion(i - begin)));
      absl::StatusOr<std::vector<Verdict>> verdicts = Judge(examples[i], texts, o.tests_judge);
      if (!verdicts.ok()) return verdicts.status();
      int correct = 0;
      std::map<std::string, int> votes;
      const Verdict* voted = nullptr;
      for (int j = 0; j < o.k; ++j) {
        const Verdict& v = (*verdicts)[j];
        correct += v.correct;
        // Ties go to the answer that reached the count first.
        if (!v.key.empty() && ++votes[v.key] > (voted ? votes[voted->key] : 0)) voted = &v;
      }
      r.pass_at_1 += static_cast<double>(correct) / o.k;
      r.pass_at_k += correct > 0 ? 1 : 0;
      r.maj_at_k += voted != nullptr && voted->correct ? 1 : 0;
      r.greedy_accuracy += verdicts->back().correct ? 1 : 0;
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
