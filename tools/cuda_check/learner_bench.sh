#!/usr/bin/env bash
# The GPU learner on a GPU machine, against its CUDA build of PyTorch's LibTorch: builds
# bench/learner_bench with the project's library archive (build_main, torch_env.sh; NCCL
# on) and runs GrpoTrainer steps on `cuda`: bench-26m in float32 and bfloat16 mixed
# (the trainer path the CPU tests run, now on the device), the Qwen2.5-0.5B shape with the
# memory settings off and on, the 1.5B shape with 1k-token rows (the MFU target), and the
# PyTorch eager baseline on the same shapes for the side-by-side ratio. Prints the JSON
# lines; logs in OUT. `learner_bench.sh targets` runs the issue's targets (the 0.5B step
# beside the baseline, the 1.5B MFU), `learner_bench.sh rest` the others, no argument both.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
build_main learner_bench "bench/learner_bench.cc bench/bench_shapes.cc" || exit 1
export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B="$OUT/learner_bench --device cuda"
run() { echo "+ $*" >&2; timeout --foreground -k 10 140 "$@" 2>>"$OUT/learner_bench.log"; }
source tools/cuda_check/baseline.sh
base() { baseline --shape "$1" --device cuda --dtype bfloat16 --prompts 8 --group 8 \
           --prompt-len 32 --gen 224 --skip-decode; }
PHASE=${1:-all}
if [[ $PHASE != rest ]]; then
  # The 0.5B step beside the eager baseline (>= 1.3x), the 1.5B shape's MFU with 1k-token rows.
  run $B --shape qwen2.5-0.5b --precision bf16_mixed --sequences 64 --prompt_tokens 32 --completion_tokens 224 \
      --micro_batch_tokens 16384 --logprob_chunk 1024 --repeats 2
  base qwen2.5-0.5b
  run $B --shape qwen2.5-1.5b --precision bf16_mixed --sequences 32 --prompt_tokens 128 --completion_tokens 896 \
      --micro_batch_tokens 16384 --logprob_chunk 2048 --repeats 2
fi
if [[ $PHASE != targets ]]; then
  # The memory settings off and with checkpointing, bench-26m, the 7B layers.
  run $B --shape qwen2.5-0.5b --precision bf16_mixed --sequences 64 --prompt_tokens 32 --completion_tokens 224 --repeats 2
  run $B --shape qwen2.5-0.5b --precision bf16_mixed --sequences 64 --prompt_tokens 32 --completion_tokens 224 \
      --micro_batch_tokens 16384 --logprob_chunk 1024 --activation_checkpointing --repeats 2
  run $B --shape bench-26m --precision float32 --repeats 3
  run $B --shape bench-26m --precision bf16_mixed --repeats 3
  base bench-26m
  # The 7B shape does not fit one GPU with float32 AdamW: 4 of its 28 layers, measured per
  # component and projected to the whole model, one rank and ZeRO-1 over 8 ranks.
  run $B --shape qwen2.5-7b --layers 4 --precision bf16_mixed --sequences 32 --prompt_tokens 128 \
      --completion_tokens 896 --micro_batch_tokens 16384 --logprob_chunk 2048 \
      --activation_checkpointing --repeats 1
fi
