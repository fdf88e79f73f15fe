#!/usr/bin/env bash
# bench/hf_bench on a GPU machine, against its CUDA build of PyTorch's LibTorch: builds the
# bench from the model, sampler and hf/ sources (build_sources, torch_env.sh) and runs it on
# the GPU in bfloat16, float16 and float32. DEPS as in run.sh, plus src/weights.pb.cc (the
# flat weights' header, which model.cc uses) and lib/libprotobuf.so.32 (hf/ parses JSON
# with protobuf). Prints the bench's own lines; logs in OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
sources="bench/hf_bench.cc base/durable_file.cc $MODEL_SOURCES hf/hf_checkpoint.cc hf/safetensors.cc
         hf/hf_config.cc"
build_sources hf_bench "$sources" || exit 1
export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for dtype in bfloat16 float16 float32; do
  "$OUT/hf_bench" --device cuda --dtype "$dtype" --batches 1,8,64 --dir /tmp/hf-bench 2>&1 | tee "$OUT/hf_bench_$dtype.log"
done
