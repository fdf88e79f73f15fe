// Job specs (docs/design.md §5): parsing (JSON or text proto, by protobuf itself), the built-in
// defaults, and validation. A user's spec is merged over DefaultJobSpec(); every field out
// of range is rejected with INVALID_ARGUMENT naming it, and unknown fields are rejected by
// the parser. Torch-free: the coordinator validates specs without LibTorch.
#ifndef GRPO_JOBSPEC_JOB_SPEC_H_
#define GRPO_JOBSPEC_JOB_SPEC_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpo/v1/job.pb.h"
#include "model/model_config.h"

namespace grpo {

// JSON when the text starts with '{' (after whitespace), text proto otherwise.
absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text);
absl::StatusOr<v1::JobSpec> LoadJobSpecFile(const std::string& path);

// The built-in job: the tiny policy on synthetic arithmetic, SFT warm-up then GRPO.
v1::JobSpec DefaultJobSpec();

// Defaults, then the model preset, then the user's explicit fields; validated.
absl::StatusOr<v1::JobSpec> ResolveJobSpec(const v1::JobSpec& user);
absl::Status ValidateJobSpec(const v1::JobSpec& resolved);

// The model shape of a resolved spec.
ModelConfig ModelConfigFromSpec(const v1::ModelSpec& resolved);

// The context of a model.hf_dir job when model.max_seq_len is unset: real checkpoints
// declare 32k-128k positions, far more than GRPO completions need, and the rotary tables
// and KV caches are sized by it.
inline constexpr int kDefaultHfMaxSeqLen = 4096;

std::string JobSpecToJson(const v1::JobSpec& spec);

}  // namespace grpo

#endif  // GRPO_JOBSPEC_JOB_SPEC_H_
