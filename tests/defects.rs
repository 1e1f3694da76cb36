//! Regression tests for the defects issue 18 lists, each named for its defect and
//! checked against an independent computation over the records read back from Kafka
//! (a plain fold with serde_json), never against Sluice's own output.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The records of `topic`, parsed independently.
fn records(broker: &str, topic: &str) -> Vec<LogRecord> {
    consume_all(broker, topic)
        .iter()
        .map(|c| parse_record(&c.payload).expect("a well-formed record"))
        .collect()
}

/// Defect 1: a UNION ALL of two filters of the same table returned about half its rows
/// (both scans took the batch from one slot; only the first got it).
#[test]
fn union_all_of_one_table_keeps_every_row() {
    let (broker, topic) = seeded_topic("union", 20_000, 2, "crash", 50);
    let recs = records(&broker, &topic);
    let expected = sorted(
        recs.iter()
            .filter(|r| {
                (r.source_ip == "192.168.1.5" || r.source_ip == "192.168.1.6")
                    && r.severity == "Low"
            })
            .map(|r| vec![r.user_id.clone(), r.source_ip.clone()])
            .collect(),
    );
    assert!(
        expected.len() > 50,
        "too few matches to test: {}",
        expected.len()
    );
    let dir = temp_dir("union");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT user_id, source_ip FROM logs WHERE source_ip = '192.168.1.5' AND severity = 'Low' \
         UNION ALL \
         SELECT user_id, source_ip FROM logs WHERE source_ip = '192.168.1.6' AND severity = 'Low';",
    );
    for batch in ["1500", "7000"] {
        assert_eq!(all_rows_sorted(&q, batch), expected, "batches of {batch}");
    }
    // Under an aggregate too: a union below the partial aggregate has twice the
    // partitions of the input.
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT source_ip, count(*) AS n FROM (\
           SELECT source_ip FROM logs WHERE source_ip = '192.168.1.5' AND severity = 'Low' \
           UNION ALL \
           SELECT source_ip FROM logs WHERE source_ip = '192.168.1.6' AND severity = 'Low') \
         GROUP BY source_ip;",
    );
    let (stdout, _) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "3000",
    ]);
    let last = parse_console(&stdout).pop().expect("a batch");
    let got: BTreeMap<String, usize> = last
        .rows
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    let mut want = BTreeMap::new();
    for r in &expected {
        *want.entry(r[1].clone()).or_insert(0) += 1;
    }
    assert_eq!(got, want);
}

/// Defect 2: `count(*), count(DISTINCT …)` without GROUP BY panicked in the state merge.
/// It must work in complete and update mode, and resume from a checkpoint.
#[test]
fn global_aggregate_without_group_by_is_exact_across_a_restart() {
    let (broker, topic) = seeded_topic("global", 8_000, 2, "crash", 10);
    let dir = temp_dir("global");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT count(*) AS n, count(DISTINCT source_ip) AS ips, max(timestamp) AS last \
         FROM logs WHERE severity = 'High';",
    );
    let ckpt = dir.join("ckpt");
    let run = |mode: &str, checkpoint: bool| {
        let mut args = vec![
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            "900",
            "--output-mode",
            mode,
        ];
        if checkpoint {
            args.extend(["--checkpoint", ckpt.to_str().unwrap()]);
        }
        let (stdout, _) = run_ok(&args);
        parse_console(&stdout)
    };
    let expect = |recs: &[LogRecord]| {
        let high: Vec<&LogRecord> = recs.iter().filter(|r| r.severity == "High").collect();
        let ips: std::collections::BTreeSet<&str> =
            high.iter().map(|r| r.source_ip.as_str()).collect();
        let last = high.iter().map(|r| r.timestamp).max().unwrap();
        vec![
            high.len().to_string(),
            ips.len().to_string(),
            last.to_string(),
        ]
    };
    let first = expect(&records(&broker, &topic));
    for mode in ["complete", "update"] {
        let batches = run(mode, false);
        assert!(batches.len() >= 8, "{mode}: {} batches", batches.len());
        assert_eq!(batches.last().unwrap().header, ["n", "ips", "last"]);
        assert_eq!(batches.last().unwrap().rows, [first.clone()], "{mode}");
    }
    // With a checkpoint: run to the end, add records, run again from the checkpoint.
    assert_eq!(run("complete", true).last().unwrap().rows, [first]);
    append_records(&broker, &topic, 3000, 99);
    let resumed = run("complete", true);
    assert_eq!(
        resumed.last().unwrap().rows,
        [expect(&records(&broker, &topic))]
    );
}

