#include "data/job_data.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "data/arithmetic_task.h"

namespace grpo {

absl::StatusOr<JobData> LoadJobData(const v1::JobSpec& spec) {
  JobData data;
  const v1::DatasetSpec& d = spec.dataset();
  if (d.kind() == "arithmetic") {
    ArithmeticOptions opts;
    opts.min_ops = d.arithmetic().min_ops();
    opts.max_ops = d.arithmetic().max_ops();
    opts.max_operand = d.arithmetic().max_operand();
    absl::StatusOr<ArithmeticTask> task = ArithmeticTask::Create(opts, d.arithmetic().split_seed());
    if (!task.ok()) return task.status();
    // A pool large enough that GRPO rarely sees a prompt twice; SFT draws from it too.
    data.train = ToExamples(task->TrainSet(20000, spec.seed()));
    data.held_out = ToExamples(task->HeldOutSet(spec.eval().num_prompts()));
    return data;
  }
  absl::StatusOr<std::vector<Example>> train = LoadJsonl(d.train_path());
  if (!train.ok()) return train.status();
  if (train->empty())
    return absl::InvalidArgumentError(absl::StrCat("dataset.train_path ", d.train_path(), ": no examples"));
  data.train = std::move(*train);
  if (!d.eval_path().empty()) {
    absl::StatusOr<std::vector<Example>> held_out = LoadJsonl(d.eval_path());
    if (!held_out.ok()) return held_out.status();
    held_out->resize(std::min<size_t>(held_out->size(), spec.eval().num_prompts()));
    data.held_out = std::move(*held_out);
  }
  return data;
}

std::vector<size_t> TrainingOrder(size_t pool_size, uint64_t job_seed) {
  std::vector<size_t> order(pool_size);
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 rng(job_seed + 2);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

std::string TrainPromptId(uint64_t cursor) { return absl::StrCat("train-", cursor); }

}  // namespace grpo
