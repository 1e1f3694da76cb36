#!/usr/bin/env python3
"""Nexmark on Sluice and on Flink, over the same Kafka topics, in one run.

  benchmarks/nexmark/run.sh                         # 5 M events, every query, both engines
  benchmarks/nexmark/run.sh --events 1000000 --queries "q0 q5 q9" --no-flink   # a quick look

Steps:
  1. `sluice gen --nexmark` fills three topics (person, auction, bid; 2 partitions) with
     N events of the nexmark crate's default generator (the same events every run);
  2. the ceiling: a bare librdkafka consumer (one client per partition) over the bid topic;
  3. each query of queries/nexmark on Sluice with --available-now into a blackhole sink
     (its nexmark tables swapped for the topics, the rest of the file unchanged), in the
     output mode its header names: events/s, batch p50/p99, output rows, peak RSS;
  4. the same query on Flink 2.2.1 (flink_job.py: Flink's query text over Kafka tables,
     JSON, bounded at the latest offsets, blackhole sink, parallelism 2): events/s and
     peak RSS of the whole process tree (Python + the JVM); for queries that emit a
     final table (append and windowed ones) a second Flink run into files counts its rows,
     to compare with the rows Sluice emitted;
  5. Sluice against the batch oracle: `cargo test --release --test nexmark` (every query
     over 200 k events with kills and restarts in the middle), one line per query.
Writes benchmarks/NEXMARK.md and benchmarks/nexmark.png (events/s per query, log scale).
Events/s counts the records of the topics a query reads (bids, or both inputs of a
join), by job time (Sluice: its batches' time; Flink: the job's net runtime) and by the
whole process's wall time, start-up included.
"""

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import BARE, ROOT, SLUICE, Measured, pct, run, say  # noqa: E402

HERE = Path(__file__).resolve().parent
QUERIES = "q0 q1 q2 q3 q4 q5 q7 q8 q9 q10 q11 q12 q13 q14 q15 q16 q17 q18 q19 q20 q21 q22".split()
# The output mode each query's header names; windowed queries close their last windows
# at the end of the input, as Flink does when a bounded source ends.
CHANGELOG = {"q4", "q9", "q18", "q19"}
UPDATE = {"q15", "q16", "q17"}
WINDOWED = {"q5", "q7", "q8", "q11", "q12"}
STATELESS = {"q0", "q1", "q2", "q10", "q13", "q14", "q21", "q22"}
# q12 windows by processing time: which window a bid lands in depends on the run.
NO_ROW_COUNT = CHANGELOG | UPDATE | {"q12"}
READS = {"q3": ("person", "auction"), "q8": ("person", "auction"),
         "q4": ("auction", "bid"), "q9": ("auction", "bid"), "q20": ("auction", "bid")}


def counts(events):
    """Records per stream among the first `events` events (1 person, 3 auctions, 46 bids per 50)."""
    person = events // 50 + min(events % 50, 1)
    bid = events // 50 * 46 + max(events % 50 - 4, 0)
    return {"person": person, "auction": events - person - bid, "bid": bid}


def sluice_sql(q, prefix, broker, dst):
    """queries/nexmark/Q.sql with each nexmark table read from its topic and the result
    going into a blackhole sink."""
    sql = (ROOT / f"queries/nexmark/{q}.sql").read_text()

    def to_kafka(m):
        rest = re.sub(r",\s*max_events = '\d+'", "", m.group(2))
        return f"WITH (connector = 'kafka', topic = '{prefix}-{m.group(1)}', bootstrap_servers = '{broker}'{rest});"

    sql = re.sub(r"WITH \(connector = 'nexmark', event_type = '(\w+)'([^;]*)\);", to_kafka, sql)
    sql = sql.replace("'queries/nexmark/", f"'{ROOT}/queries/nexmark/")
    sql = re.sub(r"CREATE TABLE nexmark_q10[^;]*;\s*", "", sql)
    sql = re.sub(r"INSERT INTO \w+\s*", "", sql)
    cut = sql.rstrip().rstrip(";").rfind(";") + 1  # the query follows the last CREATE
    head, body = sql[:cut] + "\n", sql[cut:].strip()
    dst.write_text(head + "CREATE TABLE sink WITH (connector = 'blackhole');\nINSERT INTO sink " + body)
    return dst


def sluice(q, qfile, work):
    mode = "changelog" if q in CHANGELOG else "update" if q in UPDATE else "append"
    progress = work / f"{q}.progress.jsonl"
    progress.unlink(missing_ok=True)  # Sluice appends to it: one run's records only
    cmd = [str(SLUICE), "run", str(qfile), "--available-now", "--output-mode", mode,
           "--status", "plain", "--progress-json", str(progress)]
    if q in WINDOWED:
        cmd.append("--close-windows-at-end")
    say(f"{q}: Sluice ({mode})")
    m = Measured(cmd, stdout=subprocess.DEVNULL)
    m.wait(timeout=3600)
    lines = [json.loads(l) for l in progress.read_text().splitlines() if l.strip()]
    batches = [l["durationMs"]["triggerExecution"] / 1000 for l in lines]
    return {"job": sum(batches), "wall": m.seconds, "rss": m.peak, "batches": batches,
            "rows": sum(l["numOutputRows"] for l in lines), "mode": mode}


