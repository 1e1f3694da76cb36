//! State TTL (Flink's table.exec.state.ttl, processing time): a key no batch updated
//! for the TTL is dropped from an aggregate's or a top-N's state, with `-D` for its
//! rows downstream. Each case: a first run in one batch, a wait for the TTL to pass
//! (the wall clock is the thing under test), a second run from the checkpoint (the
//! keys' last-update times are restored from it), and a third run at once, within the
//! TTL. The folded changelog must equal the batch answer over the records of the
//! second and third runs only: every key of the first run expired, none of the later
//! ones did.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const TTL: Duration = Duration::from_secs(4);

/// Runs `query` three times as the module says; returns the kinds of change seen and
/// the rows the TTL removed, summed from the progress records.
fn run_with_expiry(name: &str, query: &str, key: &[&str]) -> (BTreeSet<String>, u64) {
    let (broker, topic) = seeded_topic(name, 3_000, 2, "crash", 10);
    // Per partition, the end of what the first run reads.
    let mut first_run: std::collections::HashMap<i32, i64> = Default::default();
    for c in consume_all(&broker, &topic) {
        let end = first_run.entry(c.partition).or_insert(0);
        *end = (*end).max(c.offset + 1);
    }
    let dir = temp_dir(name);
    let out = dir.join("out");
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
             user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
             bootstrap_servers = '{broker}', state_ttl = '{} s');\n\
             CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\n\
             INSERT INTO out {query};\n",
            TTL.as_secs(),
            out.display()
        ),
    )
    .unwrap();
    let ckpt = dir.join("ckpt");
    let progress = dir.join("progress.jsonl");
    // The first run in one batch; the later ones in several (a shard renumbers its
    // groups once the expired ones outnumber the live: between batches of a run).
    let mut args = vec![
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "1000000",
        "--output-mode",
        "changelog",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--progress-json",
        progress.to_str().unwrap(),
    ];
    sluice_ok(&args);
    // The first run's one batch started before it exited: once the TTL has passed
    // since then, every key it touched is older than the TTL.
    let expires = Instant::now() + TTL + Duration::from_millis(200);
    while Instant::now() < expires {
        std::thread::sleep(Duration::from_millis(50));
    }
    append_records(&broker, &topic, 1_000, 91);
    args[4] = "400";
    let started = Instant::now();
    sluice_ok(&args);
    append_records(&broker, &topic, 500, 92);
    sluice_ok(&args);
    assert!(
        started.elapsed() < TTL,
        "the second and third runs took longer than the TTL: the case proves nothing"
    );
    // The batch answer over the records after the first run.
    let later: Vec<Consumed> = consume_all(&broker, &topic)
        .into_iter()
        .filter(|c| c.offset >= first_run.get(&c.partition).copied().unwrap_or(0))
        .collect();
    let ctx = log_table(&later);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let expected: BTreeSet<String> = rt
        .block_on(batch_json(&ctx, query))
        .into_iter()
        .map(|l| normalized(&l))
        .collect();
    let (table, kinds) = fold_changelog_files(&out, key);
    let folded: BTreeSet<String> = table.values().map(|l| normalized(l)).collect();
    assert!(!expected.is_empty());
    assert_eq!(folded, expected, "{name}");
    (kinds, removed_by_ttl(&progress))
}

/// A JSON line with its keys in one order.
fn normalized(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .unwrap()
        .to_string()
}

/// Rows the TTL removed over all batches and operators of a progress file.
fn removed_by_ttl(progress: &Path) -> u64 {
    std::fs::read_to_string(progress)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .flat_map(|p| {
            p["operators"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|o| o["numRowsRemovedByTtl"].as_u64().unwrap_or(0))
        })
        .sum()
}

#[test]
fn an_aggregate_forgets_keys_not_updated_for_the_ttl() {
    let (kinds, removed) = run_with_expiry(
        "ttl-agg",
        "SELECT user_id, source_ip, count(*) AS n, max(timestamp) AS last_seen FROM logs \
         GROUP BY user_id, source_ip",
        &["user_id", "source_ip"],
    );
    assert!(
        kinds.contains("-D"),
        "expired groups leave the result: {kinds:?}"
    );
    assert!(removed > 0, "progress counts the expired groups");
}

#[test]
fn an_aggregate_over_an_expiring_aggregate_follows_its_deletes() {
    let (kinds, _) = run_with_expiry(
        "ttl-two-level",
        "SELECT n, count(*) AS users FROM (SELECT user_id, count(*) AS n FROM logs GROUP BY user_id) t GROUP BY n",
        &["n"],
    );
    assert!(kinds.contains("-D") || kinds.contains("-U"), "{kinds:?}");
}

#[test]
fn dedup_keeps_the_first_row_again_once_its_key_expired() {
    let (kinds, removed) = run_with_expiry(
        "ttl-dedup",
        "SELECT user_id, timestamp, source_ip FROM (SELECT *, row_number() OVER (PARTITION BY user_id \
         ORDER BY timestamp, source_ip, content, status) AS rn FROM logs) t WHERE rn = 1",
        &["user_id"],
    );
    assert!(kinds.contains("-D"), "{kinds:?}");
    assert!(removed > 0);
}

#[test]
fn explain_says_what_the_ttl_does() {
    let dir = temp_dir("ttl-explain");
    let q = query_file(
        &dir,
        "localhost:1",
        "t",
        "SELECT user_id, count(*) FROM logs GROUP BY user_id;",
    );
    let o = sluice_ok(&["explain", q.to_str().unwrap(), "--state-ttl", "90s"]);
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains("state ttl: 90.00 s of processing time"),
        "{plan}"
    );
    let o = sluice_ok(&["explain", q.to_str().unwrap()]);
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(plan.contains("state ttl: none"), "{plan}");
}
