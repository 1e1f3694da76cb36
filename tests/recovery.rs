//! Checkpoints and exactly-once recovery against a real Kafka broker: the process is
//! SIGKILLed at random moments and restarted; the union of what the file sinks hold
//! must equal an independent computation, with nothing missing and nothing twice.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::q2::*;
use common::*;

#[test]
fn query2_into_parquet_is_exact_after_repeated_sigkill() {
    let (broker, topic) = event_time_topic("kill2", 40000, 21, 400, "crash", 1);
    let expected = q2_expected(&broker, &topic);
    assert!(expected.len() > 100);

    let dir = temp_dir("kill2");
    let out = dir.join("out");
    // Small rollover: per-batch files are merged often, so kills also land in merges.
    let q = write_query_with(
        &dir,
        &broker,
        &topic,
        "parquet",
        ", rollover_bytes = '20000'",
        &out,
        Q2,
    );
    let ckpt = dir.join("ckpt");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "200",
        "--trigger",
        "50ms",
        "--close-windows-at-end",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    let killed = kill_and_restart(&args, &delays(14, 7, 150, 1200));
    assert!(killed >= 10, "only {killed} runs were killed mid-stream");
    assert_eq!(parquet_rows(&out), expected, "after {killed} kills");
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let merged = names.iter().filter(|n| n.matches('-').count() == 2).count();
    assert!(merged > 0, "no per-batch files were merged: {names:?}");
    // Old checkpoint files are deleted: at most the last 10 batches remain.
    assert!(std::fs::read_dir(ckpt.join("commits")).unwrap().count() <= 10);
}