/// Defect 3: `LIMIT 5` printed 5 rows per batch. A streaming LIMIT is n rows in all; the
/// query stops reading once they are out, and a restart from its checkpoint adds none.
#[test]
fn limit_yields_n_rows_in_all_and_stops() {
    let (broker, topic) = seeded_topic("limit", 10_000, 2, "crash", 10);
    let high: std::collections::BTreeSet<(String, String)> = records(&broker, &topic)
        .into_iter()
        .filter(|r| r.severity == "High")
        .map(|r| (r.user_id, r.timestamp.to_string()))
        .collect();
    let dir = temp_dir("limit");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT user_id, timestamp FROM logs WHERE severity = 'High' LIMIT 40;",
    );
    let ckpt = dir.join("ckpt");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "60",
        "--num-rows",
        "0",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    let (stdout, stderr) = run_ok(&args);
    let rows = printed_rows(&stdout);
    assert_eq!(rows.len(), 40, "{stdout}");
    for r in &rows {
        assert!(
            high.contains(&(r[0].clone(), r[1].clone())),
            "{r:?} is not a High record"
        );
    }
    assert!(stderr.contains("LIMIT 40 reached"), "{stderr}");
    let read: i64 = parse_offsets(&stderr)
        .iter()
        .flatten()
        .map(|(_, s, e)| e - s)
        .sum();
    assert!(
        read < 1_000,
        "read {read} records for 40 rows: reading did not stop"
    );
    // The checkpoint remembers the rows already emitted.
    let (stdout, stderr) = run_ok(&args);
    assert!(printed_rows(&stdout).is_empty(), "{stdout}");
    assert!(stderr.contains("LIMIT 40 reached"), "{stderr}");
    // OFFSET cannot be done per batch: refused with a message.
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT user_id FROM logs LIMIT 5 OFFSET 2;",
    );
    let out = sluice(&["run", q.to_str().unwrap(), "--available-now"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OFFSET is not supported"));
}

/// Defect 4: a GROUP BY in complete mode into a Parquet sink appended the whole result
/// every batch. The directory must hold exactly one copy of the result.
#[test]
fn complete_mode_into_a_file_sink_leaves_no_duplicates() {
    let (broker, topic) = seeded_topic("complete-file", 10_000, 2, "crash", 10);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for r in records(&broker, &topic)
        .into_iter()
        .filter(|r| r.severity == "Critical")
    {
        *expected.entry(r.user_id).or_insert(0) += 1;
    }
    let dir = temp_dir("complete-file");
    let out = dir.join("out");
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (severity VARCHAR, user_id VARCHAR) WITH (connector = 'kafka', \
             topic = '{topic}', bootstrap_servers = '{broker}');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = '{}');\n\
             INSERT INTO out SELECT user_id, count(*) AS n FROM logs WHERE severity = 'Critical' GROUP BY user_id;",
            out.display()
        ),
    )
    .unwrap();
    let (_, stderr) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "500",
    ]);
    assert!(
        stderr.contains("batch 19:"),
        "fewer than 20 batches: {stderr}"
    );
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for f in std::fs::read_dir(&out).unwrap() {
        let file = std::fs::File::open(f.unwrap().path()).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let users = arrow::array::AsArray::as_string::<i32>(b.column(0));
            let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b.column(1));
            for i in 0..b.num_rows() {
                let prev = got.insert(users.value(i).to_string(), n.value(i));
                assert!(
                    prev.is_none(),
                    "{} appears twice in the sink",
                    users.value(i)
                );
            }
        }
    }
    assert_eq!(got, expected);
}

