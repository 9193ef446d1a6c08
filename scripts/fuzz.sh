#!/usr/bin/env bash
# Fuzzes the SCIM filter parser and the PATCH engine with cargo-fuzz (libFuzzer), for
# FUZZ_SECONDS per target (default 20: the smoke run make test does; see docs/fuzzing.md for long
# runs). cargo-fuzz is installed into target/tools on first use. Works on the stable toolchain:
# without a sanitizer, libFuzzer still guides by coverage, and panics are the findings.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
TOOLS="$(pwd)/target/tools"
if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  printf '\033[1m==> installing cargo-fuzz into %s\033[0m\n' "$TOOLS" >&2
  cargo install --quiet --locked --root "$TOOLS" cargo-fuzz --version 0.13.2
fi
export PATH="$TOOLS/bin:$PATH"
cd fuzz
for target in filter patch; do
  corpus="target/corpus/$target"
  mkdir -p "$corpus"
  cp -n seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  printf '\033[1m==> fuzzing %s for %ss\033[0m\n' "$target" "$SECONDS_PER_TARGET" >&2
  log="target/fuzz-$target.log"
  status=0
  cargo fuzz run "$target" --sanitizer none "$corpus" -- -max_total_time="$SECONDS_PER_TARGET" >"$log" 2>&1 || status=$?
  grep -E '^Done' "$log" >&2 || true
  if [ "$status" -ne 0 ]; then
    grep -E -A4 'panicked|error' "$log" | head -n 40 >&2
    echo "fuzzing $target failed (exit $status): see fuzz/$log and fuzz/artifacts/$target" >&2
    exit 1
  fi
done
