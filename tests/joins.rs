//! Stream–stream joins on a real broker: two topics of log records joined as tables
//! `a` and `b`, run in small batches into JSON lines with a checkpoint-and-restore in
//! the middle (records are added between the runs), and the changelog folded as a
//! multiset (`+I` adds a row, `-D` takes one copy back, which must be there) checked
//! against batch DataFusion running the same SQL over the records read back.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// Two fresh 2-partition topics of `n` log records each, made with different seeds.
fn two_topics(name: &str, n: u64) -> (String, String, String) {
    two_topics_of(name, n, 2)
}

/// Two fresh topics of `partitions` partitions and `n` log records each.
fn two_topics_of(name: &str, n: u64, partitions: usize) -> (String, String, String) {
    let broker = broker();
    let (a, b) = (
        unique_topic(&format!("{name}-a")),
        unique_topic(&format!("{name}-b")),
    );
    for (topic, seed) in [(&a, 31), (&b, 32)] {
        sluice::kafka::ensure_topic(&broker, topic, partitions).unwrap();
        append_records(&broker, topic, n, seed);
    }
    (broker, a, b)
}

/// A query file declaring `a` and `b` over the two topics, writing `query` to JSON lines
/// under `out`.
fn join_query(dir: &Path, broker: &str, topics: (&str, &str), out: &Path, query: &str) -> PathBuf {
    join_query_with(dir, broker, topics, out, query, "")
}

/// [`join_query`] with more table options (`with`: `, key = 'value'…`).
fn join_query_with(
    dir: &Path,
    broker: &str,
    (a, b): (&str, &str),
    out: &Path,
    query: &str,
    with: &str,
) -> PathBuf {
    let table = |name: &str, topic: &str| {
        format!(
            "CREATE TABLE {name} (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
             user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
             bootstrap_servers = '{broker}', format = 'json'{with});\n"
        )
    };
    let sql = format!(
        "{}{}CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\nINSERT INTO out {query};\n",
        table("a", a),
        table("b", b),
        out.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("query.sql");
    std::fs::write(&path, sql).unwrap();
    path
}

/// The batch answer of `query` over both topics' records, as a multiset of JSON rows.
fn oracle(broker: &str, (a, b): (&str, &str), query: &str) -> BTreeMap<String, i64> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    register_logs(&ctx, "a", &consume_all(broker, a));
    register_logs(&ctx, "b", &consume_all(broker, b));
    counted(rt.block_on(batch_json(&ctx, query)))
}

fn counted(rows: impl IntoIterator<Item = String>) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for r in rows {
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        *m.entry(v.to_string()).or_insert(0) += 1;
    }
    m
}

