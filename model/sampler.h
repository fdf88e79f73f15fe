// Sampler: batched autoregressive sampling from a Transformer with a preallocated KV cache
// (docs/design.md §4). All N = B x G sequences decode together, each distinct prompt
// prefilled once; a sequence that emits the stop token is masked from then on and leaves
// the batch once a quarter of it is done, and decoding ends early once every sequence
// has stopped. Reproducible: the same model, prompts and seed give the same
// tokens. The caller keeps ownership of the model; Sample does not modify it.
#ifndef GRPO_MODEL_SAMPLER_H_
#define GRPO_MODEL_SAMPLER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model.h"

namespace grpo {

struct SamplingOptions {
  // 0 = greedy (argmax). Log-probs are always those of softmax(logits / max(T, tiny)) at
  // the sampled token, before top-k/top-p filtering, as TRL and verl record them; with
  // T = 0 they are taken at temperature 1.
  float temperature = 1.0f;
  float top_p = 1.0f;  // nucleus sampling; 1 = off
  int top_k = 0;       // 0 = off
  int max_new_tokens = 64;
  // The tokenizer's end token (TextTokenizer::eos_id); emitted, kept and counted as a
  // completion token. < 0: none.
  int stop_token = 2;
  int pad_token = 0;
  // > 0: ids from here on are never sampled, like a top-k filter (log-probs stay those of
  // the whole softmax). Checkpoints whose embedding has more rows than the tokenizer has
  // tokens (Qwen: 151936 vs 151669) would otherwise sample ids that decode to nothing.
  int sample_vocab = 0;
  uint64_t seed = 0;
  // Engine behaviour, on by default; off gives the plain path the tests compare with.
  // Rows with the same prompt (a GRPO lease repeats each G times) share one prefill, its
  // cache copied to each row: the same tokens for the same seed.
  bool share_prefixes = true;
  // Rows that emitted the stop token leave the batch (once a quarter of it is done: each
  // compaction copies the KV cache), so a long tail does not decode the finished rows too.
  // The draws then come in another order than the plain path's; every token's log-prob is
  // still the model's for that sequence.
  bool compact_finished = true;
  // How the tokens after the prompt are decoded. kEager: one Forward per token, the draw
  // and bookkeeping on the host (the fused CPU kernels; what a CPU samples with).
  // kStatic (model/static_decode.h): every shape fixed, no value read back to the host
  // but every sync_every tokens, the draw an exponential race over noise drawn each step;
  // on a GPU each batch size's step is captured once as a CUDA graph (cuda_graphs) and
  // replayed. kAuto: kStatic on a GPU, kEager on a CPU. kStatic runs on a CPU too (the
  // tests of what a GPU runs); its draws differ from kEager's, its log-probs do not.
  enum class Decode { kAuto, kEager, kStatic };
  Decode decode = Decode::kAuto;
  bool cuda_graphs = true;
  int sync_every = 8;  // kStatic: tokens between looks at which rows finished
};

// The flag value of SamplingOptions::decode: "auto", "eager" or "static". INVALID_ARGUMENT
// naming a bad value.
absl::StatusOr<SamplingOptions::Decode> ParseDecode(const std::string& name);

struct SampleResult {
  // int64 [N, P + M]: left-padded prompts, then completions right-padded with pad_token.
  at::Tensor tokens;
  at::Tensor is_pad;          // bool [N, P + M]
  at::Tensor logprobs;        // float [N, M]; 0 where the mask is 0
  at::Tensor completion_mask; // float [N, M]; 1 for generated tokens up to and incl. stop
  int64_t prompt_length = 0;  // P (padded)
  int64_t generated_tokens = 0;  // Σ mask

  // The completion of row i without padding (stop token included if emitted).
  std::vector<int32_t> Completion(int64_t row) const;
  std::vector<float> CompletionLogprobs(int64_t row) const;
};

// Builds the left-padded [N, P] prompt batch; rows may differ in length (none empty).
struct PromptBatch {
  at::Tensor tokens;  // int64 [N, P]
  at::Tensor is_pad;  // bool [N, P]
};
absl::StatusOr<PromptBatch> MakePromptBatch(const std::vector<std::vector<int32_t>>& prompts,
                                            int pad_token);

// INVALID_ARGUMENT naming the option for out-of-range settings or prompts that do not
// fit max_seq_len with max_new_tokens.
absl::StatusOr<SampleResult> Sample(const Transformer& model,
                                    const std::vector<std::vector<int32_t>>& prompts,
                                    const SamplingOptions& options);

}  // namespace grpo

#endif  // GRPO_MODEL_SAMPLER_H_
