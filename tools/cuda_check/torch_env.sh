# Sourced by the cuda_check scripts, from the repository root: where the CUDA build of
# PyTorch keeps its LibTorch and how to compile against it. Sets DEPS (default .gpucheck),
# OUT (default /tmp/cuda_check, created), TORCH, ABI, STD (-std=c++17, or c++20 when that
# LibTorch needs it), absl_libs (link flags for DEPS/lib's Abseil libraries) and
# MODEL_SOURCES and TRAINER_SOURCES.
DEPS=${DEPS:-.gpucheck}
OUT=${OUT:-/tmp/cuda_check}
mkdir -p "$OUT"
TORCH=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ABI=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
STD=-std=c++17
echo '#include <torch/torch.h>' | g++ $STD -x c++ -fsyntax-only -isystem "$TORCH/include" \
    -isystem "$TORCH/include/torch/csrc/api/include" - 2>/dev/null || STD=-std=c++20
absl_libs=$(for f in "$DEPS"/lib/libabsl_*.so; do printf -- '-l:%s ' "$(basename "$f")"; done)
# The model libraries (model/CMakeLists.txt less weight_transfer.cc, which the model does
# not use) and the flat weights' generated header source: every script that compiles the
# model takes this list (tests/tools/cuda_check_sources_test.py checks it stays whole).
MODEL_SOURCES="model/model.cc model/model_config.cc model/runtime.cc model/decode_kernels.cc
  model/decode_attention.cc model/matmul_copies.cc model/flat_weights.cc model/sampler.cc
  model/static_decode.cc model/token_choice.cc model/packed_matmul.cc $DEPS/src/weights.pb.cc"
# The trainer and what it needs (PPO's critic and reward-model start included), for the
# scripts that link it: learner_bench.sh, trainer_check.sh.
TRAINER_SOURCES="learner/grpo_trainer.cc learner/optimizer.cc learner/batch.cc
  learner/chunked_logprobs.cc learner/learner_group.cc learner/learner_device.cc
  learner/value_model.cc rewards/reward_model.cc tools/cuda_check/reward_model_no_hf.cc
  data/step_split.cc tokenizer/tokenizer.cc $MODEL_SOURCES rl/grpo.cc rl/ppo.cc
  $DEPS/src/job.pb.cc $DEPS/src/code_tests.pb.cc"

# build_sources NAME "SOURCES": SOURCES compiled in parallel (the flags of run.sh, NCCL and
# CUDA on) and linked into $OUT/NAME; the log in $OUT/NAME_build.log.
build_sources() {
  local name=$1 objects="$OUT/${1}_obj" s
  mkdir -p "$objects"
  for s in $2; do
    g++ $STD -O2 -D_GLIBCXX_USE_CXX11_ABI=$ABI -DGRPO_WITH_NCCL -DUSE_C10D_NCCL -DUSE_C10D_GLOO \
        -DUSE_DISTRIBUTED -DGRPO_WITH_CUDA -I. -I"$DEPS/include" -isystem "$TORCH/include" \
        -isystem "$TORCH/include/torch/csrc/api/include" -idirafter "$DEPS/fallback" -w -c "$s" \
        -o "$objects/$(echo "$s" | tr / _).o" &
  done > "$OUT/${name}_build.log" 2>&1
  wait
  if ! g++ "$objects"/*.o -o "$OUT/$name" -L"$TORCH/lib" -Wl,-rpath,"$TORCH/lib" \
       -ltorch -ltorch_cpu -ltorch_cuda -lc10 -lc10_cuda -L"$DEPS/lib" \
       -Wl,-rpath,"$(pwd)/$DEPS/lib" -l:libprotobuf.so.32 $absl_libs >> "$OUT/${name}_build.log" 2>&1; then
    echo "$name: build failed"; grep -m20 -E "error|undefined" "$OUT/${name}_build.log"
    return 1
  fi
}

# build_with_trainer NAME MAIN: MAIN with TRAINER_SOURCES (build_sources).
build_with_trainer() { build_sources "$1" "$2 $TRAINER_SOURCES"; }
