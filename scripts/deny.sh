#!/usr/bin/env bash
# cargo deny over the dependency tree (deny.toml): licenses, banned or wildcard dependencies and
# sources always; RustSec advisories whenever the advisory database (a git repository on
# github.com) can be fetched. cargo-deny is installed into target/tools on first use.
# DENY_REQUIRE_ADVISORIES=1 makes an unreachable database a failure instead of a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$(pwd)/target/tools"
if [ ! -x "$TOOLS/bin/cargo-deny" ]; then
  printf '\033[1m==> installing cargo-deny into %s\033[0m\n' "$TOOLS" >&2
  cargo install --quiet --locked --root "$TOOLS" cargo-deny --version 0.20.2
fi
export PATH="$TOOLS/bin:$PATH"
printf '\033[1m==> cargo deny: licenses, bans, sources\033[0m\n' >&2
cargo deny --log-level error check licenses bans sources
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if timeout 120 cargo deny fetch db >"$log" 2>&1; then
  printf '\033[1m==> cargo deny: advisories\033[0m\n' >&2
  cargo deny --log-level error check --disable-fetch advisories
else
  printf '\033[1;33m!! advisories NOT checked: the RustSec database (github.com/RustSec/advisory-db) cannot be fetched from this machine\033[0m\n' >&2
  tail -n 2 "$log" >&2
  if [ "${DENY_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    exit 1
  fi
fi
