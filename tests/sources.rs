//! Queries over several source tables, against a real Kafka broker: each table has its
//! own readers and offsets per (table, partition) in the checkpoint. Results are
//! compared with an independent fold (serde_json over the records read back).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// A query file over two Kafka tables, `a` and `b` (workload columns), writing into a
/// JSON-lines directory `out` when given, then `query`.
fn two_tables(
    dir: &Path,
    broker: &str,
    a: &str,
    b: &str,
    out: Option<&Path>,
    query: &str,
) -> PathBuf {
    let cols = "timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, user_id VARCHAR, content VARCHAR";
    let sink = match out {
        Some(o) => format!(
            "CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\nINSERT INTO out ",
            o.display()
        ),
        None => String::new(),
    };
    let owners = dir.join("owners.csv");
    let mut csv = String::from("ip,owner\n");
    for (ip, owner) in owners_table() {
        csv.push_str(&format!("{ip},{owner}\n"));
    }
    std::fs::write(&owners, csv).unwrap();
    let path = dir.join("q.sql");
    std::fs::write(
        &path,
        format!(
            "CREATE TABLE a ({cols}) WITH (connector = 'kafka', topic = '{a}', bootstrap_servers = '{broker}');\n\
             CREATE TABLE b ({cols}) WITH (connector = 'kafka', topic = '{b}', bootstrap_servers = '{broker}');\n\
             CREATE TABLE owners (ip VARCHAR, owner VARCHAR) WITH (connector = 'filesystem', path = '{}', format = 'csv');\n\
             {sink}{query}\n",
            owners.display()
        ),
    )
    .unwrap();
    path
}

/// The static table both streams are joined with: ips 192.168.1.0 ..= 59, four owners.
fn owners_table() -> BTreeMap<String, String> {
    (0..60)
        .map(|i| (format!("192.168.1.{i}"), format!("o{}", i % 4)))
        .collect()
}

/// Each stream joined with the static table (a left join on `a`, an inner join on
/// `b`), then their union.
const UNION: &str = "SELECT 'a' AS src, l.user_id, l.\"timestamp\", o.owner FROM a l \
                     LEFT JOIN owners o ON l.source_ip = o.ip WHERE l.severity = 'High' \
                     UNION ALL SELECT 'b' AS src, l.user_id, l.\"timestamp\", o.owner FROM b l \
                     JOIN owners o ON l.source_ip = o.ip WHERE l.severity = 'Low';";

type UnionRow = (String, String, i64, Option<String>);

/// The union computed independently: (table, user, timestamp, owner) of every record of
/// `a` with severity High (owner or none) and of `b` with severity Low and an owner.
fn union_expected(broker: &str, a: &str, b: &str) -> Vec<UnionRow> {
    let owners = owners_table();
    let mut rows = Vec::new();
    for (name, topic, severity) in [("a", a, "High"), ("b", b, "Low")] {
        for c in consume_all(broker, topic) {
            let r = parse_record(&c.payload).unwrap();
            let owner = owners.get(&r.source_ip).cloned();
            if r.severity == severity && (name == "a" || owner.is_some()) {
                rows.push((name.to_string(), r.user_id, r.timestamp, owner));
            }
        }
    }
    sorted(rows)
}

/// Every row of the JSON-lines files in `dir`, as (src, user, timestamp, owner), sorted.
fn union_rows(dir: &Path) -> Vec<UnionRow> {
    let mut rows = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            rows.push((
                v["src"].as_str().unwrap().to_string(),
                v["user_id"].as_str().unwrap().to_string(),
                v["timestamp"].as_i64().unwrap(),
                v["owner"].as_str().map(str::to_string),
            ));
        }
    }
    sorted(rows)
}

#[test]
fn a_union_of_two_topics_each_joined_with_a_static_table_is_exact_after_repeated_sigkill() {
    // Two topics with different partition counts and contents.
    let (broker, a) = seeded_topic("two-a", 24000, 2, "crash", 50);
    let (_, b) = seeded_topic("two-b", 18000, 3, "vulnerability", 20);
    let expected = union_expected(&broker, &a, &b);
    assert!(expected.iter().any(|r| r.0 == "a") && expected.iter().any(|r| r.0 == "b"));
    assert!(
        expected.iter().any(|r| r.3.is_none()),
        "some rows of a have no owner"
    );

    let dir = temp_dir("two-kill");
    let out = dir.join("out");
    let q = two_tables(&dir, &broker, &a, &b, Some(&out), UNION);
    let ckpt = dir.join("ckpt");
    kill_and_restart_query(&q, &ckpt, "300", "60ms", 11);
    assert_eq!(union_rows(&out), expected, "after repeated kills");
    // The checkpoint names each table's offsets.
    let commits = ckpt.join("commits");
    let last = std::fs::read_dir(&commits)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let commit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last).unwrap()).unwrap();
    assert_eq!(commit["offsets"]["a"].as_array().unwrap().len(), 2);
    assert_eq!(commit["offsets"]["b"].as_array().unwrap().len(), 3);
}

