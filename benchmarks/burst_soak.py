"""Bursts and long runs (issue 22, part 5): does Sluice catch up after a burst with its
memory bounded, and do its memory, state and batch time stay flat over a long run?

Query 2 (queries/crash_alerts.sql: a windowed aggregate with a 30 s watermark) reads a
fresh 2-partition Kafka topic from its latest offsets with a 1 s trigger, a local
checkpoint, `--progress-json` and `--http` (the dashboard's endpoint, whose
`sluice_lag_records` is sampled every second). `sluice gen` writes at --rate
records/s throughout, "crash" in 1 record of 100.

  burst: after --before seconds a second `sluice gen` adds (--factor - 1) x --rate for
         --burst-seconds, then --after seconds more at the steady rate. Prints the rate
         the burst reached, the peak lag and RSS, the largest batch and how long the lag
         took to come back, and plots them (burst.png). With --pause-sluice, Sluice is
         stopped (SIGSTOP) for the burst, so the whole burst waits as a backlog, as after
         an outage: its catch-up is then bounded by the per-batch limits alone.
  soak:  --minutes at the steady rate. The topic keeps at most ~2 GB per partition
         (retention.bytes), so a long run does not fill the disk. Prints the ranges of
         RSS, state rows and batch time, and the RSS slope over the second half
         (soak.png).

  ~/.cache/sluice-bench-venv/bin/python benchmarks/burst_soak.py burst
  ~/.cache/sluice-bench-venv/bin/python benchmarks/burst_soak.py soak --minutes 30
  python3 benchmarks/burst_soak.py burst --before 10 --after 20   # a quick look

Needs a release build (CARGO_TARGET_DIR, default ~/.cache/sluice-target), the local
broker (scripts/kafka-local.sh start) and matplotlib for the PNG (benchmarks/run.sh
makes a venv with it). The broker, the generators and Sluice share this machine's two
cores: the burst reaches what the producer can send, which the summary states.
"""

import argparse
import calendar
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from join_steady import slope_mb_per_min  # noqa: E402  (least squares, MB per minute)

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sluice-target"))
SLUICE = TARGET / "release" / "sluice"
BROKER = os.environ.get("BROKER", "127.0.0.1:9092")
HTTP = "127.0.0.1:9399"
GEN_RE = re.compile(r"^gen: (\d+) records sent, (\d+) rec/s")


def topic_command(*args):
    subprocess.run([str(REPO / "scripts/kafka-local.sh"), "tool", "org.apache.kafka.tools.TopicCommand",
                    "--bootstrap-server", BROKER, *args], check=True, capture_output=True, text=True)


def query(topic):
    sql = (REPO / "queries" / "crash_alerts.sql").read_text()
    sql = sql.replace("topic = 'logs'", f"topic = '{topic}'").replace("'localhost:9092'", f"'{BROKER}'")
    if f"'{topic}'" not in sql:
        sys.exit("crash_alerts.sql changed: cannot point it at the benchmark's topic")
    return sql


