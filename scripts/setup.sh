#!/usr/bin/env bash
# Installs the Debian 12 packages the build needs (only those missing) and builds the
# project into build/. Sourced by run_demo.sh and run_tests.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ccache
  libtorch-dev libopenblas0-pthread  # OpenBLAS: LibTorch's matmul ~5 -> ~110 GFLOP/s here
  libgloo-dev                        # c10d ProcessGroupGloo headers (learner all-reduce)
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libicu-dev                         # tokenizer.json: NFC and the pre-tokenizer regexes (hf/)
  nodejs                             # tests/hf/npm: a JavaScript reference tokenizer
  openssl                            # tests make a throwaway CA for the TLS tests
  iproute2                           # tests make network namespaces for partitions (as root)
  prometheus-cpp-dev                 # metrics/: Registry, Counter, Gauge, Histogram, TextSerializer
  prometheus                         # promtool (and the server) check the metrics in tests
  clang libclang-rt-14-dev llvm      # the sanitizer build and libFuzzer (scripts/sanitizer_tests.sh)
  python3-yaml                       # tests/deploy/manifests_test.py reads the Kubernetes manifests
  python3-torch                      # tests/hf/tiny_checkpoint.py: an independent reference model
  python3-matplotlib                 # scripts/compare_methods.py draws its figure
)
# npm too; but a Node.js from elsewhere (NodeSource) bundles npm and conflicts with
# Debian's npm package, so only when the command is missing.
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
