//! Event-time windows, watermarks and late data (Query 2) against a real Kafka broker,
//! compared with an independent computation over the records read back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const TABLE_OPTS: &str =
    "event_time = 'to_timestamp_millis(\"timestamp\")', watermark_delay = '30 seconds'";

/// A query file over `topic` with event time and a 30 s watermark.
fn windowed_query(
    dir: &std::path::Path,
    broker: &str,
    topic: &str,
    query: &str,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("q.sql");
    std::fs::write(
        &path,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
             user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
             bootstrap_servers = '{broker}', {TABLE_OPTS});\n{query}\n"
        ),
    )
    .unwrap();
    path
}

const Q2: &str = "SELECT tumble(event_time, INTERVAL '10 seconds') AS \"interval\", user_id, count(*) AS crash_count \
                  FROM logs WHERE lower(content) LIKE '%crash%' AND severity IN ('High', 'Critical') \
                  GROUP BY tumble(event_time, INTERVAL '10 seconds'), user_id HAVING count(*) > 2;";

/// `{start, end}` as the console prints it.
fn interval(start: i64, size: i64) -> String {
    let show = |ms: i64| {
        sluice::metrics::show_ms(ms)
            .trim_end_matches(".000")
            .to_string()
    };
    format!("{{{}, {}}}", show(start), show(start + size))
}

fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

/// Every emitted (interval, user, count) row over all batches; panics on a duplicate.
fn emitted(stdout: &str) -> BTreeSet<(String, String, i64)> {
    let mut out = BTreeSet::new();
    for b in parse_console(stdout) {
        for r in b.rows {
            let row = (r[0].clone(), r[1].clone(), r[2].parse().unwrap());
            assert!(out.insert(row.clone()), "window row emitted twice: {row:?}");
        }
    }
    out
}

/// Runs `sluice run Q --available-now --num-rows 0 EXTRA…` and returns what it emitted.
fn run_emitted(q: &std::path::Path, extra: &[&str]) -> BTreeSet<(String, String, i64)> {
    let mut args = vec![
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--num-rows",
        "0",
    ];
    args.extend_from_slice(extra);
    emitted(&String::from_utf8(sluice_ok(&args).stdout).unwrap())
}

fn crash_matches(r: &LogRecord) -> bool {
    r.content.to_lowercase().contains("crash") && (r.severity == "High" || r.severity == "Critical")
}

#[test]
fn query2_equals_batch_computation_for_any_parallelism_and_batch_size() {
    // 40 k records over 100 s of event time, "crash" in every record; disorder ≤ 1 s.
    let (broker, topic) = event_time_topic("q2", 40000, 11, 400, "crash", 1);
    let records: Vec<LogRecord> = consume_all(&broker, &topic)
        .iter()
        .filter_map(|c| parse_record(&c.payload))
        .collect();
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap();
    let mut counts: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for r in records.iter().filter(|r| crash_matches(r)) {
        *counts
            .entry((floor(r.timestamp, 10_000), r.user_id.clone()))
            .or_insert(0) += 1;
    }
    let expected = |closed_only: bool| -> BTreeSet<(String, String, i64)> {
        counts
            .iter()
            .filter(|(_, n)| **n > 2)
            .filter(|((w, _), _)| !closed_only || w + 10_000 <= max_ts - 30_000)
            .map(|((w, u), n)| (interval(*w, 10_000), u.clone(), *n))
            .collect()
    };
    assert!(expected(true).len() > 100 && expected(false).len() > expected(true).len());
    let dir = temp_dir("q2");
    let q = windowed_query(&dir, &broker, &topic, Q2);
    for (tp, batch) in [("1", "3000"), ("4", "7000"), ("2", "40000")] {
        let args = [
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--num-rows",
            "0",
            "--target-partitions",
            tp,
            "--max-records-per-batch",
            batch,
        ];
        // Spark's behaviour: windows the watermark has not passed stay open.
        let (stdout, stderr) = {
            let o = sluice_ok(&args);
            (
                String::from_utf8(o.stdout).unwrap(),
                String::from_utf8(o.stderr).unwrap(),
            )
        };
        assert_eq!(emitted(&stdout), expected(true), "tp {tp} batch {batch}");
        assert!(stderr.contains(" 0 late rows dropped"), "{stderr}");
        // A bounded replay closes them all at the end; the closing batch is reported
        // like any other, in the progress records too.
        let progress = dir.join(format!("progress-{tp}.jsonl"));
        let mut closing = args.to_vec();
        closing.extend([
            "--close-windows-at-end",
            "--progress-json",
            progress.to_str().unwrap(),
        ]);
        let o = sluice_ok(&closing);
        assert_eq!(
            emitted(&String::from_utf8(o.stdout).unwrap()),
            expected(false),
            "tp {tp} batch {batch}"
        );
        let records = progress_records(&progress);
        let stderr = String::from_utf8(o.stderr).unwrap();
        let batch_lines = stderr
            .lines()
            .filter(|l| l.starts_with("[sluice] batch "))
            .count();
        assert_eq!(records.len(), batch_lines, "{stderr}");
        let rows: u64 = records
            .iter()
            .map(|r| r["numOutputRows"].as_u64().unwrap())
            .sum();
        assert_eq!(
            rows as usize,
            expected(false).len(),
            "tp {tp} batch {batch}"
        );
    }
}

