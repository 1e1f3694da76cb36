#!/usr/bin/env bash
# Lookup-join cost against the static table's size: the same stream (the built-in
# generator, RECORDS records in batches of BATCH) joined with a CSV table of 1,000 and
# of 1,000,000 rows (keys 192.168.1.N; the generator's 100 ips all match). Prints the
# mean and median batch time per size and the wall time and peak RSS of each run.
#
#   benchmarks/lookup.sh [--records N] [--batch N] [--runs N]
# Needs a release build (CARGO_TARGET_DIR, default ~/.cache/sluice-target).
set -euo pipefail
records=4000000 batch=500000 runs=2
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
bin="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release/sluice"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for n in 1000 1000000; do
  python3 - "$dir/owners_$n.csv" "$n" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("ip,owner\n")
    for i in range(n):
        f.write(f"192.168.1.{i},owner{i % 97}\n")
PY
  cat >"$dir/q_$n.sql" <<SQL
CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, user_id VARCHAR, content VARCHAR)
WITH (connector = 'generator', max_records = '$records');
CREATE TABLE owners (ip VARCHAR, owner VARCHAR) WITH (connector = 'filesystem', path = '$dir/owners_$n.csv', format = 'csv');
SELECT o.owner, count(*) AS n FROM logs l JOIN owners o ON l.source_ip = o.ip GROUP BY o.owner;
SQL
done
printf '%-10s %-5s %-14s %-14s %-10s %s\n' "static" "run" "mean batch s" "median batch s" "wall s" "peak RSS MB"
for r in $(seq 1 "$runs"); do
  for n in 1000 1000000; do
    /usr/bin/time -f "%e %M" -o "$dir/time" "$bin" run "$dir/q_$n.sql" --available-now \
      --max-records-per-batch "$batch" --status plain --num-rows 0 2>"$dir/err" >/dev/null
    read -r wall rss <"$dir/time"
    grep -oE ', [0-9.]+ s,' "$dir/err" | tr -d ', s' | sort -n >"$dir/batches"
    mean=$(awk '{s+=$1} END {printf "%.3f", s/NR}' "$dir/batches")
    median=$(awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}' "$dir/batches")
    printf '%-10s %-5s %-14s %-14s %-10s %s\n' "$n rows" "$r" "$mean" "$median" "$wall" "$((rss / 1024))"
  done
done
