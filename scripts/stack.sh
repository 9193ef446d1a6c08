# Shared by `make run` and `make test`: uses PostgreSQL and NATS on their standard local ports when
# they are usable (PostgreSQL lets `postgres` in without a password; NATS has JetStream), or
# starts private ones (installing postgresql / nats-server from the OS packages when they are
# missing). Sourced, not executed.
#
# After ensure_postgres: PG_ADMIN_URL (an admin connection URL) and PG_SERVER_URL (without a
# database). After ensure_nats: NATS_SERVER_URL (and NATS_AUTH_DIR, see ensure_nats). stop_started
# stops only what was started here.

STACK_DIR="${STACK_DIR:-$(pwd)/target/stack}"
# PostgreSQL's data and socket live outside the checkout: as root, initdb runs as `postgres`, which
# may not be able to enter the checkout (/root is 0700), and socket paths are limited to 107 bytes.
PG_DIR="${PG_DIR:-${TMPDIR:-/tmp}/scim-pg-$(id -u)-$(printf '%s' "$(pwd)" | cksum | cut -d' ' -f1)}"
PG_HOST=127.0.0.1
PG_PORT="${PG_PORT:-5432}"
PRIVATE_PG_PORT="${PRIVATE_PG_PORT:-55432}"
NATS_PORT="${NATS_PORT:-4222}"
PRIVATE_NATS_PORT="${PRIVATE_NATS_PORT:-54222}"
STARTED_PG=""
STARTED_NATS=""

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A GET that answers 200, without curl (a fresh machine may not have it).
http_ok() {
  local status=""
  { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
  read -r -t 2 status <&3 || true
  exec 3>&- 3<&-
  [[ "$status" == *" 200 "* ]]
}

# Whether a NATS server on this port has JetStream: its INFO line says so.
nats_has_jetstream() {
  local info=""
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  read -r -t 2 info <&3 || true
  exec 3>&- 3<&-
  [[ "$info" == *'"jetstream":true'* ]]
}

# Whether PostgreSQL on this port lets `postgres` in without a password.
pg_usable() {
  PGCONNECT_TIMEOUT=3 psql -w -h "$PG_HOST" -p "$1" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1
}

wait_port() {
  local host=$1 port=$2 what=$3 i
  for i in $(seq 1 100); do
    port_open "$host" "$port" && return 0
    sleep 0.1
  done
  say "$what did not start listening on $host:$port"; return 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

apt_install() {
  say "installing $* from the OS packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

ensure_psql() {
  command -v psql >/dev/null || apt_install postgresql-client
}

ensure_postgres() {
  ensure_psql
  if port_open "$PG_HOST" "$PG_PORT" && pg_usable "$PG_PORT"; then
    say "using PostgreSQL on $PG_HOST:$PG_PORT"
    PG_SERVER_URL="postgres://postgres@$PG_HOST:$PG_PORT"
  else
    local bin; bin=$(pg_bin)
    if [ -z "$bin" ]; then apt_install postgresql; bin=$(pg_bin); fi
    local data="$PG_DIR" run=()
    # initdb and postgres refuse to run as root: use the postgres account then.
    if [ "$(id -u)" = 0 ]; then run=(runuser -u postgres --); fi
    mkdir -p "$data"
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$data"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
      say "initialising a private PostgreSQL in $data"
      "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if ! port_open "$PG_HOST" "$PRIVATE_PG_PORT"; then
      say "starting a private PostgreSQL on $PG_HOST:$PRIVATE_PG_PORT"
      "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/log" -w \
        -o "-p $PRIVATE_PG_PORT -c listen_addresses=$PG_HOST -c unix_socket_directories=$data" start >/dev/null
      STARTED_PG="$bin/pg_ctl -D $data"
      if [ "$(id -u)" = 0 ]; then STARTED_PG="runuser -u postgres -- $STARTED_PG"; fi
    fi
    PG_SERVER_URL="postgres://postgres@$PG_HOST:$PRIVATE_PG_PORT"
  fi
  PG_ADMIN_URL="$PG_SERVER_URL/postgres"
  export PG_ADMIN_URL PG_SERVER_URL
}

# Whether the NATS server on this port requires authentication: its INFO line says so.
nats_requires_auth() {
  local info=""
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  read -r -t 2 info <&3 || true
  exec 3>&- 3<&-
  [[ "$info" == *'"auth_required":true'* ]]
}

# `ensure_nats` (make test: the tests need a server without authorization) or `ensure_nats
# secured` (make run): a private server started here then runs with the configuration the project
# ships (deploy/nats: one user per service, least privilege), and NATS_AUTH_DIR holds the
# services' passwords (<service>.password). Using a server found on NATS_PORT, NATS_AUTH_DIR is
# empty: the services connect without credentials, which works only because that server has no
# authorization.
ensure_nats() {
  local mode="${1:-open}" auth="$STACK_DIR/nats/auth"
  NATS_AUTH_DIR=""
  if nats_has_jetstream "$NATS_PORT"; then
    say "using NATS on 127.0.0.1:$NATS_PORT"
    NATS_SERVER_URL="nats://127.0.0.1:$NATS_PORT"
  else
    command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
    local server; server=$(command -v nats-server || echo /usr/sbin/nats-server)
    if ! port_open 127.0.0.1 "$PRIVATE_NATS_PORT"; then
      local config=()
      mkdir -p "$STACK_DIR/nats"
      if [ "$mode" = secured ]; then
        say "starting a private NATS with JetStream on 127.0.0.1:$PRIVATE_NATS_PORT, with the services' users (deploy/nats)"
        rm -rf "$auth"
        deploy/nats/render-auth.sh "$auth"
        cp deploy/nats/nats-server.conf "$auth/nats-server.conf"
        config=(-c "$auth/nats-server.conf")
        NATS_AUTH_DIR="$auth"
      else
        say "starting a private NATS with JetStream on 127.0.0.1:$PRIVATE_NATS_PORT"
      fi
      "$server" "${config[@]}" -js -a 127.0.0.1 -p "$PRIVATE_NATS_PORT" -sd "$STACK_DIR/nats" -l "$STACK_DIR/nats/log" &
      STARTED_NATS=$!
      wait_port 127.0.0.1 "$PRIVATE_NATS_PORT" "nats-server"
    elif nats_requires_auth "$PRIVATE_NATS_PORT"; then
      if [ "$mode" != secured ] || [ ! -s "$auth/user-directory.password" ]; then
        say "the NATS on 127.0.0.1:$PRIVATE_NATS_PORT requires credentials this run does not have; stop it"
        return 1
      fi
      NATS_AUTH_DIR="$auth"
    fi
    NATS_SERVER_URL="nats://127.0.0.1:$PRIVATE_NATS_PORT"
  fi
  export NATS_SERVER_URL NATS_AUTH_DIR
}

# NATS_URL for one service (user-directory, notification, scim-gateway): with its password when
# ensure_nats set up users.
nats_url_for() {
  if [ -n "${NATS_AUTH_DIR:-}" ]; then
    printf 'nats://%s:%s@%s' "$1" "$(cat "$NATS_AUTH_DIR/$1.password")" "${NATS_SERVER_URL#nats://}"
  else
    printf '%s' "$NATS_SERVER_URL"
  fi
}

# scim2-tester (the independent SCIM checker the tests run), pinned, in a venv under target/.
ensure_scim2_tester() {
  local venv="$(pwd)/target/scim2-tester-venv" req="tests/scim2-tester/requirements.txt"
  if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
    command -v python3 >/dev/null || apt_install python3 python3-venv
    say "installing scim2-tester into $venv"
    python3 -m venv "$venv" || { apt_install python3-venv && python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$venv/requirements.txt"
  fi
  export SCIM2_TESTER_PYTHON="$venv/bin/python"
}

# Chromium and its WebDriver, for the console's browser tests (Debian's packages).
ensure_chromium() {
  if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    apt_install chromium chromium-driver
  fi
  CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
  CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser)}"
  export CHROMEDRIVER CHROMIUM
}

stop_started() {
  if [ -n "$STARTED_NATS" ]; then
    say "stopping the private NATS"
    kill "$STARTED_NATS" 2>/dev/null || true
    wait "$STARTED_NATS" 2>/dev/null || true
  fi
  if [ -n "$STARTED_PG" ]; then
    say "stopping the private PostgreSQL"
    $STARTED_PG -m fast stop >/dev/null 2>&1 || true
  fi
  STARTED_NATS=""; STARTED_PG=""
}
