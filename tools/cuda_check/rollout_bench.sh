#!/usr/bin/env bash
# The sampler on a GPU machine, against its CUDA build of PyTorch's LibTorch: builds
# bench/rollout_bench with the project's library archive (build_main, torch_env.sh) and
# samples GRPO leases on `cuda` in bfloat16: bench-26m 8 x 8, the Qwen2.5-0.5B shape with
# one sequence and with 32 prompts x 8 (256 rows), the 1.5B and 7B shapes with 32 x 8, each
# beside the decode bound at the GPU's HBM bandwidth (H100 3.35 TB/s, H200 4.8), then the PyTorch eager baseline on the
# same shapes. The engine decodes with the static step replayed as CUDA graphs (the
# default on a GPU); the 0.5B shape runs once more without graphs, to show what they add.
# Each line's plain_* fields are the eager op-by-op path without prefix sharing. Prints the
# JSON lines; logs in OUT. `rollout_bench.sh targets` runs the issue's two targets beside
# the baseline, `rollout_bench.sh rest` the other lines, no argument both (all.sh runs the
# targets of both benches before either's rest).
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)
echo "$gpu"
# HBM bandwidth for the decode bound: H100 SXM 3.35 TB/s, H200 4.8 TB/s.
gbps=4800
[[ $gpu == *H100* ]] && gbps=3350
build_main rollout_bench "bench/rollout_bench.cc bench/bench_shapes.cc" || exit 1
export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
R="$OUT/rollout_bench --device cuda --dtype bfloat16 --memory_gbps $gbps --repeats 2"
run() { echo "+ $*" >&2; timeout --foreground -k 10 120 "$@" 2>>"$OUT/rollout_bench.log"; }
source tools/cuda_check/baseline.sh
base() { baseline --shape qwen2.5-0.5b --device cuda --dtype bfloat16 --prompt-len 32 --gen 256 \
           --skip-train "$@"; }
PHASE=${1:-all}
if [[ $PHASE != rest ]]; then
  # The issue's two targets, each beside the eager baseline; every row decodes all 256
  # tokens (--no_stop), as the baseline's do.
  run $R --model qwen2.5-0.5b --prompts 1 --group 1 --prompt_tokens 32 --max_new_tokens 256 --no_stop
  base --prompts 1 --group 1
  run $R --model qwen2.5-0.5b --prompts 32 --group 8 --prompt_tokens 32 --max_new_tokens 256 --no_stop
  base --prompts 32 --group 8
fi
if [[ $PHASE != targets ]]; then
  run $R --model qwen2.5-0.5b --prompts 1 --group 1 --prompt_tokens 32 --max_new_tokens 256 --no_stop \
      --cuda_graphs=false
  run $R --model qwen2.5-0.5b --prompts 32 --group 8 --prompt_tokens 32 --max_new_tokens 256
  run $R --model bench-26m --prompts 8 --group 8
  run $R --model qwen2.5-0.5b --prompts 32 --group 8 --prompt_tokens 256 --max_new_tokens 256
  run $R --model qwen2.5-1.5b --prompts 32 --group 8 --prompt_tokens 256 --max_new_tokens 256
  run $R --model qwen2.5-7b --prompts 32 --group 8 --prompt_tokens 256 --max_new_tokens 128 --repeats 1
fi