/// Defect 5: an unbounded source never finished its first batch, grew without bound
/// and ignored SIGTERM. Every batch is bounded by default, and SIGTERM stops the run
/// within about a second, even in the middle of reading a batch.
#[test]
fn unbounded_source_batches_are_bounded_and_sigterm_stops_mid_fetch() {
    let dir = temp_dir("unbounded");
    let progress = dir.join("progress.jsonl");
    // 1. The default bound: batches of at most 1 M records from an endless generator.
    let mut child = endless_query(&["--progress-json", progress.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let batches = loop {
        let text = std::fs::read_to_string(&progress).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "fewer than 3 batches in 120 s");
        assert!(child.try_wait().unwrap().is_none(), "sluice exited early");
        std::thread::sleep(Duration::from_millis(100)); // polling a file for a condition
    };
    for b in &batches {
        let n = b["numInputRows"].as_u64().unwrap();
        assert!(n > 0 && n <= 1_000_000, "batch of {n} records");
    }
    let stopped = terminate(&mut child);
    assert!(
        stopped < Duration::from_secs(3),
        "took {stopped:?} to stop after SIGTERM"
    );

    // 2. SIGTERM while a huge batch is being read: the fetch is cut short.
    let mut child = endless_query(&[
        "--max-records-per-batch",
        "1000000000",
        "--max-bytes-per-batch",
        "1000GB",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("reading"));
    assert!(started, "sluice did not start reading");
    let stopped = terminate(&mut child);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        stopped < Duration::from_secs(3),
        "took {stopped:?} to stop mid-fetch"
    );
    assert!(
        !rest.iter().any(|l| l.starts_with("[sluice] batch 0")),
        "the abandoned batch was reported: {rest:?}"
    );
}

/// Query 2 over the endless generator, with `extra` flags; stdout discarded.
fn endless_query(extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.args([
        "run",
        "queries/crash_alerts.sql",
        "--source",
        "generator",
        "--status",
        "plain",
    ])
    .args(extra)
    .current_dir(repo())
    .stdout(Stdio::null());
    c
}

/// Sends SIGTERM and waits for the process to exit; returns how long that took.
fn terminate(child: &mut std::process::Child) -> Duration {
    let sent = Instant::now();
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            return sent.elapsed();
        }
        if sent.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("sluice ignored SIGTERM for 20 s");
        }
        std::thread::sleep(Duration::from_millis(20)); // waiting on the exit condition
    }
}

/// Defect 7: `regexp_match(…)[2]` and `struct['field']` failed with "GetFieldAccess not
/// supported by ExprPlanner". List and struct access must plan and compute.
#[test]
fn list_and_struct_field_access_is_planned() {
    let (broker, topic) = seeded_topic("nested", 3_000, 2, "crash", 10);
    let expected = sorted(
        records(&broker, &topic)
            .into_iter()
            .filter(|r| r.severity == "Low")
            .map(|r| {
                let last_octet = r.source_ip.rsplit('.').next().unwrap().to_string();
                let number = r.user_id.trim_start_matches("user_").to_string();
                vec![number, last_octet, r.severity]
            })
            .collect(),
    );
    let dir = temp_dir("nested");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT regexp_match(user_id, '(user)_([0-9]+)')[2] AS number, \
                s['octet'] AS octet, s['sev'] AS sev \
         FROM (SELECT user_id, named_struct('octet', split_part(source_ip, '.', 4), 'sev', severity) AS s \
               FROM logs WHERE severity = 'Low');",
    );
    assert_eq!(all_rows_sorted(&q, "700"), expected);
}
