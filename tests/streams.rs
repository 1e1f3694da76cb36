//! Golden streaming cases (style.md): each folder of tests/golden/streams holds
//! `query.sql` (a query over table `logs`, or over the tables its input names; header
//! lines `-- mode: M` set the output mode and `-- event_time: E` the tables' event time),
//! `input.txt` (the records of each batch, `PARTITION JSON` per line for table `logs` or
//! `TABLE PARTITION JSON`, batches separated by `-- batch`; every batch puts the same
//! number of records in each of the two partitions of every table, since the per-batch
//! bound applies per table) and `expected.txt` (the console output, batch by batch).
//! Each table is a topic of its own with the log records' columns, so a case with two
//! tables has the two inputs of a join arrive out of order with each other.
//!
//! Each case runs three ways on a real broker, and each must print `expected.txt`:
//! one process over all batches (batch boundaries kept by the per-batch bound), two
//! processes with a checkpoint-and-restore in the middle, and one process per batch
//! (a restore at every boundary). After an intended change, rewrite the expected files
//! with `SLUICE_BLESS=1 cargo test --release --test streams`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

/// A case's batches: per batch, per table, the records of partition 0 and of partition 1.
type Batches = Vec<BTreeMap<String, [Vec<String>; 2]>>;

fn read_input(path: &Path) -> Batches {
    let text = std::fs::read_to_string(path).unwrap();
    let mut batches: Batches = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "-- batch" {
            batches.push(BTreeMap::new());
            continue;
        }
        let (head, record) = line.split_once(' ').expect("[TABLE] PARTITION JSON");
        let (table, p, record) = match head.parse::<usize>() {
            Ok(p) => ("logs", p, record),
            Err(_) => {
                let (p, record) = record.split_once(' ').expect("TABLE PARTITION JSON");
                (head, p.parse().expect("partition 0 or 1"), record)
            }
        };
        let batch = batches.last_mut().expect("input starts with -- batch");
        batch.entry(table.to_string()).or_default()[p].push(record.to_string());
    }
    let n = batches[0].values().next().expect("records")[0].len();
    let tables: Vec<&String> = batches[0].keys().collect();
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(
            b.keys().collect::<Vec<_>>(),
            tables,
            "batch {i}: the same tables"
        );
        for (t, parts) in b {
            assert!(
                parts[0].len() == n && parts[1].len() == n,
                "{}: batch {i} must hold {n} records of table {t} in each partition",
                path.display()
            );
        }
    }
    batches
}

fn produce(
    broker: &str,
    topics: &BTreeMap<String, String>,
    batches: &[BTreeMap<String, [Vec<String>; 2]>],
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    for batch in batches {
        for (table, parts) in batch {
            for (p, records) in parts.iter().enumerate() {
                for r in records {
                    producer
                        .send(
                            BaseRecord::<(), str>::to(&topics[table])
                                .partition(p as i32)
                                .payload(r),
                        )
                        .unwrap();
                }
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// The value of header line `-- key: value` of a query file.
fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .map_while(|l| l.strip_prefix("-- "))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
}

/// Runs the case's query over the batches already in `topic` with checkpoint `ckpt`,
/// each batch bounded to what one input batch holds; returns the console output.
fn run(query: &Path, ckpt: &Path, per_batch: usize, mode: &str) -> String {
    let bound = per_batch.to_string();
    let (stdout, _) = run_ok(&[
        "run",
        query.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        &bound,
        "--output-mode",
        mode,
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    stdout
}

fn check_case(case: &Path) {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(case.join("query.sql")).unwrap();
    let mode = header(&text, "mode").unwrap_or("complete").to_string();
    let event_time = header(&text, "event_time")
        .unwrap_or("to_timestamp_millis(\"timestamp\")")
        .to_string();
    let batches = read_input(&case.join("input.txt"));
    let per_batch = 2 * batches[0].values().next().unwrap()[0].len();
    let half = batches.len() / 2;
    let broker = broker();
    let ways: [&[usize]; 3] = [&[batches.len()], &[half, batches.len()], &[]];
    let mut outputs = Vec::new();
    for (way, cuts) in ways.iter().enumerate() {
        let topics: BTreeMap<String, String> = batches[0]
            .keys()
            .map(|t| (t.clone(), unique_topic(&format!("golden-{name}-{t}"))))
            .collect();
        let dir = temp_dir(&format!("golden-{name}"));
        let mut ddl = String::new();
        for (table, topic) in &topics {
            sluice::kafka::ensure_topic(&broker, topic, 2).unwrap();
            ddl.push_str(&format!(
                "CREATE TABLE {table} (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
                 user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
                 bootstrap_servers = '{broker}', format = 'json', \
                 event_time = '{}', watermark_delay = '2 seconds');\n",
                event_time.replace('\'', "''")
            ));
        }
        let q = dir.join("query.sql");
        std::fs::write(&q, format!("{ddl}{text}")).unwrap();
        let ckpt = dir.join("ckpt");
        // Where each process stops: all at once, a restore in the middle, or every batch.
        let cuts: Vec<usize> = match cuts.is_empty() {
            true => (1..=batches.len()).collect(),
            false => cuts.to_vec(),
        };
        let mut out = String::new();
        let mut fed = 0;
        for cut in cuts {
            produce(&broker, &topics, &batches[fed..cut]);
            fed = cut;
            out.push_str(&run(&q, &ckpt, per_batch, &mode));
        }
        outputs.push((way, out));
    }
    let expected_path = case.join("expected.txt");
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&expected_path, &outputs[0].1).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "missing {}: run with SLUICE_BLESS=1",
            expected_path.display()
        )
    });
    let ways = [
        "one process",
        "a restore in the middle",
        "a restore at every batch",
    ];
    for (way, out) in outputs {
        assert_eq!(out, expected, "{name}, {}: output differs", ways[way]);
    }
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/golden/streams"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("query.sql").exists())
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_golden_stream_case_prints_its_expected_output_with_and_without_restores() {
    let cases = cases();
    assert!(cases.len() >= 6, "golden cases: {cases:?}");
    for case in cases {
        check_case(&case);
    }
}
