#!/usr/bin/env bash
# The trainer's and the sampler's checks on the GPU (trainer_check.cc: a step on cuda
# equals the CPU's, the memory settings give the one-shot step there, bfloat16 mixed
# precision, PPO's critic on the device, the static decode replayed as CUDA graphs, a short
# sample-reward-train loop on the device), built against the machine's CUDA LibTorch with
# the project's library archive (build_main, torch_env.sh). Prints its lines; logs in OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
build_main trainer_check tools/cuda_check/trainer_check.cc || exit 1
export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
timeout --foreground -k 10 120 "$OUT/trainer_check" --device=cuda
