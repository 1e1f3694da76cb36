#!/usr/bin/env bash
# Big state: a GROUP BY over a key with one new value per record
# (concat(user_id, '-', timestamp, '-', source_ip)) from the built-in generator, in
# batches of BATCH records, update output mode into a blackhole sink, with a local
# checkpoint. Prints, per batch, the groups in state, the batch time and its stateMerge
# and checkpoint phases, the state bytes the checkpoint wrote and whether that was a
# full snapshot; then the peak RSS, the state's own bytes and the checkpoint folder's
# size at the end.
#
#   benchmarks/bigstate.sh [--records N] [--batch N] [--partitions N]
# Needs a release build (CARGO_TARGET_DIR, default ~/.cache/sluice-target).
set -euo pipefail
records=10000000 batch=500000 partitions=2
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
bin="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release/sluice"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cat >"$dir/q.sql" <<SQL
CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, user_id VARCHAR, content VARCHAR)
WITH (connector = 'generator', max_records = '$records', partitions = '$partitions');
CREATE TABLE sink WITH (connector = 'blackhole');
INSERT INTO sink
SELECT concat(user_id, '-', timestamp, '-', source_ip) AS k, count(*) AS n
FROM logs GROUP BY concat(user_id, '-', timestamp, '-', source_ip);
SQL
/usr/bin/time -f '%M' -o "$dir/rss" "$bin" run "$dir/q.sql" --available-now \
  --output-mode update --max-records-per-batch "$batch" --target-partitions "$partitions" \
  --checkpoint "$dir/ckpt" --progress-json "$dir/progress.jsonl" >/dev/null 2>"$dir/err" \
  || { cat "$dir/err" >&2; exit 1; }
python3 - "$dir/progress.jsonl" "$dir/rss" "$dir/ckpt" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'batch':>5} {'groups':>10} {'batch ms':>9} {'stateMerge':>10} {'checkpoint':>10} {'ckpt MB':>8} full")
for r in rows:
    d, st, ck = r["durationMs"], r["stateOperators"][0], r.get("checkpoint", {})
    print(f"{r['batchId']:>5} {st['numRowsTotal']:>10} {d['triggerExecution']:>9} "
          f"{d.get('stateMerge', 0):>10} {d.get('checkpoint', 0):>10} "
          f"{ck.get('stateBytesWritten', 0) / 1e6:>8.1f} {ck.get('full', '')}")
last = rows[-1]["stateOperators"][0]
size = sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(sys.argv[3]) for f in fs)
rss = int(open(sys.argv[2]).read().split()[-1]) / 1024
print(f"peak RSS {rss:.0f} MB, state {last['memoryUsedBytes'] / 1e6:.0f} MB "
      f"({last['numRowsTotal']} groups), checkpoint folder {size / 1e6:.0f} MB")
PY