/// Sends `(partition 0) payloads` in order and waits for acknowledgement.
fn send_all(broker: &str, topic: &str, payloads: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    for p in payloads {
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .payload(p.as_str())
                    .partition(0),
            )
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }
}

fn record(ts: i64, user: &str, content: &str) -> String {
    format!(
        r#"{{"timestamp":{ts},"status":"Failure","severity":"Critical","source_ip":"192.168.1.1","user_id":"{user}","content":"{content}"}}"#
    )
}

fn one_partition_topic(prefix: &str) -> (String, String) {
    let broker = broker();
    let topic = unique_topic(prefix);
    sluice::kafka::ensure_topic(&broker, &topic, 1).unwrap();
    (broker, topic)
}

const COUNT_ALL: &str =
    "SELECT tumble(event_time, INTERVAL '10 seconds') AS w, user_id, count(*) AS n \
                         FROM logs WHERE lower(content) LIKE '%crash%' \
                         GROUP BY tumble(event_time, INTERVAL '10 seconds'), user_id;";

#[test]
fn late_records_are_dropped_counted_and_kept_aside() {
    let (broker, topic) = one_partition_topic("late");
    send_all(
        &broker,
        &topic,
        &[
            record(100_000, "a", "crash"), // batch 0: window [100 s, 110 s)
            record(200_000, "a", "crash"), // batch 0: watermark becomes 170 s
            record(150_000, "b", "crash"), // batch 1: behind the watermark: late
            record(140_000, "d", "fine"),  // batch 1: behind it too, but filtered out: not late
            record(175_000, "c", "crash"), // batch 2: behind the max event time, ahead of the watermark
        ],
    );
    let dir = temp_dir("late");
    let q = windowed_query(&dir, &broker, &topic, COUNT_ALL);
    let late_file = dir.join("late.jsonl");
    let o = sluice_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "2",
        "--num-rows",
        "0",
        "--late-data",
        late_file.to_str().unwrap(),
        "--close-windows-at-end",
    ]);
    let stdout = String::from_utf8(o.stdout).unwrap();
    let stderr = String::from_utf8(o.stderr).unwrap();
    let batches = parse_console(&stdout);
    assert_eq!(
        batches.len(),
        4,
        "three data batches and the closing one:\n{stdout}"
    );
    let rows = |i: usize| -> Vec<(String, String, i64)> {
        batches[i]
            .rows
            .iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].parse().unwrap()))
            .collect()
    };
    // Batch 0 advanced the watermark to 170 s: window [100 s, 110 s) is complete.
    assert_eq!(rows(0), [(interval(100_000, 10_000), "a".to_string(), 1)]);
    assert!(rows(1).is_empty(), "no window closes in batch 1");
    assert!(rows(2).is_empty(), "no window closes in batch 2");
    let mut last = rows(3);
    last.sort();
    assert_eq!(
        last,
        [
            (interval(170_000, 10_000), "c".to_string(), 1),
            (interval(200_000, 10_000), "a".to_string(), 1)
        ]
    );
    let late_counts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("late rows dropped"))
        .collect();
    assert!(
        late_counts[1].contains(" 1 late rows dropped")
            && late_counts[0].contains(" 0 late rows dropped"),
        "{stderr}"
    );
    let late: Vec<serde_json::Value> = std::fs::read_to_string(&late_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The late row, traced back to its record: topic, partition and offset.
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["batch_id"], 1);
    assert_eq!(late[0]["topic"], topic.as_str());
    assert_eq!(late[0]["partition"], 0);
    assert_eq!(late[0]["offset"], 2);
    assert_eq!(late[0]["user_id"], "b");
    assert_eq!(late[0]["timestamp"], 150_000);
}

