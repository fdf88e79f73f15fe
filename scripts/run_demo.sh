#!/usr/bin/env bash
# The main job on the built-in default: SFT warm-up, GRPO on synthetic arithmetic, held-out
# evaluation before and after, run by the distributed services on this machine
# (grpo_launch). Extra arguments go to grpo_launch (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# libgomp reads this before main; every grpo_ binary would re-exec itself to set it anyway.
export OMP_WAIT_POLICY=PASSIVE
exec build/local/grpo_launch "$@"
