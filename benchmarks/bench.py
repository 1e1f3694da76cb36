#!/usr/bin/env python3
"""Sluice's benchmark harness: Sluice vs a bare Kafka consumer (the ceiling) vs Spark.

  python3 benchmarks/bench.py                      # 10 M records, everything
  python3 benchmarks/bench.py --records 1000000 --no-spark --steady-seconds 0   # quick

Steps (each prints a progress line while it runs):
  1. release build; local Kafka broker (scripts/kafka-local.sh)
  2. pre-load a topic with N seed records (`sluice gen`), reused when it already exists
  3. the Kafka ceiling: bare librdkafka consumer, one client per partition
  4. Query 1 and Query 2 with --available-now: records/s, batch p50/p99/max, peak RSS
  5. the same on Spark Structured Streaming (local[2]) and a check that results agree
  6. engine alone: both queries over JSON-lines files, Sluice and Spark
  7. steady state: `sluice gen` at a fixed rate into Kafka with a 1 s trigger, and the
     built-in generator source at 2 M rec/s; keeps up?, latency, delay, RSS over time
Figures are printed and written to benchmarks/RESULTS.md (and a PNG plot). A benchmark
is not a test: CI runs this only at a tiny size to prove it works.
"""

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sluice-target"))
SLUICE = TARGET / "release/sluice"
BARE = TARGET / "release/examples/kafka_bare"
VENV = Path.home() / ".cache/sluice-bench-venv"
SPARK_JARS = Path.home() / ".cache/sluice-spark-jars"
WORK = Path.home() / ".cache/sluice-bench"


