#!/usr/bin/env bash
# The main job on the built-in default: SFT warm-up, GRPO on synthetic arithmetic, held-out
# evaluation before and after. Extra arguments go to grpo_local (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# libgomp reads this before main; grpo_local would re-exec itself to set it anyway.
export OMP_WAIT_POLICY=PASSIVE
exec build/local/grpo_local "$@"