/// Folds the changelog in the JSON-lines files under `dir` (batch order) as a
/// multiset; returns it and how many rows of each kind were seen.
fn fold(dir: &Path) -> (BTreeMap<String, i64>, BTreeMap<String, u64>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        lines.extend(
            std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    fold_lines(&lines)
}

/// Folds changelog rows (JSON with an `op` field; none: `+I`) in order as a multiset:
/// `+I`/`+U` add a copy, `-U`/`-D` take one back, which must be there.
fn fold_lines(lines: &[String]) -> (BTreeMap<String, i64>, BTreeMap<String, u64>) {
    let (mut rows, mut kinds) = (BTreeMap::new(), BTreeMap::new());
    for line in lines {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let op = v["op"].as_str().unwrap_or("+I").to_string();
        v.as_object_mut().unwrap().remove("op");
        let row = v.to_string();
        *kinds.entry(op.clone()).or_insert(0) += 1;
        match op.as_str() {
            "+I" | "+U" => *rows.entry(row).or_insert(0) += 1,
            _ => {
                let n = rows
                    .get_mut(&row)
                    .unwrap_or_else(|| panic!("{op} of a row not emitted before: {line}"));
                *n -= 1;
                if *n == 0 {
                    rows.remove(&row);
                }
            }
        }
    }
    (rows, kinds)
}

/// Runs `query` over two topics in `mode` in batches of `bound` records with
/// `partitions` plan partitions, adds records to both and runs again from the
/// checkpoint; checks the folded output against the batch answer after each run and
/// returns the kinds of rows written.
fn check_join(
    name: &str,
    query: &str,
    mode: &str,
    (n, bound, partitions): (u64, u64, usize),
) -> BTreeMap<String, u64> {
    let (broker, a, b) = two_topics(name, n);
    let dir = temp_dir(name);
    let out = dir.join("out");
    let q = join_query(&dir, &broker, (&a, &b), &out, query);
    let ckpt = dir.join("ckpt");
    let (bound, parts) = (bound.to_string(), partitions.to_string());
    let args = batched_args(&q, (&bound, &parts), mode, &ckpt);
    sluice_ok(&args);
    let expected = oracle(&broker, (&a, &b), query);
    assert!(!expected.is_empty(), "{name}: the oracle finds no rows");
    assert_eq!(fold(&out).0, expected, "{name}: first run");
    append_records(&broker, &a, n / 2, 41);
    append_records(&broker, &b, n / 2, 42);
    let o = sluice_ok(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("resuming after committed batch"),
        "{stderr}"
    );
    let (rows, kinds) = fold(&out);
    assert_eq!(
        rows,
        oracle(&broker, (&a, &b), query),
        "{name}: after the restart"
    );
    kinds
}

/// `sluice run` arguments for query file `q` to the end of its input in batches of
/// `bound` records over `parts` plan partitions, in `mode`, checkpointed at `ckpt`.
fn batched_args<'a>(
    q: &'a Path,
    (bound, parts): (&'a str, &'a str),
    mode: &'a str,
    ckpt: &'a Path,
) -> [&'a str; 11] {
    [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        bound,
        "--target-partitions",
        parts,
        "--output-mode",
        mode,
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]
}

/// Asserts that some rows were taken back (`-D`): the retraction path ran.
fn assert_retracted(kinds: &BTreeMap<String, u64>) {
    assert!(
        kinds.get("-D").is_some_and(|n| *n > 0),
        "no retraction: {kinds:?}"
    );
}

const CRASH_THEN_CRITICAL: &str =
    "SELECT a.user_id, a.timestamp AS crash_at, b.timestamp AS critical_at, b.source_ip \
     FROM a JOIN b ON a.user_id = b.user_id AND a.source_ip <> b.source_ip \
     WHERE a.content LIKE '%malware%' AND b.severity = 'Critical'";

#[test]
fn an_inner_join_of_two_streams_appends_the_batch_answer() {
    let kinds = check_join("join-inner", CRASH_THEN_CRITICAL, "append", (4_000, 600, 2));
    assert_eq!(kinds.keys().collect::<Vec<_>>(), ["+I"], "{kinds:?}");
}

#[test]
fn a_left_join_takes_its_null_padded_rows_back_when_a_match_arrives() {
    let query = "SELECT a.user_id, a.timestamp, b.timestamp AS later FROM a LEFT JOIN b \
                 ON a.user_id = b.user_id AND b.severity = 'Critical' AND b.source_ip <> a.source_ip WHERE a.content LIKE '%malware%'";
    let kinds = check_join("join-left", query, "changelog", (3_000, 400, 2));
    assert_retracted(&kinds);
}

#[test]
fn a_full_join_keeps_both_sides_unmatched_rows_until_they_match() {
    let query = "SELECT a.user_id AS au, a.timestamp AS at, b.user_id AS bu, b.timestamp AS bt \
                 FROM (SELECT * FROM a WHERE content LIKE '%malware%') a \
                 FULL JOIN (SELECT * FROM b WHERE severity = 'Low' AND source_ip = '192.168.1.7') b \
                 ON a.user_id = b.user_id";
    let kinds = check_join("join-full", query, "changelog", (3_000, 500, 3));
    assert_retracted(&kinds);
}

