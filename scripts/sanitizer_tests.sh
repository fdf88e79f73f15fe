#!/usr/bin/env bash
# The torch-free part of the project under AddressSanitizer and UBSan, built with clang
# into build-san/: the torch-free tests (core text, coordinator, rpc) and a bounded run of
# each libFuzzer target (fuzz/). Any crash, leak, memory error or undefined behaviour fails
# the run. Prints ctest's summary; exits non-zero if a test failed.
#
#   bash scripts/sanitizer_tests.sh            # from the repository root or anywhere
#   GRPO_FUZZ_SECONDS=60 bash scripts/sanitizer_tests.sh   # fuzz longer per target
#   GRPO_JOBS=1 ...                            # build jobs (default: nproc)
# ccache is used when present (CMakeLists.txt); CCACHE_DISABLE=1 builds from scratch.
#
# Needs the Debian packages clang and libclang-rt-14-dev (libFuzzer and the sanitizer
# runtimes; only recommended by clang) besides what scripts/setup.sh installs, and llvm
# (llvm-symbolizer) for file:line in reports. clang links Debian's g++-built Abseil,
# protobuf and gRPC as they are (both use libstdc++); only our code is instrumented.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "sanitizer_tests: $tool not found (apt-get install clang)" >&2; exit 1; }
done
if ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "sanitizer_tests: libFuzzer missing (apt-get install libclang-rt-14-dev)" >&2
  exit 1
fi

command -v llvm-symbolizer >/dev/null ||
  echo "sanitizer_tests: no llvm-symbolizer (apt-get install llvm): reports without file:line" >&2

build=build-san
fuzz_seconds=${GRPO_FUZZ_SECONDS:-20}

start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DGRPO_TORCH_FREE=ON -DGRPO_SANITIZE=ON -DGRPO_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
cmake --build "$build" -j"${GRPO_JOBS:-$(nproc)}"
built=$(date +%s)

# Reports go to stderr with a stack trace; a leak or any UB fails the test that hit it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
ctest --test-dir "$build" --output-on-failure | tee "$build/ctest.log" || status=$?
end=$(date +%s)

echo
echo "sanitizer_tests: build $((built - start))s, tests $((end - built))s, total $((end - start))s"
grep -E "tests passed|tests failed" "$build/ctest.log" || true
exit "$status"
