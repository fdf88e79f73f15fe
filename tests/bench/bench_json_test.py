#!/usr/bin/env python3
"""grpo_bench's output is JSON lines a reader can parse: with --repeats 0 (decode only)
the training fields are absent, never NaN; with --repeats 1 they are present and finite."""
import json
import math
import subprocess
import sys

BENCH = sys.argv[1]
TRAIN_FIELDS = {"train_step_s", "train_gflops", "train_frac_peak"}


def run(repeats):
    out = subprocess.run([BENCH, "--models=tiny", f"--repeats={repeats}", "--threads=1"],
                         check=True, capture_output=True, text=True).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    # parse_constant turns NaN/Infinity (which json.loads would otherwise accept) into errors.
    def refuse(name):
        raise ValueError(f"non-JSON constant {name} in {lines[0]}")
    return json.loads(lines[0], parse_constant=refuse)


decode_only = run(0)
assert not TRAIN_FIELDS & decode_only.keys(), decode_only
assert decode_only["decode_tokens_per_s"] > 0, decode_only
assert decode_only["peak_rss_mb"] > 0, decode_only
timed = run(1)
assert timed["micro_batch_tokens"] == 0 and timed["logprob_chunk"] == 0, timed
assert TRAIN_FIELDS <= timed.keys(), timed
assert all(math.isfinite(timed[k]) and timed[k] > 0 for k in TRAIN_FIELDS), timed
print("grpo_bench JSON ok:", sorted(decode_only), sorted(timed))
