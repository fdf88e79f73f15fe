// The model shapes the benches share with shared/bench/pytorch_eager_baseline.py, in the
// Hugging Face layout: bench-26m, qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b.
#ifndef GRPO_BENCH_BENCH_SHAPES_H_
#define GRPO_BENCH_BENCH_SHAPES_H_

#include <string>

#include "absl/status/statusor.h"
#include "model/model_config.h"

namespace grpo {

// INVALID_ARGUMENT names an unknown shape and the known ones.
absl::StatusOr<ModelConfig> BenchShape(const std::string& name, int max_seq_len);

}  // namespace grpo

#endif  // GRPO_BENCH_BENCH_SHAPES_H_
