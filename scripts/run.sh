#!/usr/bin/env bash
# `make run`: the whole stack on this machine. Uses (or starts) PostgreSQL and NATS, migrates,
# creates the demo tenant `acme`, starts user-directory, scim-gateway and notification, and
# prints the SCIM base URL, the credentials and a curl line. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/stack.sh

GATEWAY_PORT="${GATEWAY_PORT:-8080}"
DIRECTORY_PORT="${DIRECTORY_PORT:-50051}"
NOTIFICATION_PORT="${NOTIFICATION_PORT:-8081}"
TENANT="${TENANT:-acme}"
LOGS="$STACK_DIR/logs"
PIDS=()

cleanup() {
  trap - INT TERM EXIT
  if [ "${#PIDS[@]}" -gt 0 ]; then
    say "stopping the services"
    kill "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
  stop_started
}
trap cleanup INT TERM EXIT

for port in "$GATEWAY_PORT" "$DIRECTORY_PORT" "$NOTIFICATION_PORT"; do
  if port_open 127.0.0.1 "$port"; then
    say "port $port is already in use (another make run?); set GATEWAY_PORT / DIRECTORY_PORT / NOTIFICATION_PORT"
    exit 1
  fi
done

say "building the services"
cargo build --bins --quiet

ensure_postgres
ensure_nats secured
for db in scim_directory scim_notification; do
  if ! psql "$PG_ADMIN_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    say "creating database $db"
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $db" >/dev/null
  fi
done

export SHUTDOWN_DELAY_SECS=0 LOG_FORMAT=text RUST_LOG="${RUST_LOG:-info,sqlx=warn}"
# Each service with its own NATS user when the NATS is this run's own; without credentials on a
# server without authorization (the machine's), which the services warn about once.
if [ -n "$NATS_AUTH_DIR" ]; then
  NATS_NOTE="$NATS_SERVER_URL, each service its own user (deploy/nats; passwords in $NATS_AUTH_DIR)"
else
  NATS_NOTE="$NATS_SERVER_URL, without credentials (a server without authorization: local development only)"
fi
BIN=target/debug
DIRECTORY_DB="$PG_SERVER_URL/scim_directory"

DATABASE_URL="$DIRECTORY_DB" "$BIN/user-directory" migrate >/dev/null
# Each run shows a fresh key (keys are shown once); the previous run's key is revoked.
KEY_ID_FILE="$STACK_DIR/demo-key-id"
if creds=$(DATABASE_URL="$DIRECTORY_DB" "$BIN/user-directory" tenant create "$TENANT" --name "Acme Corp (demo)" --json 2>/dev/null); then
  say "created the demo tenant $TENANT"
else
  if [ -s "$KEY_ID_FILE" ]; then
    DATABASE_URL="$DIRECTORY_DB" "$BIN/user-directory" key revoke "$(cat "$KEY_ID_FILE")" >/dev/null 2>&1 || true
  fi
  creds=$(DATABASE_URL="$DIRECTORY_DB" "$BIN/user-directory" key issue "$TENANT" --name "make run" --json)
  say "issued a new key for the demo tenant $TENANT (the previous one is revoked)"
fi
KEY=$(printf '%s' "$creds" | sed -E 's/.*"apiKey":"([^"]+)".*/\1/')
mkdir -p "$STACK_DIR"
printf '%s' "$creds" | sed -E 's/.*"keyId":"([^"]+)".*/\1/' >"$KEY_ID_FILE"

mkdir -p "$LOGS"
# Tokens for this run only, unless given: the ones the gateway presents to the directory and to
# the notification service, and the operator's console sign-in (the gateway and the directory
# check it). 32 random bytes each, hex.
DIRECTORY_TOKEN="${DIRECTORY_TOKEN:-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')}"
OPERATOR_TOKEN="${CONSOLE_OPERATOR_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
NOTIFICATION_TOKEN="${NOTIFICATION_TOKEN:-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')}"
export DIRECTORY_TOKEN NOTIFICATION_TOKEN
DATABASE_URL="$DIRECTORY_DB" DIRECTORY_LISTEN="127.0.0.1:$DIRECTORY_PORT" CONSOLE_OPERATOR_TOKEN="$OPERATOR_TOKEN" \
  NATS_URL="$(nats_url_for user-directory)" \
  "$BIN/user-directory" >"$LOGS/user-directory.log" 2>&1 &
PIDS+=($!)
# The console over plain HTTP on this machine: cookies without Secure.
DIRECTORY_URL="http://127.0.0.1:$DIRECTORY_PORT" GATEWAY_LISTEN="0.0.0.0:$GATEWAY_PORT" \
  CONSOLE_COOKIE_SECURE=false CONSOLE_OPERATOR_TOKEN="$OPERATOR_TOKEN" NOTIFICATION_URL="http://127.0.0.1:$NOTIFICATION_PORT" \
  NATS_URL="$(nats_url_for scim-gateway)" "$BIN/scim-gateway" >"$LOGS/scim-gateway.log" 2>&1 &
PIDS+=($!)
MAIL_DIR="$STACK_DIR/mail"
mkdir -p "$MAIL_DIR"
DATABASE_URL="$PG_SERVER_URL/scim_notification" NOTIFICATION_HEALTH_LISTEN="127.0.0.1:$NOTIFICATION_PORT" \
  SMTP_URL="${SMTP_URL:-file://$MAIL_DIR}" PLATFORM_URL="${PLATFORM_URL:-http://localhost:$GATEWAY_PORT}" \
  NATS_URL="$(nats_url_for notification)" "$BIN/notification" >"$LOGS/notification.log" 2>&1 &
PIDS+=($!)

ready=""
for i in $(seq 1 150); do
  if http_ok 127.0.0.1 "$GATEWAY_PORT" /readyz; then ready=1; break; fi
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { say "a service exited; see $LOGS"; tail -n 20 "$LOGS"/*.log >&2; exit 1; }
  done
  sleep 0.2
done
if [ -z "$ready" ]; then
  say "the gateway did not become ready in 30 s; see $LOGS"; tail -n 20 "$LOGS"/*.log >&2; exit 1
fi

BASE="http://localhost:$GATEWAY_PORT/scim/v2"
cat <<TXT

  The stack is running (logs in $LOGS).

  SCIM base URL   $BASE
  Username        $TENANT
  Password        $KEY      (the tenant's SCIM API key; shown once)

  Try it:
    curl -s -u '$TENANT:$KEY' '$BASE/Users?startIndex=1&count=2'

  In Okta: SCIM connector base URL = the base URL above, authentication mode = Basic Auth,
  username = $TENANT, password = the key.

  Console         http://localhost:$GATEWAY_PORT/console
                  tenant $TENANT, the same key (it has both scopes: scim and admin);
                  support sign-in: operator token $OPERATOR_TOKEN

  NATS            $NATS_NOTE

  Emails are written to $MAIL_DIR (set SMTP_URL=smtp://host:port to send them).
  Assign content to a user to see the first one:
    curl -s -u '$TENANT:$KEY' -H 'Content-Type: application/json' http://localhost:$GATEWAY_PORT/api/v1/assignments \\
      -d '{"userId":"<a user id>","contentId":"welcome-101","title":"Welcome to the platform"}'

  Ctrl-C stops everything this command started.

TXT
wait -n "${PIDS[@]}" || true
say "stopping (logs in $LOGS)"
