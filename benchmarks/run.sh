#!/usr/bin/env bash
# One command for the benchmark harness: a Python venv with what it needs
# (psutil, matplotlib; pyspark unless --no-spark), then benchmarks/bench.py with
# the arguments given (see `benchmarks/run.sh --help`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SLUICE_BENCH_VENV:-$HOME/.cache/sluice-bench-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q psutil matplotlib
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
exec "$venv/bin/python" "$here/bench.py" "$@"