def say(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


class Measured:
    """A child process with its whole tree's RSS sampled every 50 ms and stderr lines
    timestamped as they arrive."""

    def __init__(self, cmd, env=None, stdout=subprocess.PIPE):
        import psutil

        self.started = time.time()
        self.proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
        self.peak = 0
        self.rss = []  # (t, bytes)
        self.lines = []  # (t, line)
        self._ps = psutil.Process(self.proc.pid)
        self._t1 = threading.Thread(target=self._sample, daemon=True)
        self._t2 = threading.Thread(target=self._read, daemon=True)
        self._t1.start()
        self._t2.start()

    def _sample(self):
        import psutil

        # Never reap the child here (Popen.poll would): wait() reads its rusage.
        while True:
            try:
                if self._ps.status() == psutil.STATUS_ZOMBIE:
                    break
                total = self._ps.memory_info().rss
                children = self._ps.children(recursive=True)
            except psutil.Error:
                break
            for c in children:  # a child may end between listing and reading
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.rss.append((time.time() - self.started, total))
            time.sleep(0.05)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append((time.time() - self.started, line.rstrip("\n")))

    def wait(self, timeout=None):
        out = self.proc.stdout.read() if self.proc.stdout else ""
        # wait4 gives the child's exact peak RSS (sampling can miss a short run); the
        # sampled tree total still counts grandchildren such as Spark's JVM.
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.peak = max(self.peak, usage.ru_maxrss * 1024)
        except ChildProcessError:
            self.proc.wait(timeout=timeout)
        self._t2.join(timeout=5)
        self.seconds = time.time() - self.started
        if self.proc.returncode != 0:
            tail = "\n".join(l for _, l in self.lines[-20:])
            raise RuntimeError(f"{self.proc.args[0]} exited {self.proc.returncode}:\n{tail}")
        return out


BATCH_RE = re.compile(r"^\[sluice\] batch (\d+): (\d+) input rows, .*?, ([0-9.]+) s, ")


def batch_stats(lines):
    durs = [float(m.group(3)) for _, l in lines if (m := BATCH_RE.match(l))]
    return durs


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def query_file(name, topic, broker):
    """The shipped query with its topic and broker pointed at the benchmark's."""
    text = (ROOT / "queries" / name).read_text()
    text = text.replace("topic = 'logs'", f"topic = '{topic}'").replace("'localhost:9092'", f"'{broker}'")
    path = WORK / f"{topic}-{name}"
    path.write_text(text)
    return path


def parse_console(stdout):
    batches = []
    for line in stdout.splitlines():
        if line.startswith("Batch: "):
            batches.append([])
        elif line.startswith("|") and batches is not None and batches:
            batches[-1].append([c.rstrip() for c in line.strip("|").split("|")])
    return [b[1:] for b in batches]  # drop header rows


def sluice_query(qfile, extra, label):
    say(f"{label}: running")
    m = Measured([str(SLUICE), "run", str(qfile), "--available-now", "--num-rows", "0", *extra])
    out = m.wait()
    durs = batch_stats(m.lines)
    rows = sum(int(mm.group(2)) for _, l in m.lines if (mm := BATCH_RE.match(l)))
    batches = parse_console(out)
    return {"seconds": m.seconds, "records": rows, "batches": durs, "peak_rss": m.peak, "output": batches}


def warm_page_cache(data):
    """Reads every file under `data` once, so the file runs measure the engine, not the disk."""
    for f in sorted(Path(data).iterdir()):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def median_run(measure, times=3):
    """Runs `measure` `times` times; returns the median run (by wall time) with all runs under 'runs'."""
    runs = [measure() for _ in range(times)]
    median = sorted(runs, key=lambda r: r["seconds"])[times // 2]
    return {**median, "runs": runs}


def spark_env():
    jars = [
        SPARK_JARS / "spark-sql-kafka-0-10_2.13-4.0.0.jar",
        SPARK_JARS / "spark-token-provider-kafka-0-10_2.13-4.0.0.jar",
        SPARK_JARS / "kafka-clients-3.9.0.jar",
        SPARK_JARS / "commons-pool2-2.12.0.jar",
    ]
    env = dict(os.environ)
    env["PYSPARK_SUBMIT_ARGS"] = f"--jars {','.join(str(j) for j in jars)} pyspark-shell"
    env["PYSPARK_PYTHON"] = str(VENV / "bin/python")
    return env


def ensure_spark():
    if not (VENV / "bin/python").exists():
        say("installing pyspark 4.0.1, psutil, matplotlib into a venv (first time only)")
        run([sys.executable, "-m", "venv", str(VENV)])
    run([str(VENV / "bin/pip"), "install", "-q", "pyspark==4.0.1", "psutil", "matplotlib"])
    if not (SPARK_JARS / "spark-sql-kafka-0-10_2.13-4.0.0.jar").exists():
        say("fetching the Spark Kafka connector from Maven Central (first time only)")
        run(["mvn", "-q", "-B", "-f", str(ROOT / "benchmarks/spark/pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={SPARK_JARS}", "-DincludeScope=runtime"])


def spark_query(query, label, **src):
    say(f"{label}: running on Spark (local[2])")
    ckpt = WORK / f"spark-ckpt-{query}-{time.time_ns()}"
    cmd = [str(VENV / "bin/python"), str(ROOT / "benchmarks/spark_job.py"), "--query", query, "--checkpoint", str(ckpt)]
    for k, v in src.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    m = Measured(cmd, env=spark_env())
    out = m.wait(timeout=3600)
    shutil.rmtree(ckpt, ignore_errors=True)
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss"] = m.peak
    res["batches"] = [d / 1000 for d in res["batches"]]
    return res


def q1_result_sluice(r):
    last = r["output"][-1] if r["output"] else []
    return {row[0]: int(row[1]) for row in last}


def q2_result_sluice(r):
    out = set()
    for b in r["output"]:
        for row in b:
            start = row[0].strip("{}").split(", ")[0]
            out.add((start, row[1], int(row[2])))
    return out


def row(label, r, n):
    return {
        "label": label,
        "rate": n / r["seconds"],
        "seconds": r["seconds"],
        "p50": pct(r["batches"], 50),
        "p99": pct(r["batches"], 99),
        "max": max(r["batches"]) if r["batches"] else float("nan"),
        "batches": len(r["batches"]),
        "rss_mb": r["peak_rss"] / 1e6,
    }


def fmt_table(rows):
    head = "| run | records/s | wall s | batches | batch p50 s | p99 s | max s | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    return head + "".join(
        f"| {r['label']} | {r['rate']:,.0f} | {r['seconds']:.2f} | {r['batches']} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | {r['rss_mb']:.0f} |\n"
        for r in rows
    )


def steady(label, qfile, extra, seconds, producer=None):
    """Runs Sluice with a 1 s trigger for `seconds` while `producer` (if any) writes."""
    say(f"{label}: {seconds} s with a 1 s trigger")
    prod = subprocess.Popen(producer, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) if producer else None
    m = Measured([str(SLUICE), "run", str(qfile), "--trigger", "1s", "--num-rows", "1", *extra], stdout=subprocess.DEVNULL)
    time.sleep(seconds)
    m.proc.send_signal(signal.SIGINT)
    m.wait(timeout=60)
    produced = None
    if prod:
        prod.send_signal(signal.SIGINT)
        _, err = prod.communicate(timeout=60)
        mm = re.search(r"done: (\d+) records .*\(([0-9.]+) rec/s\)", err)
        produced = (int(mm.group(1)), float(mm.group(2))) if mm else None
    batches = []
    for t, line in m.lines:
        b = BATCH_RE.match(line)
        if b:
            batches.append((t, int(b.group(2)), float(b.group(3)), line))
    processed = sum(b[1] for b in batches)
    # Rate over the batches after the first (start-up), between their progress lines.
    later = batches[1:]
    span = (later[-1][0] - batches[0][0]) if len(later) >= 1 else 0
    steady_rate = sum(b[1] for b in later) / span if span > 0 else float("nan")
    # End-to-end delay of a windowed query: time of the batch's line minus the newest
    # event time it had seen (watermark + delay).
    delays = []
    for t, _, _, line in batches:
        w = re.search(r"watermark (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})", line)
        if w:
            wm = dt.datetime.strptime(w.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.timezone.utc).timestamp()
            delays.append(m.started + t - (wm + 30))
    durs = [b[2] for b in batches[1:]]
    return {
        "label": label,
        "seconds": seconds,
        "produced": produced,
        "processed": processed,
        "rate": steady_rate,
        "p50": pct(durs, 50),
        "p99": pct(durs, 99),
        "delay_p50": pct(delays, 50),
        "delay_max": max(delays) if delays else float("nan"),
        "rss_mb": m.peak / 1e6,
        "rss": m.rss,
        "batch_rates": [(b[0], b[1]) for b in batches],
    }


def plot(steadies, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib missing: no plot")
        return False
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for s in steadies:
        axes[0].plot([t for t, _ in s["batch_rates"]], [n for _, n in s["batch_rates"]], label=s["label"])
        axes[1].plot([t for t, _ in s["rss"]], [r / 1e6 for _, r in s["rss"]], label=s["label"])
    axes[0].set_ylabel("records per 1 s batch")
    axes[1].set_ylabel("RSS MB")
    axes[1].set_xlabel("seconds")
    axes[0].legend()
    axes[0].set_title("Sluice steady state (1 s trigger)")
    fig.tight_layout()
    fig.savefig(path)
    return True


# Sections from this line on belong to other scripts (burst_soak.py): kept on a rewrite.
KEPT = "<!-- sections below are written from other scripts' runs; bench.py keeps them -->"


def kept_sections(path):
    """The part of an existing RESULTS.md from the KEPT marker on, or nothing."""
    try:
        old = path.read_text()
    except OSError:
        return ""
    at = old.find(KEPT)
    return "\n" + old[at:] if at >= 0 else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1_000_000, help="max records per batch (Sluice and Spark)")
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--steady-seconds", type=int, default=30)
    ap.add_argument("--steady-rate", type=int, default=400_000)
    ap.add_argument("--results", default=str(ROOT / "benchmarks/RESULTS.md"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    broker = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
    n, parts = args.records, args.partitions

    if not args.no_build:
        say("building (release)")
        run(["cargo", "build", "--release", "--all-targets"], cwd=ROOT)
    if not args.no_spark:
        ensure_spark()
    say("starting the local Kafka broker")
    run(["bash", str(ROOT / "scripts/kafka-local.sh"), "start"])

    # Event time advances 100 k records per second from a fixed start, so N records span
    # N / 100 k seconds and Query 2's 10 s windows close behind the 30 s watermark.
    event = ["--start-time-ms", "1768402330000", "--event-rate", "100000"]
    topic = f"bench-{n}-{parts}-ev"
    have = subprocess.run([str(BARE), "consume", "--broker", broker, "--topic", topic], capture_output=True, text=True)
    if have.returncode != 0 or f"bare-consume: {n} records" not in have.stdout:
        say(f"pre-loading topic {topic} with {n:,} records")
        run([str(SLUICE), "gen", "--broker", broker, "--topic", topic, "--partitions", str(parts), "--target-rps", "0",
             "--max-records", str(n), "--seed", "1", "--additional-term", "crash", "--additional-term-rate", "100", *event, "--quiet"])
    say("Kafka ceiling: bare consumer, one client per partition")
    bare = run([str(BARE), "consume", "--broker", broker, "--topic", topic]).stdout
    ceiling = float(re.search(r"\(([0-9.]+) rec/s\)", bare).group(1))

    batch = ["--max-records-per-batch", str(args.batch)]
    q1 = sluice_query(query_file("vulnerabilities_by_ip.sql", topic, broker), batch, "Sluice Query 1 (Kafka)")
    q2 = sluice_query(query_file("crash_alerts.sql", topic, broker), batch, "Sluice Query 2 (Kafka)")
    rows = [row("Sluice Query 1, Kafka", q1, n), row("Sluice Query 2, Kafka", q2, n)]
    notes = [f"Kafka ceiling (bare consumer, one client per partition, same topic): {ceiling:,.0f} rec/s",
             f"Sluice / ceiling: Query 1 {rows[0]['rate'] / ceiling:.2f}, Query 2 {rows[1]['rate'] / ceiling:.2f}"]

    data = WORK / f"files-{n}-ev"
    if not (data / ".complete").exists():
        say(f"writing {n:,} records as JSON-lines files")
        shutil.rmtree(data, ignore_errors=True)
        run([str(SLUICE), "gen", "--output", str(data), "--target-rps", "0", "--max-records", str(n), "--seed", "1",
             "--additional-term", "crash", "--additional-term-rate", "100", "--records-per-file", "1000000", *event, "--quiet"])
        (data / ".complete").write_text("")
    fsrc = ["--source", f"file:{data}", *batch]
    # "Engine alone" means records in the page cache: read the files once first. Each
    # query runs three times and the median run is reported (a run is ~1 s, so one
    # hiccup of the shared machine would otherwise decide the figure).
    warm_page_cache(data)
    f1 = median_run(lambda: sluice_query(ROOT / "queries/vulnerabilities_by_ip.sql", fsrc, "Sluice Query 1 (files)"))
    f2 = median_run(lambda: sluice_query(ROOT / "queries/crash_alerts.sql", fsrc, "Sluice Query 2 (files)"))
    rows += [row("Sluice Query 1, files", f1, n), row("Sluice Query 2, files", f2, n)]
    def rates(f):
        return ", ".join(f"{n / r['seconds'] / 1e6:.1f} M" for r in f["runs"])
    notes.append("files: page cache warmed first; Sluice figures are the median of 3 runs "
                 f"(Query 1: {rates(f1)} rec/s; Query 2: {rates(f2)} rec/s)")

    if not args.no_spark:
        s1 = spark_query("q1", "Spark Query 1 (Kafka)", bootstrap=broker, topic=topic, max_per_trigger=args.batch)
        s2 = spark_query("q2", "Spark Query 2 (Kafka)", bootstrap=broker, topic=topic, max_per_trigger=args.batch)
        rows += [row("Spark Query 1, Kafka", s1, n), row("Spark Query 2, Kafka", s2, n)]
        agree1 = q1_result_sluice(q1) == {ip: c for ip, c in s1["result"]}
        agree2 = q2_result_sluice(q2) == {(s, u, c) for s, _, u, c in s2["result"]}
        notes.append(f"Sluice / Spark (Kafka): Query 1 {rows[0]['rate'] / rows[4]['rate']:.1f}x, Query 2 {rows[1]['rate'] / rows[5]['rate']:.1f}x")
        notes.append(f"results agree with Spark: Query 1 {agree1} ({len(s1['result'])} groups), Query 2 {agree2} "
                     f"({len(s2['result'])} Spark rows, {len(q2_result_sluice(q2))} Sluice rows)")
        sf1 = spark_query("q1", "Spark Query 1 (files)", path=data)
        sf2 = spark_query("q2", "Spark Query 2 (files)", path=data)
        rows += [row("Spark Query 1, files", sf1, n), row("Spark Query 2, files", sf2, n)]

    steadies = []
    if args.steady_seconds > 0:
        stopic = f"steady-{time.time_ns()}"
        run([str(SLUICE), "gen", "--broker", broker, "--topic", stopic, "--partitions", str(parts), "--max-records", "1", "--quiet"])
        producer = [str(SLUICE), "gen", "--broker", broker, "--topic", stopic, "--target-rps", str(args.steady_rate),
                    "--additional-term", "crash", "--quiet"]
        steadies.append(steady(f"Kafka at {args.steady_rate:,} rec/s, Query 2", query_file("crash_alerts.sql", stopic, broker),
                               ["--starting-offsets", "latest"], args.steady_seconds, producer))
        gen_q = WORK / "steady-gen.sql"
        gen_q.write_text((ROOT / "queries/crash_alerts.sql").read_text().replace(
            "connector = 'kafka',", "connector = 'generator', rate = '2000000', partitions = '2',").replace(
            "    topic = 'logs',\n    bootstrap_servers = 'localhost:9092',\n    starting_offsets = 'earliest',\n", ""))
        steadies.append(steady("generator source at 2,000,000 rec/s, Query 2", gen_q, [], args.steady_seconds))

    # Report.
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cmd = "python3 benchmarks/bench.py " + " ".join(sys.argv[1:])
    text = [f"# Benchmark results\n\n{now}; machine: {os.cpu_count()} cores, {mem:.0f} GiB; broker on the same machine; "
            f"{n:,} records in {parts} partitions; batches of at most {args.batch:,} records.\n\nCommand: `{cmd}`\n\n",
            fmt_table(rows), "\n", "".join(f"- {x}\n" for x in notes)]
    if steadies:
        text.append("\n## Steady state\n\n| run | s | produced rec/s | processed | keeps up | processed rec/s | batch p50 s | p99 s | delay p50 s | delay max s | peak RSS MB |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
        for s in steadies:
            target = s["produced"][1] if s["produced"] else None
            keeps = "yes" if target is None or s["rate"] >= 0.95 * target else "no"
            shown = f"{target:,.0f}" if target else "-"
            text.append(f"| {s['label']} | {s['seconds']} | {shown} | {s['processed']:,} | {keeps} | {s['rate']:,.0f} | "
                        f"{s['p50']:.3f} | {s['p99']:.3f} | {s['delay_p50']:.2f} | {s['delay_max']:.2f} | {s['rss_mb']:.0f} |\n")
        png = Path(args.results).with_name("steady.png")
        if plot(steadies, png):
            text.append(f"\n![steady state]({png.name})\n")
        text.append("\nBatch latency and rates leave out the first batch (start-up). Delay: wall time of a batch's progress line minus the newest event time it had seen "
                    "(watermark + 30 s); it includes up to one trigger interval of waiting.\n")
    report = "".join(text)
    print(report)
    Path(args.results).write_text(report + kept_sections(Path(args.results)))
    say(f"wrote {args.results}")


if __name__ == "__main__":
    main()
