#!/usr/bin/env bash
# `make test`: every test of the workspace, against real PostgreSQL and NATS JetStream (found or
# started by scripts/stack.sh). Each test creates its own databases and stream.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/stack.sh
trap stop_started EXIT
ensure_postgres
ensure_nats
ensure_scim2_tester
ensure_chromium
export TEST_DATABASE_URL="$PG_ADMIN_URL" TEST_NATS_URL="$NATS_SERVER_URL"
# Some tests run the services' binaries in processes of their own (signals, telemetry).
cargo build --workspace --bins --quiet
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