/// The final complete-mode result: the JSON-lines file of the highest batch id.
fn last_complete_result(out: &Path) -> BTreeMap<String, i64> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let last = files.last().expect("a result file");
    std::fs::read_to_string(last)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["source_ip"].as_str().unwrap().to_string(),
                v["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

const Q1: &str = "SELECT source_ip, count(*) AS count FROM logs \
                  WHERE lower(content) LIKE '%vulnerability%' AND severity = 'High' \
                  GROUP BY source_ip ORDER BY count DESC;";

fn q1_expected(broker: &str, topic: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for c in consume_all(broker, topic) {
        let r = parse_record(&c.payload).unwrap();
        if q1_matches(&r) {
            *m.entry(r.source_ip).or_insert(0) += 1;
        }
    }
    m
}

#[test]
fn query1_state_is_exact_after_repeated_sigkill() {
    let (broker, topic) = seeded_topic("kill1", 30_000, 2, "vulnerability", 4);
    let dir = temp_dir("kill1");
    let out = dir.join("out");
    let q = write_query(&dir, &broker, &topic, "jsonl", &out, Q1);
    let ckpt = dir.join("ckpt");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "150",
        "--trigger",
        "50ms",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    let killed = kill_and_restart(&args, &delays(12, 9, 150, 1200));
    assert!(killed >= 10, "only {killed} runs were killed mid-stream");
    assert_eq!(last_complete_result(&out), q1_expected(&broker, &topic));
}

/// Runs Query 1 once to the end with a checkpoint, damages the newest commit with
/// `damage`, adds records, runs again: the result must be exact, with a warning.
fn recovers_from(damage: impl Fn(&Path, &str), warning: &str) {
    let (broker, topic) = seeded_topic("torn", 6_000, 2, "vulnerability", 4);
    let dir = temp_dir("torn");
    let out = dir.join("out");
    let q = write_query(&dir, &broker, &topic, "jsonl", &out, Q1);
    let ckpt = dir.join("ckpt");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "1000",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    sluice_ok(&args);
    let mut commits: Vec<PathBuf> = std::fs::read_dir(ckpt.join("commits"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    commits.sort();
    let newest = commits
        .last()
        .unwrap()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    damage(&ckpt, &newest);
    sluice_ok(&[
        "gen",
        "--broker",
        &broker,
        "--topic",
        &topic,
        "--target-rps",
        "0",
        "--max-records",
        "3000",
        "--seed",
        "8",
        "--additional-term",
        "vulnerability",
        "--additional-term-rate",
        "4",
        "--quiet",
    ]);
    let o = sluice_ok(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(warning),
        "expected {warning:?} in:\n{stderr}"
    );
    assert_eq!(last_complete_result(&out), q1_expected(&broker, &topic));
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

#[test]
fn a_torn_manifest_falls_back_to_the_previous_commit() {
    recovers_from(
        |ckpt, id| truncate(&ckpt.join("commits").join(format!("{id}.json"))),
        "torn manifest",
    );
}

#[test]
fn a_truncated_snapshot_falls_back_to_the_previous_commit() {
    recovers_from(
        |ckpt, id| {
            // The newest batch's state file: a full snapshot or a delta.
            let file = std::fs::read_dir(ckpt.join("state"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(id))
                .expect("the newest batch wrote a state file");
            truncate(&file)
        },
        "truncated",
    );
}

#[test]
fn a_checkpoint_of_another_query_is_refused_unless_forced() {
    let (broker, topic) = seeded_topic("wrongq", 2_000, 2, "vulnerability", 4);
    let dir = temp_dir("wrongq");
    let q = write_query(&dir, &broker, &topic, "jsonl", &dir.join("out"), Q1);
    let ckpt = dir.join("ckpt");
    sluice_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = write_query(
        &other_dir,
        &broker,
        &topic,
        "jsonl",
        &dir.join("out2"),
        &Q1.replace("'High'", "'Critical'"),
    );
    let o = sluice(&[
        "run",
        other.to_str().unwrap(),
        "--available-now",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("different query") && stderr.contains("--force"),
        "{stderr}"
    );
    let o = sluice_ok(&[
        "run",
        other.to_str().unwrap(),
        "--available-now",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--force",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: --force"));
}

/// Every committed message of `topic` (read_committed: what downstream consumers see).
fn committed_messages(broker: &str, topic: &str) -> Vec<serde_json::Value> {
    committed(broker, topic)
        .iter()
        .map(|m| serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap())
        .collect()
}

#[test]
fn query2_into_kafka_is_exactly_once_after_repeated_sigkill() {
    let (broker, topic) = event_time_topic("killk", 30000, 21, 400, "crash", 1);
    let expected = q2_expected(&broker, &topic);
    assert!(expected.len() > 50);

    let out_topic = unique_topic("killk-out");
    sluice::kafka::ensure_topic(&broker, &out_topic, 2).unwrap();
    let dir = temp_dir("killk");
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
             user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
             bootstrap_servers = '{broker}', event_time = 'to_timestamp_millis(\"timestamp\")', \
             watermark_delay = '30 seconds');\n\
             CREATE TABLE out WITH (connector = 'kafka', topic = '{out_topic}', \
             bootstrap_servers = '{broker}', key = 'user_id');\nINSERT INTO out {Q2}\n"
        ),
    )
    .unwrap();
    let ckpt = dir.join("ckpt");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "200",
        "--trigger",
        "50ms",
        "--close-windows-at-end",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    // The narrowest window first: the sink committed a batch, the checkpoint did not.
    let crashed = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_CRASH_AFTER_SINK", "5")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let said = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        said.contains("aborting after the sink wrote batch"),
        "{said}"
    );
    let killed = kill_and_restart(&args, &delays(14, 9, 200, 900));
    assert!(killed >= 8, "only {killed} runs were killed mid-stream");
    let start_ms = |v: &serde_json::Value| {
        chrono::NaiveDateTime::parse_from_str(v.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    let mut got: Vec<(i64, String, i64)> = committed_messages(&broker, &out_topic)
        .iter()
        .map(|v| {
            (
                start_ms(&v["interval"]["start"]),
                v["user_id"].as_str().unwrap().to_string(),
                v["crash_count"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let want = expected; // sorted, as q2_expected returns it
    assert_eq!(
        got, want,
        "after {killed} kills: nothing missing, nothing twice"
    );

    // A run with a new checkpoint starts again from batch 0: the sink must write all of
    // it (only a replayed batch is ever skipped), so every row is now there twice.
    let fresh = dir.join("fresh-ckpt");
    let mut again = args.to_vec();
    let at = again.len() - 1;
    again[at] = fresh.to_str().unwrap();
    run_ok(&again);
    let n = committed_messages(&broker, &out_topic).len();
    assert_eq!(n, 2 * want.len(), "a fresh run's output was skipped");
}
