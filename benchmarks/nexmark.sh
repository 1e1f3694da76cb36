#!/usr/bin/env bash
# Nexmark from Kafka: `sluice gen --nexmark` fills three topics, then in the same run
# the bare consumer (one librdkafka client per partition, the ceiling) reads the bid
# topic, and Sluice runs queries/nexmark q0, q1, q2, q13, q18 (dedup) and q19 (top-N)
# over it (the bid table's WITH clause swapped for the topic, results into a blackhole
# sink; q18 and q19 in changelog mode). Prints bids/s for each and the ratio to the
# ceiling and to q0, and peak RSS.
#
#   benchmarks/nexmark.sh [--events N] [--partitions N] [--runs N]
# Needs the local broker (scripts/kafka-local.sh start) and a release build with the
# kafka_bare example (cargo build --release --all-targets).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
events=10000000 partitions=2 runs=2
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
target="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release"
broker="127.0.0.1:${KAFKA_PORT:-9092}"
bash "$repo/scripts/kafka-local.sh" start >/dev/null
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
prefix="bench-nexmark-$$"
"$target/sluice" gen --nexmark --nexmark-prefix "$prefix" --broker "$broker" --partitions "$partitions" \
  --target-rps 0 --max-records "$events" --quiet
bids=$(python3 -c "n=$events; print(n // 50 * 46 + max(n % 50 - 4, 0))")
for q in q0 q1 q2 q13 q18 q19; do
  python3 - "$repo/queries/nexmark/$q.sql" "$dir/$q.sql" "$prefix-bid" "$broker" "$repo" <<'PY'
import re, sys
src, dst, topic, broker, repo = sys.argv[1:]
sql = open(src).read()
sql = re.sub(r"WITH \(connector = 'nexmark'[^;]*\);",
             f"WITH (connector = 'kafka', topic = '{topic}', bootstrap_servers = '{broker}');", sql)
sql = sql.replace("'queries/nexmark/", f"'{repo}/queries/nexmark/")
sql = re.sub(r"CREATE TABLE nexmark_q10[^;]*;\s*", "", sql)
sql = re.sub(r"INSERT INTO \w+\s*", "", sql)
# The query is what follows the last statement before it (the CREATE TABLEs).
cut = sql.rstrip().rstrip(";").rfind(";") + 1
head, body = sql[:cut] + "\n", sql[cut:].strip()
open(dst, "w").write(head + "CREATE TABLE sink WITH (connector = 'blackhole');\nINSERT INTO sink " + body)
PY
done
printf '%-6s %-4s %-14s %-12s %-10s %s\n' "what" "run" "bids/s" "vs ceiling" "vs q0" "peak RSS MB"
for r in $(seq 1 "$runs"); do
  # The ceiling by the same measure as Sluice: records / wall time of the process.
  /usr/bin/time -f "%e" -o "$dir/bare-time" "$target/examples/kafka_bare" consume \
    --broker "$broker" --topic "$prefix-bid" >/dev/null
  ceiling=$(python3 -c "print($bids / $(cat "$dir/bare-time"))")
  printf '%-6s %-4s %-14.0f %-12s %-10s %s\n' "bare" "$r" "$ceiling" "1.00" "" ""
  q0=""
  for q in q0 q1 q2 q13 q18 q19; do
    # Dedup and top-N are updating results: their changes go to the sink.
    mode=append
    case "$q" in q18|q19) mode=changelog ;; esac
    /usr/bin/time -f "%e %M" -o "$dir/time" "$target/sluice" run "$dir/$q.sql" --available-now \
      --output-mode "$mode" --status plain 2>"$dir/err" >/dev/null || { cat "$dir/err"; exit 1; }
    read -r wall rss <"$dir/time"
    rate=$(python3 -c "print($bids / $wall)")
    [ "$q" = q0 ] && q0="$rate"
    printf '%-6s %-4s %-14.0f %-12.2f %-10.2f %s\n' "$q" "$r" "$rate" \
      "$(python3 -c "print($rate / $ceiling)")" "$(python3 -c "print($rate / $q0)")" "$((rss / 1024))"
  done
done
echo "($bids bids of $events Nexmark events, topic $prefix-bid, $partitions partitions; bids/s = bids / wall time of the process, start-up included, for the bare consumer too)"
