#include "data/job_data.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "data/arithmetic_task.h"
#include "data/code_task.h"

namespace grpo {
namespace {

// Every example of `examples` carries what the spec's rewards read (the reward server's
// ListRewardFunctions says the same per function: "reference_answer", "tests").
absl::Status CheckReferences(const v1::JobSpec& spec, const std::string& source,
                             const std::vector<Example>& examples) {
  for (const v1::RewardFunctionSpec& r : spec.rewards()) {
    const bool needs_answer = r.name() == "exact_answer" || r.name() == "arithmetic_steps";
    const bool needs_tests = r.name() == "code_tests";
    for (size_t i = 0; i < examples.size(); ++i) {
      if (needs_answer && examples[i].answer.empty())
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": example ", i + 1, " has no \"answer\", which the ", r.name(),
            " reward needs"));
      if (needs_tests && !HasTests(examples[i]))
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": example ", i + 1, " has no \"tests\", which the code_tests reward needs"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<JobData> LoadData(const v1::JobSpec& spec) {
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
  if (d.kind() == "code") {
    data.train = CodeTrainSet();
    data.held_out = CodeHeldOutSet();
    data.held_out.resize(std::min<size_t>(data.held_out.size(), spec.eval().num_prompts()));
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

}  // namespace

absl::StatusOr<JobData> LoadJobData(const v1::JobSpec& spec) {
  absl::StatusOr<JobData> data = LoadData(spec);
  if (!data.ok()) return data.status();
  const v1::DatasetSpec& d = spec.dataset();
  const bool files = d.kind() == "jsonl";
  if (absl::Status s = CheckReferences(
          spec, files ? "dataset.train_path " + d.train_path() : "dataset " + d.kind(), data->train);
      !s.ok())
    return s;
  if (absl::Status s = CheckReferences(
          spec, files ? "dataset.eval_path " + d.eval_path() : "dataset " + d.kind(), data->held_out);
      !s.ok())
    return s;
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
