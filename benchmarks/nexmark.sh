#!/usr/bin/env bash
# Nexmark from Kafka: `sluice gen --nexmark` fills three topics, then in the same run
# the bare consumer (one librdkafka client per partition, the ceiling) reads the bid
# topic, and Sluice runs queries/nexmark q0, q1, q2, q13, q18 (dedup), q19 (top-N) and
# the joins q3 (auction ⋈ person), q20 (bid ⋈ auction), q4 and q9 (aggregate / top-1
# over bid ⋈ auction), and the windowed joins q5 (hot items), q7 (highest bid) and q8
# (new users: person ⋈ auction per window) over the topics (each nexmark table's WITH clause swapped for its
# topic, results into a blackhole sink; updating results in changelog mode). Prints
# records/s for each (by the process's wall time, start-up included, and by its job
# time: the batches' own time, summed from its progress records) and the ratio to the
# ceiling and to q0, and peak RSS.
#
#   benchmarks/nexmark.sh [--events N] [--partitions N] [--runs N] [--queries "q0 q3 …"]
# Needs the local broker (scripts/kafka-local.sh start) and a release build with the
# kafka_bare example (cargo build --release --all-targets).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
events=10000000 partitions=2 runs=2 queries="q0 q1 q2 q13 q18 q19 q3 q20 q4 q9 q5 q7 q8"
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --queries) queries="$2"; shift 2 ;;
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
people=$(python3 -c "n=$events; print(n // 50 + min(n % 50, 1))")
auctions=$((events - bids - people))
queries="q0 $(printf '%s\n' $queries | grep -vx q0 | tr '\n' ' ')" # q0 first: the ratios' base
for q in $queries; do
  python3 - "$repo/queries/nexmark/$q.sql" "$dir/$q.sql" "$prefix" "$broker" "$repo" <<'PY'
import re, sys
src, dst, prefix, broker, repo = sys.argv[1:]
sql = open(src).read()
# The nexmark source becomes its topic; the other options (event time, delay) stay.
def to_kafka(m):
    rest = re.sub(r",\s*max_events = '\d+'", "", m.group(2))
    return f"WITH (connector = 'kafka', topic = '{prefix}-{m.group(1)}', bootstrap_servers = '{broker}'{rest});"
sql = re.sub(r"WITH \(connector = 'nexmark', event_type = '(\w+)'([^;]*)\);", to_kafka, sql)
sql = sql.replace("'queries/nexmark/", f"'{repo}/queries/nexmark/")
sql = re.sub(r"CREATE TABLE nexmark_q10[^;]*;\s*", "", sql)
sql = re.sub(r"INSERT INTO \w+\s*", "", sql)
# The query is what follows the last statement before it (the CREATE TABLEs).
cut = sql.rstrip().rstrip(";").rfind(";") + 1
head, body = sql[:cut] + "\n", sql[cut:].strip()
open(dst, "w").write(head + "CREATE TABLE sink WITH (connector = 'blackhole');\nINSERT INTO sink " + body)
PY
done
printf '%-6s %-4s %-12s %-12s %-10s %-12s %-10s %s\n' "what" "run" "records/s" "vs ceiling" "vs q0" "job rec/s" "job vs q0" "peak RSS MB"
for r in $(seq 1 "$runs"); do
  # The ceiling by the same measure as Sluice: records / wall time of the process.
  /usr/bin/time -f "%e" -o "$dir/bare-time" "$target/examples/kafka_bare" consume \
    --broker "$broker" --topic "$prefix-bid" >/dev/null
  ceiling=$(python3 -c "print($bids / $(cat "$dir/bare-time"))")
  printf '%-6s %-4s %-12.0f %-12s %-10s %-12s %-10s %s\n' "bare" "$r" "$ceiling" "1.00" "" "" "" ""
  q0="" q0job=""
  for q in $queries; do
    # Dedup, top-N and aggregates over joins are updating results: their changes go to
    # the sink. Joins read two topics: their rate counts the records of both.
    mode=append
    case "$q" in q18|q19|q4|q9) mode=changelog ;; esac
    read_records=$bids
    case "$q" in q3|q8) read_records=$((people + auctions)) ;; q20|q4|q9) read_records=$((bids + auctions)) ;; esac
    rm -f "$dir/progress.jsonl"
    /usr/bin/time -f "%e %M" -o "$dir/time" "$target/sluice" run "$dir/$q.sql" --available-now \
      --output-mode "$mode" --status plain --progress-json "$dir/progress.jsonl" 2>"$dir/err" >/dev/null \
      || { cat "$dir/err"; exit 1; }
    read -r wall rss <"$dir/time"
    job=$(python3 -c "import json,sys; print(sum(json.loads(l)['durationMs']['triggerExecution'] for l in open(sys.argv[1])) / 1000)" "$dir/progress.jsonl")
    rate=$(python3 -c "print($read_records / $wall)")
    jobrate=$(python3 -c "print($read_records / max($job, 0.001))")
    [ "$q" = q0 ] && q0="$rate" q0job="$jobrate"
    printf '%-6s %-4s %-12.0f %-12.2f %-10.2f %-12.0f %-10.2f %s\n' "$q" "$r" "$rate" \
      "$(python3 -c "print($rate / $ceiling)")" "$(python3 -c "print($rate / $q0)")" \
      "$jobrate" "$(python3 -c "print($jobrate / $q0job)")" "$((rss / 1024))"
  done
done
echo "($bids bids, $auctions auctions, $people people of $events Nexmark events, topics $prefix-*, $partitions partitions; records/s = records read (bids; for q3 and q8 people + auctions; for q20, q4, q9 bids + auctions) / wall time of the process, start-up included, for the bare consumer over the bid topic too; job rec/s: / the batches' time, start-up and shut-down excluded)"
