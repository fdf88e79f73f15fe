# Sourced by the cuda_check scripts, from the repository root: where the CUDA build of
# PyTorch keeps its LibTorch and how to compile against it. Sets DEPS (default .gpucheck),
# OUT (default /tmp/cuda_check, created), TORCH, ABI, STD (-std=c++17, or c++20 when that
# LibTorch needs it), absl_libs (link flags for DEPS/lib's Abseil libraries) and
# TRAINER_SOURCES.
DEPS=${DEPS:-.gpucheck}
OUT=${OUT:-/tmp/cuda_check}
mkdir -p "$OUT"
TORCH=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ABI=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
STD=-std=c++17
echo '#include <torch/torch.h>' | g++ $STD -x c++ -fsyntax-only -isystem "$TORCH/include" \
    -isystem "$TORCH/include/torch/csrc/api/include" - 2>/dev/null || STD=-std=c++20
absl_libs=$(for f in "$DEPS"/lib/libabsl_*.so; do printf -- '-l:%s ' "$(basename "$f")"; done)
# The trainer and what it needs (PPO's critic and reward-model start included), for the
# scripts that link it: learner_bench.sh, trainer_check.sh.
TRAINER_SOURCES="learner/grpo_trainer.cc learner/optimizer.cc learner/batch.cc
  learner/chunked_logprobs.cc learner/learner_group.cc learner/learner_device.cc
  learner/value_model.cc rewards/reward_model.cc model/model.cc model/model_config.cc
  model/runtime.cc model/decode_kernels.cc model/decode_attention.cc model/sampler.cc
  rl/grpo.cc rl/ppo.cc $DEPS/src/job.pb.cc"
