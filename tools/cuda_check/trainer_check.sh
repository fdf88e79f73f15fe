#!/usr/bin/env bash
# The trainer's checks on the GPU (trainer_check.cc: a step on cuda equals the CPU's, the
# memory settings give the one-shot step there, bfloat16 mixed precision, PPO's critic on
# the device), built against the machine's CUDA LibTorch from the trainer's sources, as
# learner_bench.sh builds the bench. Prints its lines; logs in OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
mkdir -p "$OUT/trainer_obj"
sources="tools/cuda_check/trainer_check.cc $TRAINER_SOURCES"
for s in $sources; do
  g++ $STD -O2 -D_GLIBCXX_USE_CXX11_ABI=$ABI -DGRPO_WITH_NCCL -DUSE_C10D_NCCL -DUSE_C10D_GLOO \
      -DUSE_DISTRIBUTED -DGRPO_WITH_CUDA -I. -I"$DEPS/include" -isystem "$TORCH/include" \
      -isystem "$TORCH/include/torch/csrc/api/include" -idirafter "$DEPS/fallback" -w -c "$s" \
      -o "$OUT/trainer_obj/$(echo "$s" | tr / _).o" &
done > "$OUT/trainer_check_build.log" 2>&1
wait
if ! g++ "$OUT"/trainer_obj/*.o -o "$OUT/trainer_check" -L"$TORCH/lib" -Wl,-rpath,"$TORCH/lib" \
     -ltorch -ltorch_cpu -ltorch_cuda -lc10 -lc10_cuda -L"$DEPS/lib" \
     -Wl,-rpath,"$(pwd)/$DEPS/lib" -l:libprotobuf.so.32 $absl_libs >> "$OUT/trainer_check_build.log" 2>&1; then
  echo "trainer_check: build failed"; grep -m20 -E "error|undefined" "$OUT/trainer_check_build.log"; exit 1
fi
export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
timeout 120 "$OUT/trainer_check" --device=cuda
