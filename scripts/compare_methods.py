#!/usr/bin/env python3
"""The method's comparison as one command: on the built-in arithmetic task, for K seeds,
SFT only, Online RFT, GRPO with outcome supervision, GRPO with process supervision, PPO
(a learned critic) and GSPO, every RL method from the same SFT policy of its seed and at
equal samples (grpo.prompts_per_step x grpo.group_size x steps). Writes into --out_dir:

  table.md      held-out pass@1, maj@k and pass@k per method (mean ± std over seeds),
                training wall time and the process's peak resident memory
  figure.png    training reward curves (mean over seeds) and held-out pass@1 per method
  results.json  every number the table and the figure were made from
  seed-S/<method>/  each run's directory, as grpo_local writes it

Each method's job spec is an examples/ file (the single source of what the method is),
merged over {"seed": S, "steps": --steps, the SFT checkpoint, eval: --eval_prompts}; the
SFT run is a grpo_local job with steps 0. Runs go one at a time (their wall times and
peaks are their own). Progress goes to stderr.

  python3 scripts/compare_methods.py --seeds 3 --out_dir runs/compare
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (key, label, examples/ file or None for the default spec). Order = the paper's ordering.
METHODS = [
    ("rft", "Online RFT", "arithmetic_rft.json"),
    ("grpo_outcome", "GRPO, outcome supervision", "arithmetic_outcome.json"),
    ("grpo_process", "GRPO, process supervision", "arithmetic_process.json"),
    ("ppo", "PPO (learned critic)", "ppo.json"),
    ("gspo", "GSPO", "gspo.json"),
]


def log(message):
    print(f"compare_methods: {message}", file=sys.stderr, flush=True)


def merge(base, over):
    """Deep merge of JSON objects; `over` wins, lists are replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def run_job(binary, spec, run_dir, threads):
    """Runs grpo_local on `spec` in `run_dir`; returns (wall seconds, peak RSS in MB)."""
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    spec_path = run_dir + ".spec.json"
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1)
    command = [binary, "--spec", spec_path, "--run_dir", run_dir]
    if threads:
        command += ["--threads", str(threads)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    start = time.monotonic()
    with open(run_dir + ".log", "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        # wait4: this child's own peak, not the largest of every child so far.
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit "
                           f"{os.waitstatus_to_exitcode(status)}); see {run_dir}.log")
    return seconds, usage.ru_maxrss / 1024.0


def read_run(run_dir):
    with open(os.path.join(run_dir, "eval.json")) as f:
        evaluation = json.load(f)
    rewards, train_seconds = [], 0.0
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                m = json.loads(line)
                rewards.append(m["reward_mean"])
                train_seconds += m.get("train_seconds", 0.0)
    return evaluation, rewards, train_seconds


def mean_std(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def write_table(results, k, path):
    header = (f"| method | pass@1 | maj@{k} | pass@{k} | training wall time (s) | "
              f"peak memory (MB) |\n|---|---|---|---|---|---|\n")
    rows = []
    for method in results["methods"]:
        runs = results["runs"][method["key"]]
        cells = []
        for key in ("pass@1", "maj@k", "pass@k"):
            mean, std = mean_std([r["eval"][key] for r in runs])
            cells.append(f"{mean:.3f} ± {std:.3f}")
        wall, wall_std = mean_std([r["wall_seconds"] for r in runs])
        peak, _ = mean_std([r["peak_rss_mb"] for r in runs])
        rows.append(f"| {method['label']} | " + " | ".join(cells) +
                    f" | {wall:.0f} ± {wall_std:.0f} | {peak:,.0f} |")
    with open(path, "w") as f:
        f.write(header + "\n".join(rows) + "\n")
    return header + "\n".join(rows) + "\n"


def draw(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method in results["methods"]:
        runs = results["runs"][method["key"]]
        if not runs[0]["rewards"]:
            continue
        steps = min(len(r["rewards"]) for r in runs)
        mean = [sum(r["rewards"][i] for r in runs) / len(runs) for i in range(steps)]
        # A 5-step moving average: one step's 128 samples are noisy.
        smooth = [sum(mean[max(0, i - 4):i + 1]) / len(mean[max(0, i - 4):i + 1])
                  for i in range(steps)]
        curves.plot(range(1, steps + 1), smooth, label=method["label"])
    curves.set_xlabel("step")
    curves.set_ylabel("training reward (mean over seeds, 5-step average)")
    curves.set_title("Training reward")
    curves.legend(fontsize=8)
    labels, means, stds = [], [], []
    for method in results["methods"]:
        mean, std = mean_std([r["eval"]["pass@1"] for r in results["runs"][method["key"]]])
        labels.append(method["label"].replace(", outcome supervision", "\noutcome")
                      .replace(", process supervision", "\nprocess")
                      .replace(" (learned critic)", ""))
        means.append(mean)
        stds.append(std)
    bars.bar(range(len(labels)), means, yerr=stds, capsize=4, color="tab:blue")
    bars.set_xticks(range(len(labels)))
    bars.set_xticklabels(labels, fontsize=7)
    bars.set_ylabel("held-out pass@1 (mean ± std over seeds)")
    bars.set_title(f"Held-out accuracy ({results['seeds']} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="K: seeds 1..K")
    parser.add_argument("--out_dir", default="runs/compare")
    parser.add_argument("--steps", type=int, default=120, help="RL steps of every method")
    parser.add_argument("--eval_prompts", type=int, default=200)
    parser.add_argument("--sft_steps", type=int, default=None,
                        help="SFT warm-up steps (default: the job spec's)")
    parser.add_argument("--methods", default=",".join(m[0] for m in METHODS),
                        help="a comma-separated subset of " + ",".join(m[0] for m in METHODS))
    parser.add_argument("--override", default="{}",
                        help="JSON merged into every spec last (e.g. a smaller model)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--grpo_local", default=os.path.join(ROOT, "build/local/grpo_local"))
    parser.add_argument("--from_results", default="",
                        help="redraw table.md and figure.png from a results.json, running nothing")
    args = parser.parse_args()
    if args.from_results:
        with open(args.from_results) as f:
            results = json.load(f)
        os.makedirs(args.out_dir, exist_ok=True)
        k = results["runs"]["sft"][0]["eval"]["k"]
        print(write_table(results, k, os.path.join(args.out_dir, "table.md")))
        draw(results, os.path.join(args.out_dir, "figure.png"))
        return

    chosen = args.methods.split(",")
    unknown = [m for m in chosen if m not in [key for key, _, _ in METHODS]]
    if unknown or args.seeds < 1 or args.steps < 1:
        parser.error(f"--methods: unknown {unknown}" if unknown else "--seeds and --steps: >= 1")
    try:
        override = json.loads(args.override)
    except json.JSONDecodeError as e:
        parser.error(f"--override: not JSON ({e})")
    if not os.access(args.grpo_local, os.X_OK):
        parser.error(f"--grpo_local: {args.grpo_local} is not built (cmake --build build)")

    methods = [{"key": key, "label": label, "example": example}
               for key, label, example in METHODS if key in chosen]
    results = {"seeds": args.seeds, "steps": args.steps, "methods":
               [{"key": "sft", "label": "SFT only", "example": None}] + methods,
               "runs": {"sft": []}}
    for m in methods:
        results["runs"][m["key"]] = []
    evaluation = {"num_prompts": args.eval_prompts}
    for seed in range(1, args.seeds + 1):
        seed_dir = os.path.join(args.out_dir, f"seed-{seed}")
        # --- SFT once per seed: "SFT only", and where every RL method starts.
        sft_spec = merge({"seed": seed, "steps": 0, "eval": evaluation}, override)
        if args.sft_steps is not None:
            sft_spec = merge(sft_spec, {"sft": {"steps": args.sft_steps}})
        sft_dir = os.path.join(seed_dir, "sft")
        log(f"seed {seed}: SFT")
        wall, peak = run_job(args.grpo_local, sft_spec, sft_dir, args.threads)
        sft_eval, _, _ = read_run(sft_dir)
        sft_checkpoint = os.path.abspath(os.path.join(sft_dir, "step-0"))
        if not os.path.exists(os.path.join(sft_checkpoint, "model.pt")):
            raise RuntimeError(f"{sft_dir}: no step-0/model.pt after the SFT run")
        results["runs"]["sft"].append({"seed": seed, "eval": sft_eval["after"], "rewards": [],
                                       "wall_seconds": wall, "train_seconds": 0.0,
                                       "peak_rss_mb": peak})
        # --- Each method from that policy.
        for m in methods:
            with open(os.path.join(ROOT, "examples", m["example"])) as f:
                example = json.load(f)
            spec = merge(example, {"seed": seed, "steps": args.steps, "eval": evaluation,
                                   "sft": {"steps": 0},
                                   "model": {"init_checkpoint": sft_checkpoint}})
            spec = merge(spec, override)
            run_dir = os.path.join(seed_dir, m["key"])
            log(f"seed {seed}: {m['label']} ({args.steps} steps)")
            wall, peak = run_job(args.grpo_local, spec, run_dir, args.threads)
            ev, rewards, train = read_run(run_dir)
            results["runs"][m["key"]].append({"seed": seed, "eval": ev["after"],
                                              "rewards": rewards, "wall_seconds": wall,
                                              "train_seconds": train, "peak_rss_mb": peak})
            log(f"  pass@1 {ev['before']['pass@1']:.3f} -> {ev['after']['pass@1']:.3f}, "
                f"{wall:.0f} s, peak {peak:,.0f} MB")

    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    k = results["runs"]["sft"][0]["eval"]["k"]
    table = write_table(results, k, os.path.join(args.out_dir, "table.md"))
    draw(results, os.path.join(args.out_dir, "figure.png"))
    print(table)
    log(f"wrote {args.out_dir}/table.md, figure.png, results.json")


if __name__ == "__main__":
    main()
