#!/usr/bin/env bash
# bench/hf_bench on a GPU machine, against its CUDA build of PyTorch's LibTorch: builds the
# bench with the project's library archive (build_main, torch_env.sh) and runs it on the
# GPU in bfloat16, float16 and float32. Prints the bench's own lines; logs in OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
build_main hf_bench bench/hf_bench.cc || exit 1
export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for dtype in bfloat16 float16 float32; do
  "$OUT/hf_bench" --device cuda --dtype "$dtype" --batches 1,8,64 --dir /tmp/hf-bench 2>&1 | tee "$OUT/hf_bench_$dtype.log"
done