class Generator:
    """A `sluice gen` at `rate` records/s with its progress lines timestamped."""

    def __init__(self, topic, rate, started):
        cmd = [str(SLUICE), "gen", "--broker", BROKER, "--topic", topic, "--target-rps", str(rate),
               "--additional-term", "crash", "--additional-term-rate", "100"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.started = started
        self.began = time.time() - started
        self.points = []  # (t, rec/s over the last second)
        self.summary = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stderr:
            if m := GEN_RE.match(line):
                self.points.append((time.time() - self.started, int(m.group(2))))
            elif "done:" in line:
                self.summary = line.strip()

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.thread.join(timeout=5)
        self.ended = time.time() - self.started
        m = re.search(r"done: (\d+) records", self.summary)
        self.records = int(m.group(1)) if m else 0
        return self


def sample_lag(started, out, stop):
    """`sluice_lag_records` from /metrics every second (what the dashboard shows)."""
    while not stop.is_set():
        try:
            text = urllib.request.urlopen(f"http://{HTTP}/metrics", timeout=2).read().decode()
            m = re.search(r"^sluice_lag_records (\d+)", text, re.M)
            if m:
                out.append((time.time() - started, int(m.group(1))))
        except OSError:
            pass
        stop.wait(1.0)


def start_sluice(work, topic):
    q = work / "q.sql"
    q.write_text(query(topic))
    progress = work / "progress.jsonl"
    cmd = [str(SLUICE), "run", str(q), "--trigger", "1s", "--starting-offsets", "latest",
           "--checkpoint", str(work / "ckpt"), "--progress-json", str(progress), "--status", "plain",
           "--num-rows", "0", "--http", HTTP]
    print("$", " ".join(cmd), flush=True)
    err = open(work / "stderr.txt", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
    # An empty topic makes no batches: wait until the dashboard's endpoint answers.
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None or time.time() > deadline:
            sys.exit(f"sluice did not start:\n{(work / 'stderr.txt').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://{HTTP}/metrics", timeout=2).read()
            break
        except OSError:
            time.sleep(0.2)
    return proc, progress


def wait_alive(proc, seconds, work):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sluice stopped early:\n{(work / 'stderr.txt').read_text()[-3000:]}")
        time.sleep(min(1.0, max(0.0, deadline - time.time())))


def stop_sluice(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        sys.exit("sluice did not stop within 60 s of SIGINT")


def series(started, progress):
    rows = []
    for line in progress.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        # "YYYY-MM-DD HH:MM:SS.mmm", UTC: when the batch started.
        t = calendar.timegm(time.strptime(r["timestamp"][:19], "%Y-%m-%d %H:%M:%S"))
        t += int(r["timestamp"][20:23] or 0) / 1000
        state = r["stateOperators"][0] if r.get("stateOperators") else {}
        rows.append({
            "t": t - started,
            "input": r["numInputRows"],
            "lag": sum(s.get("lag", 0) for s in r.get("sources", [])),
            "batch_s": r["durationMs"]["triggerExecution"] / 1000,
            "rss": r.get("processMemoryBytes") or 0,
            "state_rows": state.get("numRowsTotal", 0),
            "state_bytes": state.get("memoryUsedBytes", 0),
        })
    return rows


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def measured(work, topic, drive):
    """Sluice over `topic` with its lag sampled while `drive(proc, started)` writes;
    returns the batches, the lag samples and what `drive` returned."""
    started = time.time()
    proc, progress = start_sluice(work, topic)
    lags, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_lag, args=(started, lags, stop), daemon=True)
    sampler.start()
    gens = drive(proc, started)
    wait_alive(proc, 5, work)
    stop_sluice(proc)
    stop.set()
    sampler.join(timeout=5)
    rows = series(started, progress)
    topic_command("--delete", "--topic", topic)
    return rows, lags, gens


def run_burst(args, work):
    topic = f"burst-{time.time_ns()}"
    topic_command("--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1")

    def drive(proc, started):
        steady = Generator(topic, args.rate, started)
        wait_alive(proc, args.before, work)
        burst = Generator(topic, (args.factor - 1) * args.rate, started)
        if args.pause_sluice:
            proc.send_signal(signal.SIGSTOP)
        time.sleep(args.burst_seconds)
        if args.pause_sluice:
            proc.send_signal(signal.SIGCONT)
        burst.stop()
        wait_alive(proc, args.after, work)
        return steady.stop(), burst

    rows, lags, (steady, burst) = measured(work, topic, drive)
    return rows, lags, steady, burst


def burst_summary(rows, lags, steady, burst, args):
    b0, b1 = burst.began, burst.ended
    before = [r for r in rows if steady.began + 5 <= r["t"] < b0]
    during = [r for r in rows if r["t"] >= b0]
    # What both generators sent per second during the burst (their progress lines).
    def mean_rate(g):
        pts = [r for t, r in g.points if b0 + 1 < t <= b1]
        return sum(pts) / len(pts) if pts else 0.0
    burst_rate, steady_rate = mean_rate(burst), mean_rate(steady)
    reached = (steady_rate + burst_rate) / args.rate
    # Back to normal: the first sample after the burst from which the lag stays below
    # one second's worth of steady input.
    back = next((t for t, lag in lags if t > b1 and all(l < args.rate for tt, l in lags if tt >= t)), None)
    peak_lag = max((lag for _, lag in lags), default=0)
    rss_before = max((r["rss"] for r in before), default=0)
    rss_peak = max((r["rss"] for r in during), default=0)
    lines = [
        f"Query 2 over Kafka, steady {args.rate:,} rec/s, then +{(args.factor - 1) * args.rate:,} rec/s asked for "
        f"{args.burst_seconds} s ({args.factor}x), 1 s trigger, local checkpoint",
        f"burst generator: {burst.records:,} records, {burst_rate:,.0f} rec/s during the burst; the steady one "
        f"{steady_rate:,.0f} rec/s then: together {steady_rate + burst_rate:,.0f} rec/s = {reached:.1f}x the "
        f"steady rate" + (" (Sluice paused meanwhile)" if args.pause_sluice else ""),
        f"steady generator: {steady.records:,} records in {steady.ended - steady.began:.0f} s",
        f"records read by Sluice: {sum(r['input'] for r in rows):,} "
        f"(produced: {steady.records + burst.records:,})",
        f"peak lag (/metrics, every 1 s): {peak_lag:,} records; "
        + (f"below {args.rate:,} (one second of input) for good {back - b1:.1f} s after the burst ended"
           if back is not None else "the lag did not come back below one second of input"),
        f"largest batch: {max((r['input'] for r in rows), default=0):,} records "
        f"(the per-batch bound is 1,000,000 records / 256 MB)",
        f"batch time: before the burst p50 {pct([r['batch_s'] for r in before], 50):.3f} s; "
        f"from the burst on p50 {pct([r['batch_s'] for r in during], 50):.3f} s, max "
        f"{max((r['batch_s'] for r in during), default=0):.3f} s",
        f"process RSS: peak before the burst {rss_before / 1e6:.0f} MB, peak from the burst on "
        f"{rss_peak / 1e6:.0f} MB",
    ]
    return "\n".join(lines)


def run_soak(args, work):
    topic = f"soak-{time.time_ns()}"
    topic_command("--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1",
                  "--config", "retention.bytes=2000000000", "--config", "segment.bytes=268435456")

    def drive(proc, started):
        steady = Generator(topic, args.rate, started)
        wait_alive(proc, args.minutes * 60, work)
        return steady.stop()

    return measured(work, topic, drive)


def soak_summary(rows, lags, steady, args):
    # The first minute fills the windows and the watermark (30 s delay, 10 s windows).
    settled = [r for r in rows if steady.began + 60 <= r["t"] <= steady.ended]
    if not settled:
        return "the run was shorter than a minute: nothing to judge"
    half = [r for r in settled if r["t"] >= settled[-1]["t"] / 2]
    rss = [r["rss"] for r in settled]
    state = [r["state_rows"] for r in settled]
    bt = [r["batch_s"] for r in settled]
    span = settled[-1]["t"] - settled[0]["t"]
    lines = [
        f"Query 2 over Kafka, steady {args.rate:,} rec/s for {args.minutes} min, 1 s trigger, local checkpoint",
        f"generator: {steady.records:,} records in {steady.ended - steady.began:.0f} s "
        f"({steady.records / max(steady.ended - steady.began, 1e-9):,.0f} rec/s)",
        f"records read by Sluice: {sum(r['input'] for r in rows):,}; after the first minute "
        f"{sum(r['input'] for r in settled) / max(span, 1e-9):,.0f} rec/s over {len(settled)} batches",
        f"lag after the first minute (/metrics): p50 {pct([l for t, l in lags if t >= steady.began + 60], 50):,}, "
        f"max {max((l for t, l in lags if t >= steady.began + 60), default=0):,} records",
        f"process RSS after the first minute: {min(rss) / 1e6:.0f}..{max(rss) / 1e6:.0f} MB; slope over the "
        f"second half {slope_mb_per_min([(r['t'], r['rss']) for r in half]):+.2f} MB/min",
        f"state rows (open windows x users): {min(state):,}..{max(state):,}; state bytes "
        f"{min(r['state_bytes'] for r in settled) / 1e6:.1f}..{max(r['state_bytes'] for r in settled) / 1e6:.1f} MB",
        f"batch time: p50 {pct(bt, 50):.3f} s, p99 {pct(bt, 99):.3f} s, max {max(bt):.3f} s; slope over the "
        f"second half {slope_mb_per_min([(r['t'], r['batch_s'] * 1e6) for r in half]) * 1000:+.2f} ms/min",
    ]
    return "\n".join(lines)


def plot(path, title, rows, lags, gens, marks=()):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (run with ~/.cache/sluice-bench-venv/bin/python)")
        return
    minutes = rows[-1]["t"] > 300
    scale, unit = (60, "minutes") if minutes else (1, "seconds")
    t = [r["t"] / scale for r in rows]
    fig, axes = plt.subplots(5, 1, figsize=(9, 12), sharex=True)
    for label, g in gens:
        axes[0].plot([p[0] / scale for p in g.points], [p[1] / 1e3 for p in g.points], label=label, lw=0.8)
    axes[0].plot(t, [r["input"] / 1e3 for r in rows], label="Sluice: records per batch", lw=0.8)
    axes[0].set_ylabel("k records (/s)")
    axes[0].legend(fontsize=8)
    axes[1].plot([x / scale for x, _ in lags], [v / 1e3 for _, v in lags], lw=0.8)
    axes[1].set_ylabel("lag (/metrics)\nk records")
    axes[2].plot(t, [r["rss"] / 1e6 for r in rows], lw=0.8)
    axes[2].set_ylabel("process RSS MB")
    axes[2].set_ylim(bottom=0)
    axes[3].plot(t, [r["state_rows"] for r in rows], label="rows", lw=0.8)
    axes[3].set_ylabel("window state rows")
    axes[3].set_ylim(bottom=0)
    kb = axes[3].twinx()
    kb.plot(t, [r["state_bytes"] / 1e3 for r in rows], color="tab:orange", lw=0.6, label="kB (own count)")
    kb.set_ylabel("state kB", color="tab:orange")
    kb.set_ylim(bottom=0)
    axes[4].plot(t, [r["batch_s"] for r in rows], lw=0.8)
    axes[4].set_ylabel("batch s")
    axes[4].set_xlabel(unit)
    for a in axes:
        for x in marks:
            a.axvline(x / scale, color="grey", ls=":", lw=0.8)
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["burst", "soak"])
    ap.add_argument("--rate", type=int, default=300_000, help="steady records per second")
    ap.add_argument("--factor", type=int, default=10, help="burst: the rate during the burst, times --rate")
    ap.add_argument("--burst-seconds", type=int, default=30)
    ap.add_argument("--before", type=int, default=60, help="burst: steady seconds before the burst")
    ap.add_argument("--after", type=int, default=120, help="burst: steady seconds after the burst")
    ap.add_argument("--pause-sluice", action="store_true", help="burst: SIGSTOP Sluice during the burst")
    ap.add_argument("--minutes", type=float, default=30, help="soak: minutes at the steady rate")
    ap.add_argument("--png", help="plot file (default benchmarks/burst.png or soak.png)")
    args = ap.parse_args()
    if not SLUICE.exists():
        sys.exit(f"build first: cargo build --release ({SLUICE} is missing)")
    png = args.png or str(REPO / "benchmarks" / f"{args.mode}.png")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        if args.mode == "burst":
            rows, lags, steady, burst = run_burst(args, work)
            print(burst_summary(rows, lags, steady, burst, args))
            paused = ", Sluice paused (SIGSTOP) meanwhile" if args.pause_sluice else ""
            plot(png, f"Query 2, {args.rate:,} rec/s with a burst asked at {args.factor}x for "
                 f"{args.burst_seconds} s{paused}", rows, lags, [("steady gen, rec/s", steady), ("burst gen, rec/s", burst)],
                 marks=(burst.began, burst.ended))
        else:
            rows, lags, steady = run_soak(args, work)
            print(soak_summary(rows, lags, steady, args))
            plot(png, f"Query 2, {args.rate:,} rec/s for {args.minutes:g} min", rows, lags,
                 [("gen, rec/s", steady)])


if __name__ == "__main__":
    main()