#[test]
fn windows_align_to_the_epoch_across_day_boundaries_and_before_zero() {
    let (broker, topic) = one_partition_topic("align");
    let times = [-10_001, -10_000, -1, 0, 9_999, 86_399_999, 86_400_000];
    send_all(
        &broker,
        &topic,
        &times
            .iter()
            .map(|t| record(*t, "u", "crash"))
            .collect::<Vec<_>>(),
    );
    let dir = temp_dir("align");
    let q = windowed_query(&dir, &broker, &topic, COUNT_ALL);
    let o = sluice_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--num-rows",
        "0",
        "--close-windows-at-end",
    ]);
    let got: BTreeSet<(String, i64)> = emitted(&String::from_utf8(o.stdout).unwrap())
        .into_iter()
        .map(|(w, _, n)| (w, n))
        .collect();
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for t in times {
        *want.entry(floor(t, 10_000)).or_insert(0) += 1;
    }
    let want: BTreeSet<(String, i64)> = want
        .into_iter()
        .map(|(w, n)| (interval(w, 10_000), n))
        .collect();
    assert!(
        want.contains(&("{1969-12-31 23:59:40, 1969-12-31 23:59:50}".to_string(), 1)),
        "{want:?}"
    );
    assert!(
        want.contains(&("{1970-01-01 23:59:50, 1970-01-02 00:00:00}".to_string(), 1)),
        "{want:?}"
    );
    assert_eq!(got, want);
}

#[test]
fn hop_windows_equal_the_batch_computation() {
    let (broker, topic) = event_time_topic("hop", 12000, 5, 300, "crash", 2);
    let records: Vec<LogRecord> = consume_all(&broker, &topic)
        .iter()
        .filter_map(|c| parse_record(&c.payload))
        .collect();
    let (slide, size) = (4_000, 10_000);
    let mut counts: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.content.to_lowercase().contains("crash"))
    {
        let mut s = floor(r.timestamp, slide);
        while s + size > r.timestamp {
            *counts.entry((s, r.user_id.clone())).or_insert(0) += 1;
            s -= slide;
        }
    }
    let expected: BTreeSet<(String, String, i64)> = counts
        .into_iter()
        .map(|((w, u), n)| (interval(w, size), u, n))
        .collect();
    let dir = temp_dir("hop");
    let q = windowed_query(
        &dir,
        &broker,
        &topic,
        "SELECT hop(event_time, INTERVAL '4 seconds', INTERVAL '10 seconds') AS w, user_id, count(*) AS n \
         FROM logs WHERE lower(content) LIKE '%crash%' \
         GROUP BY hop(event_time, INTERVAL '4 seconds', INTERVAL '10 seconds'), user_id;",
    );
    let o = sluice_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--num-rows",
        "0",
        "--max-records-per-batch",
        "2500",
        "--close-windows-at-end",
    ]);
    assert_eq!(emitted(&String::from_utf8(o.stdout).unwrap()), expected);
}

#[test]
fn crash_matching_is_exact_for_any_case_and_json_escapes() {
    let (broker, topic) = one_partition_topic("case");
    let contents = [
        "CRASH",
        "cRaSh now",
        r"\u0063rash",
        r"cr\u0041sh",
        "crash\\u0021",
        r"cras\u0068ed", // match
        "cras h",
        "crsh",
        r"\u0063ras",
        "kraSH", // no match
    ];
    let mut payloads: Vec<String> = contents.iter().map(|c| record(1_000, "u", c)).collect();
    payloads.push(record(100_000, "z", "crash")); // a later record so the watermark passes 10 s
    send_all(&broker, &topic, &payloads);
    let want = consume_all(&broker, &topic)
        .iter()
        .filter_map(|c| parse_record(&c.payload))
        .filter(|r| r.user_id == "u" && r.content.to_lowercase().contains("crash"))
        .count() as i64;
    assert_eq!(want, 6, "the independent fold decodes the escapes");
    let dir = temp_dir("case");
    let q = windowed_query(&dir, &broker, &topic, COUNT_ALL);
    let got = run_emitted(&q, &[]);
    assert_eq!(
        got,
        BTreeSet::from([(interval(0, 10_000), "u".to_string(), want)])
    );
}

