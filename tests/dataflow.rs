//! The operator dataflow: aggregates over aggregates (the inner GROUP BY's changes,
//! `-old, +new`, feed the outer one, which takes rows back), checked against batch
//! DataFusion running the same SQL over the records read back from the broker, with a
//! checkpoint-and-restore in the middle (both operators' state restored from a full
//! snapshot plus deltas).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use datafusion::prelude::SessionContext;

/// The records of `topic` as a batch DataFusion table `logs`.
fn batch_context(broker: &str, topic: &str) -> SessionContext {
    log_table(&consume_all(broker, topic))
}

/// What the batch engine answers for `query`, as sorted JSON lines.
fn oracle(broker: &str, topic: &str, query: &str) -> BTreeSet<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = batch_context(broker, topic);
    rt.block_on(batch_json(&ctx, query)).into_iter().collect()
}

/// The rows of the JSON-lines files under `dir` (complete mode keeps one copy).
fn written(dir: &Path) -> BTreeSet<String> {
    let mut rows = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            let text = std::fs::read_to_string(&p).unwrap();
            rows.extend(text.lines().map(str::to_string));
        }
    }
    rows
}

/// Runs `query` (complete mode, a JSON-lines sink) to the end of the topic in small
/// batches with a checkpoint, adds records, runs again from the checkpoint, and checks
/// each result against the batch engine; returns the checkpoint's state file names.
fn check_across_a_restart(name: &str, query: &str) -> Vec<String> {
    let (broker, topic) = seeded_topic(name, 6_000, 2, "crash", 10);
    let dir = temp_dir(name);
    let out = dir.join("out");
    let sink = format!("connector = 'jsonl', path = '{}'", out.display());
    let q = query_into(&dir, &broker, &topic, &sink, query);
    let first = || {
        assert_eq!(
            written(&out),
            oracle(&broker, &topic, query),
            "{name}: first run"
        )
    };
    run_with_a_restart((&broker, &topic), &q, &dir, ("complete", 77), &first);
    let expected = oracle(&broker, &topic, query);
    assert!(!expected.is_empty());
    assert_eq!(written(&out), expected, "{name}: after the restart");
    std::fs::read_dir(dir.join("ckpt").join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs `q` in output `mode` to the end of `topic` in batches of 700 with a checkpoint
/// in `dir`, calls `between`, adds 3,000 records made with `seed`, and runs `q` again
/// from the checkpoint.
fn run_with_a_restart(
    (broker, topic): (&str, &str),
    q: &Path,
    dir: &Path,
    (mode, seed): (&str, u64),
    between: &dyn Fn(),
) {
    let ckpt = dir.join("ckpt");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "700",
        "--output-mode",
        mode,
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    sluice_ok(&args);
    between();
    append_records(broker, topic, 3_000, seed);
    let o = sluice_ok(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("resuming after committed batch"),
        "{stderr}"
    );
}

#[test]
fn an_aggregate_over_an_aggregate_takes_back_what_changed() {
    let files = check_across_a_restart(
        "twolevel",
        "SELECT n, count(*) AS users, min(u) AS first_user, max(u) AS last_user \
         FROM (SELECT user_id AS u, count(*) AS n FROM logs GROUP BY user_id) t GROUP BY n",
    );
    // Both operators checkpoint incrementally.
    assert!(
        files
            .iter()
            .any(|f| f.ends_with(".delta.arrow") && !f.contains("op1")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with(".op1.delta.arrow")),
        "{files:?}"
    );
}

#[test]
fn a_global_aggregate_over_a_having_filter_sees_groups_come_and_go() {
    check_across_a_restart(
        "having",
        "SELECT count(*) AS busy, sum(n) AS rows_in_busy, max(n) AS most, avg(n) AS mean \
         FROM (SELECT source_ip, count(*) AS n FROM logs WHERE severity = 'High' \
               GROUP BY source_ip HAVING count(*) > 8) t",
    );
}

#[test]
fn count_distinct_and_sum_over_an_updating_input_are_exact() {
    check_across_a_restart(
        "distinct",
        "SELECT severity, count(DISTINCT n) AS sizes, count(*) AS users, sum(n) AS total \
         FROM (SELECT severity, user_id, count(*) AS n FROM logs GROUP BY severity, user_id) t \
         GROUP BY severity",
    );
}

/// The one error `sluice explain` gives for `query` (planning only: no broker).
fn explain_error(name: &str, query: &str) -> String {
    let dir = temp_dir(name);
    let q = query_file(&dir, "localhost:1", "t", query);
    let o = sluice(&["explain", q.to_str().unwrap()]);
    assert!(!o.status.success(), "{name}: explain succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What `sluice explain` prints for `query` (planning only: no broker).
fn explain_plan(name: &str, query: &str) -> String {
    let dir = temp_dir(name);
    let q = query_file(&dir, "localhost:1", "t", &format!("{query};"));
    let o = sluice_ok(&["explain", q.to_str().unwrap(), "--output-mode", "changelog"]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_aggregate_that_cannot_take_rows_back_is_refused_by_name() {
    let stderr = explain_error(
        "noretract",
        "SELECT median(n) FROM (SELECT user_id, count(*) AS n FROM logs GROUP BY user_id) t;",
    );
    assert!(
        stderr.contains("median") && stderr.contains("updating input"),
        "{stderr}"
    );
}

const TWO_LEVEL: &str = "SELECT n, count(*) AS users, min(u) AS first_user, max(u) AS last_user \
     FROM (SELECT user_id AS u, count(*) AS n FROM logs GROUP BY user_id) t GROUP BY n";

/// A few severities whose counts all grow each batch: groups of the outer aggregate are
/// deleted nearly every batch.
const MOVING: &str = "SELECT n, count(*) AS levels, min(s) AS first_level, max(s) AS last_level \
     FROM (SELECT severity AS s, count(*) AS n FROM logs GROUP BY severity) t GROUP BY n";

/// JSON lines with their keys in one order.
fn normalized(rows: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    rows.into_iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(&l)
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A query file over `topic` writing to `sink_with` (a WITH clause's options).
fn query_into(dir: &Path, broker: &str, topic: &str, sink_with: &str, query: &str) -> PathBuf {
    let sink = format!("CREATE TABLE out WITH ({sink_with});\nINSERT INTO out {query};");
    query_file(dir, broker, topic, &sink)
}

/// Runs `query` in changelog mode into JSON lines with a restart in the middle, folds
/// the changelog and checks it against the batch answer; returns the kinds seen.
fn fold_changelog(name: &str, query: &str) -> BTreeSet<String> {
    fold_changelog_by(name, query, &["n"])
}

/// [`fold_changelog`] for a result whose unique key is the columns `key`.
fn fold_changelog_by(name: &str, query: &str, key: &[&str]) -> BTreeSet<String> {
    let (broker, topic) = seeded_topic(name, 6_000, 2, "crash", 10);
    let dir = temp_dir(name);
    let out = dir.join("out");
    let sink = format!("connector = 'jsonl', path = '{}'", out.display());
    let q = query_into(&dir, &broker, &topic, &sink, query);
    run_with_a_restart((&broker, &topic), &q, &dir, ("changelog", 78), &|| {});
    let (table, kinds) = fold_changelog_files(&out, key);
    assert_eq!(
        normalized(table.into_values()),
        normalized(oracle(&broker, &topic, query)),
        "{name}"
    );
    kinds
}

#[test]
fn changelog_output_folds_to_the_batch_answer_across_a_restart() {
    let mut kinds = fold_changelog("changelog", TWO_LEVEL);
    kinds.extend(fold_changelog("changelog-moving", MOVING));
    assert_eq!(kinds.len(), 4, "every kind of change occurs: {kinds:?}");
}

#[test]
fn update_mode_into_kafka_writes_upserts_and_tombstones() {
    let (broker, topic) = seeded_topic("upsert", 6_000, 2, "crash", 10);
    let out_topic = unique_topic("upsert-out");
    sluice::kafka::ensure_topic(&broker, &out_topic, 2).unwrap();
    let dir = temp_dir("upsert");
    let sink = format!(
        "connector = 'kafka', topic = '{out_topic}', bootstrap_servers = '{broker}', key = 'n'"
    );
    let q = query_into(&dir, &broker, &topic, &sink, TWO_LEVEL);
    run_with_a_restart((&broker, &topic), &q, &dir, ("update", 79), &|| {});
    let mut table: std::collections::BTreeMap<String, String> = Default::default();
    let mut tombstones = 0;
    for m in committed(&broker, &out_topic) {
        let key = m.key.expect("every upsert is keyed");
        match m.payload {
            Some(p) => {
                let row: serde_json::Value = serde_json::from_slice(&p).unwrap();
                assert!(row.get("op").is_none(), "upserts carry the row only");
                assert_eq!(row["n"].to_string(), key);
                table.insert(key, row.to_string());
            }
            None => {
                tombstones += 1;
                assert!(
                    table.remove(&key).is_some(),
                    "a tombstone for an absent key"
                );
            }
        }
    }
    assert!(tombstones > 0, "groups of the outer aggregate go away");
    assert_eq!(
        normalized(table.into_values()),
        normalized(oracle(&broker, &topic, TWO_LEVEL))
    );
}

#[test]
fn update_mode_into_a_file_sink_is_refused_when_rows_can_be_deleted() {
    let (broker, topic) = seeded_topic("updfile", 100, 1, "crash", 10);
    let dir = temp_dir("upd-file");
    let sink = format!(
        "connector = 'jsonl', path = '{}'",
        dir.join("out").display()
    );
    let q = query_into(&dir, &broker, &topic, &sink, TWO_LEVEL);
    let o = sluice(&["run", q.to_str().unwrap(), "--output-mode", "update"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("changelog"), "{stderr}");
}

/// Top-N queries order by the whole record, so ties cannot make the answer depend on
/// arrival order.
const BY_RECORD: &str =
    "ORDER BY timestamp DESC, user_id DESC, source_ip DESC, content DESC, status DESC";

#[test]
fn top_n_per_key_in_changelog_mode_folds_to_the_batch_answer() {
    let query = format!(
        "SELECT severity, user_id, timestamp, source_ip, rn FROM \
         (SELECT *, row_number() OVER (PARTITION BY severity {BY_RECORD}) AS rn FROM logs) t WHERE rn <= 3"
    );
    let kinds = fold_changelog_by("topn", &query, &["severity", "rn"]);
    assert!(
        kinds.contains("-U") && kinds.contains("+U") && kinds.contains("+I"),
        "{kinds:?}"
    );
}

/// The three quietest users per severity: an aggregate's counts feed a top-N, which
/// takes a user's old count back before ranking the new one; a ranked user who gets
/// a record leaves the top and a user ranked below moves up.
const TOP_USERS: &str = "SELECT severity, user_id, n, rn FROM (SELECT severity, user_id, n, \
     row_number() OVER (PARTITION BY severity ORDER BY n, user_id) AS rn FROM \
     (SELECT severity, user_id, count(*) AS n FROM logs GROUP BY severity, user_id) t) r WHERE rn <= 3";

#[test]
fn top_n_over_an_updating_aggregate_folds_to_the_batch_answer() {
    let kinds = fold_changelog_by("topn-agg", TOP_USERS, &["severity", "rn"]);
    assert!(kinds.contains("-U") && kinds.contains("+U"), "{kinds:?}");
    // Over a two-level aggregate whose groups are deleted: ranked rows leave and the
    // rows below them move up.
    let query = format!(
        "SELECT n, users, rn FROM (SELECT n, users, row_number() OVER (ORDER BY users DESC, n) AS rn \
         FROM ({TWO_LEVEL}) a) r WHERE rn <= 3"
    );
    fold_changelog_by("topn-deletes", &query, &["rn"]);
    let plan = explain_plan("topn-upd-explain", TOP_USERS);
    assert!(plan.contains("every row per key"), "{plan}");
}

#[test]
fn rank_dense_rank_and_dedup_are_exact_across_a_restart() {
    // rank() and dense_rank() over a column with ties: several rows share a rank.
    check_across_a_restart(
        "rank",
        "SELECT severity, status, r FROM (SELECT severity, status, \
         rank() OVER (PARTITION BY severity ORDER BY status) AS r FROM logs) t WHERE r <= 2",
    );
    check_across_a_restart(
        "denserank",
        "SELECT source_ip, severity, d FROM (SELECT source_ip, severity, \
         dense_rank() OVER (PARTITION BY source_ip ORDER BY severity DESC) AS d FROM logs) t WHERE d < 3",
    );
    // Dedup: the first record of each user by event time (Flink's keep-first).
    check_across_a_restart(
        "dedup",
        &format!(
            "SELECT user_id, timestamp, content FROM (SELECT *, row_number() OVER \
             (PARTITION BY user_id {}) AS rn FROM logs) t WHERE rn = 1",
            BY_RECORD.replace("timestamp DESC", "timestamp ASC")
        ),
    );
}

#[test]
fn a_window_function_that_is_not_a_top_n_is_refused_with_the_form_to_use() {
    let stderr = explain_error(
        "lag",
        "SELECT user_id, lag(timestamp) OVER (PARTITION BY user_id ORDER BY timestamp) FROM logs;",
    );
    assert!(
        stderr.contains("row_number()") && stderr.contains("<= N"),
        "{stderr}"
    );
}

#[test]
fn distinct_over_a_stream_and_over_an_updating_input_is_exact() {
    check_across_a_restart(
        "distinct-stream",
        "SELECT DISTINCT severity, status FROM logs",
    );
    // The counts a user may have: a value leaves when no user has it any more.
    check_across_a_restart(
        "distinct-updating",
        "SELECT DISTINCT n FROM (SELECT user_id, count(*) AS n FROM logs GROUP BY user_id) t",
    );
}

#[test]
fn progress_reports_each_operator_rows_in_out_and_state() {
    let (broker, topic) = seeded_topic("opprogress", 3_000, 2, "crash", 10);
    let dir = temp_dir("opprogress");
    let q = query_file(&dir, &broker, &topic, &format!("{TWO_LEVEL};"));
    let json = dir.join("progress.jsonl");
    sluice_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "500",
        "--progress-json",
        json.to_str().unwrap(),
    ]);
    let users: BTreeSet<String> = consume_all(&broker, &topic)
        .iter()
        .map(|c| parse_record(&c.payload).unwrap().user_id)
        .collect();
    let records = progress_records(&json);
    assert!(records.len() >= 6);
    for r in &records {
        let ops = r["operators"].as_array().unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["operator"], "aggregate");
        assert_eq!(ops[1]["operator"], "aggregate over changes");
        // The projection between them passes every change on.
        assert_eq!(ops[0]["numRowsOut"], ops[1]["numRowsIn"]);
    }
    let last = &records.last().unwrap()["operators"];
    assert_eq!(
        last[0]["numRowsTotal"].as_u64().unwrap() as usize,
        users.len()
    );
}

/// Property: for random splits of the same records into batches, random topic and
/// plan partition counts, and a restart at a random batch, the final result of each
/// stateful query equals one batch computation (a seeded loop; the seed is printed on
/// failure).
#[test]
fn any_split_into_batches_and_partitions_gives_the_batch_answer() {
    let queries = [
        TWO_LEVEL.to_string(),
        "SELECT count(*) AS users, min(n) AS least, max(n) AS most, count(DISTINCT n) AS sizes \
         FROM (SELECT user_id, count(*) AS n FROM logs GROUP BY user_id) t"
            .to_string(),
        format!(
            "SELECT severity, user_id, timestamp, rn FROM (SELECT *, row_number() OVER \
             (PARTITION BY severity {BY_RECORD}) AS rn FROM logs) t WHERE rn <= 3"
        ),
        format!(
            "SELECT user_id, timestamp FROM (SELECT *, row_number() OVER \
             (PARTITION BY user_id {}) AS rn FROM logs) t WHERE rn = 1",
            BY_RECORD.replace("timestamp DESC", "timestamp ASC")
        ),
        "SELECT DISTINCT n FROM (SELECT source_ip, count(*) AS n FROM logs GROUP BY source_ip) t"
            .to_string(),
        TOP_USERS.to_string(),
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed_19);
    for round in 0..6 {
        let seed = rng.u64(..);
        let mut r = fastrand::Rng::with_seed(seed);
        let query = &queries[round % queries.len()];
        let topic_partitions = r.usize(1..=3);
        let (broker, topic) =
            seeded_topic("prop", r.u64(1_000..4_000), topic_partitions, "crash", 10);
        let dir = temp_dir("prop");
        let out = dir.join("out");
        let sink = format!("connector = 'jsonl', path = '{}'", out.display());
        let q = query_into(&dir, &broker, &topic, &sink, query);
        let ckpt = dir.join("ckpt");
        let bound = r.u64(50..1_500).to_string();
        let parts = r.usize(1..=3).to_string();
        let args = [
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            &bound,
            "--target-partitions",
            &parts,
            "--output-mode",
            "complete",
            "--checkpoint",
            ckpt.to_str().unwrap(),
        ];
        sluice_ok(&args);
        append_records(&broker, &topic, r.u64(100..2_000), seed % 1000);
        sluice_ok(&args);
        assert_eq!(
            written(&out),
            oracle(&broker, &topic, query),
            "seed {seed}: {query} (topic partitions {topic_partitions}, batches of {bound}, {parts} plan partitions)"
        );
    }
}

/// Runs `outer` (an aggregate over `inner`, a windowed aggregate over the log stream
/// with a 5-second watermark) in output `mode` into JSON lines, in two runs from a
/// checkpoint (the second closes the windows at the end), and checks the rows written
/// against `oracle` (the same with date_bin windows); returns the lines written.
fn over_closed_windows(name: &str, mode: &str, outer: &str, oracle_sql: &str) -> Vec<String> {
    let (broker, topic) = event_time_topic(name, 6_000, 5, 50, "crash", 10);
    let dir = temp_dir(name);
    let out = dir.join("out");
    let q = dir.join("q.sql");
    let inner =
        "SELECT tumble(event_time, INTERVAL '10 seconds') AS w, user_id, count(*) AS n FROM logs \
                 GROUP BY tumble(event_time, INTERVAL '10 seconds'), user_id";
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
             user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
             bootstrap_servers = '{broker}', event_time = 'to_timestamp_millis(\"timestamp\")', \
             watermark_delay = '5 seconds');\n\
             CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\n\
             INSERT INTO out {};\n",
            out.display(),
            outer.replace("{inner}", inner)
        ),
    )
    .unwrap();
    let plan = sluice_ok(&["explain", q.to_str().unwrap(), "--output-mode", mode]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("emit: closed windows to the next stage"),
        "{plan}"
    );
    if mode == "append" {
        assert!(plan.contains("each batch's groups are final"), "{plan}");
    }
    let ckpt = dir.join("ckpt");
    let mut args = vec![
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "500",
        "--output-mode",
        mode,
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    sluice_ok(&args);
    args.push("--close-windows-at-end");
    sluice_ok(&args);
    let bin = "date_bin(INTERVAL '10 seconds', to_timestamp_millis(\"timestamp\"))";
    let inner = format!(
        "SELECT {bin} AS ws, {bin} + INTERVAL '10 seconds' AS we, user_id, count(*) AS n FROM logs \
         GROUP BY {bin}, user_id"
    );
    let expected = oracle(&broker, &topic, &oracle_sql.replace("{inner}", &inner));
    assert!(expected.len() > 5);
    assert_eq!(written(&out), expected, "{name}");
    let mut lines = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            lines.extend(
                std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    lines
}

/// Nexmark q5's inner part, on the log stream: per 10-second window the largest count
/// of one user. The windowed aggregate closes windows by the watermark and hands them
/// to the outer aggregate as final rows; the batch oracle computes the windows with
/// date_bin.
#[test]
fn an_aggregate_over_closed_windows_equals_the_batch_answer() {
    over_closed_windows(
        "overwin",
        "complete",
        "SELECT w['start'] AS ws, max(n) AS most, count(*) AS users FROM ({inner}) t GROUP BY w['start']",
        "SELECT ws, max(n) AS most, count(*) AS users FROM ({inner}) t GROUP BY ws",
    );
}

/// Grouped by the window of the aggregate below (as q5's MaxBids groups by starttime
/// and endtime), the outer aggregate's groups are final when their window arrives: in
/// append mode each is written once.
#[test]
fn a_windowed_aggregate_over_a_windowed_aggregate_appends_each_window_once() {
    let lines = over_closed_windows(
        "winwin",
        "append",
        "SELECT starttime, endtime, max(n) AS most, count(*) AS users FROM \
         (SELECT w['start'] AS starttime, w['end'] AS endtime, n FROM ({inner}) a WHERE n > 0) t \
         GROUP BY starttime, endtime",
        "SELECT ws AS starttime, we AS endtime, max(n) AS most, count(*) AS users FROM ({inner}) t \
         GROUP BY ws, we",
    );
    let distinct: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(distinct.len(), lines.len(), "a window was written twice");
}
