#!/usr/bin/env bash
# Builds everything and runs every test, then the sanitizer build's tests and fuzzers;
# prints both ctest summaries and fails if either has a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE
status=0
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900 || status=$?
# The torch-free part again under AddressSanitizer and UBSan, with a bounded run of every
# fuzzer (build-san/; its own ctest summary).
bash scripts/sanitizer_tests.sh || status=$?
exit "$status"
