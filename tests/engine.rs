//! `sluice run` against a real Kafka broker. Every result is compared with an
//! independent computation: the topic read back with a plain consumer, records parsed
//! with serde_json, and the query folded in plain Rust.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const Q1: &str = "SELECT source_ip, count(*) AS count FROM logs \
                  WHERE lower(content) LIKE '%vulnerability%' AND severity = 'High' \
                  GROUP BY source_ip ORDER BY count DESC;";

/// Query 1 folded over every well-formed record of the topic.
fn q1_expected(broker: &str, topic: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for c in consume_all(broker, topic) {
        if let Some(r) = parse_record(&c.payload).filter(q1_matches) {
            *m.entry(r.source_ip).or_insert(0) += 1;
        }
    }
    m
}

fn as_counts(b: &PrintedBatch) -> BTreeMap<String, i64> {
    assert_eq!(b.header, ["source_ip", "count"]);
    b.rows
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect()
}

#[test]
fn query1_complete_mode_equals_independent_count_for_any_parallelism() {
    // A mixed-case extra term checks that lower() … LIKE matches case-insensitively.
    let (broker, topic) = seeded_topic("q1", 30_000, 2, "VulnerABILITY", 9);
    let expected = q1_expected(&broker, &topic);
    assert!(
        expected.len() > 50,
        "too few groups to mean anything: {}",
        expected.len()
    );
    let dir = temp_dir("q1");
    let q = query_file(&dir, &broker, &topic, Q1);
    for tp in ["1", "2", "4"] {
        let (stdout, stderr) = run_ok(&[
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--target-partitions",
            tp,
            "--max-records-per-batch",
            "2500",
            "--num-rows",
            "0",
        ]);
        let batches = parse_console(&stdout);
        assert!(
            batches.len() >= 10,
            "state must merge across many batches, got {}",
            batches.len()
        );
        assert_eq!(parse_offsets(&stderr).len(), batches.len());
        let last = batches.last().unwrap();
        assert_eq!(as_counts(last), expected, "target partitions {tp}");
        let counts: Vec<i64> = last.rows.iter().map(|r| r[1].parse().unwrap()).collect();
        assert!(
            counts.windows(2).all(|w| w[0] >= w[1]),
            "ORDER BY count DESC: {counts:?}"
        );
        // Complete mode: every batch shows all groups so far, never fewer.
        let sizes: Vec<usize> = batches.iter().map(|b| b.rows.len()).collect();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    }
}

#[test]
fn update_mode_emits_exactly_the_groups_that_changed() {
    let (broker, topic) = seeded_topic("upd", 12_000, 2, "vulnerability", 5);
    let records: HashMap<(i32, i64), LogRecord> = consume_all(&broker, &topic)
        .into_iter()
        .filter_map(|c| parse_record(&c.payload).map(|r| ((c.partition, c.offset), r)))
        .collect();
    let dir = temp_dir("upd");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT source_ip, count(*) AS count FROM logs WHERE lower(content) LIKE '%vulnerability%' \
         AND severity = 'High' GROUP BY source_ip;",
    );
    let (stdout, stderr) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--output-mode",
        "update",
        "--max-records-per-batch",
        "1500",
        "--num-rows",
        "0",
        "--target-partitions",
        "2",
    ]);
    let batches = parse_console(&stdout);
    let offsets = parse_offsets(&stderr);
    assert_eq!(batches.len(), offsets.len());
    assert!(batches.len() >= 8);
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut covered = 0;
    for (b, ranges) in batches.iter().zip(&offsets) {
        let mut changed = BTreeMap::new();
        for &(p, start, end) in ranges {
            covered += end - start;
            for o in start..end {
                let r = &records[&(p, o)];
                if q1_matches(r) {
                    *totals.entry(r.source_ip.clone()).or_insert(0) += 1;
                    changed.insert(r.source_ip.clone(), 0);
                }
            }
        }
        let want: BTreeMap<String, i64> =
            changed.keys().map(|ip| (ip.clone(), totals[ip])).collect();
        assert_eq!(as_counts(b), want, "batch {}", b.id);
    }
    assert_eq!(covered, 12_000, "the batches cover the topic exactly once");
}

