//! Every kind of DataFusion aggregate keeps its state across micro-batches and across a
//! restart from a checkpoint: count, sum, min, max, avg and count(DISTINCT), on numbers
//! and strings, compared with an independent fold over the records read back.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

const AGGREGATES: &str = "SELECT severity, count(*) AS n, sum(timestamp % 1000) AS s, \
     min(timestamp) AS lo, max(timestamp) AS hi, avg(length(content)) AS avg_len, \
     count(DISTINCT user_id) AS users, count(DISTINCT source_ip) AS ips, \
     min(user_id) AS first_user, max(content) AS last_content \
     FROM logs GROUP BY severity ORDER BY severity;";

#[derive(Default)]
struct Fold {
    n: i64,
    s: i64,
    lo: i64,
    hi: i64,
    len_sum: i64,
    users: BTreeSet<String>,
    ips: BTreeSet<String>,
    first_user: Option<String>,
    last_content: Option<String>,
}

fn fold(records: &[LogRecord]) -> BTreeMap<String, Fold> {
    let mut out: BTreeMap<String, Fold> = BTreeMap::new();
    for r in records {
        let f = out.entry(r.severity.clone()).or_insert_with(|| Fold {
            lo: i64::MAX,
            hi: i64::MIN,
            ..Default::default()
        });
        f.n += 1;
        f.s += r.timestamp % 1000;
        f.lo = f.lo.min(r.timestamp);
        f.hi = f.hi.max(r.timestamp);
        f.len_sum += r.content.chars().count() as i64;
        f.users.insert(r.user_id.clone());
        f.ips.insert(r.source_ip.clone());
        if f.first_user.as_ref().is_none_or(|u| &r.user_id < u) {
            f.first_user = Some(r.user_id.clone());
        }
        if f.last_content.as_ref().is_none_or(|c| &r.content > c) {
            f.last_content = Some(r.content.clone());
        }
    }
    out
}

fn check(printed: &PrintedBatch, want: &BTreeMap<String, Fold>) {
    assert_eq!(
        printed.header,
        [
            "severity",
            "n",
            "s",
            "lo",
            "hi",
            "avg_len",
            "users",
            "ips",
            "first_user",
            "last_content"
        ]
    );
    assert_eq!(printed.rows.len(), want.len(), "{printed:?}");
    for (row, (severity, f)) in printed.rows.iter().zip(want) {
        assert_eq!(&row[0], severity);
        let int = |i: usize| row[i].parse::<i64>().unwrap();
        assert_eq!(int(1), f.n, "{severity} count");
        assert_eq!(int(2), f.s, "{severity} sum");
        assert_eq!(int(3), f.lo, "{severity} min");
        assert_eq!(int(4), f.hi, "{severity} max");
        let avg: f64 = row[5].parse().unwrap();
        let want_avg = f.len_sum as f64 / f.n as f64;
        assert!(
            (avg - want_avg).abs() < 1e-9 * want_avg,
            "{severity} avg {avg} vs {want_avg}"
        );
        assert_eq!(
            int(6),
            f.users.len() as i64,
            "{severity} count(DISTINCT user_id)"
        );
        assert_eq!(
            int(7),
            f.ips.len() as i64,
            "{severity} count(DISTINCT source_ip)"
        );
        assert_eq!(
            Some(&row[8]),
            f.first_user.as_ref(),
            "{severity} min(user_id)"
        );
        assert_eq!(
            Some(&row[9]),
            f.last_content.as_ref(),
            "{severity} max(content)"
        );
    }
}

#[test]
fn every_aggregate_merges_across_batches_and_restarts() {
    let (broker, topic) = seeded_topic("aggs", 12_000, 2, "vulnerability", 5);
    let dir = temp_dir("aggs");
    let q = query_file(&dir, &broker, &topic, AGGREGATES);
    let checkpoint = dir.join("checkpoint");
    let run = || {
        let (stdout, stderr) = run_ok(&[
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            "1000",
            "--target-partitions",
            "2",
            "--num-rows",
            "0",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ]);
        (parse_console(&stdout), stderr)
    };
    let records = |topic: &str| -> Vec<LogRecord> {
        consume_all(&broker, topic)
            .iter()
            .map(|c| parse_record(&c.payload).unwrap())
            .collect()
    };

    // First run: 12 batches merge into state.
    let (batches, _) = run();
    assert!(batches.len() >= 12, "{} batches", batches.len());
    check(batches.last().unwrap(), &fold(&records(&topic)));

    // More records arrive; a second run resumes from the checkpoint's snapshot, so
    // distinct sets, sums and extremes carry over instead of starting again.
    append_records(&broker, &topic, 5000, 8);
    let (batches, stderr) = run();
    assert!(
        stderr.contains("resuming after committed batch"),
        "{stderr}"
    );
    assert!(batches.len() >= 5, "{} batches", batches.len());
    check(batches.last().unwrap(), &fold(&records(&topic)));
}
