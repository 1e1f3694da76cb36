#!/usr/bin/env bash
# A local S3-compatible endpoint (moto's server, from PyPI) for the object-store tests
# of checkpoints and file sinks. Test data only; nothing leaves the machine.
#
#   scripts/s3-local.sh start    install moto into a venv (first time), start, wait until ready
#   scripts/s3-local.sh stop     stop the server this script started
#   scripts/s3-local.sh status   exit 0 and print the endpoint when running
#
# Environment: S3_PORT (default 9787), SLUICE_S3_HOME (default ~/.cache/sluice-s3).
set -euo pipefail
port="${S3_PORT:-9787}"
home="${SLUICE_S3_HOME:-$HOME/.cache/sluice-s3}"
venv="$home/venv"
pidfile="$home/moto-$port.pid"
log="$home/moto-$port.log"

say() { printf 's3-local: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  mkdir -p "$home"
  if pid="$(running_pid)" && port_open "$port"; then say "already running (pid $pid) on 127.0.0.1:$port"; return 0; fi
  port_open "$port" && die "port $port is taken by another process: stop it or set S3_PORT"
  if [ ! -x "$venv/bin/moto_server" ]; then
    say "installing moto[server] from PyPI (first time only)"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q "moto[server]==5.*" || die "pip could not install moto[server]"
  fi
  nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    port_open "$port" && { say "ready on http://127.0.0.1:$port"; return 0; }
    running_pid >/dev/null || { tail -n 20 "$log" >&2; die "moto_server exited (see $log)"; }
    sleep 0.2
  done
  die "moto_server did not listen within 20 s (see $log)"
}

stop() {
  if pid="$(running_pid)"; then kill "$pid"; rm -f "$pidfile"; say "stopped"; else say "not running"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running_pid >/dev/null && port_open "$port"; then echo "running http://127.0.0.1:$port"; else echo "not running"; exit 1; fi ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
