#!/usr/bin/env bash
# One short job through the services on a GPU machine: builds grpo_coordinator,
# grpo_reward_server, grpo_learner, grpo_rollout_worker and grpo_launch against that
# machine's CUDA LibTorch (build_main: the library archive run.sh compiled), then
# `grpo_launch --device cuda` runs e2e_job.textproto with the learner and a rollout worker
# on the GPU (the worker samples in bfloat16, the learner trains in bfloat16 mixed
# precision), over gRPC on loopback as on a cluster. Prints how the job ended, where each
# service ran and the last step's metrics; logs in OUT/e2e_run/logs.
# E2E_DEVICE=cpu (with TORCH_INCLUDE/TORCH_LIB/ABI, torch_env.sh) tries the script here.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_check/torch_env.sh
DEVICE=${E2E_DEVICE:-cuda}
mkdir -p "$OUT/e2e"
# The services run in process groups of their own: none may hold the GPU for what follows,
# also when all.sh's cap stops this script first.
trap 'pkill -KILL -f "$OUT/e2e/grpo_" 2>/dev/null' EXIT
trap 'exit 143' TERM
library_archive
# The five links at once (their objects are run.sh's).
pids=()
for main in coordinator/main.cc:grpo_coordinator reward_server/main.cc:grpo_reward_server \
            learner/main.cc:grpo_learner rollout_worker/main.cc:grpo_rollout_worker \
            local/launch_main.cc:grpo_launch; do
  build_main "e2e/${main#*:}" "${main%%:*}" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
echo "e2e: built the five services in $OUT/e2e"
export LD_LIBRARY_PATH="$(pwd)/$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
run_dir="$OUT/e2e_run"
rm -rf "$run_dir"
start=$SECONDS
timeout --foreground -k 10 110 "$OUT/e2e/grpo_launch" --spec tools/cuda_check/e2e_job.textproto \
    --run_dir "$run_dir" --workers 1 --device "$DEVICE" > "$OUT/e2e_launch.log" 2>&1
status=$?
pkill -KILL -f "$OUT/e2e/grpo_" 2>/dev/null
echo "e2e: grpo_launch --device $DEVICE exited $status after $((SECONDS - start)) s"
grep -E "JOB_STATE|pass@1|SFT \(before\)|GRPO \(after\)|error" "$OUT/e2e_launch.log" | tail -6
grep -h -E "trains on|sampling on" "$run_dir"/logs/learner-0.log \
    "$run_dir"/logs/rollout_worker-0.log 2>/dev/null | cut -c26-
metrics=$(ls "$run_dir"/job-*/metrics.jsonl 2>/dev/null | head -1)
if [[ -n $metrics ]]; then
  echo "e2e: $(wc -l < "$metrics") steps in $metrics; the last:"
  tail -1 "$metrics" | python3 -c 'import json, sys; m = json.load(sys.stdin)
print(" ".join(f"{k}={m[k]}" for k in ("step", "reward_mean", "loss", "logprob_mismatch",
      "sampler_kl", "recomputed_old_fraction", "train_seconds", "tokens_per_second") if k in m))'
fi
exit $status
