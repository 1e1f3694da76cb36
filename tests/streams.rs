//! Golden streaming cases (style.md): each folder of tests/golden/streams holds
//! `query.sql` (a query over table `logs`; a first line `-- mode: M` sets the output
//! mode), `input.txt` (the records of each batch, `PARTITION JSON` per line, batches
//! separated by `-- batch`; every batch puts the same number of records in each of the
//! two partitions) and `expected.txt` (the console output, batch by batch).
//!
//! Each case runs three ways on a real broker, and each must print `expected.txt`:
//! one process over all batches (batch boundaries kept by the per-batch bound), two
//! processes with a checkpoint-and-restore in the middle, and one process per batch
//! (a restore at every boundary). After an intended change, rewrite the expected files
//! with `SLUICE_BLESS=1 cargo test --release --test streams`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

/// A case's batches: per batch, the records of partition 0 and of partition 1.
type Batches = Vec<[Vec<String>; 2]>;

fn read_input(path: &Path) -> Batches {
    let text = std::fs::read_to_string(path).unwrap();
    let mut batches: Batches = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "-- batch" {
            batches.push([Vec::new(), Vec::new()]);
            continue;
        }
        let (p, record) = line.split_once(' ').expect("PARTITION JSON");
        let p: usize = p.parse().expect("partition 0 or 1");
        batches.last_mut().expect("input starts with -- batch")[p].push(record.to_string());
    }
    let n = batches[0][0].len();
    for (i, b) in batches.iter().enumerate() {
        assert!(
            b[0].len() == n && b[1].len() == n,
            "{}: batch {i} must hold {n} records in each partition",
            path.display()
        );
    }
    batches
}

fn produce(broker: &str, topic: &str, batches: &[[Vec<String>; 2]]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    for batch in batches {
        for (p, records) in batch.iter().enumerate() {
            for r in records {
                producer
                    .send(
                        BaseRecord::<(), str>::to(topic)
                            .partition(p as i32)
                            .payload(r),
                    )
                    .unwrap();
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
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
    let mode = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("-- mode: "))
        .unwrap_or("complete")
        .trim()
        .to_string();
    let batches = read_input(&case.join("input.txt"));
    let per_batch = 2 * batches[0][0].len();
    let half = batches.len() / 2;
    let broker = broker();
    let ways: [&[usize]; 3] = [&[batches.len()], &[half, batches.len()], &[]];
    let mut outputs = Vec::new();
    for (way, cuts) in ways.iter().enumerate() {
        let topic = unique_topic(&format!("golden-{name}"));
        sluice::kafka::ensure_topic(&broker, &topic, 2).unwrap();
        let dir = temp_dir(&format!("golden-{name}"));
        let q = dir.join("query.sql");
        std::fs::write(
            &q,
            format!(
                "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
                 user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
                 bootstrap_servers = '{broker}', format = 'json', \
                 event_time = 'to_timestamp_millis(\"timestamp\")', watermark_delay = '2 seconds');\n{text}"
            ),
        )
        .unwrap();
        let ckpt = dir.join("ckpt");
        // Where each process stops: all at once, a restore in the middle, or every batch.
        let cuts: Vec<usize> = match cuts.is_empty() {
            true => (1..=batches.len()).collect(),
            false => cuts.to_vec(),
        };
        let mut out = String::new();
        let mut fed = 0;
        for cut in cuts {
            produce(&broker, &topic, &batches[fed..cut]);
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
