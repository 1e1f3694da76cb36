#!/usr/bin/env bash
# One command for the Nexmark benchmark: Sluice vs Flink 2.2.1 on the same Kafka topics
# (see `benchmarks/nexmark/run.sh --help`). Makes the Python venv it needs first:
# apache-flink 2.2.1, psutil and matplotlib (only psutil and matplotlib with --no-flink);
# compare.py fetches Flink's Kafka connector from Maven Central and writes
# benchmarks/NEXMARK.md and benchmarks/nexmark.png.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
if printf '%s\n' "$@" | grep -qx -- --no-flink; then
  venv="${SLUICE_BENCH_VENV:-$HOME/.cache/sluice-bench-venv}"
  pkgs=(psutil matplotlib)
else
  venv="${SLUICE_FLINK_VENV:-$HOME/.cache/sluice-flink-venv}"
  pkgs=(apache-flink==2.2.1 psutil matplotlib)
  set -- --flink-venv "$venv" "$@"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q "${pkgs[@]}"
exec "$venv/bin/python" "$here/compare.py" "$@"
