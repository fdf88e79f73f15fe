#!/usr/bin/env bash
# The method's memory claim, measured: one learner step of GRPO and of PPO (a critic of
# the policy's shape) on the same policy and batch, with the memory settings off (one
# shot) and on (micro-batches, chunked LM head, activation checkpointing), each in its own
# process so that its peak is its own. Prints learner_bench's JSON lines, then a markdown
# table of the peak and its split, and GRPO's peak over PPO's per setting.
#
#   bash bench/grpo_vs_ppo_memory.sh [--shape bench-26m] [--sequences 64] [--limit_gb 22]
#
# --limit_gb caps each run's address space (ulimit -v) so a configuration that cannot fit
# fails with an allocation error, reported as such, instead of meeting the OOM killer.
set -uo pipefail
cd "$(dirname "$0")/.."
shape=bench-26m sequences=64 limit_gb=22 prompt=32 completion=224 extra=()
while (($#)); do
  case "$1" in
    --shape) shape=$2; shift 2 ;;
    --sequences) sequences=$2; shift 2 ;;
    --limit_gb) limit_gb=$2; shift 2 ;;
    --prompt_tokens) prompt=$2; shift 2 ;;
    --completion_tokens) completion=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
bench=build/bench/learner_bench
[[ -x $bench ]] || { echo "grpo_vs_ppo_memory: build $bench first (cmake --build build)" >&2; exit 1; }
export OMP_WAIT_POLICY=PASSIVE
# Tensors of 1 MiB and more are mmapped and unmapped on free: glibc's dynamic threshold
# would otherwise keep freed activations in its heap, so the peak resident set would count
# memory no tensor holds any more (PPO's critic pass runs after the policy's is freed).
export MALLOC_MMAP_THRESHOLD_=1048576
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for setting in off on; do
  flags=(--micro_batch_tokens 0 --logprob_chunk 0)
  [[ $setting == on ]] && flags=(--micro_batch_tokens 4096 --logprob_chunk 1024 --activation_checkpointing)
  for algorithm in grpo ppo; do
    echo "grpo_vs_ppo_memory: $shape $algorithm, memory settings $setting" >&2
    out=$( (ulimit -v $((limit_gb * 1048576)); "$bench" --shape "$shape" --algorithm "$algorithm" \
            --sequences "$sequences" --prompt_tokens "$prompt" --completion_tokens "$completion" \
            --warmup 0 --repeats 1 "${flags[@]}" "${extra[@]}") )
    status=$?
    if ((status == 0)) && [[ -n $out ]]; then
      echo "$out" | sed "s/}\$/,\"memory_settings\":\"$setting\"}/" | tee -a "$lines"
    else
      echo "{\"bench\":\"learner\",\"shape\":\"$shape\",\"algorithm\":\"$algorithm\",\"memory_settings\":\"$setting\",\"failed\":true,\"exit\":$status}" | tee -a "$lines"
    fi
  done
done
/usr/bin/python3 - "$lines" "$limit_gb" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"\n| algorithm | memory settings | peak (MB) | parameters | critic | reference | gradients | AdamW | process base | activations and rest | step (s) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("failed"):
        print(f"| {r['algorithm']} | {r['memory_settings']} | does not fit in {sys.argv[2]} GB (exit {r['exit']}) | | | | | | | | |")
        continue
    print(f"| {r['algorithm']} | {r['memory_settings']} | **{r['peak_memory_mb']:,.0f}** | {r['parameters_mb']:,.0f} | "
          f"{r['critic_parameters_mb']:,.0f} | {r['reference_mb']:,.0f} | {r['gradients_mb']:,.0f} | "
          f"{r['optimizer_mb']:,.0f} | {r['process_base_mb']:,.0f} | {r['activations_mb']:,.0f} | {r['step_s']:.2f} |")
for setting in ("off", "on"):
    peak = {r["algorithm"]: r.get("peak_memory_mb") for r in rows
            if r["memory_settings"] == setting and not r.get("failed")}
    if "grpo" in peak and "ppo" in peak:
        print(f"\nmemory settings {setting}: GRPO peak / PPO peak = {peak['grpo'] / peak['ppo']:.2f}")
    else:
        print(f"\nmemory settings {setting}: no ratio (a run did not fit)")
PY
