#!/usr/bin/env bash
# `sluice gen` against a bare librdkafka producer sending pre-made records (issue 22,
# part 7), into fresh 2-partition topics, linger 5 ms, acks all. This machine is a
# shared VM (vmstat shows 2-20 % steal during a run), so one pair swings by +-20 %: a
# run is four legs in the order gen, bare, bare, gen (ABBA, which cancels a drift over
# the run), RECORDS each, and its ratio is gen's records/s over bare's, both summed
# over their two legs.
#   benchmarks/gen_vs_bare.sh [RUNS] [RECORDS]
# A warm-up pair (1 M records each, not reported) lets the broker's JIT settle first;
# topics are deleted only at the end, so log deletion does not load a measured run.
# Prints one line per run with both rates and their ratio (gen / bare).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
N=${2:-3000000}
BROKER=${BROKER:-127.0.0.1:9092}
ACKS=${ACKS:-all}
LINGER=${LINGER:-5}
T=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release
cargo build -q --release --bin sluice --example kafka_bare
KT="scripts/kafka-local.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server $BROKER"
secs() { grep -oE 'in [0-9.]+ s' | tr -dc '0-9.'; }
bare() {
  "$T/examples/kafka_bare" produce --broker "$BROKER" --topic "$1" --records "$N" \
    --linger-ms "$LINGER" --acks "$ACKS" | secs
}
gen() {
  "$T/sluice" gen --broker "$BROKER" --topic "$1" --target-rps 0 --max-records "$N" \
    --linger-ms "$LINGER" --acks "$ACKS" --additional-term crash --quiet 2>&1 | secs
}
topics=()
cleanup() { for t in "${topics[@]}"; do $KT --delete --topic "$t" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
M=$N; N=1000000; topics+=("genbare-$$-w-bare" "genbare-$$-w-gen")
bare "genbare-$$-w-bare" >/dev/null; gen "genbare-$$-w-gen" >/dev/null; N=$M
for i in $(seq 1 "$RUNS"); do
  t="genbare-$$-$i"; topics+=("$t-g1" "$t-b1" "$t-b2" "$t-g2")
  g1=$(gen "$t-g1"); b1=$(bare "$t-b1"); b2=$(bare "$t-b2"); g2=$(gen "$t-g2")
  python3 -c "
g, b = 2 * $N / ($g1 + $g2), 2 * $N / ($b1 + $b2)
print(f'run $i: gen {g/1e3:.0f} k rec/s ({$N/$g1/1e3:.0f}, {$N/$g2/1e3:.0f}), bare {b/1e3:.0f} k rec/s ({$N/$b1/1e3:.0f}, {$N/$b2/1e3:.0f}), ratio {g/b:.2f}')"
done
