#!/usr/bin/env bash
# The CUDA path on a machine with a GPU and a CUDA build of PyTorch (whose LibTorch this
# uses): compiles every source of the project against that LibTorch with the NCCL code
# enabled (compile only: API drift shows here), then builds tools/cuda_check/
# nccl_join_check with learner/learner_group.cc and runs it as one rank.
#
# DEPS (default .gpucheck) holds what such a machine lacks: include/ with the Abseil,
# Protobuf and gRPC headers and build/proto's generated grpo/v1 headers, lib/ with the
# Abseil shared libraries, fallback/ with Gloo's headers if LibTorch ships none.
# Writes logs to OUT (default /tmp/cuda_check). The -D flags are those the Torch CMake
# package gives its consumers (USE_C10D_GLOO guards ProcessGroupGloo.hpp).
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "NCCL", torch.cuda.nccl.version(), torch.cuda.get_device_name(0))'
g++ --version | head -1
# CUDA's runtime headers: the toolkit's, or the ones pip's nvidia packages bring.
NVCC=$(command -v nvcc || true)
CUDA_RUNTIME_H=$(find ${NVCC:+"$(dirname "$(dirname "$NVCC")")/include"} /usr/local/cuda/include \
                   "$TORCH/../nvidia" -name cuda_runtime.h 2>/dev/null | head -1)
FLAGS=($STD -D_GLIBCXX_USE_CXX11_ABI=$ABI -DGRPO_WITH_NCCL -DUSE_C10D_NCCL -DUSE_C10D_GLOO -DUSE_DISTRIBUTED -I. -I"$DEPS/include"
       -isystem "$TORCH/include" -isystem "$TORCH/include/torch/csrc/api/include"
       -idirafter "$DEPS/fallback" -w
       -DGRPO_COORDINATOR_BINARY=nullptr -DGRPO_REWARD_SERVER_BINARY=nullptr
       -DGRPO_LEARNER_BINARY=nullptr -DGRPO_ROLLOUT_WORKER_BINARY=nullptr)  # launcher.cc's
[[ -n $CUDA_RUNTIME_H ]] && FLAGS+=(-isystem "$(dirname "$CUDA_RUNTIME_H")")
# cuda_runtime.h includes crt/host_config.h, which pip's runtime package may not ship.
if [[ -n $CUDA_RUNTIME_H && ! -e $(dirname "$CUDA_RUNTIME_H")/crt/host_config.h ]]; then
  HOST_CONFIG=$(find / -path /proc -prune -o -path '*/crt/host_config.h' -print 2>/dev/null | head -1)
  [[ -n $HOST_CONFIG ]] && FLAGS+=(-idirafter "$(dirname "$(dirname "$HOST_CONFIG")")")
fi
echo "flags: ${FLAGS[*]}"

# 1. Every source, compile only, in parallel.
sources=${SOURCES:-$(ls base/*.cc tokenizer/*.cc data/*.cc model/*.cc rewards/*.cc rl/*.cc \
             jobspec/*.cc evaluation/*.cc learner/*.cc rollout_worker/*.cc reward_server/*.cc \
             local/*.cc coordinator/*.cc rpc/*.cc)}
export TORCH
printf '%s\n' $sources | xargs -P "$(nproc)" -I{} sh -c \
  'g++ '"${FLAGS[*]}"' -fsyntax-only {} > "'"$OUT"'/$(echo {} | tr / _).log" 2>&1 \
     && echo "ok   {}" || echo "FAIL {}"' | sort | tee "$OUT/compile.txt"
failed=$(grep -c '^FAIL' "$OUT/compile.txt")
echo "compile: $(grep -c '^ok' "$OUT/compile.txt") ok, $failed failed"
for f in $(grep '^FAIL' "$OUT/compile.txt" | cut -c6-); do
  echo "--- $f"; grep -m5 -E "error" "$OUT/$(echo "$f" | tr / _).log"
done

# 2. The NCCL join, linked and run as one rank.
if g++ "${FLAGS[@]}" -O1 tools/cuda_check/nccl_join_check.cc learner/learner_group.cc \
     -o "$OUT/nccl_join_check" -L"$TORCH/lib" -Wl,-rpath,"$TORCH/lib" \
     -ltorch -ltorch_cpu -ltorch_cuda -lc10 -lc10_cuda \
     -L"$DEPS/lib" -Wl,-rpath,"$(pwd)/$DEPS/lib" $absl_libs > "$OUT/link.log" 2>&1; then
  # RUNPATH covers direct dependencies only; Abseil libraries load one another.
  LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  WORLD_SIZE=1 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=0 NCCL_DEBUG=INFO \
    "$OUT/nccl_join_check" > "$OUT/nccl_join.log" 2>&1
  echo "nccl_join_check, 1 rank: exit $?"
  grep -E "^rank|NCCL version|error" "$OUT/nccl_join.log" | head -10
  # 3. Two ranks: one per GPU when there are two; on a single GPU NCCL is expected to
  # refuse them (two ranks on one device), which still shows our calls reach NCCL.
  for rank in 0 1; do
    LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    WORLD_SIZE=2 RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 NCCL_DEBUG=WARN \
      timeout 120 "$OUT/nccl_join_check" > "$OUT/nccl_two_ranks.$rank.log" 2>&1 &
  done
  wait
  for rank in 0 1; do
    echo "--- 2 ranks, rank $rank"; grep -vE "^\s*$" "$OUT/nccl_two_ranks.$rank.log" | head -8
  done
else
  echo "link failed"; head -40 "$OUT/link.log"
fi