#[test]
fn malformed_records_are_counted_kept_aside_and_change_nothing_else() {
    let (broker, topic) = seeded_topic("bad", 8_000, 2, "vulnerability", 4);
    let bad: Vec<&[u8]> = vec![
        br#"{"timestamp":1,"severity":"High","source_ip":"192.168.1.1","content":"vulnerability"#, // truncated
        // A wrong type in a column the query reads (columns it does not read are not decoded).
        br#"{"timestamp":1,"status":"Error","severity":3,"source_ip":"192.168.1.1","user_id":"user_1000","content":"vulnerability"}"#,
        b"{\"timestamp\":1,\"severity\":\"High\",\"source_ip\":\"192.168.1.1\",\"content\":\"vulnerability \xff\"}", // invalid UTF-8
        b"",                                                              // empty value
        br#"{"timestamp":1}{"timestamp":2}"#,                             // two objects in one value
        b"not json at all",
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .create()
        .unwrap();
    for round in 0..3 {
        for (i, payload) in bad.iter().enumerate() {
            let p = ((round + i) % 2) as i32;
            producer
                .send(
                    BaseRecord::<(), [u8]>::to(&topic)
                        .payload(payload)
                        .partition(p),
                )
                .unwrap();
        }
        // Good records after the bad ones, so the stream goes on past them.
        for _ in 0..2 {
            let good = br#"{"timestamp":5,"status":"Error","severity":"High","source_ip":"192.168.1.200","user_id":"user_1000","content":"VULNERABILITY found"}"#;
            producer
                .send(
                    BaseRecord::<(), [u8]>::to(&topic)
                        .payload(&good[..])
                        .partition((round % 2) as i32),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let injected = 3 * bad.len() as u64;

    let expected = q1_expected(&broker, &topic);
    assert_eq!(expected["192.168.1.200"], 6);
    let dir = temp_dir("bad");
    let q = query_file(&dir, &broker, &topic, Q1);
    // Could-match bad records (they hold the filter's word) must be counted even when the
    // prefilter skips records that cannot match; with --no-prefilter every one is.
    let could_match = 3 * bad
        .iter()
        .filter(|p| {
            String::from_utf8_lossy(p)
                .to_lowercase()
                .contains("vulnerability")
        })
        .count() as u64;
    assert!(could_match > 0 && could_match < injected);
    for exact in [true, false] {
        let dead = dir.join(format!("dead-{exact}.jsonl"));
        let mut args = vec![
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            "3000",
            "--num-rows",
            "0",
            "--dead-letter",
            dead.to_str().unwrap(),
        ];
        if exact {
            args.push("--no-prefilter");
        }
        let (stdout, stderr) = run_ok(&args);
        let counted = malformed_total(&stderr);
        if exact {
            assert_eq!(counted, injected, "{stderr}");
        } else {
            assert!(
                (could_match..=injected).contains(&counted),
                "{counted} of {injected}: {stderr}"
            );
        }
        assert!(
            stderr.contains("malformed record(s) skipped; first at partition"),
            "{stderr}"
        );
        assert_eq!(as_counts(parse_console(&stdout).last().unwrap()), expected);

        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, counted);
        let all = consume_all(&broker, &topic);
        for l in &lines {
            let (p, o) = (
                l["partition"].as_i64().unwrap() as i32,
                l["offset"].as_i64().unwrap(),
            );
            let rec = all
                .iter()
                .find(|c| c.partition == p && c.offset == o)
                .unwrap();
            assert!(
                parse_record(&rec.payload).is_none(),
                "dead letter points at a good record"
            );
            assert_eq!(dead_letter_payload(l), rec.payload);
            assert_eq!(l["topic"].as_str(), Some(topic.as_str()));
            assert_eq!(l["table"], "logs");
            assert!(!l["error"].as_str().unwrap().is_empty());
        }
    }
}

#[test]
fn stateless_filter_writes_exactly_the_matching_records() {
    let (broker, topic) = seeded_topic("filter", 10_000, 2, "CrAsH", 20);
    let mut expected: Vec<(String, String, String)> = consume_all(&broker, &topic)
        .iter()
        .filter_map(|c| parse_record(&c.payload))
        .filter(|r| {
            r.content.to_lowercase().contains("crash")
                && (r.severity == "High" || r.severity == "Critical")
        })
        .map(|r| (r.user_id, r.timestamp.to_string(), r.severity))
        .collect();
    expected.sort();
    assert!(expected.len() > 100);
    let dir = temp_dir("filter");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT user_id, timestamp, severity FROM logs \
         WHERE lower(content) LIKE '%crash%' AND severity IN ('High', 'Critical');",
    );
    let (stdout, _) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "2000",
        "--num-rows",
        "0",
    ]);
    let batches = parse_console(&stdout);
    assert!(batches.len() >= 5);
    let mut got: Vec<(String, String, String)> = batches
        .iter()
        .flat_map(|b| {
            assert_eq!(b.header, ["user_id", "timestamp", "severity"]);
            b.rows
                .iter()
                .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        })
        .collect();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn file_and_generator_sources_run_without_a_broker() {
    let dir = temp_dir("files");
    let data = dir.join("data");
    sluice_ok(&[
        "gen",
        "--output",
        data.to_str().unwrap(),
        "--max-records",
        "20000",
        "--records-per-file",
        "6000",
        "--target-rps",
        "0",
        "--seed",
        "3",
        "--additional-term",
        "vulnerability",
        "--additional-term-rate",
        "3",
        "--quiet",
    ]);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for r in records_in_files(&data).into_iter().filter(q1_matches) {
        *expected.entry(r.source_ip).or_insert(0) += 1;
    }
    // The query names a broker that is not there: --source replaces the Kafka table.
    let q = query_file(&dir, "127.0.0.1:1", "logs", Q1);
    let source = format!("file:{}", data.display());
    let (stdout, _) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--source",
        &source,
        "--available-now",
        "--num-rows",
        "0",
        "--max-records-per-batch",
        "5000",
    ]);
    assert_eq!(as_counts(parse_console(&stdout).last().unwrap()), expected);

    let (stdout, stderr) = run_ok(&[
        "run",
        "queries/vulnerabilities_by_ip.sql",
        "--source",
        "generator:50000",
        "--available-now",
    ]);
    let last = parse_console(&stdout).pop().expect("a batch");
    assert_eq!(last.header, ["source_ip", "count"]);
    assert!(!last.rows.is_empty());
    let read: i64 = parse_offsets(&stderr)
        .iter()
        .flatten()
        .map(|(_, s, e)| e - s)
        .sum();
    assert_eq!(read, 50_000);
}