/// Counts per (table, severity) computed independently.
fn counts_expected(broker: &str, a: &str, b: &str) -> BTreeMap<(String, String), i64> {
    let mut counts = BTreeMap::new();
    for (name, topic) in [("a", a), ("b", b)] {
        for c in consume_all(broker, topic) {
            let r = parse_record(&c.payload).unwrap();
            *counts.entry((name.to_string(), r.severity)).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn an_aggregate_over_two_topics_reads_each_once_per_batch_and_reports_each() {
    let (broker, a) = seeded_topic("agg-a", 6000, 2, "crash", 50);
    let (_, b) = seeded_topic("agg-b", 4000, 1, "crash", 50);
    let dir = temp_dir("two-agg");
    // Table a is read twice (two filters) and b once: every record counts once.
    let q = two_tables(
        &dir,
        &broker,
        &a,
        &b,
        None,
        "SELECT src, severity, count(*) AS n FROM ( \
           SELECT 'a' AS src, severity FROM a WHERE severity = 'High' \
           UNION ALL SELECT 'a' AS src, severity FROM a WHERE severity <> 'High' \
           UNION ALL SELECT 'b' AS src, severity FROM b) GROUP BY src, severity;",
    );
    let progress = dir.join("progress.jsonl");
    let (stdout, stderr) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "1500",
        "--output-mode",
        "update",
        "--num-rows",
        "0",
        "--progress-json",
        progress.to_str().unwrap(),
    ]);
    // Update mode: the last row printed per group is its count.
    let mut got = BTreeMap::new();
    for row in printed_rows(&stdout) {
        got.insert(
            (row[0].clone(), row[1].clone()),
            row[2].trim().parse::<i64>().unwrap(),
        );
    }
    assert_eq!(got, counts_expected(&broker, &a, &b));
    assert!(
        stderr.contains("reading a: Kafka topic") && stderr.contains("; b: Kafka topic"),
        "{stderr}"
    );
    // Regression: the end-of-partition events a bounded read asks for were logged as
    // `ERROR … Global error: PartitionEOF` when the consumers closed.
    assert!(!stderr.contains("PartitionEOF"), "{stderr}");

    // Each batch reports every table it read, with its own offsets; over the run each
    // table's partitions were read from 0 to the end exactly once.
    let records = progress_records(&progress);
    assert!(records.len() >= 4, "{} batches", records.len());
    let mut read: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &records {
        let mut total = 0;
        for s in r["sources"].as_array().unwrap() {
            let table = s["table"].as_str().unwrap().to_string();
            for (p, start) in s["startOffset"].as_object().unwrap() {
                let end = s["endOffset"][p].as_i64().unwrap();
                let seen = read.entry((table.clone(), p.clone())).or_insert(0);
                assert_eq!(
                    *seen,
                    start.as_i64().unwrap(),
                    "{table}/{p} read with a gap or twice"
                );
                *seen = end;
            }
            total += s["numInputRows"].as_i64().unwrap();
        }
        assert_eq!(total, r["numInputRows"].as_i64().unwrap());
        assert!(
            r["numInputRows"].as_i64().unwrap() <= 2 * 1500,
            "bounds apply per table"
        );
    }
    let per_table = |t: &str| -> i64 {
        read.iter()
            .filter(|((table, _), _)| table == t)
            .map(|(_, e)| e)
            .sum()
    };
    assert_eq!((per_table("a"), per_table("b")), (6000, 4000));
}

#[test]
fn a_declared_table_the_query_does_not_read_is_not_opened() {
    let (broker, a) = seeded_topic("unused-a", 3000, 2, "crash", 50);
    let dir = temp_dir("unused");
    // Table b points at a port where no broker listens: opening it would fail.
    let nowhere = format!("127.0.0.1:{}", closed_port());
    let path = dir.join("q.sql");
    std::fs::write(
        &path,
        format!(
            "CREATE TABLE a (severity VARCHAR) WITH (connector = 'kafka', topic = '{a}', bootstrap_servers = '{broker}');\n\
             CREATE TABLE b (severity VARCHAR) WITH (connector = 'kafka', topic = 'nothing', bootstrap_servers = '{nowhere}');\n\
             SELECT count(*) AS n FROM a;\n"
        ),
    )
    .unwrap();
    let (stdout, _) = run_ok(&["run", path.to_str().unwrap(), "--available-now"]);
    let rows = printed_rows(&stdout);
    assert_eq!(rows.last().unwrap()[0].trim(), "3000");
}

#[test]
fn the_source_option_over_several_tables_is_explained() {
    let dir = temp_dir("two-errors");
    let q = two_tables(&dir, "127.0.0.1:1", "x", "y", None, UNION);
    let out = sluice(&["run", q.to_str().unwrap(), "--source", "generator:10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--source")
            && err.contains("declares 2 (a, b)")
            && err.contains("drop --source"),
        "{err}"
    );
}

#[test]
fn a_union_of_two_like_filters_over_one_table_is_not_prefiltered_by_both() {
    // The raw-byte prefilter screens by the literals of the filter right above a
    // table's scan; with two scans each filter alone must not screen the other's rows.
    let (broker, topic) = seeded_topic("union-like", 20000, 2, "crash", 20);
    let dir = temp_dir("union-like");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT 'c' AS k, user_id FROM logs WHERE lower(content) LIKE '%crash%' \
         UNION ALL SELECT 'v' AS k, user_id FROM logs WHERE lower(content) LIKE '%vulnerability%';",
    );
    let mut expected = Vec::new();
    for c in consume_all(&broker, &topic) {
        let r = parse_record(&c.payload).unwrap();
        let content = r.content.to_lowercase();
        for (k, word) in [("c", "crash"), ("v", "vulnerability")] {
            if content.contains(word) {
                expected.push(vec![k.to_string(), r.user_id.clone()]);
            }
        }
    }
    let expected = sorted(expected);
    assert!(expected.iter().any(|r| r[0] == "c") && expected.iter().any(|r| r[0] == "v"));
    assert_eq!(all_rows_sorted(&q, "3000"), expected);
}

