#include "learner/sft.h"

#include <torch/torch.h>

#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "learner/batch.h"
#include "model/torch_status.h"

namespace grpo {

absl::StatusOr<double> RunSft(Transformer* policy, const TextTokenizer& tokenizer,
                              const std::vector<Example>& examples, const SftOptions& o,
                              const std::function<void(const SftProgress&)>& on_step) {
  if (o.batch_size < 1)
    return absl::InvalidArgumentError(absl::StrCat("sft.batch_size = ", o.batch_size));
  std::vector<std::vector<int32_t>> prompts, targets;
  for (const Example& e : examples) {
    if (e.solution.empty()) continue;
    absl::StatusOr<std::vector<int32_t>> prompt = tokenizer.EncodePrompt(e.prompt);
    absl::StatusOr<std::vector<int32_t>> target = tokenizer.EncodeText(e.solution);
    if (!prompt.ok()) return prompt.status();
    if (!target.ok()) return target.status();
    target->push_back(tokenizer.eos_id());
    prompts.push_back(std::move(*prompt));
    targets.push_back(std::move(*target));
  }
  if (prompts.empty())
    return absl::InvalidArgumentError("SFT: no example has a reference solution");

  Optimizer optimizer(policy->parameters(), o.optimizer);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<size_t> pick(0, prompts.size() - 1);
  double tail_loss = 0;
  int tail_steps = 0;
  for (int step = 1; step <= o.steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::vector<int32_t>> batch_prompts, batch_targets;
    for (int i = 0; i < o.batch_size; ++i) {
      const size_t j = pick(rng);
      batch_prompts.push_back(prompts[j]);
      batch_targets.push_back(targets[j]);
    }
    absl::StatusOr<TokenBatch> batch = PackBatch(batch_prompts, batch_targets, tokenizer.pad_id(),
                                                 policy->config().vocab_size);
    if (!batch.ok()) return batch.status();
    SftProgress progress;
    progress.step = step;
    absl::Status status = CatchTorch("SFT step", [&] {
      at::Tensor lp = CompletionLogprobs(*policy, *batch, /*temperature=*/1.0);
      at::Tensor tokens = batch->mask.sum();
      at::Tensor loss = -(lp * batch->mask).sum() / tokens;
      optimizer.ZeroGrad();
      loss.backward();
      progress.loss = loss.item<double>();
      progress.tokens = static_cast<int64_t>(tokens.item<double>());
    });
    if (!status.ok()) return status;
    absl::StatusOr<double> norm = optimizer.Step();
    if (!norm.ok()) return norm.status();
    progress.grad_norm = *norm;
    progress.seconds =
        SecondsSince(start);
    if (step > o.steps - std::max(1, o.steps / 10)) {
      tail_loss += progress.loss;
      ++tail_steps;
    }
    if (on_step) on_step(progress);
  }
  // The gradients go with the optimizer: a model's worth of memory the RL phase (which
  // may first move the policy to a GPU, gradients and all) has no use for.
  for (at::Tensor& p : policy->parameters()) p.mutable_grad().reset();
  return tail_steps > 0 ? tail_loss / tail_steps : 0.0;
}

}  // namespace grpo
