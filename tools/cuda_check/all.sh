#!/usr/bin/env bash
# Every GPU check in one go, for a lent GPU machine's few minutes (README.md there):
#   1. run.sh            every source compiled against the CUDA LibTorch into the library
#                        archive the others link; the NCCL join;
#   2. trainer_check.sh  the trainer's checks on cuda (its step equals the CPU's, memory
#                        settings, bfloat16 mixed precision, PPO's critic), the static
#                        decode as CUDA graphs, a short GRPO loop sampling and training there;
#   3. rollout_bench.sh targets   the 0.5B shape sampled on cuda in bfloat16 at 1 and 256
#                        rows, beside the decode bound and the eager baseline;
#   4. learner_bench.sh targets   GrpoTrainer steps on cuda at the 0.5B shape beside the
#                        eager baseline, the 1.5B shape's MFU;
#   5. e2e_job.sh        one short job through the five services, the learner and a rollout
#                        worker on the GPU (grpo_launch --device cuda);
#   6. rollout_bench.sh rest, learner_bench.sh rest   the other shapes and settings
#                        (bench-26m, 1.5B and 7B sampling, memory settings off, 7B layers);
#   7. hf_bench.sh       Hugging Face checkpoint load and decode on the GPU.
# Each part prints its own lines. Objects and programs go to CUDA_CHECK_DIR (default
# /tmp/cuda_check, the parts' OUT). The OUT this was started with (the device tool's folder
# that comes back, which returns at most 8 files) gets all.txt, everything printed, and
# logs.tgz, the parts' logs, metrics and JSON, rewritten after each part.
# Carry .gpucheck.tar.xz (prepare.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${OUT:-}
export OUT=${CUDA_CHECK_DIR:-/tmp/cuda_check}
mkdir -p "$OUT"
save_logs() {
  [[ -n $RESULTS && $RESULTS != "$OUT" ]] || return 0
  (cd "$OUT" && find . -maxdepth 3 \( -name '*.log' -o -name '*.txt' -o -name '*.json*' \) \
     -size +0 -size -4M -print0 | tar czf "$RESULTS/logs.tgz" --null -T -)
}
# Everything printed, kept whole: the device tool returns only the output's tail.
[[ -n $RESULTS ]] && exec > >(tee "$RESULTS/all.txt") 2>&1
date -u
rm -f "$OUT/torch_env.cache"  # learnt afresh, once, by the first part
# A lent machine's minutes are few: the parts run in this order of importance within
# BUDGET_S seconds in all (default 480, leaving a device call's 600 room to start), each
# cut off at its own cap (seconds, after the colon) or when the budget is spent, the rest
# then skipped.
deadline=$((SECONDS + ${BUDGET_S:-480}))
# The parts' own time-outs run in the foreground (timeout --foreground) so that this one's
# reaches their programs too: a part cut off leaves nothing on the GPU for the next.
# A part is SCRIPT[.ARGUMENT]:CAP.
for part in run:240 trainer_check:90 rollout_bench.targets:100 learner_bench.targets:100 \
            e2e_job:130 rollout_bench.rest:120 learner_bench.rest:120 hf_bench:60; do
  cap=${part#*:} part=${part%%:*}
  script=${part%%.*} argument=${part#"$script"}
  left=$((deadline - SECONDS))
  if (( left < 20 )); then echo "=== $part: skipped, the budget is spent"; continue; fi
  echo "=== $part"
  start=$SECONDS
  timeout -k 10 "$(( left < cap ? left : cap ))" bash "tools/cuda_check/$script.sh" ${argument#.}
  echo "=== $part: exit $?, $((SECONDS - start)) s"
  save_logs
done
