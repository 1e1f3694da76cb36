"""Interval join, steady run: does its memory stay flat?

Runs queries/crash_then_login.sql (the log stream joined with itself: a crash followed
within a minute by a login of the same user from another IP; 5 s watermark delay) over
the built-in generator source at a fixed rate (event time advances with the records, in
real time), with a 1 s trigger and a local checkpoint, for --seconds (default 600).
From the progress JSON it plots the join's state rows per side, the process RSS and the
batch time over the run, and prints the figures that say whether they are flat: the
range of each after the first interval (65 s: the join's minute plus the delay), and
the RSS slope over the second half of the run.

  ~/.cache/sluice-bench-venv/bin/python benchmarks/join_steady.py --seconds 600
  python3 benchmarks/join_steady.py --seconds 60 --rate 50000   # a quick look

Needs a release build (CARGO_TARGET_DIR, default ~/.cache/sluice-target) and matplotlib
for the PNG (benchmarks/run.sh makes a venv with it); no broker.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sluice-target"))
SLUICE = TARGET / "release" / "sluice"
# The join's interval plus the watermark delay: state fills up over this long.
FILL_SECONDS = 65


def query(rate, partitions):
    """crash_then_login.sql with its Kafka table swapped for the generator."""
    sql = (REPO / "queries" / "crash_then_login.sql").read_text()
    gen = (f"connector = 'generator', rate = '{rate}', partitions = '{partitions}',\n"
           "    event_time = 'timestamp', watermark_delay = '5 seconds'")
    sql, n = re.subn(r"connector = 'kafka'.*?watermark_delay = '5 seconds'", gen, sql, flags=re.S)
    if n != 1:
        sys.exit("crash_then_login.sql changed: cannot swap its source for the generator")
    return sql + "\n"


def run(args, work):
    q = work / "q.sql"
    q.write_text(query(args.rate, args.partitions))
    progress = work / "progress.jsonl"
    cmd = [str(SLUICE), "run", str(q), "--trigger", "1s", "--checkpoint", str(work / "ckpt"),
           "--progress-json", str(progress), "--status", "plain", "--num-rows", "1"]
    print("$", " ".join(cmd), flush=True)
    started = time.time()
    # Its per-batch lines go to a file: an unread pipe would fill and stall it.
    err = open(work / "stderr.txt", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
    deadline = started + args.seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sluice stopped early:\n{(work / 'stderr.txt').read_text()[-4000:]}")
        time.sleep(min(5, max(0, deadline - time.time())))
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        sys.exit("sluice did not stop within 60 s of SIGINT")
    records = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    if not records:
        sys.exit("no progress records")
    return started, records


def series(started, records):
    rows = []
    for r in records:
        # "YYYY-MM-DD HH:MM:SS.mmm", UTC: when the batch started.
        t = calendar.timegm(time.strptime(r["timestamp"][:19], "%Y-%m-%d %H:%M:%S"))
        t += int(r["timestamp"][20:23] or 0) / 1000
        join = next((o for o in r["operators"] if o.get("sides")), None)
        if join is None:
            continue
        rows.append({
            "t": t - started,
            "left": join["sides"][0]["numRowsTotal"],
            "right": join["sides"][1]["numRowsTotal"],
            "state_bytes": join["memoryUsedBytes"],
            "rss": r["processMemoryBytes"],
            "batch_s": r["durationMs"]["triggerExecution"] / 1000,
            "input": r["numInputRows"],
            "pruned": join["numRowsRemovedByWatermark"],
        })
    return rows


def slope_mb_per_min(points):
    """Least-squares slope of (seconds, bytes) in MB per minute."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60 / 1e6 if sxx else float("nan")


def summary(rows, args):
    steady = [r for r in rows if r["t"] >= FILL_SECONDS]
    if not steady:
        return "the run was shorter than the join's fill time (65 s): nothing to judge"
    half = [r for r in rows if r["t"] >= rows[-1]["t"] / 2]
    state = [r["left"] + r["right"] for r in steady]
    rss = [r["rss"] for r in steady if r["rss"]]
    mean = sum(state) / len(state)
    inputs = sum(r["input"] for r in steady)
    span = steady[-1]["t"] - steady[0]["t"]
    lines = [
        f"interval join (queries/crash_then_login.sql) over the generator at {args.rate:,} rec/s, "
        f"{args.partitions} partitions, 1 s trigger, local checkpoint, {rows[-1]['t']:.0f} s",
        f"batches: {len(rows)} ({len(steady)} after the first {FILL_SECONDS} s); records read after it: "
        f"{inputs:,} ({inputs / span if span else float('nan'):,.0f} rec/s)",
        f"join state rows after {FILL_SECONDS} s: {min(state):,}..{max(state):,} "
        f"(mean {mean:,.0f}; range {100 * (max(state) - min(state)) / mean:.1f} % of the mean)",
        f"  left (crashes) {min(r['left'] for r in steady):,}..{max(r['left'] for r in steady):,}; "
        f"right (logins) {min(r['right'] for r in steady):,}..{max(r['right'] for r in steady):,}",
        f"rows removed by the watermark over the run: {sum(r['pruned'] for r in rows):,}",
        f"process RSS after {FILL_SECONDS} s: {min(rss) / 1e6:.0f}..{max(rss) / 1e6:.0f} MB; "
        f"slope over the second half: {slope_mb_per_min([(r['t'], r['rss']) for r in half if r['rss']]):+.2f} MB/min",
        f"batch time after {FILL_SECONDS} s: p50 {sorted(r['batch_s'] for r in steady)[len(steady) // 2]:.3f} s, "
        f"max {max(r['batch_s'] for r in steady):.3f} s",
    ]
    return "\n".join(lines)


def plot(rows, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (run with ~/.cache/sluice-bench-venv/bin/python)")
        return
    t = [r["t"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [r["left"] for r in rows], label="left (crashes)")
    axes[0].plot(t, [r["right"] for r in rows], label="right (logins)")
    axes[0].set_ylabel("join state rows")
    axes[0].legend()
    axes[1].plot(t, [r["rss"] / 1e6 for r in rows], label="process RSS")
    axes[1].plot(t, [r["state_bytes"] / 1e6 for r in rows], label="join state (own count)")
    axes[1].set_ylabel("MB")
    axes[1].set_ylim(bottom=0)
    axes[1].legend()
    axes[2].plot(t, [r["batch_s"] for r in rows])
    axes[2].set_ylabel("batch s")
    axes[2].set_xlabel("minutes")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--rate", type=int, default=100_000, help="generator records per second")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "join_steady.png"))
    args = ap.parse_args()
    if not SLUICE.exists():
        sys.exit(f"build first: cargo build --release ({SLUICE} is missing)")
    with tempfile.TemporaryDirectory() as d:
        started, records = run(args, Path(d))
    rows = series(started, records)
    text = summary(rows, args)
    print(text)
    plot(rows, args.png, f"interval join, generator at {args.rate:,} rec/s, 1 s trigger")


if __name__ == "__main__":
    main()