#[test]
fn closed_windows_free_their_state() {
    // 100 s of event time through the built-in generator: the number of open panes must
    // stay bounded by the watermark delay (30 s) plus one window, batch after batch.
    let dir = temp_dir("bounded");
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, user_id VARCHAR, content VARCHAR) \
             WITH (connector = 'generator', max_records = '2000000', event_rate = '20000', {TABLE_OPTS});\n{Q2}\n"
        ),
    )
    .unwrap();
    let o = sluice_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "100000",
        "--num-rows",
        "1",
    ]);
    let stderr = String::from_utf8(o.stderr).unwrap();
    let panes: Vec<usize> = stderr
        .lines()
        .filter_map(|l| {
            l.split(" open panes")
                .next()
                .filter(|_| l.contains(" open panes"))
        })
        .map(|s| s.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(panes.len() >= 20, "{stderr}");
    assert!(panes.iter().all(|p| *p <= 5), "open panes grew: {panes:?}");
    let windows: BTreeSet<String> = parse_console(&String::from_utf8(o.stdout).unwrap())
        .iter()
        .flat_map(|b| b.rows.iter().map(|r| r[0].clone()))
        .collect();
    assert!(
        windows.len() >= 5,
        "windows were emitted and dropped: {windows:?}"
    );
}

#[test]
fn an_idle_partition_does_not_hold_the_watermark_back() {
    // Two partitions, records only ever land in partition 0: windows still close, since
    // the watermark follows the largest event time over all partitions (Spark).
    let broker = broker();
    let topic = unique_topic("idle");
    sluice::kafka::ensure_topic(&broker, &topic, 2).unwrap();
    send_all(
        &broker,
        &topic,
        &[record(1_000, "u", "crash"), record(50_000, "u", "crash")],
    );
    let dir = temp_dir("idle");
    let q = windowed_query(&dir, &broker, &topic, COUNT_ALL);
    let got = run_emitted(&q, &[]);
    assert_eq!(
        got,
        BTreeSet::from([(interval(0, 10_000), "u".to_string(), 1)])
    );
}