#[test]
fn bad_sql_options_and_connections_give_one_clear_message() {
    let dir = temp_dir("errors");
    let check = |args: &[&str], needles: &[&str]| {
        let started = Instant::now();
        let out = sluice(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} must fail");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: expected {n:?} in:\n{stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    };
    let bad_sql = dir.join("bad.sql");
    std::fs::write(
        &bad_sql,
        "CREATE TABLE logs (a BIGINT) WITH (connector = 'generator');\nSELEC a FROM logs;\n",
    )
    .unwrap();
    check(
        &["run", bad_sql.to_str().unwrap()],
        &["bad.sql", "Line: 2, Column: 1"],
    );

    let bad_opt = dir.join("opt.sql");
    std::fs::write(&bad_opt, "CREATE TABLE logs (a BIGINT) WITH (connector = 'kafka', topik = 'logs');\nSELECT a FROM logs;\n").unwrap();
    check(
        &["run", bad_opt.to_str().unwrap()],
        &[
            "'topik'",
            "valid options: topic, bootstrap_servers, starting_offsets",
        ],
    );
    check(
        &[
            "run",
            "queries/vulnerabilities_by_ip.sql",
            "--trigger",
            "soon",
        ],
        &["soon", "500ms"],
    );
    check(
        &["run", "queries/vulnerabilities_by_ip.sql", "--no-such-flag"],
        &["--no-such-flag"],
    );
    check(
        &[
            "run",
            "queries/vulnerabilities_by_ip.sql",
            "--source",
            "generator",
            "--output-mode",
            "append",
        ],
        &["append output mode", "complete or update"],
    );

    let port = closed_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    check(
        &[
            "run",
            "queries/vulnerabilities_by_ip.sql",
            "--bootstrap-servers",
            &addr,
        ],
        &[&format!("cannot reach a Kafka broker at {addr}")],
    );
    let broker = broker();
    let missing = query_file(&dir, &broker, &unique_topic("missing"), Q1);
    check(
        &["run", missing.to_str().unwrap()],
        &["does not exist", "create it"],
    );

    // A Kafka sink: a missing output topic, and a key that is not a result column.
    let sink_query = |out_topic: &str, key: &str| {
        let path = dir.join(format!("sink-{key}.sql"));
        std::fs::write(
            &path,
            format!(
                "CREATE TABLE logs (source_ip VARCHAR) WITH (connector = 'generator');
                 CREATE TABLE out WITH (connector = 'kafka', topic = '{out_topic}',                  bootstrap_servers = '{broker}', key = '{key}');
                 INSERT INTO out SELECT source_ip, count(*) AS n FROM logs GROUP BY source_ip;
"
            ),
        )
        .unwrap();
        path
    };
    let absent = unique_topic("no-sink");
    check(
        &["run", sink_query(&absent, "source_ip").to_str().unwrap()],
        &[
            &format!("Kafka topic '{absent}' does not exist"),
            "create it",
        ],
    );
    let present = unique_topic("sink");
    sluice::kafka::ensure_topic(&broker, &present, 1).unwrap();
    check(
        &["run", sink_query(&present, "ip").to_str().unwrap()],
        &["'key' of table out", "'ip' is not a column", "source_ip, n"],
    );
}

#[test]
fn prefilter_never_drops_a_record_that_matches() {
    let (broker, topic) = seeded_topic("screen", 4_000, 2, "vulnerability", 50);
    let tricky: Vec<String> = [
        r#"\u0076ulnerability"#,         // an escape hides the first letter
        r#"VULNERABILITY"#,              // upper case
        r#"vULNerability and more"#,     // mixed case
        "caf\u{e9} vulnerability",       // non-ASCII elsewhere in the record
        r#"vulnera\"bility"#,            // an escape that breaks the word: no match
        r#"vulnerabilit"#,               // almost: no match
    ]
    .iter()
    .map(|c| format!(r#"{{"timestamp":1,"status":"Error","severity":"High","source_ip":"192.168.1.250","user_id":"user_1000","content":"{c}"}}"#))
    .collect();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .create()
        .unwrap();
    for (i, t) in tricky.iter().enumerate() {
        producer
            .send(
                BaseRecord::<(), str>::to(&topic)
                    .payload(t.as_str())
                    .partition((i % 2) as i32),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let expected = q1_expected(&broker, &topic);
    assert_eq!(
        expected["192.168.1.250"], 4,
        "the independent fold sees four matches"
    );
    let dir = temp_dir("screen");
    let q = query_file(&dir, &broker, &topic, Q1);
    let (stdout, stderr) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--num-rows",
        "0",
    ]);
    assert!(
        stderr.contains(r#"prefilter requires ["vulnerability"]"#),
        "{stderr}"
    );
    assert_eq!(as_counts(parse_console(&stdout).last().unwrap()), expected);
}

#[test]
fn progress_json_agrees_with_the_progress_lines() {
    let (broker, topic) = seeded_topic("progress", 30_000, 2, "vulnerability", 9);
    let by_offset: HashMap<(i32, i64), LogRecord> = consume_all(&broker, &topic)
        .into_iter()
        .filter_map(|c| parse_record(&c.payload).map(|r| ((c.partition, c.offset), r)))
        .collect();
    let dir = temp_dir("progress");
    let q = query_file(&dir, &broker, &topic, Q1);
    let json = dir.join("progress.jsonl");
    let (_, stderr) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "10000",
        "--target-partitions",
        "2",
        "--num-rows",
        "1",
        "--progress-json",
        json.to_str().unwrap(),
    ]);
    let records = progress_records(&json);
    let lines = parse_offsets(&stderr);
    assert_eq!(records.len(), lines.len());
    assert_eq!(records.len(), 3);
    let mut total = 0;
    for (i, (r, ranges)) in records.iter().zip(&lines).enumerate() {
        assert_eq!(r["batchId"], i as u64);
        let rows: i64 = ranges.iter().map(|(_, s, e)| e - s).sum();
        assert_eq!(r["numInputRows"], rows);
        total += rows;
        for (p, s, e) in ranges {
            assert_eq!(r["sources"][0]["startOffset"][p.to_string()], *s);
            assert_eq!(r["sources"][0]["endOffset"][p.to_string()], *e);
        }
        for phase in [
            "fetch",
            "read",
            "decode",
            "execute",
            "stateMerge",
            "sink",
            "checkpoint",
            "triggerExecution",
        ] {
            assert!(r["durationMs"][phase].is_u64(), "{phase} missing in {r}");
        }
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("[sluice] batch {i}:")))
            .unwrap();
        let groups: u64 = line
            .split(" groups in state")
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let state = &r["stateOperators"][0];
        assert_eq!(state["numRowsTotal"], groups);
        assert!(state["memoryUsedBytes"].as_u64().unwrap() > 0);
        // Rows per state shard: one entry per shard, summing to the groups held; with
        // ~100 keys hashed two ways, neither shard is empty.
        let per_shard: Vec<u64> = state["numRowsTotalPerShard"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(per_shard.len(), 2, "{state}");
        assert_eq!(per_shard.iter().sum::<u64>(), groups);
        assert!(per_shard.iter().all(|&n| n > 0), "{state}");
        // Partial rows merged: at least one per group this batch touched, at most one
        // per group and input partition.
        let merged: u64 = state["numRowsMergedPerShard"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let touched = ranges
            .iter()
            .flat_map(|&(p, s, e)| (s..e).map(move |o| (p, o)))
            .map(|k| &by_offset[&k])
            .filter(|r| q1_matches(r))
            .map(|r| r.source_ip.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        assert!(
            merged >= touched && merged <= 2 * touched,
            "merged {merged}, groups touched {touched}"
        );
        assert!(r["processMemoryBytes"].as_u64().unwrap() > 0);
    }
    assert_eq!(total, 30_000);
    assert_eq!(records[2]["sources"][0]["lag"], 0, "everything was read");
}