#[test]
fn a_join_of_two_aggregates_follows_both_sides_changes() {
    let query = "SELECT x.user_id, x.malwares, y.criticals FROM \
                 (SELECT user_id, count(*) AS malwares FROM a WHERE content LIKE '%malware%' GROUP BY user_id) x \
                 JOIN (SELECT user_id, count(*) AS criticals FROM b WHERE severity = 'Critical' GROUP BY user_id) y \
                 ON x.user_id = y.user_id";
    let kinds = check_join("join-aggs", query, "changelog", (3_000, 500, 2));
    assert_retracted(&kinds);
}

#[test]
fn an_outer_join_in_append_mode_is_refused_naming_changelog() {
    let dir = temp_dir("join-append");
    let q = join_query(
        &dir,
        &broker(),
        ("t1", "t2"),
        &dir.join("out"),
        "SELECT a.user_id, b.timestamp FROM a LEFT JOIN b ON a.user_id = b.user_id",
    );
    let o = sluice(&["explain", q.to_str().unwrap(), "--output-mode", "append"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("--output-mode changelog"), "{stderr}");
}

const LEFT_LATER_CRITICAL: &str =
    "SELECT a.user_id, a.timestamp, b.timestamp AS later FROM a LEFT JOIN b \
     ON a.user_id = b.user_id AND b.severity = 'Critical' AND b.timestamp > a.timestamp \
     WHERE a.content LIKE '%malware%'";

/// Property: for random record counts, topic partitions, batch bounds, plan partitions
/// and a restart, inner and left joins of two streams give the batch answer (a seeded
/// loop; the seed is printed on failure).
#[test]
fn any_split_of_two_streams_into_batches_gives_the_batch_join() {
    let queries = [CRASH_THEN_CRITICAL, LEFT_LATER_CRITICAL];
    let mut rng = fastrand::Rng::with_seed(0x5eed_20);
    for round in 0..4 {
        split_round(rng.u64(..), queries[round % queries.len()], false);
    }
}

/// The same property for an interval join over event time (records in event-time
/// order up to the generator's 1 s disorder, more of them after the restart).
#[test]
fn any_split_of_two_timed_streams_gives_the_batch_interval_join() {
    let mut rng = fastrand::Rng::with_seed(0x1_4e41);
    for _ in 0..3 {
        split_round(rng.u64(..), WITHIN_SECONDS, true);
    }
}

/// One round of the split property with `seed`: `timed` records carry a steady event
/// time and the tables declare it.
fn split_round(seed: u64, query: &str, timed: bool) {
    let mut r = fastrand::Rng::with_seed(seed);
    let (n, partitions) = (r.u64(500..2_500), r.usize(1..=3));
    let broker = broker();
    let (a, b) = (unique_topic("join-prop-a"), unique_topic("join-prop-b"));
    let append = |topic: &str, n: u64, seed: u64, start: i64| match timed {
        true => append_timed(&broker, topic, n, seed, (start, 500)),
        false => append_records(&broker, topic, n, seed),
    };
    for (topic, s) in [(&a, 31), (&b, 32)] {
        sluice::kafka::ensure_topic(&broker, topic, partitions).unwrap();
        append(topic, n, s, T0);
    }
    let dir = temp_dir("join-prop");
    let out = dir.join("out");
    let with = if timed { EVENT_TIME } else { "" };
    let q = join_query_with(&dir, &broker, (&a, &b), &out, query, with);
    let ckpt = dir.join("ckpt");
    let bound = r.u64(50..1_200).to_string();
    let parts = r.usize(1..=3).to_string();
    let args = batched_args(&q, (&bound, &parts), "changelog", &ckpt);
    sluice_ok(&args);
    let later = T0 + n as i64 * 1000 / 500; // where the first records' event time ends
    append(&a, r.u64(100..1_000), seed % 1000, later);
    append(&b, r.u64(100..1_000), seed % 1000 + 1, later);
    sluice_ok(&args);
    assert_eq!(
        fold(&out).0,
        oracle(&broker, (&a, &b), query),
        "seed {seed}: {query} (batches of {bound}, {partitions} topic and {parts} plan partitions)"
    );
}

/// A left join of two topics into a Kafka sink, SIGKILLed a dozen times: what the sink
/// committed (read_committed) folds to exactly the batch answer.
#[test]
fn a_two_topic_join_into_kafka_is_exactly_once_after_repeated_sigkill() {
    let (broker, a, b) = two_topics("join-kill", 6_000);
    // One partition: the fold needs the changes in the order they were written.
    let out_topic = unique_topic("join-kill-out");
    sluice::kafka::ensure_topic(&broker, &out_topic, 1).unwrap();
    let dir = temp_dir("join-kill");
    let q = join_query(
        &dir,
        &broker,
        (&a, &b),
        &dir.join("unused"),
        LEFT_LATER_CRITICAL,
    );
    let sql = std::fs::read_to_string(&q).unwrap().replace(
        &format!(
            "connector = 'jsonl', path = '{}'",
            dir.join("unused").display()
        ),
        &format!("connector = 'kafka', topic = '{out_topic}', bootstrap_servers = '{broker}'"),
    );
    std::fs::write(&q, sql).unwrap();
    let ckpt = dir.join("ckpt");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "300",
        "--trigger",
        "50ms",
        "--output-mode",
        "changelog",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    let killed = kill_and_restart(&args, &delays(12, 20, 150, 900));
    assert!(killed >= 8, "only {killed} runs were killed mid-stream");
    let lines: Vec<String> = committed(&broker, &out_topic)
        .iter()
        .map(|m| String::from_utf8(m.payload.clone().unwrap()).unwrap())
        .collect();
    let (rows, kinds) = fold_lines(&lines);
    assert_retracted(&kinds);
    assert_eq!(
        rows,
        oracle(&broker, (&a, &b), LEFT_LATER_CRITICAL),
        "after {killed} kills"
    );
}

/// Event time as interval joins need it: the log's `timestamp`, 5 s watermark delay (the
/// generator's disorder is up to 1 s).
const EVENT_TIME: &str = ", event_time = 'timestamp', watermark_delay = '5 seconds'";

/// Appends `n` records to `topic` whose event time starts at `start_ms` and advances at
/// `rate` records per second (up to 1 s out of order).
fn append_timed(broker: &str, topic: &str, n: u64, seed: u64, (start_ms, rate): (i64, u64)) {
    let (start, rate) = (start_ms.to_string(), rate.to_string());
    let timed = ["--start-time-ms", &start, "--event-rate", &rate];
    append_records_with(broker, topic, n, seed, &timed);
}

/// 2026-01-01T00:00:00Z, where the timed records start.
const T0: i64 = 1_767_225_600_000;

const WITHIN_SECONDS: &str =
    "SELECT a.user_id, a.timestamp AS at, b.timestamp AS bt, b.severity FROM a JOIN b \
     ON a.user_id = b.user_id AND b.timestamp BETWEEN a.timestamp - 1000 AND a.timestamp + 2000";

/// An interval join: rows leave state as the watermark passes them, none arrive late,
/// and the output (append-only) equals the batch join, across a restart that adds
/// later records to both topics.
#[test]
fn an_interval_join_prunes_its_state_by_the_watermark_and_gives_the_batch_answer() {
    let broker = broker();
    let (a, b) = (unique_topic("ij-a"), unique_topic("ij-b"));
    for (topic, seed) in [(&a, 51), (&b, 52)] {
        sluice::kafka::ensure_topic(&broker, topic, 2).unwrap();
        append_timed(&broker, topic, 6_000, seed, (T0, 500));
    }
    let dir = temp_dir("join-interval");
    let out = dir.join("out");
    let q = join_query_with(&dir, &broker, (&a, &b), &out, WITHIN_SECONDS, EVENT_TIME);
    let explain = sluice_ok(&["explain", q.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains(
            "interval join (right.timestamp within [left.timestamp - 1 s, left.timestamp + 2 s])"
        ),
        "{text}"
    );
    let (ckpt, progress) = (dir.join("ckpt"), dir.join("progress.json"));
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "300",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--progress-json",
        progress.to_str().unwrap(),
    ];
    sluice_ok(&args);
    let (rows, kinds) = fold(&out);
    assert_eq!(kinds.keys().collect::<Vec<_>>(), ["+I"], "{kinds:?}");
    let expected = oracle(&broker, (&a, &b), WITHIN_SECONDS);
    assert!(
        expected.len() > 1_000,
        "the oracle finds {} pairs",
        expected.len()
    );
    assert_eq!(rows, expected, "first run");
    // Later records, continuing the event time, then the restart.
    for (topic, seed) in [(&a, 61), (&b, 62)] {
        append_timed(&broker, topic, 3_000, seed, (T0 + 12_000, 500));
    }
    sluice_ok(&args);
    assert_eq!(
        fold(&out).0,
        oracle(&broker, (&a, &b), WITHIN_SECONDS),
        "after the restart"
    );
    let records = progress_records(&progress);
    let join = |r: &serde_json::Value| r["operators"][0].clone();
    let pruned: u64 = records
        .iter()
        .map(|r| join(r)["numRowsRemovedByWatermark"].as_u64().unwrap())
        .sum();
    let late: u64 = records
        .iter()
        .map(|r| {
            r["stateOperators"][0]["numRowsDroppedByWatermark"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let kept = join(records.last().unwrap())["numRowsTotal"]
        .as_u64()
        .unwrap();
    assert_eq!(late, 0, "rows arrived late");
    // 18 s of event time; rows stay for at most 2 s plus the 5 s delay (and a batch).
    assert!(
        pruned > 9_000,
        "the watermark removed only {pruned} rows of 18000"
    );
    assert!(kept < 7_000, "{kept} rows still kept of 18000");
    let sides = join(records.last().unwrap())["sides"].clone();
    assert_eq!(sides.as_array().map(Vec::len), Some(2), "{sides}");
}

/// State bound: an interval join over ten minutes of event time at a steady rate keeps
/// its state rows flat (within 20 %) once the first interval has passed.
#[test]
fn an_interval_join_over_ten_minutes_keeps_its_state_flat() {
    let broker = broker();
    let (a, b) = (unique_topic("ijb-a"), unique_topic("ijb-b"));
    for (topic, seed) in [(&a, 71), (&b, 72)] {
        sluice::kafka::ensure_topic(&broker, topic, 2).unwrap();
        append_timed(&broker, topic, 120_000, seed, (T0, 200)); // 10 minutes
    }
    let dir = temp_dir("join-interval-bound");
    let out = dir.join("out");
    let query = "SELECT a.user_id, a.timestamp AS at, b.timestamp AS bt FROM a JOIN b \
                 ON a.user_id = b.user_id AND b.timestamp BETWEEN a.timestamp - 10000 AND a.timestamp + 20000";
    let q = join_query_with(&dir, &broker, (&a, &b), &out, query, EVENT_TIME);
    let progress = dir.join("progress.json");
    sluice_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "2000",
        "--progress-json",
        progress.to_str().unwrap(),
    ]);
    let records = progress_records(&progress);
    let with_watermark = records
        .iter()
        .filter(|r| r["eventTime"]["watermark"].is_string())
        .count();
    assert!(
        with_watermark + 2 >= records.len(),
        "the join reports no watermark"
    );
    let rows: Vec<u64> = records
        .iter()
        .filter_map(|r| r["operators"][0]["numRowsTotal"].as_u64())
        .collect();
    // A batch reads about 10 s of each topic's event time: skip the first interval
    // (30 s) and the watermark delay, and the last batches (the input runs out).
    let steady = &rows[6.min(rows.len())..rows.len().saturating_sub(2)];
    assert!(
        steady.len() > 40,
        "{} steady batches: {rows:?}",
        steady.len()
    );
    let (lo, hi) = (*steady.iter().min().unwrap(), *steady.iter().max().unwrap());
    let mean = steady.iter().sum::<u64>() as f64 / steady.len() as f64;
    assert!(
        (hi as f64) <= mean * 1.2 && (lo as f64) >= mean * 0.8,
        "state rows range {lo}..{hi} around {mean:.0}: {rows:?}"
    );
    // Bounded by the interval: about (30 s + delay + a batch) of both inputs, not all.
    assert!(hi < 40_000, "{hi} rows kept of 240000");
}

/// EXISTS over a stream: a semi join. A row is written once its first match arrives
/// (append-only: matches of append-only inputs never go).
#[test]
fn a_semi_join_appends_each_row_once_it_has_a_match() {
    let query = "SELECT a.user_id, a.timestamp FROM a WHERE a.content LIKE '%malware%' AND EXISTS \
                 (SELECT 1 FROM b WHERE b.user_id = a.user_id AND b.severity = 'Critical' AND b.source_ip <> a.source_ip)";
    let kinds = check_join("join-semi", query, "append", (3_000, 400, 2));
    assert_eq!(kinds.keys().collect::<Vec<_>>(), ["+I"], "{kinds:?}");
}

/// NOT EXISTS over a stream: an anti join. A row is written while it has no match and
/// taken back (`-D`) when its first match arrives.
#[test]
fn an_anti_join_takes_a_row_back_when_its_first_match_arrives() {
    let query =
        "SELECT a.user_id, a.timestamp FROM a WHERE a.content LIKE '%malware%' AND NOT EXISTS \
                 (SELECT 1 FROM b WHERE b.user_id = a.user_id AND b.severity = 'Critical')";
    let kinds = check_join("join-anti", query, "changelog", (3_000, 400, 2));
    assert_retracted(&kinds);
}

/// Late rows of a join go to `--late-data`: records appended far behind the watermark
/// to one topic are dropped by that side (nothing of them joins), counted, and each is
/// written to the late-data file once, naming the join and its side, with its columns.
#[test]
fn a_joins_late_rows_go_to_the_late_data_file_named_by_side() {
    let broker = broker();
    let (a, b) = (unique_topic("ij-late-a"), unique_topic("ij-late-b"));
    for (topic, seed) in [(&a, 53), (&b, 54)] {
        sluice::kafka::ensure_topic(&broker, topic, 2).unwrap();
        append_timed(&broker, topic, 6_000, seed, (T0, 500));
    }
    let dir = temp_dir("join-late");
    let out = dir.join("out");
    let q = join_query_with(&dir, &broker, (&a, &b), &out, WITHIN_SECONDS, EVENT_TIME);
    let (ckpt, late) = (dir.join("ckpt"), dir.join("late.jsonl"));
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "600",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--late-data",
        late.to_str().unwrap(),
    ];
    sluice_ok(&args);
    let before = oracle(&broker, (&a, &b), WITHIN_SECONDS);
    assert_eq!(fold(&out).0, before, "first run");
    // 12 s of event time read: the watermark is about T0 + 7 s. Records at T0 .. T0 + 1.4 s
    // for b are all behind it.
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for c in consume_all(&broker, &b) {
        *ends.entry(c.partition).or_insert(0) += 1;
    }
    append_timed(&broker, &b, 200, 55, (T0, 500));
    let (_, stderr) = run_ok(&args);
    assert_eq!(fold(&out).0, before, "late rows joined: {stderr}");
    let appended: Vec<(String, i64)> = consume_all(&broker, &b)
        .iter()
        .filter(|c| c.offset >= ends.get(&c.partition).copied().unwrap_or(0))
        .map(|c| {
            let r = parse_record(&c.payload).unwrap();
            (r.user_id, r.timestamp)
        })
        .collect();
    assert_eq!(appended.len(), 200);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&late)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for l in &lines {
        assert_eq!(
            (l["operator"].as_str(), l["side"].as_str()),
            (Some("join"), Some("right")),
            "{l}"
        );
        assert!(l["batch_id"].as_u64().is_some(), "{l}");
    }
    let written: Vec<(String, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["user_id"].as_str().unwrap().to_string(),
                l["timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sorted(written),
        sorted(appended),
        "the late-data file: {stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
}
