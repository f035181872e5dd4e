#!/usr/bin/env bash
# Quick start, command 2 (and CI's .ci/run): install what is needed, then build and run the
# whole test suite in every checked configuration: release (gcc), ASan+UBSan with the
# bounded libFuzzer smoke runs (clang), and TSan (clang).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
presets=("${@:-release asan tsan}")
read -r -a presets <<<"${presets[*]}"
status=0
for preset in "${presets[@]}"; do
  echo "=== ${preset}: build"
  deploy/build.sh "$preset"
  echo "=== ${preset}: test"
  ctest --preset "$preset" -j "$(nproc)" || status=1
done
exit "$status"
