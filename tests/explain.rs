//! `sluice explain` output for the shipped queries, pinned by golden files in
//! tests/golden. After an intended change, rewrite them with `SLUICE_BLESS=1 cargo
//! test --release --test explain` and review the diff.

mod common;

use common::*;

fn check(query: &str, golden: &str) {
    let out = sluice_ok(&["explain", query, "--target-partitions", "2"]);
    let got = String::from_utf8(out.stdout).unwrap();
    let path = repo().join("tests/golden").join(golden);
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}: run with SLUICE_BLESS=1", path.display()));
    assert_eq!(
        got, want,
        "explain output of {query} changed; if intended, rerun with SLUICE_BLESS=1"
    );
}

#[test]
fn explain_query1_shows_stages_and_the_exchange() {
    check(
        "queries/vulnerabilities_by_ip.sql",
        "explain_vulnerabilities_by_ip.txt",
    );
}

#[test]
fn explain_query2_shows_the_watermark_and_window() {
    check("queries/crash_alerts.sql", "explain_crash_alerts.txt");
}

#[test]
fn explain_sessions_shows_the_session_window() {
    check("queries/crash_sessions.sql", "explain_crash_sessions.txt");
}

#[test]
fn explain_a_self_join_shows_both_inputs_and_the_join_state() {
    check(
        "queries/crash_then_login.sql",
        "explain_crash_then_login.txt",
    );
}

/// The `[k=v, …]` note at the end of the first line starting with `prefix`
/// (after indentation), as text.
fn note<'a>(text: &'a str, prefix: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"));
    let start = line
        .rfind("  [")
        .unwrap_or_else(|| panic!("no note on {line:?}"));
    line[start + 3..].trim_end_matches(']')
}

/// The number after `key=` in a note.
fn figure(note: &str, key: &str) -> u64 {
    note.split(", ")
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {note:?}"))
}

#[test]
fn explain_analyze_counts_what_each_step_did() {
    let (broker, topic) = seeded_topic("analyze", 40_000, 2, "vulnerability", 7);
    let records: std::collections::HashMap<(i32, i64), LogRecord> = consume_all(&broker, &topic)
        .into_iter()
        .filter_map(|c| parse_record(&c.payload).map(|r| ((c.partition, c.offset), r)))
        .collect();
    let dir = temp_dir("analyze");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        &std::fs::read_to_string(repo().join("queries/vulnerabilities_by_ip.sql"))
            .unwrap()
            .split_once("SELECT")
            .map(|(_, q)| format!("SELECT{q}"))
            .unwrap(),
    );
    let q = q.to_str().unwrap();
    let common = [
        "--target-partitions",
        "2",
        "--max-records-per-batch",
        "10000",
    ];
    let mut args = vec!["explain", q, "--analyze", "--batches", "3"];
    args.extend(common);
    let out = sluice_ok(&args);
    let text = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();

    // Three batches ran (of four available) and nothing was written to the console.
    let batches = parse_offsets(&stderr);
    assert_eq!(batches.len(), 3, "{stderr}");
    assert!(!text.contains("Batch: "), "results were printed:\n{text}");

    // The figures against an independent fold of the same offsets.
    let mut input = 0;
    let mut matches = 0;
    let mut seen = std::collections::HashSet::new();
    let mut emitted = 0;
    for ranges in &batches {
        for &(p, s, e) in ranges {
            input += (e - s) as u64;
            for o in s..e {
                let r = &records[&(p, o)];
                if q1_matches(r) {
                    matches += 1;
                    seen.insert(r.source_ip.clone());
                }
            }
        }
        emitted += seen.len() as u64; // complete mode emits every group each batch
    }
    assert!(text.contains(&format!("Analyzed over 3 batch(es): {input} input rows")));
    assert_eq!(figure(note(&text, "source:"), "rows"), input);
    let decoded = figure(note(&text, "decode JSON"), "rows");
    let screened = figure(note(&text, "raw-byte prefilter"), "screened out");
    assert_eq!(
        decoded + screened,
        input,
        "every record is screened or decoded"
    );
    assert_eq!(
        figure(note(&text, "BatchInputExec: partitions=2"), "rows"),
        decoded
    );
    assert_eq!(figure(note(&text, "FilterExec:"), "rows"), matches);
    let partial = figure(note(&text, "AggregateExec: mode=Partial"), "rows");
    let exchange = note(&text, "Exchange:");
    assert_eq!(figure(exchange, "rows"), partial);
    let per_shard: u64 = exchange
        .split("per shard: ")
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_shard, partial);
    assert_eq!(
        figure(
            note(&text, "state merge:"),
            "state rows after the last batch"
        ),
        seen.len() as u64
    );
    assert_eq!(figure(note(&text, "emit:"), "rows"), emitted);
    assert_eq!(figure(note(&text, "Sink:"), "rows"), emitted);

    // Without the notes, the plan is exactly what plain explain prints.
    let mut plain_args = vec!["explain", q];
    plain_args.extend(common);
    let plain = String::from_utf8(sluice_ok(&plain_args).stdout).unwrap();
    let stripped: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("Analyzed over "))
        .map(|l| l.rfind("  [").map_or(l, |i| &l[..i]))
        .collect();
    assert_eq!(stripped, plain.lines().collect::<Vec<_>>());
}

#[test]
fn explain_analyze_annotates_each_stateful_operator() {
    let (broker, topic) = seeded_topic("analyze-ops", 5_000, 2, "crash", 10);
    let dir = temp_dir("analyze-ops");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "SELECT n, count(*) AS users FROM (SELECT user_id, count(*) AS n FROM logs GROUP BY user_id) t GROUP BY n;",
    );
    let args = [
        "explain",
        q.to_str().unwrap(),
        "--analyze",
        "--output-mode",
        "changelog",
        "--max-records-per-batch",
        "1000",
    ];
    let out = sluice_ok(&args);
    let text = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let mut users = std::collections::HashMap::<String, u64>::new();
    let read: std::collections::HashSet<(i32, i64)> = parse_offsets(&stderr)
        .into_iter()
        .flatten()
        .flat_map(|(p, s, e)| (s..e).map(move |o| (p, o)))
        .collect();
    for c in consume_all(&broker, &topic) {
        if read.contains(&(c.partition, c.offset)) {
            *users
                .entry(parse_record(&c.payload).unwrap().user_id)
                .or_default() += 1;
        }
    }
    let sizes: std::collections::HashSet<u64> = users.values().copied().collect();
    let inner = note(&text, "state merge:");
    let outer = note(&text, "aggregate over an updating input");
    assert_eq!(
        figure(inner, "state rows after the last batch"),
        users.len() as u64
    );
    assert_eq!(
        figure(outer, "state rows after the last batch"),
        sizes.len() as u64
    );
    // What the first operator emits is what the second takes in.
    assert_eq!(figure(inner, "out"), figure(outer, "rows in"));
    assert!(figure(outer, "out") > 0, "{text}");
}
