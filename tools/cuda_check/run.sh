#!/usr/bin/env bash
# The CUDA path on a machine with a GPU and a CUDA build of PyTorch (whose LibTorch this
# uses): compiles every source of the project against that LibTorch with the NCCL and CUDA
# code enabled (FLAGS, torch_env.sh; API drift between LibTorch versions shows here; the
# objects are kept in OUT/obj for the other scripts), then builds tools/cuda_check/
# nccl_join_check with learner/learner_group.cc and runs it as one rank and as two.
#
# DEPS (default .gpucheck, made by prepare.sh) holds what such a machine lacks: headers,
# libraries and generated sources (README.md). Writes logs to OUT (default /tmp/cuda_check).
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "NCCL", torch.cuda.nccl.version(), torch.cuda.get_device_name(0))'
g++ --version | head -1
echo "flags: ${FLAGS[*]}"

# 1. Every source, compiled in parallel (the checks' and benches' mains with them), and the
# library archive the other scripts link.
library_archive > "$OUT/compile_failures.txt"
ok=0
for s in $ALL_SOURCES; do [[ -e $(object_of "$s") ]] && ok=$((ok + 1)); done
echo "compile: $ok of $(wc -w <<< "$ALL_SOURCES") sources ok"
cat "$OUT/compile_failures.txt"

# 2. The NCCL join, linked and run as one rank.
if build_main nccl_join_check tools/cuda_check/nccl_join_check.cc; then
  # RUNPATH covers direct dependencies only; Abseil libraries load one another.
  export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  WORLD_SIZE=1 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=0 NCCL_DEBUG=INFO \
    timeout --foreground -k 5 60 "$OUT/nccl_join_check" > "$OUT/nccl_join.log" 2>&1
  echo "nccl_join_check, 1 rank: exit $?"
  grep -E "^rank|NCCL version|error" "$OUT/nccl_join.log" | head -10
  # 3. Two ranks: one per GPU when there are two; on a single GPU NCCL is expected to
  # refuse them (two ranks on one device), which still shows our calls reach NCCL.
  for rank in 0 1; do
    WORLD_SIZE=2 RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 NCCL_DEBUG=WARN \
      timeout --foreground -k 5 30 "$OUT/nccl_join_check" > "$OUT/nccl_two_ranks.$rank.log" 2>&1 &
  done
  wait
  for rank in 0 1; do
    echo "--- 2 ranks, rank $rank"; grep -vE "^\s*$" "$OUT/nccl_two_ranks.$rank.log" | head -8
  done
fi