/// Windows of 10 s over two event-time topics, the second of which goes quiet after 3 s
/// of event time; `idle` is the tables' idle_timeout option, if any. Returns the
/// (window start ms, count) rows the JSON-lines sink got, and the expected rows: every
/// window that ends at or before the busy topic's last event − 5 s, counted over both.
fn idle_run(idle: &str) -> (Vec<(i64, i64)>, Vec<(i64, i64)>) {
    let (broker, a) = event_time_topic("idle-a", 20000, 3, 400, "crash", 50);
    let (_, b) = event_time_topic("idle-b", 1200, 4, 400, "crash", 50);
    let dir = temp_dir("idle");
    let out = dir.join("out");
    let et = format!(
        "event_time = 'to_timestamp_millis(\"timestamp\")', watermark_delay = '5 seconds'{idle}"
    );
    let cols = "timestamp BIGINT, user_id VARCHAR";
    let path = dir.join("q.sql");
    std::fs::write(
        &path,
        format!(
            "CREATE TABLE a ({cols}) WITH (connector = 'kafka', topic = '{a}', bootstrap_servers = '{broker}', {et});\n\
             CREATE TABLE b ({cols}) WITH (connector = 'kafka', topic = '{b}', bootstrap_servers = '{broker}', {et});\n\
             CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\n\
             INSERT INTO out SELECT tumble(event_time, INTERVAL '10 seconds') AS w, count(*) AS n \
             FROM (SELECT event_time FROM a UNION ALL SELECT event_time FROM b) \
             GROUP BY tumble(event_time, INTERVAL '10 seconds');\n",
            out.display()
        ),
    )
    .unwrap();
    run_ok(&[
        "run",
        path.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "1000",
        "--trigger",
        "200ms",
    ]);
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    let mut max_a = i64::MIN;
    for (topic, busy) in [(&a, true), (&b, false)] {
        for c in consume_all(&broker, topic) {
            let r = parse_record(&c.payload).unwrap();
            if busy {
                max_a = max_a.max(r.timestamp);
            }
            *counts
                .entry(r.timestamp.div_euclid(10_000) * 10_000)
                .or_insert(0) += 1;
        }
    }
    let expected = counts
        .into_iter()
        .filter(|(start, _)| start + 10_000 <= max_a - 5_000)
        .collect();
    let mut got = Vec::new();
    if out.exists() {
        for f in std::fs::read_dir(&out).unwrap() {
            for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let start = chrono::NaiveDateTime::parse_from_str(
                    v["w"]["start"].as_str().unwrap(),
                    "%Y-%m-%dT%H:%M:%S%.f",
                )
                .unwrap()
                .and_utc()
                .timestamp_millis();
                got.push((start, v["n"].as_i64().unwrap()));
            }
        }
    }
    (sorted(got), expected)
}

#[test]
fn windows_close_when_one_of_two_sources_goes_idle() {
    // Without idle_timeout the quiet topic holds the watermark at its last event − 5 s:
    // no window of the busy topic closes.
    let (held, _) = idle_run("");
    assert_eq!(
        held,
        Vec::new(),
        "the quiet source should hold the watermark back"
    );
    // With it, the quiet topic stops counting after 1 s without records, and windows
    // close as the busy topic's watermark passes them.
    let (got, expected) = idle_run(", idle_timeout = '1 second'");
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(got, expected);
}