def flink_cmd(q, args, jar, extra=()):
    return [str(args.flink_venv / "bin/python"), str(HERE / "flink_job.py"), q, "--prefix", args.prefix,
            "--broker", args.broker, "--jar", str(jar), "--parallelism", str(args.parallelism),
            "--side-input", str(ROOT / "queries/nexmark/side_input.csv"), *extra]


def flink(q, args, jar, work):
    say(f"{q}: Flink (parallelism {args.parallelism})")
    m = Measured(flink_cmd(q, args, jar), stdout=subprocess.PIPE)
    out = m.wait(timeout=7200)
    line = next(l for l in out.splitlines() if l.startswith("flink "))
    fields = dict(kv.split("=") for kv in line.split()[2:])
    res = {"job": float(fields["net_runtime_seconds"]), "wall": m.seconds, "rss": m.peak, "rows": None}
    if q not in NO_ROW_COUNT:
        into = work / f"flink-rows-{q}"
        shutil.rmtree(into, ignore_errors=True)
        say(f"{q}: Flink again into files, to count its rows")
        Measured(flink_cmd(q, args, jar, ["--count-into", str(into)]), stdout=subprocess.DEVNULL).wait(timeout=7200)
        res["rows"] = sum(sum(1 for _ in open(f)) for f in into.rglob("*") if f.is_file() and not f.name.startswith("."))
    return res


def oracle():
    """Runs the Kafka correctness suite; returns {query: 'passed' | 'FAILED'}."""
    say("oracle: cargo test --release --test nexmark")
    p = subprocess.run(["cargo", "test", "--release", "--test", "nexmark"], cwd=ROOT, text=True,
                       capture_output=True)
    found = {}
    for m in re.finditer(r"^test (q\d+)_\w+ \.\.\. (ok|FAILED)", p.stdout, re.M):
        found[m.group(1)] = "passed" if m.group(2) == "ok" else "FAILED"
    return found


