//! `sluice gen` against a real Kafka broker: what it writes is read back with a plain
//! consumer and checked with serde_json, independently of how the generator writes it.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use sluice::gen::record::VOCABULARY;

const N: u64 = 200_000;
const RATE: u64 = 50;
const START_MS: i64 = 1_768_402_339_337;

fn gen_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "gen",
        "--target-rps",
        "0",
        "--seed",
        "42",
        "--start-time-ms",
        "1768402339337",
        "--additional-term",
        "crash",
        "--additional-term-rate",
        "50",
        "--quiet",
    ];
    v.extend_from_slice(extra);
    v
}

/// Checks one record against workload.md; returns whether `content` holds "crash".
fn check_record(line: &[u8], n_max_ts: i64) -> bool {
    let v: serde_json::Value = serde_json::from_slice(line).expect("record is JSON");
    let o = v.as_object().expect("record is an object");
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "content",
            "severity",
            "source_ip",
            "status",
            "timestamp",
            "user_id"
        ]
    );
    let ts = o["timestamp"].as_i64().expect("timestamp is an integer");
    assert!((START_MS - 1000..=n_max_ts).contains(&ts), "timestamp {ts}");
    let sev = o["severity"].as_str().unwrap();
    let status = o["status"].as_str().unwrap();
    let want = match sev {
        "Low" => "Info",
        "Medium" => "Warning",
        "High" => "Error",
        "Critical" => "Failure",
        other => panic!("severity {other}"),
    };
    assert_eq!(status, want);
    let ip = o["source_ip"].as_str().unwrap();
    let last: u32 = ip.strip_prefix("192.168.1.").expect(ip).parse().unwrap();
    assert!(last <= 99, "{ip}");
    let user: u32 = o["user_id"]
        .as_str()
        .unwrap()
        .strip_prefix("user_")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1000..=1999).contains(&user), "{user}");
    let content = o["content"].as_str().unwrap();
    let words: Vec<&str> = content.split(' ').collect();
    let crash = words.iter().filter(|w| **w == "crash").count();
    assert!(crash <= 1, "{content}");
    assert!((15..=20).contains(&(words.len() - crash)), "{content}");
    let vocab: HashSet<&str> = VOCABULARY.iter().copied().collect();
    assert!(
        words.iter().all(|w| *w == "crash" || vocab.contains(w)),
        "{content}"
    );
    crash == 1
}

#[test]
fn gen_writes_seeded_workload_records_to_kafka() {
    let broker = broker();
    let topic = unique_topic("gen");
    let before = sluice::gen::wall_ms();
    sluice_ok(&gen_args(&[
        "--broker",
        &broker,
        "--topic",
        &topic,
        "--partitions",
        "2",
        "--max-records",
        "200000",
    ]));

    let after = sluice::gen::wall_ms();
    let records = consume_all(&broker, &topic);
    assert_eq!(records.len() as u64, N);
    // The generator stamps each message with its cached wall clock (create time), so
    // librdkafka does not read the clock per record: every stamp falls inside the run.
    assert!(
        records.iter().all(|r| r
            .timestamp_ms
            .is_some_and(|t| (before..=after).contains(&t))),
        "a Kafka timestamp outside the run [{before}, {after}]"
    );
    let stamps: Vec<i64> = records.iter().filter_map(|r| r.timestamp_ms).collect();
    let (first, last) = (stamps.iter().min(), stamps.iter().max());
    assert!(first < last, "the stamps do not advance during the run");
    let mut per_partition = BTreeMap::new();
    for r in &records {
        *per_partition.entry(r.partition).or_insert(0u64) += 1;
    }
    assert_eq!(per_partition.len(), 2, "both partitions receive records");
    assert!(
        per_partition.values().all(|&n| n == N / 2),
        "{per_partition:?}"
    );

    let max_ts = START_MS + (N as i64 * 1000 / 100_000);
    let with_term = records
        .iter()
        .filter(|r| check_record(&r.payload, max_ts))
        .count() as f64;
    // Binomial(N, 1/RATE): mean 4000, sd ≈ 62.6; ±5 sd cannot pass by accident, and a
    // rate off by 10 % (or the term always/never inserted) fails.
    let mean = N as f64 / RATE as f64;
    let sd = (N as f64 * (1.0 / RATE as f64) * (1.0 - 1.0 / RATE as f64)).sqrt();
    assert!(
        (with_term - mean).abs() < 5.0 * sd,
        "term in {with_term} records, expected ≈ {mean}"
    );

    let severities: HashSet<String> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["severity"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(severities.len(), 4);

    // The same seed makes the same records: write them to a file and compare with what
    // Kafka holds. Record i went to partition i % 2 at offset i / 2.
    let dir = std::env::temp_dir().join(unique_topic("gen-file"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("records.jsonl");
    std::fs::write(&file, b"").unwrap();
    sluice_ok(&gen_args(&[
        "--output",
        file.to_str().unwrap(),
        "--max-records",
        "200000",
    ]));
    let text = std::fs::read(&file).unwrap();
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len() as u64, N);
    for r in &records {
        let i = (r.offset * 2 + r.partition as i64) as usize;
        assert_eq!(
            lines[i],
            &r.payload[..],
            "record {i} differs between runs with one seed"
        );
    }

    // A different seed makes different records.
    let other = dir.join("other.jsonl");
    std::fs::write(&other, b"").unwrap();
    let mut args = gen_args(&["--output", other.to_str().unwrap(), "--max-records", "1000"]);
    args[4] = "43";
    sluice_ok(&args);
    let other_text = std::fs::read(&other).unwrap();
    assert_ne!(&other_text[..], &text[..other_text.len()]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gen_reports_unreachable_broker_quickly() {
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = sluice(&["gen", "--broker", &addr, "--max-records", "10", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {stderr}");
    assert!(
        stderr.contains(&format!("cannot reach a Kafka broker at {addr}"))
            && stderr.contains("kafka-local.sh start"),
        "unreadable message: {stderr}"
    );
    assert_eq!(
        stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn gen_rolls_directory_output_by_record_count() {
    let dir = std::env::temp_dir().join(unique_topic("gen-dir"));
    sluice_ok(&gen_args(&[
        "--output",
        dir.to_str().unwrap(),
        "--max-records",
        "2500",
        "--records-per-file",
        "1000",
    ]));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    );
    let counts: Vec<usize> = files
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .inspect(|l| {
                    check_record(l.as_bytes(), START_MS + 100);
                })
                .count()
        })
        .collect();
    assert_eq!(counts, [1000, 1000, 500]);
    std::fs::remove_dir_all(&dir).ok();
}
