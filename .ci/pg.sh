#!/usr/bin/env bash
# A throw-away PostgreSQL 15 server for the test suite, in a temp folder, run as the `postgres` user.
#   eval "$(bash .ci/pg.sh start)"   -> exports VSS_TEST_PG_URL and VSS_PG_DIR
#   bash .ci/pg.sh stop "$VSS_PG_DIR" -> stops the server and removes the folder
set -euo pipefail
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local d port
  d=$(mktemp -d /tmp/vsspg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$d"
  chmod 700 "$d"
  port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_postgres "$BIN/initdb" -D "$d/data" -A trust -U postgres >/dev/null
  as_postgres "$BIN/pg_ctl" -D "$d/data" -l "$d/log" -w \
    -o "-p $port -k $d -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200" \
    start >/dev/null
  as_postgres "$BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres vss_test
  echo "export VSS_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$port/vss_test VSS_PG_DIR=$d"
}

stop() {
  local d=${1:?usage: pg.sh stop DIR}
  as_postgres "$BIN/pg_ctl" -D "$d/data" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$d"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