def fmt_rate(x):
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def write_results(args, per_stream, ceiling, rows, verdicts, path):
    flink_on = any(r.get("flink") for r in rows)
    out = [f"# Nexmark: Sluice vs Flink\n",
           f"Measured {dt.date.today()} with `benchmarks/nexmark/run.sh --events {args.events}` on this machine "
           f"(2 cores, the Kafka broker on the same cores). {args.events:,} events "
           f"({per_stream['person']:,} people, {per_stream['auction']:,} auctions, {per_stream['bid']:,} bids) "
           f"in three topics of {args.partitions} partitions; Flink 2.2.1 at parallelism {args.parallelism}; "
           f"Sluice's figures are the median of {args.sluice_runs} runs by job time, Flink's one run. "
           "Events/s counts the records of the topics a query reads (bids; for q3 and q8 people + auctions; "
           "for q4, q9 and q20 auctions + bids). *job*: Sluice's batches' time, Flink's net runtime of the "
           "job; *process*: the whole process, start-up included. Peak RSS of the process tree "
           "(Flink: Python + JVM). One run on a shared, noisy machine: compare ratios.\n",
           f"Ceiling: a bare librdkafka consumer (one client per partition) reads the bid topic at "
           f"**{fmt_rate(ceiling)} records/s**.\n",
           "![events/s per query](nexmark.png)\n",
           "| query | mode | Sluice job ev/s | process ev/s | batch p50 s | p99 s | peak RSS MB | "
           + ("Flink job ev/s | process ev/s | peak RSS MB | Sluice / Flink (job) | RSS ratio | " if flink_on else "")
           + "vs ceiling | rows Sluice | " + ("rows Flink | " if flink_on else "") + "oracle |",
           "|---|---|" + "---:|" * (5 + (5 if flink_on else 0) + 2 + (1 if flink_on else 0)) + "---|"]
    for r in rows:
        s, f, n = r["sluice"], r.get("flink"), r["records"]
        cells = [r["q"], s["mode"] + (" + close" if r["q"] in WINDOWED else ""), fmt_rate(n / s["job"]),
                 fmt_rate(n / s["wall"]), f"{pct(s['batches'], 50):.3f}", f"{pct(s['batches'], 99):.3f}",
                 f"{s['rss'] / 1e6:.0f}"]
        if flink_on:
            cells += ([fmt_rate(n / f["job"]), fmt_rate(n / f["wall"]), f"{f['rss'] / 1e6:.0f}",
                       f"{f['job'] / s['job']:.1f}×", f"{s['rss'] / f['rss']:.2f}"] if f else ["—"] * 5)
        cells += [f"{n / s['wall'] / ceiling:.2f}" if r["q"] in STATELESS else "", f"{s['rows']:,}"]
        if flink_on:
            fr = f and f["rows"]
            cells.append("" if fr is None else f"{fr:,}" + (" ✓" if fr == s["rows"] else " ✗"))
        cells.append(verdicts.get(r["q"], "not run"))
        out.append("| " + " | ".join(cells) + " |")
    out.append("\n*vs ceiling*: Sluice's process events/s over the bare consumer's (both by the whole "
               "process's wall time, start-up included), for the stateless queries. *rows*: rows each engine emitted (Sluice: into its blackhole sink; Flink: a second "
               "run into files), for the queries whose output is a final table; updating queries emit "
               "changes whose number depends on the batching, and q12's windows depend on the wall clock. "
               "*oracle*: `cargo test --release --test nexmark` — Sluice over 200 k events from the same "
               "topics with kills and restarts in the middle, compared with batch DataFusion over the "
               "generator's own events.\n")
    notes = HERE / "notes.md"  # what the figures do not say: profiles, before/after
    if notes.exists():
        out.append(notes.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def plot(rows, ceiling, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = [r["q"] for r in rows]
    xs = range(len(qs))
    fig, ax = plt.subplots(figsize=(max(8, len(qs) * 0.55), 4.5))
    ax.bar([x - 0.2 for x in xs], [r["records"] / r["sluice"]["job"] for r in rows], 0.4, label="Sluice")
    if any(r.get("flink") for r in rows):
        ax.bar([x + 0.2 for x in xs], [r["records"] / r["flink"]["job"] if r.get("flink") else 0 for r in rows],
               0.4, label="Flink 2.2.1 (parallelism 2)")
    ax.axhline(ceiling, color="grey", linestyle="--", linewidth=1, label="bare consumer, bid topic")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), qs)
    ax.set_ylabel("events/s (job time)")
    ax.set_title("Nexmark over Kafka, 2 cores")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ensure_flink(args):
    jar = args.flink_jars / "flink-sql-connector-kafka-5.0.0-2.2.jar"
    if not jar.exists():
        say("fetching flink-sql-connector-kafka 5.0.0-2.2 from Maven Central (first time only)")
        run(["mvn", "-q", "-B", "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
             "-Dartifact=org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2",
             f"-DoutputDirectory={args.flink_jars}"])
    return jar


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--queries", default=" ".join(QUERIES))
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--sluice-runs", type=int, default=3, help="Sluice runs per query (the median by job time counts)")
    ap.add_argument("--no-flink", action="store_true")
    ap.add_argument("--no-oracle", action="store_true", help="skip the correctness suite")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks/NEXMARK.md")
    ap.add_argument("--flink-venv", type=Path, default=Path.home() / ".cache/sluice-flink-venv")
    ap.add_argument("--flink-jars", type=Path, default=Path.home() / ".cache/sluice-flink-jars")
    args = ap.parse_args()
    args.broker = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
    args.prefix = f"nexbench-{args.events}-{os.getpid()}"
    queries = args.queries.split()
    if not args.no_build:
        say("release build")
        run(["cargo", "build", "--release", "--all-targets"], cwd=ROOT)
    run(["bash", str(ROOT / "scripts/kafka-local.sh"), "start"])
    jar = None if args.no_flink else ensure_flink(args)

    say(f"loading {args.events:,} events into {args.prefix}-person/auction/bid")
    run([str(SLUICE), "gen", "--nexmark", "--nexmark-prefix", args.prefix, "--broker", args.broker,
         "--partitions", str(args.partitions), "--target-rps", "0", "--max-records", str(args.events), "--quiet"])
    per_stream = counts(args.events)
    say("ceiling: bare consumer over the bid topic")
    bare = Measured([str(BARE), "consume", "--broker", args.broker, "--topic", f"{args.prefix}-bid"],
                    stdout=subprocess.DEVNULL)
    bare.wait(timeout=3600)
    ceiling = per_stream["bid"] / bare.seconds

    work = Path(tempfile.mkdtemp(prefix="nexbench-"))
    rows = []
    try:
        for q in queries:
            records = sum(per_stream[t] for t in READS.get(q, ("bid",)))
            qfile = sluice_sql(q, args.prefix, args.broker, work / f"{q}.sql")
            runs = sorted((sluice(q, qfile, work) for _ in range(args.sluice_runs)), key=lambda s: s["job"])
            r = {"q": q, "records": records, "sluice": runs[len(runs) // 2]}
            if jar:
                r["flink"] = flink(q, args, jar, work)
            rows.append(r)
            s = r["sluice"]
            f = r.get("flink")
            say(f"{q}: Sluice {fmt_rate(records / s['job'])} ev/s, {s['rss'] / 1e6:.0f} MB"
                + (f"; Flink {fmt_rate(records / f['job'])} ev/s, {f['rss'] / 1e6:.0f} MB" if f else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verdicts = {} if args.no_oracle else oracle()
    write_results(args, per_stream, ceiling, rows, verdicts, args.results)
    plot(rows, ceiling, args.results.with_name("nexmark.png"))
    print(args.results.read_text())


if __name__ == "__main__":
    main()