/// Sends `(partition, payload)` pairs, in order per partition, and waits for all.
fn send_spread(broker: &str, topic: &str, records: &[(i32, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .unwrap();
    for (p, payload) in records {
        loop {
            match producer.send(
                BaseRecord::<(), str>::to(topic)
                    .payload(payload.as_str())
                    .partition(*p),
            ) {
                Ok(()) => break,
                Err(_) => producer.poll(Duration::from_millis(10)),
            };
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn every_late_record_lands_in_the_late_file_with_its_offset() {
    // Two partitions of disordered records: some fall behind the watermark.
    let broker = broker();
    let topic = unique_topic("late-many");
    sluice::kafka::ensure_topic(&broker, &topic, 2).unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let records: Vec<(i32, String)> = (0..6_000i64)
        .map(|i| {
            let jitter = if rng.u8(..10) == 0 {
                rng.i64(0..90_000)
            } else {
                0
            };
            let content = if rng.u8(..3) == 0 { "fine" } else { "crash" };
            let user = format!("u{}", rng.u8(..5));
            (
                (i % 2) as i32,
                record(1_000_000 + i * 20 - jitter, &user, content),
            )
        })
        .collect();
    send_spread(&broker, &topic, &records);
    let by_offset: BTreeMap<(i32, i64), LogRecord> = consume_all(&broker, &topic)
        .into_iter()
        .map(|c| ((c.partition, c.offset), parse_record(&c.payload).unwrap()))
        .collect();

    let dir = temp_dir("late-many");
    let q = windowed_query(&dir, &broker, &topic, COUNT_ALL);
    let late_file = dir.join("late.jsonl");
    let (_, stderr) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "400",
        "--target-partitions",
        "2",
        "--num-rows",
        "0",
        "--late-data",
        late_file.to_str().unwrap(),
    ]);
    assert!(!stderr.contains("warning"), "{stderr}");

    // Independently: replay the batches with Spark's watermark rule (after each batch,
    // watermark = max event time of matching rows − 30 s, never decreasing; a matching
    // row at or before the watermark of its batch is late).
    let mut watermark = i64::MIN;
    let mut max_event = i64::MIN;
    let mut want = BTreeSet::new();
    for (batch, ranges) in parse_offsets(&stderr).iter().enumerate() {
        for &(p, s, e) in ranges {
            for o in s..e {
                let r = &by_offset[&(p, o)];
                if !r.content.to_lowercase().contains("crash") {
                    continue;
                }
                if r.timestamp <= watermark {
                    want.insert((batch as u64, p as i64, o));
                }
                max_event = max_event.max(r.timestamp);
            }
        }
        if max_event != i64::MIN {
            watermark = watermark.max(max_event - 30_000);
        }
    }
    assert!(
        want.len() > 20,
        "the stream should have late records: {}",
        want.len()
    );
    let got: BTreeSet<(u64, i64, i64)> = std::fs::read_to_string(&late_file)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = (
                v["batch_id"].as_u64().unwrap(),
                v["partition"].as_i64().unwrap(),
                v["offset"].as_i64().unwrap(),
            );
            // The row is the record at that offset.
            let r = &by_offset[&(key.1 as i32, key.2)];
            assert_eq!(v["timestamp"], r.timestamp, "{l}");
            assert_eq!(v["user_id"], r.user_id.as_str(), "{l}");
            assert_eq!(v["topic"], topic.as_str());
            key
        })
        .collect();
    assert_eq!(got, want);
    // And the progress lines counted the same rows.
    let counted: u64 = stderr
        .lines()
        .filter_map(|l| {
            l.split(" late rows dropped")
                .next()
                .filter(|_| l.contains(" late rows dropped"))
        })
        .map(|head| head.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, want.len() as u64);
}

/// Epoch ms of a JSON timestamp string as the JSON-lines sink writes it.
fn json_ms(v: &serde_json::Value) -> i64 {
    chrono::NaiveDateTime::parse_from_str(v.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

#[test]
fn session_windows_equal_the_batch_computation() {
    let (broker, topic) = event_time_topic("sess", 20_000, 31, 400, "crash", 3);
    // Independently: per user, matching events in time order; a gap of 5 s or more
    // starts a new session [first, last + 5 s).
    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in consume_all(&broker, &topic) {
        let r = parse_record(&c.payload).unwrap();
        if r.content.to_lowercase().contains("crash") {
            by_user.entry(r.user_id).or_default().push(r.timestamp);
        }
    }
    let gap = 5_000;
    let mut expected = BTreeSet::new();
    for (user, mut ts) in by_user {
        ts.sort_unstable();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0);
        for t in ts {
            if t >= last + gap {
                expected.insert((start, last + gap, user.clone(), n));
                (start, n) = (t, 0);
            }
            last = last.max(t);
            n += 1;
        }
        expected.insert((start, last + gap, user, n));
    }
    assert!(
        expected.iter().any(|(_, _, _, n)| *n > 2),
        "some sessions should join several events"
    );

    // (target partitions, batch size, stop and resume from a checkpoint half-way)
    for (tp, batch, resume) in [
        ("1", "700", false),
        ("2", "3000", false),
        ("2", "1000", true),
    ] {
        let dir = temp_dir("sess");
        let out = dir.join("out");
        let q = dir.join("q.sql");
        std::fs::write(
            &q,
            format!(
                "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
                 user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
                 bootstrap_servers = '{broker}', {TABLE_OPTS});\n\
                 CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\n\
                 INSERT INTO out SELECT session(event_time, INTERVAL '5 seconds') AS s, user_id, count(*) AS n \
                 FROM logs WHERE lower(content) LIKE '%crash%' \
                 GROUP BY session(event_time, INTERVAL '5 seconds'), user_id;\n",
                out.display()
            ),
        )
        .unwrap();
        let ckpt = dir.join("ckpt");
        let mut args = vec![
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            batch,
            "--target-partitions",
            tp,
            "--checkpoint",
            ckpt.to_str().unwrap(),
        ];
        if resume {
            // First run: open sessions stay in the checkpoint's snapshot.
            run_ok(&args);
        }
        args.push("--close-windows-at-end");
        let (_, stderr) = run_ok(&args);
        assert_eq!(
            resume,
            stderr.contains("resuming after committed batch"),
            "{stderr}"
        );
        let mut got = BTreeSet::new();
        for f in std::fs::read_dir(&out).unwrap() {
            for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let row = (
                    json_ms(&v["s"]["start"]),
                    json_ms(&v["s"]["end"]),
                    v["user_id"].as_str().unwrap().to_string(),
                    v["n"].as_i64().unwrap(),
                );
                assert!(got.insert(row.clone()), "session emitted twice: {row:?}");
            }
        }
        assert_eq!(got, expected, "tp {tp} batch {batch} resume {resume}");
    }
    // Sessions are emitted once, when closed: other output modes are refused.
    let dir = temp_dir("sess-mode");
    let q = windowed_query(
        &dir,
        &broker,
        &topic,
        "SELECT session(event_time, INTERVAL '5 seconds') AS s, user_id, count(*) AS n FROM logs \
         GROUP BY session(event_time, INTERVAL '5 seconds'), user_id;",
    );
    let out = sluice(&["run", q.to_str().unwrap(), "--output-mode", "update"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not supported for session windows"), "{said}");
}
