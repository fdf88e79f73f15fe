// A job's prompts (docs/design.md §5): the training pool and the held-out set named by a
// resolved spec's `dataset`, and the order the data cursor walks the pool in. The
// coordinator (which hands training prompts out as leases) and the learner (SFT warm-up,
// held-out evaluation) load the same data from the same spec, so both agree on what
// prompt id `train-N` means. Torch-free.
#ifndef GRPO_DATA_JOB_DATA_H_
#define GRPO_DATA_JOB_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "grpo/v1/job.pb.h"

namespace grpo {

struct JobData {
  std::vector<Example> train;
  std::vector<Example> held_out;
};

// The built-in arithmetic or code task or the spec's JSONL files; errors name the file and
// line. Every example must carry what the spec's rewards read: an answer for exact_answer
// (and the answer-based functions), tests for code_tests; else INVALID_ARGUMENT naming the
// file and the example.
absl::StatusOr<JobData> LoadJobData(const v1::JobSpec& resolved);

// The data cursor: the N-th training prompt of a job is train[order[N % size]], with
// `order` a permutation seeded by the job's seed. Its prompt id is TrainPromptId(N).
std::vector<size_t> TrainingOrder(size_t pool_size, uint64_t job_seed);
std::string TrainPromptId(uint64_t cursor);

}  // namespace grpo

#endif  // GRPO_DATA_JOB_DATA_H_
