// What a job's model.hf_dir (proto/grpo/v1/job.proto) means to the services that read it:
// the model's shape from config.json and the tokenizer from tokenizer.json, with the
// job's prompt format. Jobs without hf_dir get the built-in preset and the character
// tokenizer, so callers need no branch of their own. Torch-free; the weights are loaded
// by hf/hf_checkpoint.h.
#ifndef GRPO_HF_JOB_MODEL_H_
#define GRPO_HF_JOB_MODEL_H_

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "grpo/v1/job.pb.h"
#include "hf/hf_config.h"
#include "model/model_config.h"
#include "tokenizer/text_tokenizer.h"

namespace grpo::hf {

// The model's shape alone: config.json of spec.model().hf_dir (capped by
// model.max_seq_len), or the resolved preset. Errors name the file and the field.
absl::StatusOr<ModelConfig> JobModelConfig(const v1::JobSpec& spec);

// Everything a service needs of a job's model before its weights, from one reading of
// the directory.
struct JobModel {
  ModelConfig config;
  // The BPE tokenizer of hf_dir in the job's prompt format (model.prompt_format, else the
  // family's chat format), or the character tokenizer.
  std::unique_ptr<TextTokenizer> tokenizer;
  // config.json with the family (what a checkpoint is saved as); empty for presets.
  std::optional<HfModelConfig> hf;
};

// FAILED_PRECONDITION when the tokenizer has more tokens than the model has embedding
// rows, or the prompt format's markers are not tokens of it.
absl::StatusOr<JobModel> LoadJobModel(const v1::JobSpec& spec);

}  // namespace grpo::hf

#endif  // GRPO_HF_JOB_MODEL_H_
