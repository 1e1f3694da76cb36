#!/usr/bin/env bash
# A local PostgreSQL server (Debian's `postgresql` package) for the static-table tests.
# Test data only; it listens on 127.0.0.1 and trusts local connections.
#
#   scripts/postgres-local.sh start    initdb (first time), start, wait until ready
#   scripts/postgres-local.sh stop     stop the server this script started
#   scripts/postgres-local.sh status   exit 0 and print the connection string when running
#
# Environment: PG_PORT (default 5433), SLUICE_PG_HOME (default /tmp/sluice-postgres-PORT;
# the server runs as user `postgres` when this runs as root, so the default is world-reachable).
# Connect with: host=127.0.0.1 port=5433 user=postgres dbname=postgres
set -euo pipefail
port="${PG_PORT:-5433}"
home="${SLUICE_PG_HOME:-/tmp/sluice-postgres-$port}"
data="$home/data"
log="$home/server.log"

say() { printf 'postgres-local: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$d" ] && [ -x "$d/pg_ctl" ] || die "PostgreSQL is not installed (Debian: apt-get install postgresql)"
  echo "$d"
}

# Runs a server command as `postgres` when we are root (PostgreSQL refuses root).
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local bin; bin="$(bindir)"
  if port_open "$port"; then
    as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 && { say "already running on 127.0.0.1:$port"; return 0; }
    die "port $port is taken by another process: stop it or set PG_PORT"
  fi
  mkdir -p "$home"
  [ "$(id -u)" = 0 ] && chown postgres "$home"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initdb $data"
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 30 \
    -o "-p $port -h 127.0.0.1 -k $home -c fsync=off" start >/dev/null ||
    { tail -n 20 "$log" >&2 || true; die "the server did not start (see $log)"; }
  say "ready: host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

stop() {
  local bin; bin="$(bindir)"
  if [ -f "$data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null && say "stopped"
  else
    say "not running"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if port_open "$port"; then echo "running host=127.0.0.1 port=$port user=postgres dbname=postgres"; else echo "not running"; exit 1; fi ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
