#!/usr/bin/env bash
# `make bench`: builds in release and runs the benchmarks against real PostgreSQL and NATS (found
# or started by scripts/stack.sh). Results: a table on stdout, JSON under target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/stack.sh
trap stop_started EXIT
ensure_postgres
ensure_nats
export TEST_DATABASE_URL="$PG_ADMIN_URL" TEST_NATS_URL="$NATS_SERVER_URL"
# The `scim` benchmark runs the services' release binaries in processes of their own.
cargo build --quiet --release --bins
cargo run --quiet --release -p e2e --bin bench -- "${1:-all}"
